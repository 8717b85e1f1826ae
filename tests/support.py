"""The test harness: a daemon running in this process and the calls a
publisher makes to it, clients of every transport, the api listener's app in
memory, and waits that are always bounded."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import attrs
import jwt
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from treq.testing import StubTreq
from twisted.internet import endpoints, reactor, ssl
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from notifier.api import ApiApp
from notifier.backends.interfaces import Broker, Store
from notifier.backends.local import LocalBroker
from notifier.centers import Centers, new_epoch, sweep
from notifier.config import CentersConfig, parse_config
from notifier.hub import Batch, Hub, Watcher
from notifier.metrics import Metrics
from notifier.model import Message
from notifier.publishers import Outboxes, Publishers
from notifier.publishing import BrokerEvents, Publishing
from notifier.service import NotifierService, make_service
from notifier.stats import Stats
from notifier.turns import EndOfTurn
from tests.memory_store import MemoryStore

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"

#: How long any one exchange with a daemon may take, in seconds.
WAIT = 15

TEXT = {"Content-Type": "text/plain; charset=utf-8"}

#: The request signature scheme (docs/security.rst).
SCHEME = "Notifier-HMAC-SHA256"


# waiting, always bounded


def sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def bounded(awaitable: Deferred[Any] | Coroutine[Any, Any, Any], seconds: float = WAIT) -> Deferred[Any]:
    """*awaitable* (a Deferred or a coroutine), failing after *seconds*."""
    d = awaitable if isinstance(awaitable, Deferred) else Deferred.fromCoroutine(awaitable)
    return d.addTimeout(seconds, reactor)


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "the condition") -> None:
    """Poll *predicate* every 20 ms until it holds; fail after *timeout* seconds."""
    for _ in range(int(timeout / 0.02) + 1):
        if predicate():
            return
        await sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


async def eventually(attempt: Callable[[], Awaitable[Any]], accept: Callable[[Any], bool],
                     seconds: float = 5.0, every: float = 0.1) -> Any:
    """``attempt()`` until ``accept(result)``, for at most *seconds*; the accepted result."""
    deadline = reactor.seconds() + seconds
    result = None
    while True:
        result = await attempt()
        if accept(result):
            return result
        if reactor.seconds() >= deadline:
            raise AssertionError(f"not reached within {seconds} s; last: {result!r}")
        await sleep(every)


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired already (like ``successResultOf``)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired: something waited on I/O or time"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


# a daemon in this process


def config_text(store_url: str, **sections: dict[str, Any]) -> str:
    """A configuration on free loopback ports, with *sections* merged in."""
    base: dict[str, dict[str, Any]] = {
        "public": {"endpoint": "tcp:0:interface=127.0.0.1"},
        "api": {"endpoint": "tcp:0:interface=127.0.0.1", "admin_token": ADMIN_TOKEN},
        "store": {"url": store_url},
        "subscribers": {"drain_seconds": 0.2},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@attrs.define
class Daemon:
    """A NotifierService running in this process on free loopback ports."""

    service: NotifierService

    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.service.public_port.getHost().port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.service.public_port.getHost().port}"

    @property
    def public_port(self) -> int:
        return self.service.public_port.getHost().port

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.service.api_port.getHost().port}"

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await call(method, self.api + path, body, admin=ADMIN_TOKEN)

    async def add_publisher(self, name: str) -> str:
        status, body = await self.admin("POST", "/admin/v1/publishers", {"name": name})
        assert status == 201, body
        return body["secret"]


async def start_daemon(store_url: str = "sqlite::memory:", **sections: dict[str, Any]) -> Daemon:
    service = make_service(parse_config(config_text(store_url, **sections)), reactor)
    service.startService()
    await service.ready
    return Daemon(service)


@contextlib.asynccontextmanager
async def running(**sections: dict[str, Any]) -> AsyncIterator[Daemon]:
    """A daemon with *sections* in its configuration, stopped after."""
    daemon = await start_daemon(**sections)
    try:
        yield daemon
    finally:
        if daemon.service.running:
            await daemon.service.stopService()


def server_side(daemon: Daemon, local_port: int, center: str = "news") -> Any:
    """The subscriber object serving the client whose socket is on *local_port*."""
    hub = daemon.service.centers.loaded("site", center)
    assert hub is not None
    for subscriber in hub.subscribers:
        transport = getattr(subscriber, "transport", None) or subscriber.request.channel.transport
        if transport.getPeer().port == local_port:
            return subscriber
    raise AssertionError(f"no subscriber for the client on port {local_port}")


def small_send_buffer(subscriber: Any) -> None:
    """Fix the kernel send buffer of *subscriber*'s connection at 64 KiB.

    On loopback Linux grows it up to ``tcp_wmem``'s maximum (4 MiB or more)
    even toward a peer that reads nothing, which would swallow most of what a
    test publishes before the daemon's own buffering is ever involved.
    """
    transport = getattr(subscriber, "transport", None) or subscriber.request.channel.transport
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)


def rss() -> int:
    """This process's resident memory, in bytes (the daemon runs in it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# the HTTP API, as a publisher and an operator call it


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def call(
    method: str, url: str, body: Any = None, *, auth: tuple[str, str] | None = None,
    admin: str | None = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
) -> tuple[int, Any]:
    """One HTTP request, bounded by ``WAIT``; the status and the decoded JSON body (or bytes)."""
    sent = dict(headers or {})
    if auth is not None:
        sent["Authorization"] = basic(*auth)
    if admin is not None:
        sent["Authorization"] = f"Bearer {admin}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return await bounded(_exchange(method, url, data, sent))


async def _exchange(method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
    response = await treq.request(method, url, data=data, headers=headers, persistent=False)
    content = await response.content()
    kind = response.headers.getRawHeaders(b"content-type", [b""])[0]
    if kind.startswith(b"application/json"):
        return response.code, json.loads(content)
    return response.code, content


async def make_center(daemon: Any, auth: tuple[str, str], center: str = "news", **options: Any) -> dict[str, Any]:
    """Create *center* with *options* through *daemon*'s api listener; its description."""
    status, body = await call("PUT", f"{daemon.api}/api/v1/centers/{center}", options or None, auth=auth)
    assert status == 201, body
    return body


async def setup_site(daemon: Any, center: str = "news", publisher: str = "site",
                     **options: Any) -> tuple[str, str]:
    """A publisher and one of its centers; the publisher's credentials."""
    auth = (publisher, await daemon.add_publisher(publisher))
    await make_center(daemon, auth, center, **options)
    return auth


async def publish(daemon: Any, auth: tuple[str, str], text: str, center: str = "news",
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Publish *text* to *center*: the status and the decoded answer."""
    return await call("POST", f"{daemon.api}/api/v1/centers/{center}/messages", raw=text.encode(),
                      auth=auth, headers={**TEXT, **(headers or {})})


async def published(daemon: Any, auth: tuple[str, str], text: str, center: str = "news") -> str:
    """Publish *text* to *center*, which must succeed; the message's id."""
    status, body = await publish(daemon, auth, text, center)
    assert status == 201, body
    return body["id"]


async def subscriber_count(daemon: Any, auth: tuple[str, str], center: str = "news") -> int:
    """How many subscribers the api listener counts on *center*."""
    status, body = await call("GET", f"{daemon.api}/api/v1/centers/{center}", auth=auth)
    assert status == 200, body
    return body["subscribers"]


async def admin_stats(daemon: Daemon) -> dict[str, Any]:
    status, body = await daemon.admin("GET", "/admin/v1/stats")
    assert status == 200, body
    return body


async def healthy(daemon: Daemon) -> None:
    """Both listeners answer ``/healthz``."""
    for base in (daemon.public, daemon.api):
        status, body = await call("GET", base + "/healthz")
        assert (status, body) == (200, {"status": "ok"}), base


def expect_json_error(status: int, body: Any, expected: int, code: str | None = None) -> dict[str, Any]:
    """The documented error of status *expected*, as ``call`` decodes it; the decoded body."""
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert code is None or body["error"] == code, body
    return body


# credentials, computed from the documentation rather than by notifier.auth


def sign(secret: str, method: str, target: str, timestamp: int | str, body: bytes) -> str:
    """The documented request signature, computed from its text."""
    signed = f"{method}\n{target}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode("utf-8"), signed.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_header(publisher: str, timestamp: int | str, signature: str) -> str:
    return f"{SCHEME} publisher={publisher}, timestamp={timestamp}, signature={signature}"


def signed_headers(publisher: str, secret: str, method: str, target: str, body: bytes = b"",
                   timestamp: int | None = None, **headers: str) -> dict[str, str]:
    """*headers* and an ``Authorization`` signing exactly this request."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = sign(secret, method, target, timestamp, body)
    return {"Authorization": signature_header(publisher, timestamp, signature), **headers}


def subscriber_token(secret: str, *, lifetime: float | None = 60, key: str | None = None, **claims: Any) -> str:
    """A subscriber token: HS256 with *secret* (or another *key*), expiring in *lifetime* s."""
    if lifetime is not None:
        claims["exp"] = int(time.time() + lifetime)
    return jwt.encode(claims, (key if key is not None else secret).encode("utf-8"), algorithm="HS256")


# WebSocket


class _Client(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.put(payload.decode())

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        self.factory.closed.callback((code, reason))


class WebSocket:
    """A WebSocket client: ``messages`` queue, ``closed`` fires with (code, reason)."""

    def __init__(self, factory: WebSocketClientFactory, protocol: _Client) -> None:
        self.messages: DeferredQueue[str] = factory.messages
        self.closed: Deferred[tuple[int | None, str | None]] = factory.closed
        self.protocol = protocol

    async def next(self, timeout: float = 5) -> str:
        d = self.messages.get()
        d.addTimeout(timeout, reactor)
        return await d

    def close(self) -> None:
        self.protocol.sendClose()


async def websocket(url: str, port: int, headers: dict[str, str] | None = None,
                    authority: ssl.Certificate | None = None) -> WebSocket:
    """A WebSocket open on 127.0.0.1:*port*; over TLS trusting *authority* when given."""
    factory = WebSocketClientFactory(url, headers=headers or {})
    factory.protocol = _Client
    factory.messages = DeferredQueue()
    factory.opened = Deferred()
    factory.closed = Deferred()
    endpoint: Any = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if authority is not None:
        endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS("127.0.0.1", trustRoot=authority), endpoint)
    await bounded(endpoint.connect(factory))
    opened = factory.opened
    opened.addTimeout(5, reactor)
    protocol = await opened
    return WebSocket(factory, protocol)


async def opened(ws: WebSocket) -> dict[str, Any]:
    """The first frame of a ``format=json`` WebSocket: where it starts."""
    frame = json.loads(await ws.next())
    assert set(frame) == {"cursor", "recovered", "lost"}, frame
    return frame


def handshake_headers() -> dict[str, str]:
    """The headers of a WebSocket opening handshake, for treq."""
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }


_markers = itertools.count(1)


async def nothing_more(ws: WebSocket, daemon: Any, auth: tuple[str, str], center: str = "news",
                       as_json: bool = False, marker: str | None = None) -> None:
    """No message is pending on *ws*: the next one is a *marker* published now
    (by default a new one each time, short enough for centers that take small
    messages only)."""
    marker = marker if marker is not None else f"marker {next(_markers)}"
    await published(daemon, auth, marker, center)
    received = await ws.next()
    assert (json.loads(received)["data"] if as_json else received) == marker


# Server-Sent Events


class _EventStreamProtocol(Protocol):
    """HTTP/1.0 (so the stream is not chunked) and the SSE parser of the spec."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.head: Deferred[tuple[int, dict[bytes, bytes]]] = Deferred()
        self.events: DeferredQueue[dict[str, str]] = DeferredQueue()
        self.comments = 0
        self.ended: Deferred[None] = Deferred()
        self._buffer = b""
        self._in_body = False
        self._event: dict[str, str] = {}

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if not self._in_body:
            if b"\r\n\r\n" not in self._buffer:
                return
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head.split(b"\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            self._in_body = True
            self.head.callback((int(status_line.split()[1]), headers))
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._line(line.decode())

    def _line(self, line: str) -> None:
        if line == "":
            if self._event:
                event = self._event
                if "data" in event:
                    event["data"] = event["data"][:-1]
                self.events.put(event)
            self._event = {}
        elif line.startswith(":"):
            self.comments += 1
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._event["data"] = self._event.get("data", "") + value + "\n"
            else:
                self._event[name] = value

    def connectionLost(self, reason: Any = None) -> None:
        if not self.head.called:
            self.head.errback(ConnectionError("closed before the answer"))
        self.ended.callback(None)


class EventSource:
    """A Server-Sent Events client over a raw socket."""

    def __init__(self, protocol: _EventStreamProtocol, status: int, headers: dict[bytes, bytes]) -> None:
        self.protocol = protocol
        self.status = status
        self.headers = headers
        self.ended = protocol.ended

    @property
    def comments(self) -> int:
        return self.protocol.comments

    async def next(self, timeout: float = 5) -> dict[str, str]:
        d = self.protocol.events.get()
        d.addTimeout(timeout, reactor)
        return await d

    def close(self) -> None:
        self.protocol.transport.loseConnection()


async def event_source(port: int, path: str, headers: dict[str, str] | None = None) -> EventSource:
    lines = [f"GET {path} HTTP/1.0", "Host: 127.0.0.1", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    protocol = _EventStreamProtocol(("\r\n".join(lines) + "\r\n\r\n").encode())
    await endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    head = protocol.head
    head.addTimeout(5, reactor)
    status, received = await head
    return EventSource(protocol, status, received)


# the api listener's app in memory

#: The in-memory clock starts here, so that times in answers are recognisable.
START = 1_700_000_000.25


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
        """The service's periodic sweep (``notifier.centers.sweep``)."""
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
        self.http = StubTreq(self.app.resource())

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
