"""The fence around other libraries' private names (notifier.compat): each
borrowing holds with the installed Twisted and Autobahn, each fallback
gives the same answers the public way, and no other module borrows."""

from __future__ import annotations

import sys
from typing import Any

import autobahn.twisted.websocket
import autobahn.util
import autobahn.websocket.protocol
from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerProtocol
from twisted.internet import abstract, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import MemoryReactor, StringTransport

from notifier import compat
from notifier.transports import backpressure, websocket
from notifier.transports.websocket import WebSocketSubscriber, websocket_factory
from tests import fence
from tests.fence import borrowings

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


# No module but notifier.compat borrows


def test_no_module_but_compat_touches_another_library_s_private_names() -> None:
    walked = {name for name, _ in fence._modules()}
    # The HTTP layer is walked too: its request is made on twisted.web's.
    assert {"notifier.http.connection", "notifier.http.request", "notifier.http.web"} <= walked, walked
    assert borrowings() == []


def test_the_walk_sees_each_kind_of_borrowing_in_compat(monkeypatch: Any) -> None:
    # compat.py itself, not exempt: the kinds it has are found there.
    monkeypatch.setattr(fence, "ALLOWED", set())
    found = {line.split(": ", 1)[1] for line in borrowings() if line.startswith("notifier/compat.py:")}
    assert {"reads ._tempDataBuffer", "reads ._wskey",  # off a library's object
            "names _tempDataBuffer", "names _perMessageCompress",  # by name
            "sets _module.hltype"} <= found, found  # patched into a library's module


#: A package that borrows in every way the walk knows, each line the kind
#: it is reported as.
PROBE = {
    "from twisted.web.http import _QUEUED_SENTINEL": "from twisted.web.http import _QUEUED_SENTINEL",
    "ENCODER = http_headers._nameEncoder": "http_headers._nameEncoder",
    "    http.NOT_FOUND = 404": "sets http.NOT_FOUND",
    "    _optimisticEagerReadSize = 1": "Channel sets _optimisticEagerReadSize",
    "    def _send100Continue(self) -> None:": "Channel overrides _send100Continue",
    "        self._respondToBadRequestAndDisconnect()": "Channel uses _respondToBadRequestAndDisconnect",
    "    return channel._command": "reads ._command",
    '    return getattr(channel, "_dataBuffer")': "names _dataBuffer",
}
PROBE_SOURCE = """\
from twisted.web import http, http_headers
from twisted.web.http import _QUEUED_SENTINEL

ENCODER = http_headers._nameEncoder


def patch() -> None:
    http.NOT_FOUND = 404


class Channel(http.HTTPChannel):
    _optimisticEagerReadSize = 1

    def _send100Continue(self) -> None:
        self._respondToBadRequestAndDisconnect()


def command(channel: http.HTTPChannel) -> bytes:
    return channel._command


def buffered(channel: http.HTTPChannel) -> object:
    return getattr(channel, "_dataBuffer")
"""


def test_the_walk_sees_each_kind_of_borrowing(monkeypatch: Any, tmp_path: Any) -> None:
    # A module's every way of borrowing, in a package the walk is pointed at
    # (what notifier no longer does, such as overriding a private method of
    # twisted.web's HTTP channel, is still found).
    package = tmp_path / "fence_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "borrows.py").write_text(PROBE_SOURCE)
    lines = PROBE_SOURCE.splitlines()
    expected = {f"fence_probe/borrows.py:{lines.index(line) + 1}: {kind}" for line, kind in PROBE.items()}
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(fence, "PACKAGE", package)
    try:
        assert set(borrowings()) == expected
    finally:
        for name in ("fence_probe.borrows", "fence_probe"):
            sys.modules.pop(name, None)


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
    backpressure.send_now(connection, b"frame")
    assert sock.sent == [b"frame"]  # straight to the socket
    monkeypatch.setattr(backpressure, "FAST_SEND", False)
    connection, sock = _tcp()
    backpressure.send_now(connection, b"frame")
    assert sock.sent == [] and compat.temp_data(connection) == [b"frame"]
    connection.doWrite()  # what the reactor does once the socket takes more
    assert b"".join(sock.sent) == b"frame"


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



def test_autobahn_s_message_state_is_what_its_methods_assign() -> None:
    from notifier.pusher.connection import PusherConnection

    assert set(compat.MESSAGE_SLOTS) <= compat._assigned(WebSocketProtocol)
    assert set(compat.MESSAGE_SLOTS) <= set(PusherConnection.__slots__)
