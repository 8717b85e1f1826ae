"""Connections to Redis, shared by the Redis store and broker.

Commands go through a txredisapi connection pool that reconnects by itself
with backoff. While no connection is up, commands fail at once with 503
(``Unavailable``) instead of waiting: a publish is acknowledged only once
Redis has it, and never hangs. A second connection listens to the channels
that carry messages and changes between daemons; it is pinged so that one
that went silent is noticed (notifier.backends.redis.liveness).

Every connection is made to where the master is *now*: a fixed server
(``redis://``), or the one the Sentinels name (``redis+sentinel://``,
notifier.backends.redis.sentinel), checked with ``ROLE`` once connected
and dropped when the Sentinels switch to another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib.resources import files
from typing import Any, Protocol

import txredisapi
from attrs import frozen
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, endpoints, protocol
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from notifier.backends.redis.addresses import Address, RedisAddress, SentinelAddress
from notifier.backends.redis.liveness import Liveness
from notifier.backends.redis.sentinel import Master, Sentinels
from notifier.domain.errors import Unavailable

__all__ = ["Redis", "RedisAddress", "Script", "SentinelAddress"]

log = Logger()

#: Seconds a command may wait for its reply once sent.
REPLY_TIMEOUT = 5
#: Seconds a command may wait for a connection of the pool to send it on
#: (all lent, or the last one gone while lent).
CONNECTION_WAIT = 5
#: Reconnection backoff bounds, in seconds.
RETRY_FIRST, RETRY_MAX = 0.1, 2.0
#: Seconds to connect to a Redis server.
CONNECT_TIMEOUT = 2


@frozen
class Script:
    """A Lua script of this package's ``lua`` folder, run by its hash."""

    name: str
    source: str
    sha: str

    @classmethod
    def named(cls, name: str) -> Script:
        source = files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


class _Locator(Protocol):
    async def locate(self) -> Master: ...


@frozen
class _Fixed:
    master: Master

    async def locate(self) -> Master:
        return self.master


@implementer(IStreamClientEndpoint)
class _MasterEndpoint:
    """Connects to where the master is at the time of each attempt."""

    def __init__(self, locator: _Locator, reactor: Any) -> None:
        self.locator = locator
        self.reactor = reactor

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: IProtocolFactory) -> Any:
        host, port = await self.locator.locate()
        endpoint = endpoints.HostnameEndpoint(self.reactor, host, port, timeout=CONNECT_TIMEOUT)
        return await endpoint.connect(factory)


async def _is_master(connection: Any) -> bool:
    """Whether *connection*'s server is a master (``ROLE``), authenticated first."""
    if connection.password is not None:
        await connection.auth(connection.password)
    role = await connection.role()
    return bool(role) and role[0] == "master"


class _Connection(txredisapi.RedisProtocol):  # type: ignore[misc]
    """A pool connection: with Sentinel, handed over only if its server is the master."""

    def connectionMade(self) -> Any:
        if not self.factory.verify_role:
            return super().connectionMade()
        return Deferred.fromCoroutine(self._verified())

    async def _verified(self) -> None:
        try:
            master = await _is_master(self)
        except Exception as e:
            log.warn("checking the role of a Redis server failed: {error}", error=e)
            master = False
        else:
            if not master:
                log.warn("the Redis server named as the master is not one (yet): trying again")
        if not master:
            self.transport.abortConnection()
            return
        await super().connectionMade()


class _Pool(txredisapi.RedisFactory):  # type: ignore[misc]
    """txredisapi's pool, reconnecting whatever happens to a new connection.

    txredisapi stops reconnecting for good when a new connection's ``AUTH``
    or ``SELECT`` fails, a reply timeout included: a server that stalled
    for a while (or a network that did) would leave the daemon answering
    503 forever. Such a connection is closed, and made again with backoff.
    """

    protocol = _Connection
    verify_role = False

    def __init__(self, *args: Any, changed: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changed = changed

    def stopTrying(self) -> Any:
        return defer.succeed(None)

    def addConnection(self, conn: Any) -> Any:
        try:
            return super().addConnection(conn)
        finally:
            self.changed()

    def delConnection(self, conn: Any) -> Any:
        try:
            return super().delConnection(conn)
        finally:
            self.changed()


class Redis:
    """The command pool and the listener of the master of *address*."""

    def __init__(self, address: Address, reactor: Any, poolsize: int = 4) -> None:
        self.address = address
        self.reactor = reactor
        self.sentinels: Sentinels | None = None
        locator: _Locator
        if isinstance(address, SentinelAddress):
            locator = self.sentinels = Sentinels(address, reactor)
        else:
            locator = _Fixed((address.host, address.port))
        self._endpoint = _MasterEndpoint(locator, reactor)
        self._factory = _Pool(
            address.describe(), address.db, poolsize, isLazy=True,
            handler=txredisapi.ConnectionHandler, charset="utf-8", password=address.password,
            replyTimeout=REPLY_TIMEOUT, convertNumbers=False, changed=self._pool_changed)
        self._factory.verify_role = self.sentinels is not None
        self._factory.maxDelay = RETRY_MAX
        self._factory.initialDelay = RETRY_FIRST
        self._commands = self._factory.handler
        #: Connections lent out for a command and its WAIT, at most; the
        #: rest of the pool stays for everything else.
        self._lending = DeferredSemaphore(max(1, poolsize // 2))
        self._listener: ClientService | None = None
        self._listening: _Listener | None = None
        self._started = False
        self._up_since: float | None = None

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._factory.startConnecting(self._endpoint)
            if self.sentinels is not None:
                self.sentinels.watch(self._switched)

    def _switched(self, master: Master) -> None:
        """The Sentinels moved the master: drop what is connected to the old one."""
        self.reconnect()

    def reconnect(self) -> None:
        """Drop every connection: each is made again (to where the master is now)."""
        for connection in list(self._factory.pool):
            connection.transport.abortConnection()
        if self._listening is not None:
            self._listening.transport.abortConnection()

    @property
    def up(self) -> bool:
        return any(getattr(connection, "connected", 0) for connection in self._factory.pool)

    def _pool_changed(self) -> None:
        if not self.up:
            self._up_since = None
        elif self._up_since is None:
            self._up_since = self.reactor.seconds()

    def up_for(self) -> float:
        """Seconds since Redis was last reached after having none (0 while none)."""
        return 0.0 if self._up_since is None else self.reactor.seconds() - self._up_since

    async def ready(self, timeout: float = 5) -> None:
        """Wait (bounded) for the first connection."""
        self.start()
        waited = 0.0
        while not self.up:
            if waited >= timeout or not self._started:
                raise Unavailable(f"{self.address.describe()} does not answer", code="store_unavailable")
            await deferLater(self.reactor, 0.05, lambda: None)
            waited += 0.05

    async def call(self, command: str, *args: Any) -> Any:
        """Run one command; 503 at once if Redis is not connected."""
        if not self.up:
            raise Unavailable("the state store (Redis) is unreachable", code="store_unavailable")
        try:
            # As txredisapi's handler does it (a connection of the pool,
            # shared), but with a bound on the wait for one: with the last
            # live connection lent, then lost, a command would otherwise
            # wait until Redis came back. Once sent, txredisapi's reply
            # timeout bounds it (and drops a connection that stopped answering).
            waiting = self._factory.getConnection(peek=True)
            connection = await waiting.addTimeout(CONNECTION_WAIT, self.reactor)
            return await getattr(connection, command)(*args)
        except defer.TimeoutError:
            raise Unavailable("the state store (Redis) has no connection free", code="store_unavailable") from None
        except (txredisapi.ConnectionError, ConnectionError) as e:
            raise Unavailable(f"the state store (Redis) failed: {e}", code="store_unavailable") from None

    async def script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script (by its hash, sending it when Redis lacks it)."""
        return await _run(self.call, script, keys, args)

    async def replicated(self, script: Script, keys: list[str], args: list[Any],
                         replicas: int, timeout_ms: int) -> tuple[Any, int]:
        """Run a Lua script, then ``WAIT`` on the same connection: its
        result, and how many replicas have what it wrote (503 at once if
        Redis is not connected; never longer than about the timeout)."""
        if not self.up:
            raise Unavailable("the state store (Redis) is unreachable", code="store_unavailable")
        try:
            # Publishes waiting for replicas wait their turn no longer than
            # one WAIT would take: past that, 503 rather than a queue.
            await self._lending.acquire().addTimeout(timeout_ms / 1000, self.reactor)
        except defer.TimeoutError:
            raise Unavailable("publishes waiting for the replicas are too many; try again",
                              code="store_unavailable") from None
        connection = None
        done = False
        try:
            # The pool hands a connection out whole (txredisapi's own
            # transactions do so): nothing else is sent on it meanwhile.
            getting = self._factory.getConnection(peek=False)
            connection = await getting.addTimeout(REPLY_TIMEOUT, self.reactor)
            result = await _run(lambda name, *a: getattr(connection, name)(*a), script, keys, args)
            # WAIT's own timeout bounds it; the reply timeout is added for a
            # server that stopped answering.
            waiting = connection.execute_command("WAIT", replicas, timeout_ms, apply_timeout=False)
            reached = await waiting.addTimeout(timeout_ms / 1000 + REPLY_TIMEOUT, self.reactor,
                                               onTimeoutCancel=_aborting(connection))
            done = True
            return result, int(reached)
        except (txredisapi.ConnectionError, ConnectionError, defer.TimeoutError) as e:
            raise Unavailable(f"the state store (Redis) failed: {e}", code="store_unavailable") from None
        finally:
            if connection is not None and connection.connected:
                if done:
                    self._factory.connectionQueue.put(connection)
                else:
                    # A reply may be on its way, which the next command would
                    # read as its own: the pool makes the connection again.
                    connection.transport.abortConnection()
            self._lending.release()

    def listen(self, channels: list[str], received: Callable[[str, str], None],
               subscribed: Callable[[], None]) -> None:
        """Follow *channels*: ``received(channel, message)`` for each message,
        ``subscribed()`` after every (re)connection, once subscribed."""
        self._listener = ClientService(self._endpoint,
                                       protocol.Factory.forProtocol(
                                           lambda: _Listener(self, channels, received, subscribed)),
                                       retryPolicy=backoffPolicy(RETRY_FIRST, RETRY_MAX))
        self._listener.startService()

    async def stop(self) -> None:
        if self.sentinels is not None:
            await self.sentinels.stop()
        if self._listener is not None:
            await self._listener.stopService()
            self._listener = None
        if self._started:
            self._started = False
            await self._factory.disconnect()


async def _run(command: Callable[..., Any], script: Script, keys: list[str], args: list[Any]) -> Any:
    """*script* through *command* (``command(name, *args)`` runs the
    txredisapi command *name*), by its hash, sending it whole when Redis
    lacks it."""
    try:
        return await command("evalsha", script.sha, keys, args)
    except txredisapi.ScriptDoesNotExist:
        pass
    except txredisapi.ResponseError as e:
        if "NOSCRIPT" not in str(e):
            raise
    return await command("eval", script.source, keys, args)


def _aborting(connection: Any) -> Callable[[Any, float], Any]:
    def timed_out(result: Any, timeout: float) -> Any:
        connection.transport.abortConnection()
        raise defer.TimeoutError(f"no reply from Redis within {timeout} s")

    return timed_out


class _Listener(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    """The subscription to *channels*, on the master, kept honest."""

    def __init__(self, redis: Redis, channels: list[str], received: Callable[[str, str], None],
                 subscribed: Callable[[], None]) -> None:
        super().__init__(charset="utf-8", password=redis.address.password, convertNumbers=False)
        self.redis = redis
        self.channels = channels
        self.received = received
        self.subscribed = subscribed
        # The command connections most likely went the same way: made anew
        # too, rather than each waiting out a reply timeout.
        self.liveness = Liveness(self, redis.reactor, "the subscription to Redis", silent=redis.reconnect)

    def connectionMade(self) -> Any:
        self.liveness.start()
        return Deferred.fromCoroutine(self._subscribe())

    async def _subscribe(self) -> None:
        try:
            if self.redis.sentinels is not None and not await _is_master(self):
                log.warn("the Redis server named as the master is not one (yet): trying again")
                self.transport.abortConnection()
                return
            await super().connectionMade()
            await self.subscribe(self.channels)
        except Exception as e:
            log.warn("subscribing to Redis failed: {error}", error=e)
            self.transport.abortConnection()
            return
        self.redis._listening = self
        self.subscribed()

    def dataReceived(self, data: bytes, *more: Any) -> Any:
        self.liveness.heard()
        return super().dataReceived(data, *more)

    def messageReceived(self, pattern: Any, channel: str, message: str) -> None:
        self.received(channel, message)

    def connectionLost(self, reason: Any = None) -> Any:
        self.liveness.stop()
        if self.redis._listening is self:
            self.redis._listening = None
        return super().connectionLost(reason)
