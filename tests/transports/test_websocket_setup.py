"""Opening a WebSocket: Autobahn's debug line describing each connection's
configuration, and the coloured method names of its debug lines, are
made only when debug lines are logged."""

from __future__ import annotations

import pprint
import socket
import time
from collections import deque
from typing import Any

import autobahn.util
import pytest
import pytest_twisted
import txaio
from autobahn.websocket.protocol import TrafficStats, WebSocketServerProtocol
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet import endpoints, reactor, tcp
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher

from notifier.domain.hub import Hub
from notifier.domain.model import Center
from notifier.end_of_turn import EndOfTurn
from notifier.http.listeners import public_site
from notifier.transports.websocket import WebSocketSubscriber, bound, websocket_factory
from tests.raw import client_frame, close_code, connect, raw_websocket, server_frames
from tests.support import running, setup_site, until


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_the_configuration_is_formatted_only_for_a_debug_line_logged(monkeypatch: Any) -> None:
    formatted: list[object] = []
    named: list[object] = []
    valued: list[object] = []
    real = pprint.PrettyPrinter.pformat
    real_hltype = autobahn.util.hltype
    real_hlval = autobahn.util.hlval

    def counted(self: pprint.PrettyPrinter, value: object) -> str:
        formatted.append(value)
        return real(self, value)

    def hltype(value: object) -> str:
        named.append(value)
        return real_hltype(value)

    def hlval(value: object, **kwargs: Any) -> str:
        valued.append(value)
        return real_hlval(value, **kwargs)

    async def ping_and_go(client: Any) -> None:
        # Autobahn logs each read and the connection lost, with values.
        client.send(client_frame(0x9, b"are you there"))
        await until(lambda: (0xA, b"are you there") in client.frames, 5, "the pong")
        client.client.transport.loseConnection()
        hub = daemon.service.centers.loaded("site", "news")
        await until(lambda: not hub.subscribers, 5, "the subscriber to leave")

    monkeypatch.setattr(pprint.PrettyPrinter, "pformat", counted)
    monkeypatch.setattr(autobahn.util, "hltype", hltype)
    monkeypatch.setattr(autobahn.util, "hlval", hlval)
    async with running() as daemon:
        await setup_site(daemon)
        assert txaio.get_global_log_level() != "debug"
        await ping_and_go(await raw_websocket(daemon.public_port, "/sub/site/news"))
        assert formatted == [] and named == [] and valued == []

        logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            logged.append(formatEvent(event))

        txaio.set_global_log_level("debug")
        globalLogPublisher.addObserver(observe)
        try:
            await ping_and_go(await raw_websocket(daemon.public_port, "/sub/site/news"))
        finally:
            globalLogPublisher.removeObserver(observe)
            txaio.set_global_log_level("info")
        assert formatted, "not formatted for a debug line that is logged"
        assert named, "no method named for a debug line that is logged"
        assert valued, "no value shown for a debug line that is logged"
        assert any("autoPingInterval" in line for line in logged)
        assert any("connectionMade" in line for line in logged)
        assert any("connection established for peer" in line and "127.0.0.1" in line for line in logged)
        assert any("dropping connection" in line.lower() or "connection lost" in line.lower()
                   or "connectionLost" in line for line in logged)


KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
#: Opening handshakes, as sent: what the subscriber opens on itself, and what
#: it leaves to Autobahn; either way the answer is Autobahn's, to the byte.
HANDSHAKES = {
    "a browser's": [b"Origin: http://127.0.0.1:8080", KEY, b"Sec-WebSocket-Version: 13"],
    "no origin": [KEY, b"Sec-WebSocket-Version: 13"],
    "origin null": [b"Origin: null", KEY, b"Sec-WebSocket-Version: 13"],
    "a subprotocol offered": [KEY, b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Protocol: chat, superchat"],
    "compression offered": [KEY, b"Sec-WebSocket-Version: 13",
                            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
    "a malformed origin": [b"Origin: not a url", KEY, b"Sec-WebSocket-Version: 13"],
    "version 8": [KEY, b"Sec-WebSocket-Version: 8"],
    "version 99": [KEY, b"Sec-WebSocket-Version: 99"],
    "a bad key": [b"Sec-WebSocket-Key: short==", b"Sec-WebSocket-Version: 13"],
}


async def _opening(port: int, extra: list[bytes], connection: bytes = b"Upgrade") -> bytes:
    client = await connect(port)
    # A ping right behind the head, in the same packet: read once open.
    ping = client_frame(0x9, b"hello")
    client.send(b"\r\n".join([b"GET /sub/site/news HTTP/1.1", b"Host: 127.0.0.1", b"Upgrade: websocket",
                              b"Connection: " + connection, *extra]) + b"\r\n\r\n" + ping)
    await client.wait_for(lambda data: b"\r\n\r\n" in data and (not data.startswith(b"HTTP/1.1 101")
                                                                 or len(data.split(b"\r\n\r\n", 1)[1]) >= 7))
    client.transport.loseConnection()
    return b"\r\n".join(line for line in bytes(client.data).split(b"\r\n") if not line.startswith(b"Date: "))


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_the_subscriber_opens_as_autobahn_would_or_leaves_it_to_autobahn(monkeypatch: Any) -> None:
    async with running() as daemon:
        await setup_site(daemon)
        cases = [(name, extra, b"Upgrade") for name, extra in HANDSHAKES.items()]
        cases.append(("Connection: keep-alive, Upgrade", HANDSHAKES["a browser's"], b"keep-alive, Upgrade"))
        ours = {name: await _opening(daemon.public_port, extra, connection) for name, extra, connection in cases}
        opened: list[bool] = []

        def autobahn_only(self: WebSocketSubscriber, headers: Any, rest: bytes) -> bool:
            opened.append(self.plain_key(headers) is not None)  # what it would have done itself
            return False

        monkeypatch.setattr(WebSocketSubscriber, "open_at_once", autobahn_only)
        theirs = {name: await _opening(daemon.public_port, extra, connection) for name, extra, connection in cases}
    assert ours == theirs
    # The plain ones were opened by the subscriber itself, the others left to Autobahn.
    assert opened == [True, True, False, True, True, False, False, False, False, True]
    opened_answer = ours["a browser's"]
    assert opened_answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in opened_answer  # RFC 6455's example
    assert server_frames(opened_answer.split(b"\r\n\r\n", 1)[1]) == [(0xA, b"hello")]  # the ping's pong
    assert ours["version 99"].startswith(b"HTTP/1.1 400") and ours["origin null"].startswith(b"HTTP/1.1 400")


def _subscriber(factory: Any) -> WebSocketSubscriber:
    hub = Hub(Center("site", "news", False, None, None, 1.0), "e1", 10, time.time)
    protocol: WebSocketSubscriber = bound(factory, [hub], "raw", [None]).buildProtocol(None)
    return protocol


def test_each_connection_has_the_factory_s_options() -> None:
    # As class attributes of the factory's own class, rather than copied by
    # Autobahn onto each connection: all of them, and those set again later.
    factory = websocket_factory(1024, lambda hub: None, max_frame_bytes=777)

    def opened() -> WebSocketSubscriber:
        protocol = _subscriber(factory)
        protocol.makeConnection(StringTransport())
        return protocol

    first = opened()
    assert first.maxFramePayloadSize == 777 and first.closeHandshakeTimeout == 2 and first.autoPingInterval == 0
    for name in WebSocketServerProtocol.CONFIG_ATTRS:
        assert getattr(first, name) == getattr(factory, name), name
    assert first.perMessageCompressionAccept([]) is None  # a function stays a function
    factory.setProtocolOptions(closeHandshakeTimeout=5)
    assert opened().closeHandshakeTimeout == 5 and first.closeHandshakeTimeout == 2
    factory.resetProtocolOptions()
    assert opened().maxFramePayloadSize == 0


def test_a_connection_is_set_up_as_autobahn_sets_it_up() -> None:
    factory = websocket_factory(1024, lambda hub: None)
    ours, theirs = _subscriber(factory), _subscriber(factory)
    count = factory.countConnections
    ours.makeConnection(StringTransport())
    assert factory.countConnections == count + 1
    theirs.transport = StringTransport()
    before = set(vars(theirs))
    WebSocketServerProtocol._connectionMade(theirs)  # Autobahn's own
    made = set(vars(theirs)) - before
    assert len(made) >= 30, made
    per_connection = (deque, TrafficStats, Utf8Validator)
    for name in made:
        theirs_value, ours_value = getattr(theirs, name), getattr(ours, name)
        if isinstance(theirs_value, per_connection):
            assert type(ours_value) is type(theirs_value) and name in vars(ours), name
        else:
            assert type(ours_value) is type(theirs_value) and ours_value == theirs_value, name
    # What each connection has of its own is its own.
    other = _subscriber(factory)
    other.makeConnection(StringTransport())
    assert other.send_queue is not ours.send_queue and other.utf8validator is not ours.utf8validator


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_text_from_the_client_is_checked_for_utf8() -> None:
    # A client's text is dropped, but must be UTF-8 text all the same
    # (Autobahn's validator, made when a text frame first comes): text in
    # several frames is taken, and what is not UTF-8 gets the connection
    # closed with 1007, as Autobahn fails a connection.
    async with running() as daemon:
        await setup_site(daemon)
        client = await raw_websocket(daemon.public_port, "/sub/site/news")
        snowman = "fine, thanks ☃".encode()
        client.send(client_frame(0x1, snowman[:-2], fin=False) + client_frame(0x0, snowman[-2:])
                    + client_frame(0x9, b"still there?"))
        await until(lambda: (0xA, b"still there?") in client.frames, 5, "the pong")
        assert not client.client.done
        client.send(client_frame(0x1, b"\xff\xfe not text"))
        assert await client.client.wait_closed(5)
        assert close_code(client.frames) == 1007


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_tcp_nodelay_comes_from_the_listening_socket(monkeypatch: Any) -> None:
    # Autobahn sets TCP_NODELAY on every WebSocket; the daemon's listening
    # sockets have it, which the connections they accept inherit, so a
    # plain TCP subscriber is spared the call. On a listener without it,
    # each connection still sets it.
    calls: list[object] = []
    real = tcp.Server.setTcpNoDelay

    def counted(self: tcp.Server, enabled: bool) -> None:
        calls.append(self)
        real(self, enabled)

    monkeypatch.setattr(tcp.Server, "setTcpNoDelay", counted)
    async with running() as daemon:
        await setup_site(daemon)
        for port in (daemon.service.public_port, daemon.service.api_port):
            assert port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        hub = daemon.service.centers.loaded

        async def subscriber(port_number: int) -> Any:
            client = await raw_websocket(port_number, "/sub/site/news")
            await until(lambda: hub("site", "news") is not None and hub("site", "news").subscribers, 5, "it")
            (made,) = hub("site", "news").subscribers
            return client, made

        client, made = await subscriber(daemon.public_port)
        assert made.transport not in calls
        assert made.transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        # Its details, made when asked, are those Autobahn makes.
        local = client.local_port
        assert made.peer == made.transport_details.peer == f"tcp4:127.0.0.1:{local}"
        assert not made.transport_details.is_secure and made.transport_details.is_server
        client.client.transport.loseConnection()
        await until(lambda: not hub("site", "news").subscribers, 5, "the subscriber to leave")

        site = public_site(daemon.service.public, daemon.service.config, reactor, turn=EndOfTurn(reactor))
        listening = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        try:
            client, made = await subscriber(listening.getHost().port)
            assert calls.count(made.transport) == 1
            assert made.transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            client.client.transport.loseConnection()
        finally:
            await listening.stopListening()
