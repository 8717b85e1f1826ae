"""The daemon as one ``MultiService``: the state (store and broker), the
timers and both listeners, stopped in the reverse of the order they start."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorTime, IStreamServerEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from notifier.backends.configured import history_store, open_backend, presence_directory
from notifier.backends.interfaces import Broker, BrokerHandler, Store
from notifier.backends.redis.presence import REFRESH
from notifier.config import Config, StoreConfig
from notifier.domain.centers import Centers, sweep
from notifier.domain.errors import NotifierError
from notifier.domain.history import MetricsHistory
from notifier.domain.presence import Presence
from notifier.domain.publishers import Publishers, webhook_destination
from notifier.domain.publishing import BrokerEvents, Publishing
from notifier.domain.stats import Stats
from notifier.end_of_turn import EndOfTurn
from notifier.http.api import ApiApp
from notifier.http.listeners import api_site, public_site
from notifier.http.metrics import Metrics
from notifier.http.public import PublicApp
from notifier.pusher.api import PusherApi
from notifier.pusher.face import PusherFace, pusher_factory
from notifier.sockets import SEND_BUFFER, PerPeerLimit, bound_send_buffer
from notifier.transports.heartbeat import heartbeat_service
from notifier.transports.websocket import send_at_once, websocket_factory
from notifier.webhooks import Webhooks

log = Logger()

#: How often idle centers are looked for, in seconds.
EXPIRY_SWEEP = 1.0

#: After the last close of a drain, how long close handshakes get to finish.
CLOSE_GRACE = 0.5


def make_service(config: Config, reactor: Any) -> NotifierService:
    """Every object of the daemon, built and wired, under one service."""
    store, broker = open_backend(config.store, reactor)
    node = secrets.token_hex(8)
    stats = Stats(started=reactor.seconds())
    # One end of the turn for the hubs' fan-out and both listeners' answers:
    # the answers of a turn go out before its fan-out steps (notifier.end_of_turn).
    turn = EndOfTurn(reactor)
    webhooks = Webhooks(config.webhooks, reactor, stats, partial(webhook_destination, store))
    # Presence, every hub's watcher, looks a center's live hub up in the
    # centers (made next: the name is read when presence asks).
    presence = Presence(
        presence_directory(broker, reactor, node), reactor, config.presence.leave_grace,
        lambda publisher, center: centers.loaded(publisher, center),
        lambda event: announced(broker, event), webhooks.event, node)
    centers = Centers(store, broker, config.centers, reactor, stats, turn, presence)
    publishers = Publishers(store, broker, reactor, centers, webhooks)
    publishing = Publishing(broker, centers, stats)
    events = BrokerEvents(centers, publishers, webhooks, presence.remote)
    websockets = websocket_factory(config.subscribers.send_buffer_bytes, centers.dropped)
    public = PublicApp(publishers, centers, config, reactor, websockets)
    # Sampled every second once the daemon runs; written to Redis, when
    # shared, once the store is open (state, made below).
    history = MetricsHistory(reactor, stats, node, cluster=history_store(broker), ready=lambda: state.opened)
    metrics = Metrics(publishers, centers, stats, reactor, node, store_kind(config.store), presence, history)
    api = ApiApp(publishers, centers, publishing, config, reactor, metrics, first_use=broker.first_use,
                 presence=presence)
    face = None
    if config.pusher.enabled:
        face = PusherFace(publishers, centers, config, reactor, pusher_factory(config, centers.dropped),
                          lambda event: announced(broker, event), node, closing=lambda: public.closing,
                          webhook_event=webhooks.event)
        public.serve_pusher(face)
        api.pusher = PusherApi(face, publishers, centers, publishing, config, reactor, presence)
        events.pusher = face.remote
        metrics.pusher = face
        publishers.apps = face
    state = StateService(store, broker, events, centers, reactor, config.subscribers.drain_seconds,
                         face.every_connection if face is not None else None)
    daemon = NotifierService(config, state, public, api, publishers=publishers, centers=centers,
                             publishing=publishing, presence=presence, webhooks=webhooks, stats=stats,
                             pusher=face)
    state.setServiceParent(daemon)  # type: ignore[no-untyped-call]  # unannotated in Twisted
    heartbeat_service(centers, reactor, config.subscribers.ping_interval).setServiceParent(daemon)
    if face is not None:
        _timer(face.heartbeat, config.subscribers.ping_interval, reactor, daemon)
    expiry = TimerService(EXPIRY_SWEEP, ExpirySweep(publishers, centers, state).sweep)
    expiry.clock = reactor
    expiry.setServiceParent(daemon)
    _timer(presence.sweep, min(1.0, max(config.presence.leave_grace / 4, 0.05)), reactor, daemon)
    _timer(PresenceRefresh(presence, state).refresh, REFRESH, reactor, daemon)
    Sampling(history).setServiceParent(daemon)  # type: ignore[no-untyped-call]  # unannotated in Twisted
    daemon.listen("api", with_backlog(config.api.endpoint, config.api.backlog),
                  api_site(api, config, reactor, turn=turn), reactor)
    site: IProtocolFactory = public_site(public, config, reactor, turn=turn)
    if config.public.max_connections_per_ip:
        site = PerPeerLimit(site, config.public.max_connections_per_ip)
    daemon.listen("public", with_backlog(config.public.endpoint, config.public.backlog), site, reactor,
                  send_buffer=SEND_BUFFER)
    Admission(public).setServiceParent(daemon)  # type: ignore[no-untyped-call]  # unannotated in Twisted
    return daemon


def store_kind(config: StoreConfig) -> str:
    """What ``/admin/v1/stats`` calls the store: "redis", "sqlite-durable" or "sqlite"."""
    if config.url.startswith(("redis:", "redis+sentinel:")):
        return "redis"
    return "sqlite-durable" if config.durable and config.url != "sqlite::memory:" else "sqlite"


def _timer(call: Any, interval: float, reactor: Any, parent: MultiService) -> None:
    timer = TimerService(interval, call)
    timer.clock = reactor
    timer.setServiceParent(parent)


def announced(broker: Broker, event: dict[str, str]) -> defer.Deferred[None]:
    """Tell the other nodes of *event*; a failure (Redis away) is logged: a
    node that misses it catches up with the next refresh."""
    return defer.Deferred.fromCoroutine(broker.announce(event)).addErrback(
        lambda f: log.warn("telling the other nodes failed: {error}", error=f.getErrorMessage()))


class PresenceRefresh:
    """Tells the presence directory again what this node holds, once the
    store is open; a failure is logged once, and so is its end."""

    def __init__(self, presence: Presence, state: StateService) -> None:
        self.presence = presence
        self.state = state
        self._failing = False

    def refresh(self) -> defer.Deferred[None] | None:
        if not self.state.opened:
            return None
        return defer.Deferred.fromCoroutine(self.presence.refresh()).addCallbacks(self._done, self._failed)

    def _done(self, _: object) -> None:
        if self._failing:
            log.info("presence is kept up to date again")
        self._failing = False

    def _failed(self, failure: Failure) -> None:
        if not self._failing:
            log.warn("refreshing presence failed: {error}", error=failure.getErrorMessage())
        self._failing = True


class NotifierService(MultiService):
    """The daemon's services. They start in the order they were added and
    stop one after the other in reverse: admission closes, the listeners
    stop, then the timers, and the state last (it drains the subscribers,
    then closes the broker and the store)."""

    def __init__(self, config: Config, state: StateService, public: PublicApp, api: ApiApp, *,
                 publishers: Publishers, centers: Centers, publishing: Publishing, presence: Presence,
                 webhooks: Webhooks, stats: Stats, pusher: PusherFace | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.config = config
        #: The node's domain objects, as wired (for the tests' and tools' eyes).
        self.publishers = publishers
        self.centers = centers
        self.publishing = publishing
        self.presence = presence
        self.webhooks = webhooks
        self.stats = stats
        #: The Pusher face, when served.
        self.pusher = pusher
        self.state = state
        self.public = public
        self.api = api
        self._ports: dict[str, PortKeepingEndpoint] = {}

    @property
    def ready(self) -> defer.Deferred[None]:
        """Fires once the store is open (fails if it cannot be)."""
        return self.state.ready

    @property
    def public_port(self) -> IListeningPort | None:
        return self._ports["public"].port

    @property
    def api_port(self) -> IListeningPort | None:
        return self._ports["api"].port

    def listen(self, name: str, description: str, factory: IProtocolFactory, reactor: Any,
               send_buffer: int | None = None) -> None:
        """Add a listener on the endpoint *description* (``tcp:``, ``ssl:``,
        ``unix:``, ``systemd:``...), its connections' ``SO_SNDBUF`` set to
        *send_buffer* if given; failing to listen fails the start."""
        listener = strports.service(description, factory, reactor=reactor)
        kept = self._ports[name] = PortKeepingEndpoint(listener.endpoint, send_buffer)
        listener.endpoint = kept
        listener.setServiceParent(self)

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        return defer.Deferred.fromCoroutine(self._stop_in_order())

    async def _stop_in_order(self) -> None:
        for service in reversed(list(self)):
            try:
                await defer.maybeDeferred(service.stopService)
            except Exception:
                log.failure("stopping {service} failed", service=service)


#: The endpoint kinds that listen(2) themselves, and so take a ``backlog``.
LISTENING_KINDS = frozenset({"tcp", "tcp6", "ssl", "unix", "reuseport"})


def with_backlog(description: str, backlog: int) -> str:
    """*description* listening with *backlog*, unless it names one itself
    or its kind does not listen (``systemd:`` sockets are made by systemd,
    with its ``Backlog=``)."""
    kind = description.partition(":")[0].lower()
    if kind not in LISTENING_KINDS or re.search(r"(^|[^\\]):backlog=", description):
        return description
    return f"{description}:backlog={backlog}"


@implementer(IStreamServerEndpoint)
class PortKeepingEndpoint:
    """An endpoint that keeps the port it listens on, to be asked its address."""

    def __init__(self, endpoint: IStreamServerEndpoint, send_buffer: int | None = None) -> None:
        self.endpoint = endpoint
        self.send_buffer = send_buffer
        self.port: IListeningPort | None = None

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        return self.endpoint.listen(factory).addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        send_at_once(port)
        if self.send_buffer is not None:
            bound_send_buffer(port, self.send_buffer)
        return port


class StateService(Service):
    """Opens the store and the broker on start: ``ready`` fires then, or,
    if they cannot be opened, fails and the reactor is stopped. On stop,
    closes every subscriber, spread over *drain_seconds*, then the broker
    and the store."""

    def __init__(self, store: Store, broker: Broker, handler: BrokerHandler, centers: Centers, reactor: Any,
                 drain_seconds: float, connections: Callable[[], Iterable[Closing]] | None = None) -> None:
        self.store = store
        self.broker = broker
        self.handler = handler
        self.centers = centers
        self.reactor = reactor
        self.drain_seconds = drain_seconds
        #: Connections that are not a hub's subscribers (a Pusher connection), closed by the drain too.
        self.connections = connections
        self.opened = False
        self.ready: defer.Deferred[None] = defer.Deferred()

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        # The store's first task on its own thread: queries queue behind it.
        defer.Deferred.fromCoroutine(self._open()).addCallbacks(self._opened, self._fatal)

    async def _open(self) -> None:
        await self.store.open()
        await self.broker.start(self.handler)
        await self.centers.load_expiring()

    def _opened(self, _: None) -> None:
        self.opened = True
        self.ready.callback(None)

    def _fatal(self, failure: Failure) -> None:
        log.failure("the store could not be opened; stopping", failure)
        self.ready.errback(failure)
        self.reactor.stop()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        for hub in self.centers.hubs():  # the console's tails: told, and ended
            for observer in tuple(hub.observers):
                observer.close("shutdown")
        subscribers: dict[Closing, None] = dict.fromkeys(self.centers.subscribers())
        if self.connections is not None:
            subscribers.update(dict.fromkeys(self.connections()))
        await drain(list(subscribers), self.drain_seconds, self.reactor)
        await self.broker.stop()
        await self.store.close()


class Closing(Protocol):
    """What a drain closes: a subscriber, or a connection holding several (a Pusher one)."""

    def close(self, reason: str) -> None: ...


async def drain(subscribers: list[Closing], spread: float, clock: IReactorTime) -> None:
    """Close every subscriber, spread evenly over *spread* seconds."""
    count = len(subscribers)
    if not count:
        return
    step = spread / count
    # In batches, one timer each: a batch every 10 ms at most.
    per_batch = max(1, int(0.01 / step)) if step > 0 else count
    for start in range(0, count, per_batch):
        batch = subscribers[start:start + per_batch]
        clock.callLater(start * step, _close_all, batch)
    await deferLater(clock, spread + CLOSE_GRACE, lambda: None)


def _close_all(subscribers: list[Closing]) -> None:
    for subscriber in subscribers:
        subscriber.close("shutdown")


class ExpirySweep:
    """Removes the centers idle past their ``ttl``, once the store is open.
    A failing sweep is tried again by the next; an outage (Redis away) is
    logged once, and so is its end."""

    def __init__(self, publishers: Publishers, centers: Centers, state: StateService) -> None:
        self.publishers = publishers
        self.centers = centers
        self.state = state
        self._failing = False

    def sweep(self) -> defer.Deferred[None] | None:
        if not self.state.opened:
            return None
        d = defer.Deferred.fromCoroutine(sweep(self.publishers, self.centers))
        return d.addCallbacks(self._expired, self._failed)

    def _expired(self, _: object) -> None:
        if self._failing:
            log.info("expiring idle centers works again")
        self._failing = False

    def _failed(self, failure: Failure) -> None:
        if isinstance(failure.value, NotifierError):
            if not self._failing:
                log.warn("expiring idle centers failed: {error}", error=failure.value.message)
        else:
            log.failure("expiring idle centers failed", failure)
        self._failing = True


class Sampling(Service):
    """Samples the node's metrics history (notifier.domain.history) every
    second while the daemon runs."""

    def __init__(self, history: MetricsHistory) -> None:
        self.history = history

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.history.start()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.history.stop()


class Admission(Service):
    """Stopped first: from then on the public listener refuses new
    subscriptions, and token deadlines end none (the drain ends them all)."""

    def __init__(self, public: PublicApp) -> None:
        self.public = public

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.public.closing = True
        self.public.deadlines.stop()
