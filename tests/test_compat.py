"""The fence around other libraries' private names (notifier.compat): each
borrowing holds with the installed Twisted and Autobahn, each fallback
gives the same answers the public way, and no other module borrows."""

from __future__ import annotations

import json
from typing import Any

import autobahn.twisted.websocket
import autobahn.util
import autobahn.websocket.protocol
import pytest
from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerProtocol
from twisted.internet import abstract, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from notifier import compat, front, httpserver
from notifier.front import FrontSite, Plain
from notifier.httpserver import Channel, QuietSite
from notifier.transports import pacing, websocket
from notifier.transports.websocket import WebSocketSubscriber, websocket_factory
from tests import fence
from tests.fence import borrowings
from tests.raw import parse_response

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


# No module but notifier.compat borrows


def test_no_module_but_compat_touches_another_library_s_private_names() -> None:
    assert borrowings() == []


def test_the_walk_sees_each_kind_of_borrowing(monkeypatch: Any) -> None:
    # compat.py itself, not exempt: every kind the walk knows is there.
    monkeypatch.setattr(fence, "ALLOWED", set())
    found = {line.split(": ", 1)[1] for line in borrowings() if line.startswith("notifier/compat.py:")}
    assert {"http_headers._nameEncoder",  # off a library's module
            "reads ._tempDataBuffer", "reads ._command",  # off a library's object
            "names _tempDataBuffer", "names _perMessageCompress",  # by name
            "sets _module.hltype"} <= found, found  # patched into a library's module


# Each borrowing holds with the installed versions


def test_every_borrowing_holds_with_the_versions_tested() -> None:
    assert compat.FELL_BACK == []
    assert all(compat.FLAGS.values()), compat.FLAGS


def test_twisted_s_write_buffers() -> None:
    descriptor = abstract.FileDescriptor(reactor=MemoryReactor())  # type: ignore[arg-type]
    descriptor.connected = True
    descriptor.write(b"abc")
    descriptor.write(b"de")
    assert compat.temp_data(descriptor) == [b"abc", b"de"]
    assert compat.temp_data_length(descriptor) == 5
    assert issubclass(tcp.Connection, abstract.FileDescriptor)


@pytest.mark.parametrize("name", [b"access-control-allow-origin", b"content-type", b"x-request-id", b"etag",
                                  b"www-authenticate", b"content-md5", b"notifier-cursor"])
def test_header_names_as_twisted_web_writes_them(name: bytes) -> None:
    assert compat.header_name(name) == compat._public_header_name(name)


def test_an_http_channel_s_request_line_and_buffer() -> None:
    channel = http.HTTPChannel()
    channel.timeOut = None
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"PUT /where?x=1 HTTP/1.1\r\nHost: here\r\nCont")
    assert compat.request_line(channel) == (b"PUT", b"/where?x=1")
    assert compat.request_method(channel) == b"PUT"
    assert compat.line_buffer(channel) == b"Cont"
    assert not compat.transport_waits(channel) and not compat.pipelined_too_much(channel)
    channel.pauseProducing()  # as the transport does when its buffer is full
    assert compat.transport_waits(channel)
    assert isinstance(channel._optimisticEagerReadSize, int) and channel._dataBuffer == []


def test_the_overridden_methods_are_twisted_s_own() -> None:
    for cls, name in ((http.HTTPChannel, "_send100Continue"), (http.HTTPChannel, "_respondToBadRequestAndDisconnect"),
                      (server.Request, "_handleStar")):
        assert callable(getattr(cls, name)), name
        assert name in vars(compat.ChannelHooks if cls is http.HTTPChannel else compat.RequestHooks), name
    # Twisted calls them where notifier expects it.
    assert "_send100Continue" in http.HTTPChannel.allHeadersReceived.__code__.co_names
    assert "_handleStar" in server.Request.process.__code__.co_names


def test_autobahn_s_connection_setup_and_opening() -> None:
    made = set(WebSocketProtocol._connectionMade.__code__.co_names)
    assert set(compat.CONNECTING) <= made
    assert "_wskey" in WebSocketServerProtocol.processHandshake.__code__.co_names
    assert "_onOpen" in WebSocketServerProtocol.succeedHandshake.__code__.co_names
    assert WebSocketSubscriber._perMessageCompress is None  # type: ignore[attr-defined]
    assert WebSocketSubscriber.connectionMade is compat.FastWebSocket.connectionMade  # type: ignore[attr-defined]


def test_autobahn_s_log_colours_are_made_only_when_logged() -> None:
    for module in (autobahn.websocket.protocol, autobahn.twisted.websocket):
        assert module.hltype is compat._hltype_if_logged  # type: ignore[attr-defined]
        assert module.hlval is compat._hlval_if_logged  # type: ignore[attr-defined]
    assert str(compat._hlval_if_logged("x")) == autobahn.util.hlval("x")


# Each fallback gives the same answers


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return -1

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)


def _tcp() -> tuple[tcp.Connection, FakeSocket]:
    sock = FakeSocket()
    connection = tcp.Connection(sock, None, reactor=MemoryReactor())  # type: ignore[arg-type]
    connection.connected = True
    return connection, sock


def test_without_twisted_s_write_buffers_writes_go_through_twisted(monkeypatch: Any) -> None:
    connection, sock = _tcp()
    pacing.send_now(connection, b"frame")
    assert sock.sent == [b"frame"]  # straight to the socket
    monkeypatch.setattr(pacing, "FAST_SEND", False)
    connection, sock = _tcp()
    pacing.send_now(connection, b"frame")
    assert sock.sent == [] and compat.temp_data(connection) == [b"frame"]
    connection.doWrite()  # what the reactor does once the socket takes more
    assert b"".join(sock.sent) == b"frame"


class _Answers(Resource):
    """Answers as the public and api handlers do: headers of theirs, JSON."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"notifier-cursor", b"e-1")
        request.content.seek(0)
        body = request.content.read()
        return json.dumps({"path": request.path.decode(), "body": body.decode()}).encode()


LONG_POLL = b"GET /sub/site/news?timeout=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://a.example\r\n\r\n"
PUBLISH = b"POST /api/v1/centers/news/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello"


def _answer(protocol: Any, data: bytes, site: Any) -> bytes:
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    site.turn.run()
    site.reactor.advance(0)
    protocol.connectionLost(connectionDone)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return b"\r\n".join(line for line in head.split(b"\r\n") if not line.startswith(b"Date: ")) + b"\r\n\r\n" + body


@pytest.mark.parametrize("request_bytes, plain", [
    (LONG_POLL, Plain(b"GET", b"/sub/", _Answers())),
    (PUBLISH, Plain(b"POST", b"/api/v1/centers/", _Answers(), max_body=1000)),
])
def test_the_front_answers_as_twisted_web_without_twisted_s_header_names(
        monkeypatch: Any, request_bytes: bytes, plain: Plain) -> None:
    site = FrontSite(plain.resource, plain, reactor=Clock(), timeout=60)
    fast = _answer(site.buildProtocol(PEER), request_bytes, site)
    web = _answer(QuietSite.buildProtocol(site, PEER), request_bytes, site)
    monkeypatch.setattr(front, "header_name", compat._public_header_name)
    monkeypatch.setattr(front, "_CANONICAL", {})
    public = _answer(site.buildProtocol(PEER), request_bytes, site)
    assert fast == web == public
    assert parse_response(fast)[0] == 200 and b"Access-Control-Allow-Origin: *\r\n" in fast


def test_without_the_channel_s_head_a_body_is_read_then_answered(monkeypatch: Any) -> None:
    asked: list[tuple[bytes, bytes]] = []

    def gate(method: bytes, target: bytes, headers: Headers, length: int | None, in_hand: bool) -> Any:
        asked.append((method, target))
        return 1000, None

    def answer() -> bytes:
        site = QuietSite(_Answers(), body_gate=gate, reactor=Clock())
        return _answer(site.buildProtocol(PEER), PUBLISH, site)

    fast = answer()
    assert asked == [(b"POST", b"/api/v1/centers/news/messages")]
    monkeypatch.setattr(httpserver, "EARLY_GATE", False)
    assert answer() == fast and len(asked) == 1  # read, not asked about first


def test_without_the_channel_s_pacing_pipelined_requests_are_answered_alike(monkeypatch: Any) -> None:
    def answer() -> tuple[int, bytes]:
        """How many of three pipelined requests are answered while the
        client reads nothing, and every answer once it reads."""
        site = QuietSite(_Answers(), reactor=Clock())
        protocol = site.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.pauseProducing()  # as the transport does when its client reads nothing
        protocol.dataReceived(PUBLISH * 3)
        site.turn.run()
        while_waiting = transport.value().count(b"HTTP/1.1 200 OK")
        protocol.resumeProducing()
        site.turn.run()
        site.reactor.advance(0)
        site.turn.run()
        protocol.connectionLost(connectionDone)
        return while_waiting, b"\r\n".join(line for line in transport.value().split(b"\r\n")
                                           if not line.startswith(b"Date: "))

    waited, fast = answer()
    assert waited == 1 and fast.count(b"HTTP/1.1 200 OK") == 3  # the rest once the client reads
    monkeypatch.setattr(httpserver, "transport_waits", compat._never)
    monkeypatch.setattr(httpserver, "pipelined_too_much", compat._never)
    waited, slow = answer()
    assert waited == 3 and slow == fast  # twisted.web answers on, the same answers


def test_without_the_hooks_twisted_web_answers_its_own_way() -> None:
    # A channel and a request as they are when Twisted's names are gone:
    # twisted.web's answers, not notifier's JSON ones.
    bare_channel = type("BareChannel", (Channel,), {
        "_send100Continue": http.HTTPChannel._send100Continue,
        "_respondToBadRequestAndDisconnect": http.HTTPChannel._respondToBadRequestAndDisconnect})
    bare_request = type("BareRequest", (httpserver.BoundedRequest,), {"_handleStar": server.Request._handleStar})
    site = QuietSite(_Answers(), reactor=Clock())
    site.requestFactory = bare_request
    site.protocol = bare_channel  # type: ignore[assignment]
    ours = QuietSite(_Answers(), reactor=Clock())
    star = b"DELETE * HTTP/1.1\r\nHost: x\r\n\r\n"
    assert parse_response(_answer(site.buildProtocol(PEER), star, site))[0] == 405
    assert b"not_allowed" in _answer(ours.buildProtocol(PEER), star, ours)
    expect = PUBLISH.replace(b"Content-Length", b"Expect: 100-continue\r\nContent-Length")
    bare, json_ = _answer(site.buildProtocol(PEER), expect, site), _answer(ours.buildProtocol(PEER), expect, ours)
    assert bare == json_ and bare.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")


HANDSHAKE = {b"host": b"127.0.0.1", b"upgrade": b"websocket", b"connection": b"Upgrade",
             b"sec-websocket-key": b"dGhlIHNhbXBsZSBub25jZQ==", b"sec-websocket-version": b"13",
             b"origin": b"https://a.example"}


def _opened(fast: bool, monkeypatch: Any) -> tuple[bytes, WebSocketSubscriber]:
    monkeypatch.setattr(websocket, "FAST_OPEN", fast)
    factory = websocket_factory(1024, lambda hub: None)
    cls = factory.subscriber_class(WebSocketSubscriber)
    protocol = cls()
    protocol.factory = factory
    protocol.start = ([], [], None)
    monkeypatch.setattr(protocol, "starting_cursor", lambda: b"e-1")
    monkeypatch.setattr(protocol, "onOpen", lambda: None)
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    head = b"GET /sub/site/news HTTP/1.1\r\n" + b"".join(
        name + b": " + value + b"\r\n" for name, value in HANDSHAKE.items()) + b"\r\n"
    if not protocol.open_at_once(HANDSHAKE, b""):
        protocol.dataReceived(head)
    return transport.value(), protocol


def test_without_autobahn_s_handshake_state_autobahn_opens_it(monkeypatch: Any) -> None:
    fast, ours = _opened(True, monkeypatch)
    slow, theirs = _opened(False, monkeypatch)
    assert fast == slow  # the same bytes
    assert fast.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in fast
    for name in ("state", "websocket_version", "websocket_origin", "websocket_protocol_in_use"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours._wskey == theirs._wskey  # type: ignore[attr-defined]
    for protocol in (ours, theirs):
        protocol.connectionLost(connectionDone)


def test_a_fallback_is_logged_at_start(monkeypatch: Any) -> None:
    said: list[dict[str, Any]] = []
    monkeypatch.setattr(compat, "FELL_BACK", ["WebSocket setup"])
    monkeypatch.setattr(compat.log, "info", lambda format, **kw: said.append(kw))
    compat.fell_back()
    assert said == [{"names": "WebSocket setup"}]
    monkeypatch.setattr(compat, "FELL_BACK", [])
    compat.fell_back()
    assert len(said) == 1

