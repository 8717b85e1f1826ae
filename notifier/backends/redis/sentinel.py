"""Finding and following the master through Redis Sentinel.

``locate()`` asks the Sentinels, one after the other (the one that answered
last first), ``SENTINEL get-master-addr-by-name SERVICE``, each given
``ASK_TIMEOUT`` seconds to accept the connection and as long to answer.
Every connection to Redis asks anew before it is made, so a reconnection
finds the current master; and the connection checks with ``ROLE`` that the
server is the master indeed (notifier.backends.redis.client).

``watch()`` keeps one subscription to a Sentinel (the next one, whenever
it is lost) on ``+switch-master``: when the master of the service moves,
or a fresh answer names another one, ``switched`` is called so that the
connections still on the old one are dropped and made again to the new.
That subscription is kept honest like the others
(notifier.backends.redis.liveness).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import endpoints, protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from notifier.backends.redis.addresses import SentinelAddress
from notifier.backends.redis.liveness import Liveness

log = Logger()

#: Seconds a Sentinel has to accept a connection, and as many to answer.
ASK_TIMEOUT = 1.0
#: Reconnection backoff of the subscription to a Sentinel, in seconds.
RETRY_FIRST, RETRY_MAX = 0.1, 2.0

Master = tuple[str, int]


class NoMaster(Exception):
    """No Sentinel could tell where the master is."""


class Sentinels:
    """The Sentinels of *address*: where its master is, and when it moves."""

    def __init__(self, address: SentinelAddress, reactor: Any) -> None:
        self.address = address
        self.reactor = reactor
        #: The master as last found.
        self.current: Master | None = None
        self._order = list(address.sentinels)
        self._waiting: list[Deferred[Master]] | None = None
        self._switched: Callable[[Master], None] = lambda master: None
        self._watch: ClientService | None = None
        self._next = 0

    # asking

    async def locate(self) -> Master:
        """The master's address (NoMaster when no Sentinel says); callers
        arriving while the Sentinels are being asked share the answer."""
        if self._waiting is not None:
            d: Deferred[Master] = Deferred()
            self._waiting.append(d)
            return await d
        waiting: list[Deferred[Master]] = []
        self._waiting = waiting
        try:
            found = await self._ask_each()
        except Exception:
            failure = Failure()
            self._waiting = None
            for d in waiting:
                d.errback(failure)
            raise
        self._waiting = None
        self.found(found)
        for d in waiting:
            d.callback(found)
        return found

    async def _ask_each(self) -> Master:
        for sentinel in list(self._order):
            try:
                found = await self._ask(*sentinel)
            except Exception as e:
                log.debug("Sentinel {host}:{port} did not answer: {error}", host=sentinel[0],
                          port=sentinel[1], error=e)
                continue
            if found is None:
                log.warn("Sentinel {host}:{port} does not know the service {service!r}",
                         host=sentinel[0], port=sentinel[1], service=self.address.service)
                continue
            # Ask the one that answered first next time.
            self._order.remove(sentinel)
            self._order.insert(0, sentinel)
            return found
        raise NoMaster(f"no Sentinel could tell where {self.address.describe()} is")

    async def _ask(self, host: str, port: int) -> Master | None:
        endpoint = endpoints.HostnameEndpoint(self.reactor, host, port, timeout=ASK_TIMEOUT)
        asking = txredisapi.RedisProtocol(charset="utf-8", replyTimeout=ASK_TIMEOUT, convertNumbers=False)
        await endpoints.connectProtocol(endpoint, asking)
        try:
            reply = await asking.execute_command("SENTINEL", "get-master-addr-by-name", self.address.service)
        finally:
            asking.transport.loseConnection()
        if not reply:
            return None
        master_host, master_port = reply
        return str(master_host), int(master_port)

    def found(self, master: Master) -> None:
        """*master* is where the master is now (an answer, or a switch)."""
        if master == self.current:
            return
        before, self.current = self.current, master
        if before is not None:
            log.info("the master of {service!r} is now {host}:{port} (was {before_host}:{before_port})",
                     service=self.address.service, host=master[0], port=master[1],
                     before_host=before[0], before_port=before[1])
            self._switched(master)

    # following

    def watch(self, switched: Callable[[Master], None]) -> None:
        """Call *switched* with the new master whenever it moves."""
        self._switched = switched
        self._watch = ClientService(_EachSentinel(self), protocol.Factory.forProtocol(lambda: _SwitchWatch(self)),
                                    retryPolicy=backoffPolicy(RETRY_FIRST, RETRY_MAX))
        self._watch.startService()

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stopService()
            self._watch = None

    def next_sentinel(self) -> tuple[str, int]:
        sentinels = self.address.sentinels
        self._next = (self._next + 1) % len(sentinels)
        return sentinels[self._next]

    def watching(self) -> None:
        """The subscription is (again) in place: what was missed meanwhile
        is asked."""
        Deferred.fromCoroutine(self.locate()).addErrback(
            lambda f: log.warn("asking the Sentinels failed: {error}", error=f.getErrorMessage()))

    def switch_announced(self, message: str) -> None:
        """A ``+switch-master`` event: ``SERVICE old-host old-port new-host new-port``."""
        words = message.split()
        if len(words) != 5 or words[0] != self.address.service or not words[4].isdigit():
            return
        self.found((words[3], int(words[4])))


@implementer(IStreamClientEndpoint)
class _EachSentinel:
    """Connects to the next Sentinel at every attempt."""

    def __init__(self, sentinels: Sentinels) -> None:
        self.sentinels = sentinels

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        host, port = self.sentinels.next_sentinel()
        endpoint = endpoints.HostnameEndpoint(self.sentinels.reactor, host, port, timeout=ASK_TIMEOUT)
        return endpoint.connect(factory)


class _SwitchWatch(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    def __init__(self, sentinels: Sentinels) -> None:
        super().__init__(charset="utf-8", convertNumbers=False)
        self.sentinels = sentinels
        self.liveness = Liveness(self, sentinels.reactor, "the subscription to a Sentinel")

    def connectionMade(self) -> Any:
        self.liveness.start()
        d = super().connectionMade()
        d.addCallback(lambda _: self.subscribe("+switch-master"))
        d.addCallback(lambda _: self.sentinels.watching())
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Failure) -> None:
        log.warn("subscribing to a Sentinel failed: {error}", error=failure.getErrorMessage())
        self.transport.abortConnection()

    def dataReceived(self, data: bytes, *more: Any) -> Any:
        self.liveness.heard()
        return super().dataReceived(data, *more)

    def messageReceived(self, pattern: Any, channel: str, message: str) -> None:
        if channel == "+switch-master":
            self.sentinels.switch_announced(message)

    def connectionLost(self, reason: Any = None) -> Any:
        self.liveness.stop()
        return super().connectionLost(reason)
