"""One connection of a listener (notifier.http.connection, notifier.http.request),
byte for byte: what it reads, what it refuses and how, in what order it
answers, when it stops reading, its deadlines, and a connection handed to
a WebSocket with what followed the upgrade's head.

Each connection is a site's protocol on a StringTransport, its time a
Clock, its app a stand-in that records the requests it is given and
answers each with what it read (or as the test says)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.resource import Resource
from zope.interface import provider

from notifier import __version__
from notifier.domain.errors import NotifierError
from notifier.end_of_turn import EndOfTurn
from notifier.http.batching import QUEUED_BYTES
from notifier.http.connection import MAX_FIELDS, MAX_HEAD, MAX_PIPELINED, HttpConnection, HttpSite
from notifier.http.request import NOT_DONE_YET, Request
from notifier.http.web import KleinSeam
from notifier.sockets import LINGER_SECONDS, PerPeerLimit
from tests.support.tls import self_signed

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HOST = IPv4Address("TCP", "127.0.0.1", 8080)
#: The Clock's time when a connection is made.
START = 1000.0
SERVER = b"Server: notifier/" + __version__.encode() + b"\r\n"
NOSNIFF = b"X-Content-Type-Options: nosniff\r\n"
JSON = b"Content-Type: application/json", b"Cache-Control: no-store"

Handler = Callable[[Request], "bytes | int | Deferred[Any]"]


# the harness


class Wire(StringTransport):
    """A connection's transport: what was sent (``written()``), closed
    (``disconnecting``), half-closed to linger (``half_closed``) or cut
    (``aborted``). Bytes from the client go to ``protocol``, whichever
    protocol the connection belongs to by then."""

    protocol: Any

    def __init__(self) -> None:
        super().__init__(hostAddress=HOST, peerAddress=PEER)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.half_closed = False
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.half_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def written(self) -> bytes:
        """Every byte sent."""
        return bytes(self.io.getvalue())


def echo(request: Request) -> bytes:
    """The stand-in app's answer: the request line and the body it read."""
    return b"%s %s|%s" % (request.method, request.uri, request.body())


class App:
    """The listener's app: it records every request, and answers each with
    the handler of its path, else with ``echo``."""

    def __init__(self, **routes: Handler) -> None:
        self.routes = {b"/" + path.encode(): handler for path, handler in routes.items()}
        self.requests: list[Request] = []

    def serve(self, request: Request) -> bytes | int | Deferred[Any]:
        self.requests.append(request)
        return self.routes.get(request.path, echo)(request)

    @property
    def paths(self) -> list[bytes]:
        return [request.path for request in self.requests]


class Wired:
    """One connection of a site over a :class:`Wire`."""

    def __init__(self, app: App | None = None, **options: Any) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.app = app if app is not None else App()
        self.site = HttpSite(self.app, self.clock, turn=EndOfTurn(self.clock), **options)
        self.protocol = self.site.buildProtocol(PEER)
        self.wire = Wire()
        self.wire.protocol = self.protocol
        self.protocol.makeConnection(self.wire)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def send(self, data: bytes) -> None:
        """*data* from the client, and the end of the reactor's turn."""
        self.wire.protocol.dataReceived(data)
        self.clock.advance(0)

    def sent(self) -> bytes:
        """What was sent, without the ``Date`` lines."""
        return re.sub(rb"\r\nDate: [^\r\n]*", b"", self.wire.written())

    def take(self) -> bytes:
        """What was sent since last taken, without the ``Date`` lines."""
        sent = self.sent()
        self.wire.clear()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        return sent

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @property
    def reading(self) -> bool:
        """Whether the connection reads its transport (not paused)."""
        return self.wire.producerState == "producing"

    @property
    def closed(self) -> bool:
        """Closed, once what was sent is sent: not the transport's producer
        any more (TLS closes only without one); or half-closed, lingering
        (a refusal: what its client still sends is read and dropped)."""
        return (self.wire.disconnecting or self.wire.half_closed) and self.wire.producer is None \
            and not self.wire.aborted

    def lose(self) -> None:
        self.wire.protocol.connectionLost(Failure(ConnectionDone()))


def get(target: str = "/a", *fields: str, method: str = "GET", version: str = "HTTP/1.1",
        host: bool = True) -> bytes:
    lines = [f"{method} {target} {version}", *(["Host: x"] if host else []), *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(target: str = "/p", body: bytes = b"hello", *fields: str, version: str = "HTTP/1.1") -> bytes:
    return get(target, f"Content-Length: {len(body)}", *fields, method="POST", version=version) + body


def answer(body: bytes, *fields: bytes, status: bytes = b"200 OK", close: bool = False,
           length: bool = True) -> bytes:
    """An answer as sent (no ``Date``): *fields* in the order set."""
    lines = [b"HTTP/1.1 " + status + b"\r\n"]
    if close:
        lines.append(b"Connection: close\r\n")
    lines.append(SERVER)
    lines += [field + b"\r\n" for field in fields]
    if length:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    return b"".join(lines) + NOSNIFF + b"\r\n" + body


def error(status: bytes, code: str, message: str, *fields: bytes, close: bool = False) -> bytes:
    """A handler's JSON error as sent."""
    body = json.dumps({"error": code, "message": message}).encode()
    return answer(body, *fields, *JSON, status=status, close=close)


def refused(status: bytes, code: str, message: str) -> bytes:
    """A refusal of what never became a request for the app, as sent."""
    body = json.dumps({"error": code, "message": message}).encode()
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n" % len(body) + NOSNIFF + b"\r\n" + body)


BAD_REQUEST = refused(b"400 Bad Request", "bad_request", "malformed HTTP request")
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Waiting:
    """A handler whose answers wait: each request gets a Deferred of its
    own; those cancelled are recorded."""

    def __init__(self) -> None:
        self.answers: list[Deferred[Any]] = []
        self.cancelled: list[Deferred[Any]] = []

    def __call__(self, request: Request) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(self.cancelled.append)
        self.answers.append(d)
        return d


class Gate:
    """A site's body gate: its bound, and a verdict made by *verdict*
    (``None``: no look-up); it records what it was asked."""

    def __init__(self, limit: int = 1000, verdict: Callable[[], Deferred[bool] | None] = lambda: None) -> None:
        self.limit = limit
        self.verdict = verdict
        self.asked: list[tuple[bytes, int | None, bool]] = []
        self.verdicts: list[Deferred[bool] | None] = []

    def __call__(self, request: Request, length: int | None, in_hand: bool) -> tuple[int, Deferred[bool] | None]:
        self.asked.append((request.path, length, in_hand))
        verdict = self.verdict()
        self.verdicts.append(verdict)
        return self.limit, verdict


def pending() -> Deferred[bool]:
    return Deferred()


def judged(request: Request) -> bytes:
    """A handler that says how the body was judged, as an api handler
    would: 413 past its bound, 401 refused from the head."""
    if request.body_too_large:
        raise NotifierError("too large", code="too_large", status=413)
    if request.body_refused:
        raise NotifierError("no such publisher", code="unauthorized", status=401)
    return echo(request)


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    """The events logged meanwhile."""
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def test_the_site_makes_a_connection_of_its_own() -> None:
    site = HttpSite(App(), Clock(), turn=EndOfTurn(Clock()))
    connection = site.buildProtocol(PEER)
    assert isinstance(connection, HttpConnection) and connection.site is site and connection.addr == PEER


# answers on the wire


def test_a_request_is_answered_with_its_length_and_the_fields_of_every_answer() -> None:
    wired = Wired()
    wired.send(get("/a?b=1"))
    assert wired.wire.written().count(b"\r\nDate: ") == 1
    assert wired.sent() == answer(b"GET /a?b=1|")
    (request,) = wired.app.requests
    assert (request.method, request.uri, request.path, request.args) == (b"GET", b"/a?b=1", b"/a", {b"b": [b"1"]})
    assert wired.reading and not wired.wire.disconnecting


def test_what_a_request_reads_of_its_head() -> None:
    wired = Wired()
    wired.send(b"GET /sub/n%65ws/x%2Fy?a=1&a=2&b=%41 HTTP/1.1\r\nHost: x\r\nX-Name: one\r\n"
               b"accept: a\r\nAccept: b\r\n\r\n")
    (request,) = wired.app.requests
    assert request.segments == [b"sub", b"news", b"x/y"]
    assert request.args == {b"a": [b"1", b"2"], b"b": [b"A"]}
    # Names lower-cased, a repeated field joined; as they came for a protocol that reads them again.
    assert request.headers == {b"host": b"x", b"x-name": b"one", b"accept": b"a, b"}
    assert request.getHeader(b"X-NAME") == b"one"
    assert request.fields == [(b"Host", b"x"), (b"X-Name", b"one"), (b"accept", b"a"), (b"Accept", b"b")]
    assert request.peer == PEER and request.clientproto == b"HTTP/1.1"


def test_an_absolute_target_is_read_as_its_path() -> None:
    wired = Wired()
    wired.send(get("http://example.org:8080/sub/news?x=1"))
    assert wired.app.requests[0].uri == b"/sub/news?x=1"
    assert wired.sent() == answer(b"GET /sub/news?x=1|")


def test_a_head_not_whole_yet_is_not_answered() -> None:
    wired = Wired()
    whole = get("/a")
    wired.send(whole[:-1])
    assert wired.app.requests == [] and wired.sent() == b""
    wired.send(whole[-1:])
    assert wired.sent() == answer(b"GET /a|")


def test_a_head_request_is_answered_with_the_length_and_no_body() -> None:
    wired = Wired(App(a=lambda request: b"hello"))
    # The next answer follows the head at once: no body came between.
    wired.send(get("/a", method="HEAD") + get("/b"))
    assert wired.sent() == answer(b"", b"Content-Length: 5", length=False) + answer(b"GET /b|")
    assert not wired.wire.disconnecting


def test_connection_close_is_answered_then_closed_and_what_followed_is_not_read() -> None:
    wired = Wired()
    wired.send(get("/a", "Connection: close") + get("/b"))
    assert wired.sent() == answer(b"GET /a|", close=True)
    assert wired.closed and wired.app.paths == [b"/a"]
    wired.send(get("/c"))
    assert wired.app.paths == [b"/a"] and wired.sent() == answer(b"GET /a|", close=True)


class Client(Protocol):
    """What a client received, and why its connection ended."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


def test_connection_close_over_tls_is_answered_then_closed(tmp_path: Path) -> None:
    # TLS closes only once its connection has no producer.
    key, cert, pem = self_signed(tmp_path)
    server_options = ssl.PrivateCertificate.loadPEM(Path(key).read_text() + Path(cert).read_text()).options()
    client_options = ssl.optionsForClientTLS("127.0.0.1", trustRoot=ssl.Certificate.loadPEM(pem))
    clock = Clock()
    site = HttpSite(App(), clock, turn=EndOfTurn(clock))
    server = TLSMemoryBIOFactory(server_options, False, site, clock=clock).buildProtocol(PEER)
    client = Client()
    client_side = TLSMemoryBIOFactory(client_options, True, Factory.forProtocol(lambda: client),
                                      clock=clock).buildProtocol(HOST)
    server_transport = iosim.FakeTransport(server, isServer=True, hostAddress=HOST, peerAddress=PEER)
    client_transport = iosim.FakeTransport(client_side, isServer=False, hostAddress=PEER, peerAddress=HOST)
    pump = iosim.connect(server, server_transport, client_side, client_transport, greet=False)
    assert client.transport is not None
    client.transport.write(get("/a", "Connection: close") + get("/b"))
    for _ in range(10):
        pump.pump()
        clock.advance(0)
    assert re.sub(rb"\r\nDate: [^\r\n]*", b"", client.received) == answer(b"GET /a|", close=True)
    assert client.lost is not None and client.lost.check(ConnectionDone)
    assert server_transport.disconnected


def test_http_1_0_is_answered_then_closed() -> None:
    wired = Wired()
    wired.send(get("/a", version="HTTP/1.0", host=False))
    assert wired.app.requests[0].clientproto == b"HTTP/1.0"
    assert wired.sent() == answer(b"GET /a|", close=True)
    assert wired.closed


def test_http_1_0_that_asks_to_keep_alive_is_told_it_is_kept() -> None:
    wired = Wired()
    for n in range(2):
        wired.send(get(f"/{n}", "Connection: keep-alive", version="HTTP/1.0"))
        head, _, body = wired.take().partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[:2] == [b"HTTP/1.1 200 OK", b"Connection: keep-alive"], head
        assert body == b"GET /%d|" % n
    assert not wired.closed


def test_keep_alive_goes_on_serving() -> None:
    wired = Wired()
    for n in range(3):
        wired.send(get(f"/{n}"))
        assert wired.take() == answer(b"GET /%d|" % n)
    assert not wired.wire.disconnecting and wired.app.paths == [b"/0", b"/1", b"/2"]


def streaming(request: Request) -> int:
    request.setHeader(b"content-type", b"text/event-stream")
    request.write(b"first")
    return NOT_DONE_YET


def test_a_streamed_answer_is_chunked_on_http_1_1() -> None:
    wired = Wired(App(s=streaming))
    wired.send(get("/s"))
    head = answer(b"", b"Content-Type: text/event-stream", b"Transfer-Encoding: chunked", length=False)
    assert wired.take() == head + b"5\r\nfirst\r\n"
    request = wired.app.requests[0]
    request.write(b"")  # nothing: no chunk, which would end the answer
    request.write(b"second part")
    assert wired.take() == b"b\r\nsecond part\r\n"
    request.finish()
    assert wired.take() == b"0\r\n\r\n"
    wired.send(get("/after"))
    assert wired.take() == answer(b"GET /after|") and not wired.wire.disconnecting


def test_a_streamed_answer_on_http_1_0_ends_with_the_connection() -> None:
    wired = Wired(App(s=streaming))
    wired.send(get("/s", "Connection: keep-alive", version="HTTP/1.0"))
    head = answer(b"", b"Content-Type: text/event-stream", close=True, length=False)
    assert wired.take() == head + b"first"
    request = wired.app.requests[0]
    request.write(b"second")
    assert wired.take() == b"second" and not wired.wire.disconnecting
    request.finish()
    assert wired.take() == b"" and wired.closed


def test_a_streamed_answer_to_head_is_its_head_only() -> None:
    wired = Wired(App(s=streaming))
    wired.send(get("/s", method="HEAD"))
    head = answer(b"", b"Content-Type: text/event-stream", b"Transfer-Encoding: chunked", length=False)
    request = wired.app.requests[0]
    request.write(b"second")
    request.finish()
    wired.send(get("/after"))
    assert wired.sent() == head + answer(b"GET /after|")


def test_a_stream_s_producer_is_paused_while_the_client_reads_nothing() -> None:
    class Producer:
        def __init__(self) -> None:
            self.told: list[str] = []

        def pauseProducing(self) -> None:
            self.told.append("pause")

        def resumeProducing(self) -> None:
            self.told.append("resume")

        def stopProducing(self) -> None:
            self.told.append("stop")

    producer = Producer()

    def stream(request: Request) -> int:
        request.registerProducer(producer, True)
        request.write(b"x")
        return NOT_DONE_YET

    wired = Wired(App(s=stream))
    wired.send(get("/s"))
    wired.protocol.pauseProducing()  # the transport's buffer is full
    wired.protocol.resumeProducing()
    wired.lose()
    assert producer.told == ["pause", "resume", "stop"]


def test_a_stream_registered_while_the_client_reads_nothing_starts_paused() -> None:
    told: list[str] = []

    class Producer:
        def pauseProducing(self) -> None:
            told.append("pause")

    waiting = Waiting()
    wired = Wired(App(s=waiting))
    wired.send(get("/s"))
    wired.protocol.pauseProducing()
    wired.app.requests[0].registerProducer(Producer(), True)
    assert told == ["pause"]


# heads refused


def test_a_head_of_exactly_its_bound_is_read_one_byte_more_is_431() -> None:
    # The bound counts the target and each field's name and value, and 4 for ": " and CRLF.
    value = "v" * (MAX_HEAD - len("/") - len("Host") - len("x") - 4 - len("X") - 4)
    wired = Wired()
    wired.send(get("/", f"X: {value}"))
    assert wired.take().startswith(b"HTTP/1.1 200 OK\r\n")
    wired = Wired()
    wired.send(get("/", f"X: {value}v"))
    assert wired.sent() == refused(b"431 Request Header Fields Too Large", "head_too_large",
                                   f"the request head is larger than {MAX_HEAD} bytes or {MAX_FIELDS} fields")
    assert wired.closed and wired.app.requests == []


def test_a_target_past_the_bound_is_431_before_the_head_ends() -> None:
    wired = Wired()
    wired.send(b"GET /" + b"a" * MAX_HEAD)  # no end of line yet
    assert wired.sent().startswith(b"HTTP/1.1 431 ") and wired.closed


def test_as_many_fields_as_the_bound_are_read_one_more_is_431() -> None:
    fields = ["Host: x"] + [f"X-{n}: v" for n in range(MAX_FIELDS - 1)]
    wired = Wired()
    wired.send(get("/", *fields, host=False))
    assert len(wired.app.requests[0].fields) == MAX_FIELDS
    assert wired.take().startswith(b"HTTP/1.1 200 OK\r\n")
    wired = Wired()
    wired.send(get("/", *fields, "X-Last: v", "X-Not-Read: v", host=False)[:-4])  # before the head ends
    assert wired.sent() == refused(b"431 Request Header Fields Too Large", "head_too_large",
                                   f"the request head is larger than {MAX_HEAD} bytes or {MAX_FIELDS} fields")
    assert wired.closed and wired.app.requests == []


@pytest.mark.parametrize("name", ["Host", "host", "Authorization", "Content-Type", "Upgrade", "Origin",
                                  "Idempotency-Key", "Last-Event-ID", "Sec-WebSocket-Key"])
def test_a_field_given_twice_that_must_be_once_is_400(name: str) -> None:
    wired = Wired()
    wired.send(get("/a", *([] if name.lower() == "host" else [f"{name}: a"]), f"{name}: b"))
    # The field named as its second coming was sent.
    assert wired.sent() == refused(b"400 Bad Request", "bad_request", f"header {name} given twice")
    assert wired.closed and wired.app.requests == []


def test_requests_read_before_a_refused_head_are_answered_first() -> None:
    wired = Wired()
    wired.send(get("/a") + get("/b", "Host: y"))
    assert wired.sent() == answer(b"GET /a|") + refused(b"400 Bad Request", "bad_request",
                                                        "header Host given twice")
    assert wired.closed and wired.app.paths == [b"/a"]


@pytest.mark.parametrize("coding", ["gzip", "gzip, chunked", "identity", "deflate"])
def test_a_transfer_coding_other_than_chunked_is_501(coding: str) -> None:
    wired = Wired()
    wired.send(get("/p", f"Transfer-Encoding: {coding}", method="POST") + b"0\r\n\r\n")
    assert wired.sent() == refused(b"501 Not Implemented", "not_implemented",
                                   "the only transfer coding read is chunked")
    assert wired.closed and wired.app.requests == []


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET /a HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"GET /a HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET ftp:/a HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_a_malformed_request_is_400_and_closed(data: bytes) -> None:
    wired = Wired()
    wired.send(data)
    assert wired.sent() == BAD_REQUEST
    lingering(wired)  # its client may be sending still: read and dropped a while
    assert wired.app.requests == []


def test_options_star_is_answered_with_what_is_allowed() -> None:
    wired = Wired()
    wired.send(get("*", method="OPTIONS") + get("/a"))
    allowed = answer(b"", b"Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS")  # an empty 200, as twisted.web's
    assert wired.sent() == allowed + answer(b"GET /a|")
    assert wired.app.paths == [b"/a"]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_another_method_on_star_is_405(method: str) -> None:
    wired = Wired()
    wired.send(get("*", "Content-Length: 0", method=method))
    assert wired.sent() == error(b"405 Method Not Allowed", "method_not_allowed", f"{method} is not allowed on *",
                                 b"Allow: OPTIONS")
    assert wired.app.requests == [] and not wired.wire.disconnecting


@pytest.mark.parametrize("target", ["/a%FF", "/%C3%28/b", "/ok/%ED%A0%80"])
def test_a_path_that_is_not_utf_8_is_400_invalid_url(target: str) -> None:
    wired = Wired()
    wired.send(get(target) + get("/b"))
    assert wired.sent() == error(b"400 Bad Request", "invalid_url", "the URL path is not UTF-8 text") \
        + answer(b"GET /b|")
    assert wired.app.paths == [b"/b"]


def test_escapes_of_utf_8_text_in_a_path_are_read() -> None:
    wired = Wired()
    wired.send(get("/caf%C3%A9"))
    assert wired.app.requests[0].segments == ["café".encode()]


# handlers that fail


def test_a_handler_that_raises_is_500_and_the_connection_goes_on(logged: list[LogEvent]) -> None:
    def broken(request: Request) -> bytes:
        raise KeyError("no")

    wired = Wired(App(broken=broken))
    wired.send(get("/broken") + get("/b"))
    assert wired.sent() == error(b"500 Internal Server Error", "internal_error", "the server failed to answer") \
        + answer(b"GET /b|")
    assert [event["log_failure"].type for event in logged if "log_failure" in event] == [KeyError]


def test_a_handler_that_raises_a_notifier_error_is_answered_with_it() -> None:
    def gone(request: Request) -> bytes:
        raise NotifierError("no such center", code="not_found", status=404)

    wired = Wired(App(gone=gone))
    wired.send(get("/gone"))
    assert wired.sent() == error(b"404 Not Found", "not_found", "no such center")


def test_an_answer_that_fails_later_is_500_or_its_error(logged: list[LogEvent]) -> None:
    waiting = Waiting()
    wired = Wired(App(w=waiting))
    wired.send(get("/w") + get("/w"))
    waiting.answers[0].errback(ValueError("store"))
    wired.advance(0)
    waiting.answers[1].errback(NotifierError("later", code="unavailable", status=503))
    wired.advance(0)
    assert wired.sent() == error(b"500 Internal Server Error", "internal_error", "the server failed to answer") \
        + error(b"503 Service Unavailable", "unavailable", "later")
    assert [event["log_failure"].type for event in logged if "log_failure" in event] == [ValueError]


def test_a_client_gone_while_its_answer_waits_cancels_it() -> None:
    waiting = Waiting()
    wired = Wired(App(w=waiting))
    wired.send(get("/w"))
    finished = wired.app.requests[0].notifyFinish()
    failures: list[Failure] = []
    finished.addErrback(failures.append)
    wired.lose()
    assert len(failures) == 1 and failures[0].check(ConnectionDone)
    assert waiting.cancelled == waiting.answers
    assert wired.app.requests[0].finished and wired.sent() == b""


def test_notify_finish_fires_once_the_answer_is_sent() -> None:
    waiting = Waiting()
    wired = Wired(App(w=waiting))
    wired.send(get("/w"))
    done: list[object] = []
    wired.app.requests[0].notifyFinish().addCallback(done.append)
    assert done == []
    waiting.answers[0].callback(b"now")
    assert done == [None] and wired.sent() == answer(b"now")


# bodies


def test_a_body_is_read_with_its_request() -> None:
    wired = Wired()
    wired.send(post("/p", b"hello") + post("/q", b""))
    assert wired.sent() == answer(b"POST /p|hello") + answer(b"POST /q|")


def test_a_body_in_pieces_is_answered_once_whole() -> None:
    wired = Wired()
    whole = post("/p", b"in pieces")
    head_end = whole.index(b"\r\n\r\n") + 4
    wired.send(whole[:head_end])
    for byte in whole[head_end:-1]:
        wired.send(bytes([byte]))
        assert wired.sent() == b"" and wired.app.requests == []
    wired.send(whole[-1:])
    assert wired.sent() == answer(b"POST /p|in pieces")


def test_pipelined_requests_one_cut_in_its_body_are_answered_as_they_are_whole() -> None:
    wired = Wired()
    three = post("/1", b"one") + post("/2", b"two") + post("/3", b"thr33")
    wired.send(three[:-2])
    assert wired.take() == answer(b"POST /1|one") + answer(b"POST /2|two")
    wired.send(three[-2:])
    assert wired.take() == answer(b"POST /3|thr33") and wired.app.paths == [b"/1", b"/2", b"/3"]


def test_a_chunked_body_is_read() -> None:
    wired = Wired()
    wired.send(get("/p", "Transfer-Encoding: chunked", method="POST") + b"5\r\nhello\r\n")
    assert wired.sent() == b""
    wired.send(b"6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n" + get("/b"))
    assert wired.sent() == answer(b"POST /p|hello world") + answer(b"GET /b|")


def test_a_chunked_body_past_the_bound_is_read_and_dropped() -> None:
    wired = Wired(App(p=judged), max_body_bytes=10)
    wired.send(get("/p", "Transfer-Encoding: chunked", method="POST") + b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
               + get("/b"))
    assert wired.sent() == error(b"413 Request Entity Too Large", "too_large", "too large") + answer(b"GET /b|")
    assert wired.app.requests[0].body() == b""


def test_a_body_of_exactly_the_bound_is_read() -> None:
    wired = Wired(App(p=judged), max_body_bytes=5)
    wired.send(post("/p", b"hello"))
    assert wired.sent() == answer(b"POST /p|hello")


@pytest.mark.parametrize("expect", [False, True])
def test_a_body_past_the_bound_by_its_length_is_answered_from_the_head_and_lingers(expect: bool) -> None:
    wired = Wired(App(p=judged), max_body_bytes=5)
    wired.send(post("/p", b"hello!", *(["Expect: 100-continue"] if expect else []))[:-6])  # the head only
    assert wired.sent() == error(b"413 Request Entity Too Large", "too_large", "too large", close=True)
    request = wired.app.requests[0]
    assert request.body_too_large and request.body() == b""
    lingering(wired)


def lingering(wired: Wired) -> None:
    """*wired* was answered and closed lingering: half-closed, what its
    client still sends read and dropped, cut after ``LINGER_SECONDS``."""
    assert wired.wire.half_closed and wired.wire.producer is None and not wired.wire.disconnecting
    assert wired.wire.protocol is not wired.protocol  # reads and drops
    answered, requests = wired.sent(), list(wired.app.requests)
    wired.send(b"hello!" + get("/next"))
    assert wired.sent() == answered and wired.app.requests == requests
    wired.advance(LINGER_SECONDS - 0.001)
    assert not wired.wire.aborted
    wired.advance(0.001)
    assert wired.wire.aborted


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("framing", ["Content-Length: 3", "Transfer-Encoding: chunked"])
def test_a_body_on_a_bodiless_method_is_400_and_lingers(method: str, framing: str) -> None:
    wired = Wired(bodiless=frozenset({b"GET", b"HEAD"}))
    wired.send(get("/a") + get("/b", framing, "Expect: 100-continue", method=method))
    assert wired.sent() == answer(b"GET /a|") + refused(b"400 Bad Request", "body_not_allowed",
                                                        "this request takes no body")
    assert wired.app.paths == [b"/a"]
    lingering(wired)


def test_a_bodiless_method_with_an_empty_body_is_answered() -> None:
    wired = Wired(bodiless=frozenset({b"GET", b"HEAD"}))
    wired.send(get("/a", "Content-Length: 0") + post("/p", b"x"))
    assert wired.sent() == answer(b"GET /a|") + answer(b"POST /p|x")


def test_100_continue_is_sent_for_a_body_still_to_come() -> None:
    wired = Wired()
    head = post("/p", b"hello", "Expect: 100-continue")[:-5]
    wired.send(head)
    assert wired.take() == CONTINUE
    wired.send(b"hello")
    assert wired.take() == answer(b"POST /p|hello")
    # Not for a body that came with its head, nor on HTTP/1.0.
    wired.send(post("/q", b"x", "Expect: 100-continue"))
    assert wired.take() == answer(b"POST /q|x")
    wired.send(post("/r", b"x", "Expect: 100-continue", version="HTTP/1.0")[:-1])
    assert wired.take() == b""


def test_a_pending_verdict_holds_the_body_until_admitted_then_100_continue() -> None:
    gate = Gate(verdict=pending)
    wired = Wired(body_gate=gate)
    wired.send(post("/p", b"hello", "Expect: 100-continue")[:-5])
    assert gate.asked[-1] == (b"/p", 5, False)  # whether to read it: not whole with its head
    assert wired.sent() == b"" and not wired.reading
    wired.send(b"hello" + get("/b"))  # what the transport had read: kept, not read
    assert wired.sent() == b"" and wired.app.requests == []
    verdict = gate.verdicts[-1]
    assert verdict is not None
    verdict.callback(True)
    wired.advance(0)
    assert wired.sent() == CONTINUE + answer(b"POST /p|hello") + answer(b"GET /b|")
    assert wired.reading and not wired.wire.disconnecting


@pytest.mark.parametrize("refusal", ["false", "failure"])
def test_a_body_refused_is_answered_from_the_head_without_100_continue_and_lingers(refusal: str) -> None:
    gate = Gate(verdict=pending)
    wired = Wired(App(p=judged), body_gate=gate)
    wired.send(post("/p", b"hello", "Expect: 100-continue")[:-5])
    verdict = gate.verdicts[-1]
    assert verdict is not None
    if refusal == "false":
        verdict.callback(False)
    else:
        verdict.errback(NotifierError("store away", code="unavailable", status=503))
    wired.advance(0)
    assert wired.sent() == error(b"401 Unauthorized", "unauthorized", "no such publisher", close=True)
    request = wired.app.requests[0]
    assert request.body_refused and not request.body_too_large and request.body() == b""
    lingering(wired)


def test_a_verdict_given_at_once_needs_no_pause() -> None:
    gate = Gate(verdict=lambda: succeed(False))
    wired = Wired(App(p=judged), body_gate=gate)
    wired.send(post("/p", b"hello")[:-5])
    assert wired.sent() == error(b"401 Unauthorized", "unauthorized", "no such publisher", close=True)
    assert wired.wire.half_closed
    gate = Gate(verdict=lambda: succeed(True))
    wired = Wired(App(p=judged), body_gate=gate)
    wired.send(post("/p", b"hello", "Expect: 100-continue")[:-5])
    assert wired.take() == CONTINUE and wired.reading
    wired.send(b"hello")
    assert wired.take() == answer(b"POST /p|hello")


VERDICTS: dict[str, Callable[[], Deferred[bool]]] = {
    "pending": pending, "refused": lambda: succeed(False), "failed": lambda: fail(NotifierError("store away"))}


@pytest.mark.parametrize("verdict", list(VERDICTS))
def test_a_body_that_came_with_its_head_is_read_whatever_the_verdict(verdict: str) -> None:
    # The handler checks the credentials itself: no look-up is awaited.
    gate = Gate(verdict=VERDICTS[verdict])
    wired = Wired(App(p=judged), body_gate=gate)
    wired.send(post("/p", b"hello") + get("/b"))
    assert gate.asked == [(b"/p", 5, True)]
    assert wired.take() == answer(b"POST /p|hello") + answer(b"GET /b|")
    assert wired.reading
    wired.send(get("/c"))
    assert wired.take() == answer(b"GET /c|")


def test_the_gate_s_bound_is_the_body_s_bound() -> None:
    gate = Gate(limit=3)
    wired = Wired(App(p=judged), body_gate=gate)
    # Come with the head: read, dropped, answered; the connection goes on.
    wired.send(post("/p", b"four") + post("/p", b"abc"))
    assert wired.take() == error(b"413 Request Entity Too Large", "too_large", "too large") \
        + answer(b"POST /p|abc")
    # Still to come: answered from the head.
    wired.send(post("/p", b"four")[:-4])
    assert wired.sent() == error(b"413 Request Entity Too Large", "too_large", "too large", close=True)
    assert wired.wire.half_closed


def test_a_chunked_body_past_the_gate_s_bound_is_read_and_dropped() -> None:
    gate = Gate(limit=3)
    wired = Wired(App(p=judged), body_gate=gate)
    wired.send(get("/p", "Transfer-Encoding: chunked", method="POST"))
    assert gate.asked[-1] == (b"/p", None, False)
    wired.send(b"4\r\nfour\r\n0\r\n\r\n")
    assert wired.sent() == error(b"413 Request Entity Too Large", "too_large", "too large")
    assert not wired.wire.disconnecting


def test_a_verdict_for_a_connection_gone_is_ignored() -> None:
    gate = Gate(verdict=pending)
    wired = Wired(body_gate=gate)
    wired.send(post("/p", b"hello")[:-5])
    wired.lose()
    verdict = gate.verdicts[-1]
    assert verdict is not None
    verdict.callback(True)
    wired.advance(0)
    assert wired.sent() == b"" and wired.app.requests == []


# pipelining and a client that reads nothing


def test_pipelined_requests_are_answered_one_at_a_time_in_order() -> None:
    waiting = Waiting()
    wired = Wired(App(w=waiting))
    wired.send(get("/w") + get("/b"))
    # The second is not even given to the app while the first waits.
    assert wired.app.paths == [b"/w"] and wired.sent() == b""
    wired.send(get("/c"))
    assert wired.app.paths == [b"/w"]
    waiting.answers[0].callback(b"first")
    wired.advance(0)
    assert wired.sent() == answer(b"first") + answer(b"GET /b|") + answer(b"GET /c|")
    assert wired.app.paths == [b"/w", b"/b", b"/c"]


def test_requests_kept_behind_one_answered_pause_reading_past_their_bound() -> None:
    waiting = Waiting()
    wired = Wired(App(w=waiting))
    wired.send(get("/w"))
    request = get("/" + "x" * 100)
    count, rest = divmod(MAX_PIPELINED, len(request))
    wired.send(request * count + request[:rest])  # exactly the bound kept
    assert wired.reading
    wired.send(request[rest:rest + 1])  # one byte more
    assert not wired.reading and wired.app.paths == [b"/w"]
    waiting.answers[0].callback(b"first")
    wired.advance(0)
    assert wired.reading
    wired.send(request[rest + 1:])
    sent = wired.sent()
    assert sent.startswith(answer(b"first")) and sent.count(b"HTTP/1.1 200 OK\r\n") == count + 2
    assert len(wired.app.requests) == count + 2


def test_a_client_that_reads_nothing_is_answered_no_further_until_it_does() -> None:
    wired = Wired()
    wired.send(get("/a"))
    assert wired.take() == answer(b"GET /a|")
    wired.protocol.pauseProducing()  # the transport's buffer is full
    assert not wired.reading
    wired.send(get("/b") + get("/c"))  # read before the transport paused
    assert wired.sent() == b"" and wired.app.paths == [b"/a"]
    wired.protocol.resumeProducing()
    wired.advance(0)
    assert wired.reading
    assert wired.take() == answer(b"GET /b|") + answer(b"GET /c|")


def test_requests_read_in_one_send_wait_while_the_client_reads_nothing() -> None:
    waiting = Waiting()
    wired = Wired(App(w=waiting))
    wired.send(get("/w") + get("/b") + get("/c"))
    wired.protocol.pauseProducing()
    waiting.answers[0].callback(b"first")
    wired.advance(0)
    assert wired.take() == answer(b"first") and wired.app.paths == [b"/w"]
    wired.protocol.resumeProducing()
    wired.advance(0)
    assert wired.take() == answer(b"GET /b|") + answer(b"GET /c|")


def test_connection_close_is_honoured_after_the_client_caught_up() -> None:
    wired = Wired()
    wired.protocol.pauseProducing()
    wired.send(get("/a") * 3 + get("/z", "Connection: close") + get("/never"))
    assert wired.sent() == b""
    wired.protocol.resumeProducing()
    wired.advance(0)
    assert wired.sent() == answer(b"GET /a|") * 3 + answer(b"GET /z|", close=True)
    assert wired.closed and wired.app.paths == [b"/a"] * 3 + [b"/z"]


def test_a_body_that_came_while_the_client_read_nothing_is_read_once_it_does() -> None:
    wired = Wired(max_body_bytes=100_000)
    whole = post("/p", b"y" * 40000)
    wired.protocol.pauseProducing()
    wired.send(whole[:20000])
    wired.protocol.resumeProducing()
    wired.advance(0)
    assert wired.reading
    wired.send(whole[20000:])
    assert wired.sent() == answer(b"POST /p|" + b"y" * 40000)


def test_answers_wait_for_the_end_of_the_turn_unless_past_the_bound() -> None:
    wired = Wired(App(big=lambda request: b"x" * 1000), at_end_of_turn=True)
    wired.wire.protocol.dataReceived(get("/a"))
    assert wired.sent() == b""  # at the end of the turn
    wired.advance(0)
    assert wired.take() == answer(b"GET /a|")
    # Many at once: sent as they pass the bound, so that a client that
    # reads nothing pauses the connection before it answers more.
    count = 2 * QUEUED_BYTES // 1000
    wired.wire.protocol.dataReceived(get("/big") * count)
    sent = wired.sent()
    assert QUEUED_BYTES < len(sent) < 2 * QUEUED_BYTES and sent.count(b"HTTP/1.1 200 OK\r\n") < count
    wired.advance(0)
    assert wired.sent() == answer(b"x" * 1000) * count


# deadlines


def test_a_head_has_its_deadline_from_its_first_byte() -> None:
    wired = Wired(header_timeout=10)
    whole = get("/a")
    wired.send(whole[:5])
    wired.advance(5)
    wired.send(whole[5:10])  # coming, but slowly
    wired.advance(4.999)
    assert wired.sent() == b""
    wired.advance(0.001)
    assert wired.sent() == refused(b"408 Request Time-out", "header_timeout", "the request head came too slowly")
    assert wired.closed


def test_the_head_deadline_starts_again_with_each_request() -> None:
    wired = Wired(header_timeout=10)
    wired.send(get("/a"))
    wired.advance(30)  # idle, within the idle timeout
    wired.send(get("/b")[:5])
    wired.advance(9.999)
    assert wired.take() == answer(b"GET /a|")
    wired.send(get("/b")[5:])
    assert wired.take() == answer(b"GET /b|") and not wired.wire.disconnecting


def test_a_head_whose_rest_came_while_another_was_answered_is_not_late() -> None:
    # The time an answer takes is not the client's: the head begun behind
    # it, and finished while it was answered, is read once it is sent.
    waiting = Waiting()
    wired = Wired(App(w=waiting), header_timeout=10)
    wired.send(get("/w") + get("/b")[:5])
    wired.advance(25)
    wired.send(get("/b")[5:])
    waiting.answers[0].callback(b"first")
    wired.advance(0)
    assert wired.sent() == answer(b"first") + answer(b"GET /b|")
    assert not wired.wire.disconnecting


def test_a_body_has_its_deadline_from_the_end_of_its_head() -> None:
    wired = Wired(body_timeout=30, header_timeout=10)
    wired.send(post("/p", b"0123456789")[:-7])
    wired.advance(20)
    wired.send(b"345")
    wired.advance(9.999)
    assert wired.sent() == b""
    wired.advance(0.001)
    assert wired.sent() == refused(b"408 Request Time-out", "body_timeout", "the request body came too slowly")
    assert wired.closed and wired.app.requests == []


def test_a_body_in_time_is_read_and_the_head_deadline_is_not_the_body_s() -> None:
    wired = Wired(body_timeout=30, header_timeout=10)
    wired.send(post("/p", b"0123456789")[:-10])
    wired.advance(29)
    wired.send(b"0123456789")
    assert wired.sent() == answer(b"POST /p|0123456789")


def test_a_stalled_body_is_cut_at_the_idle_timeout_if_that_comes_first() -> None:
    wired = Wired(timeout=5, body_timeout=30)
    wired.send(post("/p", b"0123456789")[:-5])
    wired.advance(4.999)
    assert not wired.wire.disconnecting
    wired.advance(0.001)
    assert wired.closed and wired.sent() == b""


def test_an_idle_connection_is_closed_then_cut_if_it_does_not_go() -> None:
    wired = Wired(timeout=60)
    wired.site.abort_timeout = 15
    wired.send(get("/a"))
    wired.take()
    wired.advance(59.999)
    assert not wired.wire.disconnecting
    wired.advance(0.001)
    assert wired.closed and wired.sent() == b""
    wired.advance(14.999)
    assert not wired.wire.aborted
    wired.advance(0.001)
    assert wired.wire.aborted


def test_an_idle_connection_that_goes_is_not_cut() -> None:
    wired = Wired(timeout=60)
    wired.advance(60)
    assert wired.closed
    wired.lose()
    wired.advance(wired.site.abort_timeout)
    assert not wired.wire.aborted


def test_an_idle_connection_whose_client_reads_nothing_is_cut_at_once() -> None:
    wired = Wired(timeout=60)
    wired.send(get("/a"))
    wired.protocol.pauseProducing()
    wired.advance(60)
    assert wired.wire.aborted


def test_no_idle_timeout_while_a_request_is_answered_then_it_runs_again() -> None:
    waiting = Waiting()
    wired = Wired(App(w=waiting), timeout=60)
    wired.send(get("/w"))
    wired.advance(600)
    assert not wired.wire.disconnecting
    waiting.answers[0].callback(b"late")
    wired.advance(59.999)
    assert wired.sent() == answer(b"late") and not wired.wire.disconnecting
    wired.advance(0.001)
    assert wired.closed


def test_no_idle_timeout_when_it_is_zero() -> None:
    wired = Wired(timeout=0)
    wired.send(get("/a"))
    wired.advance(10 ** 6)
    assert not wired.wire.disconnecting


@pytest.mark.parametrize("slow", [0.0, 15.0])
def test_requests_kept_while_the_client_read_nothing_are_no_slow_head(slow: float) -> None:
    wired = Wired(header_timeout=10, timeout=60)
    wired.protocol.pauseProducing()
    wired.send(get("/a") * 4)
    wired.advance(slow)  # a reader slower than the head deadline
    wired.protocol.resumeProducing()
    wired.advance(0)
    assert wired.take() == answer(b"GET /a|") * 4
    wired.advance(15)  # idle, past the head deadline, within the idle timeout
    assert wired.sent() == b"" and not wired.wire.disconnecting


# a connection handed over


class Taker(Protocol):
    """What a connection is handed to: a WebSocket's protocol, which
    answers the handshake at once (``open_at_once``) or reads the head
    again (``dataReceived``)."""

    def __init__(self, at_once: bool) -> None:
        self.at_once = at_once
        self.opened: tuple[dict[bytes, bytes], bytes] | None = None
        self.received = b""
        self.lost: Failure | None = None

    def open_at_once(self, headers: dict[bytes, bytes], rest: bytes) -> bool:
        self.opened = (dict(headers), rest)
        if self.at_once:
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")  # type: ignore[union-attr]
        return self.at_once

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


class Takers:
    """A protocol factory that records what it makes, and for whom."""

    def __init__(self, at_once: bool) -> None:
        self.at_once = at_once
        self.made: list[tuple[Any, Taker]] = []

    def buildProtocol(self, addr: Any) -> Taker:
        taker = Taker(self.at_once)
        self.made.append((addr, taker))
        return taker


UPGRADE = ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
           "Sec-WebSocket-Version: 13")
FRAME = b"\x89\x8d" + b"\x00" * 4 + b"are you there"  # a masked ping, the mask all zeros


def upgrading(takers: Takers) -> App:
    return App(ws=lambda request: request.take_over(takers))


def test_an_upgrade_taken_over_opens_at_once_with_what_followed_its_head() -> None:
    takers = Takers(at_once=True)
    wired = Wired(upgrading(takers))
    wired.send(get("/ws", *UPGRADE) + FRAME)
    ((addr, taker),) = takers.made
    assert addr == PEER and taker.transport is wired.wire
    assert taker.opened == ({b"host": b"x", b"upgrade": b"websocket", b"connection": b"Upgrade",
                             b"sec-websocket-key": b"dGhlIHNhbXBsZSBub25jZQ==", b"sec-websocket-version": b"13"},
                            FRAME)
    assert taker.received == b"" and wired.sent() == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    handed_over(wired, taker)


def handed_over(wired: Wired, taker: Taker) -> None:
    """The connection is *taker*'s: what comes, its being lost; no timer
    and no producer of the connection's any more."""
    assert wired.wire.protocol is taker and wired.wire.producer is None and wired.reading
    wired.send(b"more")
    assert taker.received.endswith(b"more")
    wired.advance(10 ** 6)  # past every deadline
    assert not wired.wire.disconnecting
    wired.lose()
    assert taker.lost is not None and taker.lost.check(ConnectionDone)


def test_an_upgrade_taken_over_behind_a_connection_counted_for_its_peer_stays_counted() -> None:
    # The wrapper that counts the connection hands what it reads to the
    # protocol taking over, and lets its peer go once it is lost.
    takers = Takers(at_once=True)
    wired = Wired(upgrading(takers))
    limit = PerPeerLimit(wired.site, 1)
    counted = limit.buildProtocol(PEER)
    wire = Wire()
    wire.protocol = counted
    counted.makeConnection(wire)
    assert limit.peers == {"127.0.0.1": 1}
    wire.protocol.dataReceived(get("/ws", *UPGRADE) + FRAME)
    ((_, taker),) = takers.made
    assert wire.protocol is counted and counted.wrappedProtocol is taker
    wire.protocol.dataReceived(b"more")
    assert taker.received == b"more" and wire.written() == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    wire.protocol.connectionLost(Failure(ConnectionDone()))
    assert taker.lost is not None and limit.peers == {}


def test_an_upgrade_taken_over_is_given_its_head_again_when_not_opened_at_once() -> None:
    takers = Takers(at_once=False)
    wired = Wired(upgrading(takers))
    head = b"GET /ws?x=1 HTTP/1.1\r\nhost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    wired.send(head + FRAME)
    ((_, taker),) = takers.made
    assert taker.opened == ({b"host": b"x", b"upgrade": b"websocket", b"connection": b"Upgrade"}, FRAME)
    assert taker.received == head + FRAME and wired.sent() == b""
    handed_over(wired, taker)


def test_an_upgrade_behind_a_plain_request_in_the_same_send_is_taken_over() -> None:
    takers = Takers(at_once=True)
    wired = Wired(upgrading(takers))
    wired.send(get("/a") + get("/ws", *UPGRADE) + FRAME)
    assert wired.app.paths == [b"/a", b"/ws"]
    ((_, taker),) = takers.made
    assert taker.opened is not None and taker.opened[1] == FRAME
    assert wired.sent() == answer(b"GET /a|") + b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    handed_over(wired, taker)


def test_an_upgrade_taken_over_later_gets_all_that_came_meanwhile() -> None:
    takers = Takers(at_once=False)
    waiting = Waiting()
    wired = Wired(App(ws=waiting))
    wired.send(get("/ws", *UPGRADE) + FRAME[:3])
    wired.send(FRAME[3:])
    assert takers.made == [] and wired.sent() == b""
    request = wired.app.requests[0]
    waiting.answers[0].addCallback(lambda _: request.take_over(takers))
    waiting.answers[0].callback(None)
    ((_, taker),) = takers.made
    assert taker.received == request.raw_head() + FRAME
    assert request.raw_head() == get("/ws", *UPGRADE)
    handed_over(wired, taker)


def test_an_upgrade_answered_without_taking_over_is_closed_after_its_answer() -> None:
    def refuse(request: Request) -> bytes:
        raise NotifierError("no such center", code="not_found", status=404)

    wired = Wired(App(ws=refuse))
    wired.send(get("/ws", *UPGRADE) + FRAME + get("/b"))
    assert wired.sent() == error(b"404 Not Found", "not_found", "no such center")
    assert wired.closed and wired.app.paths == [b"/ws"]


# what a hostile client tries: trailers, read-ahead, verdicts, losses, upgrades


def chunked(target: str, *fields: str) -> bytes:
    return get(target, "Transfer-Encoding: chunked", *fields, method="POST")


def test_a_trailer_field_is_never_read_as_a_header() -> None:
    wired = Wired()
    wired.send(chunked("/p", "Authorization: Basic head") + b"5\r\nhello\r\n0\r\n"
               b"Authorization: Basic trailer\r\nHost: elsewhere\r\n\r\n")
    (request,) = wired.app.requests
    assert request.getHeader(b"authorization") == b"Basic head" and request.getHeader(b"host") == b"x"
    assert all(value not in (b"Basic trailer", b"elsewhere") for _, value in request.fields)
    assert wired.take() == answer(b"POST /p|hello")


def test_a_trailer_that_never_ends_is_431_within_the_bound_of_a_head() -> None:
    wired = Wired()
    wired.send(chunked("/p") + b"0\r\nX-T: ")
    for _ in range(8):  # 32 KiB of one field's value, never ended
        wired.send(b"a" * 4096)
        if wired.closed:
            break
    assert wired.sent().startswith(b"HTTP/1.1 431 ") and wired.closed
    assert wired.app.requests == []


def test_a_long_chunked_body_in_many_chunks_is_read_whole() -> None:
    wired = Wired(max_body_bytes=1 << 20)
    body = b"".join(b"1000\r\n" + b"x" * 4096 + b"\r\n" for _ in range(100)) + b"0\r\n\r\n"
    wired.send(chunked("/p") + body)
    (request,) = wired.app.requests
    assert request.body() == b"x" * 409600


def test_a_body_held_while_its_verdict_is_awaited_is_read_once_admitted() -> None:
    gate = Gate(limit=1 << 20, verdict=pending)
    wired = Wired(body_gate=gate, max_body_bytes=1 << 20)
    body = b"x" * 40000
    wired.send(post("/p", body)[:-len(body)])
    for offset in range(0, 20000, 4000):  # more than the read-ahead bound comes meanwhile
        wired.send(body[offset:offset + 4000])
    assert not wired.reading
    gate.verdicts[-1].callback(True)
    wired.advance(0)
    assert wired.reading, "reading stays paused after the verdict"
    wired.send(body[20000:])
    assert wired.take() == answer(b"POST /p|" + body)


def test_what_waits_to_be_read_is_not_served_once_the_connection_is_lost() -> None:
    waiting = Waiting()
    wired = Wired(App(a=waiting))
    wired.send(get("/a"))
    wired.send(get("/b"))  # behind the held answer: kept, not read
    waiting.answers[0].callback(b"done")  # answered in the same turn the connection goes
    wired.lose()
    wired.advance(0)
    assert wired.app.paths == [b"/a"]


def test_a_request_offering_an_upgrade_with_a_body_is_refused() -> None:
    wired = Wired()
    wired.send(post("/p", b"hello world", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c"))
    assert wired.sent() == BAD_REQUEST and wired.app.requests == []


def test_requests_are_read_at_most_a_step_ahead_of_an_answer_that_waits() -> None:
    waiting = Waiting()
    wired = Wired(App(a=waiting))
    wired.send(get("/a") + get("/b") * 3000)  # some 60 KiB at once
    assert wired.app.paths == [b"/a"]
    assert len(wired.protocol.ready) <= 4096 // len(get("/b")) + 1  # what one step holds at most
    waiting.answers[0].callback(b"done")
    for _ in range(50):
        wired.advance(0)
    assert len(wired.app.requests) == 3001 and wired.app.paths[-1] == b"/b"


def test_100_continue_waits_for_the_answers_before_it() -> None:
    waiting = Waiting()
    wired = Wired(App(a=waiting))
    wired.send(get("/a") + post("/p", b"hello", "Expect: 100-continue")[:-5])
    assert wired.take() == b""  # no interim answer before the answer to /a
    waiting.answers[0].callback(b"done")
    wired.advance(0)
    assert wired.take() == answer(b"done") + CONTINUE
    wired.send(b"hello")
    assert wired.take() == answer(b"POST /p|hello")


class _Later(Resource):
    """A twisted.web resource that answers after it returns, with no length."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.requests: list[Any] = []

    def render(self, request: Any) -> int:
        self.requests.append(request)
        return NOT_DONE_YET


def test_an_answer_through_klein_without_a_length_ends_an_http_1_0_connection() -> None:
    later = _Later()
    seam: Any = KleinSeam(later)  # the app of the api listener's requests for Klein
    wired = Wired(seam)
    wired.send(get("/x", "Connection: keep-alive", version="HTTP/1.0"))
    (web,) = later.requests
    web.write(b"some")
    web.finish()
    wired.advance(0)
    head, _, body = wired.sent().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nConnection: close\r\n") and body == b"some"
    assert wired.closed  # else its client could not tell where the answer ends


def test_an_http_1_1_request_without_host_is_400_one_of_http_1_0_is_read() -> None:
    wired = Wired()
    wired.send(get("/a", host=False))
    assert wired.sent() == refused(b"400 Bad Request", "bad_request", "an HTTP/1.1 request has a Host header")
    assert wired.app.requests == []
    wired = Wired()
    wired.send(get("/a", version="HTTP/1.0", host=False))
    assert wired.sent() == answer(b"GET /a|", close=True)


def test_a_field_klein_gives_twice_is_sent_twice() -> None:
    later = _Later()
    seam: Any = KleinSeam(later)
    wired = Wired(seam)
    wired.send(get("/x"))
    (web,) = later.requests
    web.responseHeaders.setRawHeaders(b"set-cookie", [b"a=1", b"b=2"])
    web.setHeader(b"content-length", b"2")
    web.write(b"ok")
    web.finish()
    wired.advance(0)
    head = wired.sent().partition(b"\r\n\r\n")[0]
    assert b"\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n" in head, head
