"""The api listener in memory (a MemoryStore, a Clock, treq over in-memory
connections to its site), the public listener over the same centers, a
node's domain objects, and a subscriber as a hub sees it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.web.client import Agent
from twisted.web.iweb import IAgent
from zope.interface import implementer

from notifier.backends.interfaces import Broker, Store
from notifier.backends.local import LocalBroker
from notifier.config import CentersConfig, parse_config
from notifier.domain.centers import Centers, new_epoch, sweep
from notifier.domain.hub import Batch, Hub, Watcher
from notifier.domain.model import Message
from notifier.domain.publishers import Outboxes, Publishers
from notifier.domain.publishing import BrokerEvents, Publishing
from notifier.domain.stats import Stats
from notifier.end_of_turn import EndOfTurn
from notifier.http.api import ApiApp
from notifier.http.connection import HttpSite
from notifier.http.listeners import api_site, public_site
from notifier.http.metrics import Metrics
from notifier.http.public import PublicApp
from notifier.transports.websocket import websocket_factory
from notifier.webhooks import BytesBody
from tests.memory_store import MemoryStore
from tests.support.daemon import ADMIN_TOKEN, config_text
from tests.support.http import basic
from tests.support.waiting import result_of

#: The in-memory clock starts here, so that times in answers are recognisable.
START = 1_700_000_000.25


@implementer(IAgent)
class _SiteAgent:
    """An agent whose every request goes to *site* over a connection in
    memory (Twisted's iosim), the site's time being *clock*."""

    def __init__(self, site: HttpSite, clock: Clock) -> None:
        self.site = site
        self.clock = clock
        self.reactor = MemoryReactorClock()
        self.agent = Agent(reactor=self.reactor)
        self.pumps: list[iosim.IOPump] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Any:
        d = self.agent.request(method, uri, headers, bodyProducer)
        host, port, factory, _, _ = self.reactor.tcpClients.pop()
        server_address = IPv4Address("TCP", "127.0.0.1", port)
        client_address = IPv4Address("TCP", "127.0.0.1", 31337)
        server = self.site.buildProtocol(client_address)
        server_transport = iosim.FakeTransport(server, isServer=True, hostAddress=server_address,
                                               peerAddress=client_address)
        client = factory.buildProtocol(None)
        client_transport = iosim.FakeTransport(client, isServer=False, hostAddress=client_address,
                                               peerAddress=server_address)
        self.pumps.append(iosim.connect(server, server_transport, client, client_transport, greet=False))
        self.flush()
        return d

    def flush(self) -> None:
        """Carry what each side wrote, and what the site answers at the end
        of the turn, until nothing moves."""
        for _ in range(50):
            moved = False
            for pump in self.pumps:
                moved = pump.pump() or moved
            self.clock.advance(0)
            moved = any(pump.pump() for pump in self.pumps) or moved
            if not moved:
                break
        self.pumps = [p for p in self.pumps if not (p.clientIO.disconnected and p.serverIO.disconnected)]


class SiteTreq(HTTPClient):
    """treq, its requests answered by a listener's site in memory."""

    def __init__(self, site: HttpSite, clock: Clock) -> None:
        self.site_agent = _SiteAgent(site, clock)
        super().__init__(self.site_agent, data_to_body_producer=BytesBody)

    def flush(self) -> None:
        self.site_agent.flush()

    content = staticmethod(treq.content)
    text_content = staticmethod(treq.text_content)
    json_content = staticmethod(treq.json_content)


@attrs.frozen
class Answer:
    status: int
    headers: Any  # twisted.web.http_headers.Headers
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode())
        return values[0].decode("latin-1") if values else None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()

    def json(self) -> Any:
        assert self.content_type == "application/json", self
        return json.loads(self.body)

    def decoded(self) -> tuple[int, Any]:
        """The status and the body as ``call`` answers them: JSON decoded, else bytes."""
        return self.status, json.loads(self.body) if self.content_type == "application/json" else self.body


@attrs.define(eq=False)
class Node:
    """A node's domain objects over *store* and *broker*, wired as the
    service wires them (notifier.service.make_service), with one end of
    the turn for the hubs' fan-out and whatever site a test adds."""

    store: Store
    broker: Broker
    clock: Clock
    config: CentersConfig = attrs.field(factory=CentersConfig)
    make_epoch: Callable[[], str] = new_epoch
    watcher: Watcher | None = None
    outboxes: Outboxes | None = None
    stats: Stats = attrs.field()
    turn: EndOfTurn = attrs.field()
    centers: Centers = attrs.field(init=False)
    publishers: Publishers = attrs.field(init=False)
    publishing: Publishing = attrs.field(init=False)
    events: BrokerEvents = attrs.field(init=False)

    @stats.default
    def _stats(self) -> Stats:
        return Stats(started=self.clock.seconds())

    @turn.default
    def _turn(self) -> EndOfTurn:
        return EndOfTurn(self.clock)

    def __attrs_post_init__(self) -> None:
        self.centers = Centers(self.store, self.broker, self.config, self.clock, self.stats, self.turn,
                               self.watcher, self.make_epoch)
        self.publishers = Publishers(self.store, self.broker, self.clock, self.centers, self.outboxes)
        self.publishing = Publishing(self.broker, self.centers, self.stats)
        self.events = BrokerEvents(self.centers, self.publishers, self.outboxes)

    async def sweep(self) -> list[tuple[str, str]]:
        """The service's periodic sweep (``notifier.domain.centers.sweep``)."""
        return await sweep(self.publishers, self.centers)


class Api:
    """An ApiApp over a MemoryStore and a Clock, and a StubTreq to call it.

    The store's calls complete at once, so every answer is ready as soon as
    the in-memory connection is flushed, and no reactor runs.
    """

    def __init__(self, start: float = START, webhooks: Callable[[Clock, Stats], Any] | None = None,
                 **sections: dict[str, Any]) -> None:
        self.clock = Clock()
        self.clock.advance(start)
        self.config = parse_config(config_text("sqlite::memory:", **sections))
        self.store = MemoryStore()
        self.broker = LocalBroker(self.clock)
        self.stats = Stats(started=self.clock.seconds())
        #: The webhooks' outboxes, if the test makes them (``webhooks(clock, stats)``).
        self.webhooks = webhooks(self.clock, self.stats) if webhooks is not None else None
        self.node = Node(self.store, self.broker, self.clock, self.config.centers, outboxes=self.webhooks,
                         stats=self.stats)
        self.centers, self.publishers = self.node.centers, self.node.publishers
        self.publishing, self.turn = self.node.publishing, self.node.turn
        self.metrics = Metrics(self.publishers, self.centers, self.stats, self.clock)
        self.app = ApiApp(self.publishers, self.centers, self.publishing, self.config, self.clock, self.metrics,
                          first_use=self.broker.first_use)
        self.http = SiteTreq(api_site(self.app, self.config, self.clock, turn=self.turn), self.clock)

    def request(
        self, method: str, path: str, body: bytes | str | None = None, *,
        auth: tuple[str, str] | None = None, admin: str | None = None,
        authorization: str | None = None, headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if auth is not None:
            sent["Authorization"] = basic(*auth)
        if admin is not None:
            sent["Authorization"] = f"Bearer {admin}"
        if authorization is not None:
            sent["Authorization"] = authorization
        data = body.encode() if isinstance(body, str) else body
        d = self.http.request(method, "http://127.0.0.1:8081" + path, data=data, headers=sent)
        self.http.flush()
        response = result_of(d)
        content = self.http.content(response)
        self.http.flush()
        self.clock.advance(0)  # the fan-out of what the request published
        return Answer(response.code, response.headers, result_of(content))

    def admin(self, method: str, path: str, body: Any = None) -> Answer:
        data = json.dumps(body) if body is not None else None
        return self.request(method, path, data, admin=ADMIN_TOKEN)

    def add_publisher(self, name: str) -> tuple[str, str]:
        answer = self.admin("POST", "/admin/v1/publishers", {"name": name})
        assert answer.status == 201, answer
        return name, answer.json()["secret"]

    def put_center(self, auth: tuple[str, str], name: str, options: Any = None) -> Answer:
        data = json.dumps(options) if options is not None else None
        return self.request("PUT", f"/api/v1/centers/{name}", data, auth=auth)

    def publish(self, auth: tuple[str, str], center: str, text: str | bytes,
                content_type: str | None = "text/plain; charset=utf-8") -> Answer:
        headers = {"Content-Type": content_type} if content_type is not None else {}
        return self.request("POST", f"/api/v1/centers/{center}/messages", text, auth=auth, headers=headers)

    def hub(self, publisher: str, center: str) -> Hub:
        return result_of(Deferred.fromCoroutine(self.centers.hub(publisher, center)))

    def retained(self, publisher: str, center: str, cursor: str) -> tuple[list[Message], bool]:
        """The messages a subscriber resuming after *cursor* is given, and whether complete."""
        prepared, recovered = self.hub(publisher, center).retained_after(cursor)
        return [p.message for p in prepared], recovered


class Recorder:
    """A subscriber as a hub sees it: the batches delivered to it, and why it
    was closed. With *hub* and *leave_on_delivery*, it leaves while being
    delivered to."""

    def __init__(self, transport_name: str = "websocket", *, hub: Hub | None = None,
                 leave_on_delivery: bool = False) -> None:
        self.transport_name = transport_name
        self.batches: list[Batch] = []
        self.closed: list[str] = []
        self.hub = hub
        self.leave = leave_on_delivery

    @property
    def delivered(self) -> list[str]:
        """The text of every message delivered, in order."""
        return [message.data for batch in self.batches for message in batch.messages]

    def deliver(self, batch: Batch) -> None:
        self.batches.append(batch)
        if self.leave and self.hub is not None:
            self.hub.unsubscribe(self)

    def close(self, reason: str) -> None:
        self.closed.append(reason)



class Told(Recorder):
    """A subscriber that carries presence items."""

    tells_presence = True

    def __init__(self) -> None:
        super().__init__("websocket")
        self.items: list[dict[str, Any]] = []

    def present(self, item: Any) -> None:
        self.items.append(item.body)

# the public listener's app in memory

PUBLIC = "http://127.0.0.1:8080"


def fired(d: Any) -> bool:
    """Whether *d* has its result (a Deferred chained to another may be
    "called" and still waiting)."""
    box: list[Any] = []

    def seen(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(seen)
    return bool(box)


class Listener:
    """The public app over the centers of an in-memory :class:`Api`."""

    def __init__(self, **sections: dict[str, Any]) -> None:
        self.api = Api(**sections)
        self.auth = self.api.add_publisher("site")
        assert self.api.put_center(self.auth, "news").status == 201
        factory = websocket_factory(65536, self.api.centers.dropped)
        self.app = PublicApp(self.api.publishers, self.api.centers, self.api.config, self.api.clock, factory)
        self.http = SiteTreq(public_site(self.app, self.api.config, self.api.clock, turn=self.api.turn),
                             self.api.clock)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        """The Deferred response of a GET (not flushed)."""
        d = self.http.get(PUBLIC + path, headers=headers or {})
        self.http.flush()
        return d

    def publish(self, text: str) -> str:
        answer = self.api.publish(self.auth, "news", text)
        assert answer.status == 201, answer
        self.http.flush()
        return answer.json()["id"]

    def body(self, response: Any) -> bytes:
        d = self.http.content(response)
        self.http.flush()
        return result_of(d)
