"""The daemon as one Twisted service: store, registry, and both listeners."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from notifier.api import ApiApp, max_body_bytes
from notifier.broker import Broker
from notifier.config import Config
from notifier.errors import NotifierError
from notifier.heartbeat import Heartbeat
from notifier.metrics import Metrics
from notifier.public import PublicApp
from notifier.registry import HubRegistry
from notifier.store import Store, open_state
from notifier.transports.websocket import websocket_factory
from notifier.web import QuietSite

log = Logger()

#: Subscribers send no bodies.
PUBLIC_MAX_BODY = 4096

#: How often idle centers are looked for, in seconds.
EXPIRY_SWEEP = 1.0

#: After the last close of a drain, how long close handshakes get to finish.
CLOSE_GRACE = 0.5


def _listen(reactor: Any, description: str, site: QuietSite) -> IListeningPort:
    results: list[Any] = []
    endpoints.serverFromString(reactor, description).listen(site).addBoth(results.append)
    if not results:
        raise RuntimeError(f"listening on {description!r} did not complete")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class NotifierService(Service):
    """Starts listening at once; on stop, stops accepting, drains, closes the store."""

    def __init__(self, config: Config, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.store: Store | None = None
        self.broker: Broker | None = None
        self.registry: HubRegistry | None = None
        self.public_port: IListeningPort | None = None
        self.api_port: IListeningPort | None = None
        self._public: PublicApp | None = None
        self._heartbeat: Heartbeat | None = None
        self._expiry: LoopingCall | None = None
        self._expiry_failing = False
        self.ready: defer.Deferred[None] = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        config, reactor = self.config, self.reactor
        self.store, self.broker = open_state(config.store.url, reactor)
        self.registry = HubRegistry(self.store, self.broker, config.centers, reactor)
        # The store's first task on its own thread: queries queue behind it.
        opened = defer.Deferred.fromCoroutine(self._open())
        websockets = websocket_factory(config.subscribers.send_buffer_bytes, self.registry.dropped)
        self._public = PublicApp(self.registry, config, reactor, websockets)
        api = ApiApp(self.registry, config, reactor, Metrics(self.registry, reactor))
        api_site = QuietSite(api.resource(), max_body_bytes=max_body_bytes(config), reactor=reactor,
                             header_timeout=config.api.header_timeout, body_gate=api.body_gate)
        public_site = QuietSite(self._public.resource(), max_body_bytes=PUBLIC_MAX_BODY, reactor=reactor,
                                header_timeout=config.public.header_timeout)
        self.api_port = _listen(reactor, config.api.endpoint, api_site)
        self.public_port = _listen(reactor, config.public.endpoint, public_site)
        self._heartbeat = Heartbeat(self.registry, reactor, config.subscribers.ping_interval)
        self._heartbeat.start()
        opened.addCallbacks(self.ready.callback, self._fatal)

    async def _open(self) -> None:
        assert self.store is not None and self.broker is not None and self.registry is not None
        await self.store.open()
        await self.broker.start()
        await self.registry.load_expiring()
        self._expiry = LoopingCall(self._expire)
        self._expiry.clock = self.reactor
        self._expiry.start(EXPIRY_SWEEP, now=False)

    def _expire(self) -> defer.Deferred[Any]:
        assert self.registry is not None
        d = defer.Deferred.fromCoroutine(self.registry.expire_idle())
        # The next sweep tries again; an outage (Redis away) is logged once.
        return d.addCallbacks(self._expired, self._expiry_failed)

    def _expired(self, _: object) -> None:
        if self._expiry_failing:
            log.info("expiring idle centers works again")
        self._expiry_failing = False

    def _expiry_failed(self, failure: Failure) -> None:
        if failure.check(NotifierError):
            if not self._expiry_failing:
                log.warn("expiring idle centers failed: {error}", error=failure.value.message)
        else:
            log.failure("expiring idle centers failed", failure)
        self._expiry_failing = True

    def _fatal(self, failure: Failure) -> None:
        log.failure("the store could not be opened; stopping", failure)
        self.ready.errback(failure)
        self.reactor.stop()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        assert self._public is not None and self.registry is not None and self.store is not None
        assert self.broker is not None
        self._public.closing = True
        for port in (self.public_port, self.api_port):
            if port is not None:
                await port.stopListening()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self._public.deadlines.stop()
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        await self._drain()
        await self.broker.stop()
        await self.store.close()

    async def _drain(self) -> None:
        """Close every subscriber, spread evenly over ``drain_seconds``."""
        assert self.registry is not None
        subscribers = list(self.registry.subscribers())
        spread = self.config.subscribers.drain_seconds
        count = len(subscribers)
        if not count:
            return
        step = spread / count
        # In batches, one timer each: a batch every 10 ms at most.
        per_batch = max(1, int(0.01 / step)) if step > 0 else count
        for start in range(0, count, per_batch):
            batch = subscribers[start:start + per_batch]
            self.reactor.callLater(start * step, _close_all, batch)
        await deferLater(self.reactor, spread + CLOSE_GRACE, lambda: None)


def _close_all(subscribers: list[Any]) -> None:
    for subscriber in subscribers:
        subscriber.close("shutdown")

