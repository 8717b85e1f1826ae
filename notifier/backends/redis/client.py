"""Connections to Redis, shared by the Redis store and broker.

Commands go through a txredisapi connection pool that reconnects by itself
with backoff. While no connection is up, commands fail at once with 503
(``Unavailable``) instead of waiting: a publish is acknowledged only once
Redis has it, and never hangs. A second connection listens to the channels
that carry messages and changes between daemons.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib.resources import files
from typing import Any
from urllib.parse import unquote, urlsplit

import txredisapi
from attrs import frozen
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, endpoints, protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger

from notifier.errors import Unavailable

log = Logger()

#: Seconds a command may wait for its reply once sent.
REPLY_TIMEOUT = 5
#: Reconnection backoff bounds, in seconds.
RETRY_FIRST, RETRY_MAX = 0.1, 2.0


@frozen
class RedisAddress:
    host: str
    port: int
    db: int
    password: str | None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """``redis://[:password@]host[:port][/db]``; ValueError if it is not one."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise ValueError("expected redis://[:password@]host[:port][/db]")
        db = parts.path.strip("/") or "0"
        if not db.isdigit():
            raise ValueError("the database must be a number")
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, parts.port or 6379, int(db), password)


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


class _Pool(txredisapi.RedisFactory):  # type: ignore[misc]
    """txredisapi's pool, reconnecting whatever happens to a new connection.

    txredisapi stops reconnecting for good when a new connection's ``AUTH``
    or ``SELECT`` fails, a reply timeout included: a server that stalled
    for a while (or a network that did) would leave the daemon answering
    503 forever. Such a connection is closed, and made again with backoff.
    """

    def stopTrying(self) -> Any:
        return defer.succeed(None)


class Redis:
    """The command pool and the listener of one Redis server."""

    def __init__(self, address: RedisAddress, reactor: Any, poolsize: int = 4) -> None:
        self.address = address
        self.reactor = reactor
        self._factory = _Pool(
            f"{address.host}:{address.port}", address.db, poolsize, isLazy=True,
            handler=txredisapi.ConnectionHandler, charset="utf-8", password=address.password,
            replyTimeout=REPLY_TIMEOUT, convertNumbers=False)
        self._factory.maxDelay = RETRY_MAX
        self._factory.initialDelay = RETRY_FIRST
        self._commands = self._factory.handler
        self._listener: ClientService | None = None
        self._started = False

    def _endpoint(self) -> Any:
        return endpoints.HostnameEndpoint(self.reactor, self.address.host, self.address.port, timeout=2)

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._factory.startConnecting(self._endpoint())

    @property
    def up(self) -> bool:
        return any(getattr(connection, "connected", 0) for connection in self._factory.pool)

    async def ready(self, timeout: float = 5) -> None:
        """Wait (bounded) for the first connection."""
        self.start()
        waited = 0.0
        while not self.up:
            if waited >= timeout or not self._started:
                raise Unavailable(f"Redis at {self.address.host}:{self.address.port} does not answer",
                                  code="store_unavailable")
            await deferLater(self.reactor, 0.05, lambda: None)
            waited += 0.05

    async def call(self, command: str, *args: Any) -> Any:
        """Run one command; 503 at once if Redis is not connected."""
        if not self.up:
            raise Unavailable("the state store (Redis) is unreachable", code="store_unavailable")
        try:
            return await getattr(self._commands, command)(*args)
        except (txredisapi.ConnectionError, ConnectionError) as e:
            raise Unavailable(f"the state store (Redis) failed: {e}", code="store_unavailable") from None

    async def script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script (by its hash, sending it when Redis lacks it)."""
        try:
            return await self.call("evalsha", script.sha, keys, args)
        except txredisapi.ScriptDoesNotExist:
            return await self.call("eval", script.source, keys, args)
        except txredisapi.ResponseError as e:
            if "NOSCRIPT" in str(e):
                return await self.call("eval", script.source, keys, args)
            raise

    def listen(self, channels: list[str], received: Callable[[str, str], None],
               subscribed: Callable[[], None]) -> None:
        """Follow *channels*: ``received(channel, message)`` for each message,
        ``subscribed()`` after every (re)connection, once subscribed."""
        address = self.address

        class Listener(txredisapi.SubscriberProtocol):  # type: ignore[misc]
            def __init__(self) -> None:
                super().__init__(charset="utf-8", password=address.password, convertNumbers=False)

            def connectionMade(self) -> Any:
                d = super().connectionMade()
                d.addCallback(lambda _: self.subscribe(channels))
                d.addCallback(lambda _: subscribed())
                d.addErrback(lambda f: log.failure("subscribing to Redis failed", f))
                return d

            def messageReceived(self, pattern: Any, channel: str, message: str) -> None:
                received(channel, message)

        self._listener = ClientService(self._endpoint(), protocol.Factory.forProtocol(Listener),
                                       retryPolicy=backoffPolicy(RETRY_FIRST, RETRY_MAX))
        self._listener.startService()

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stopService()
            self._listener = None
        if self._started:
            self._started = False
            await self._factory.disconnect()
