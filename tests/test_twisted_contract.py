"""What notifier relies on inside Twisted and Autobahn, each checked alone.

notifier overrides a few private methods and reads a few private attributes
of Twisted's HTTP channel, request and TCP connection, and writes
Autobahn's frames itself. Each such dependency has a test here that fails
loudly, with its name, when an upgrade changes what it relies on.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import reactor, tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.web import http, resource, server
from twisted.web.http_headers import Headers

from notifier.httpserver import Channel, QuietSite
from notifier.model import Message
from notifier.transports.pacing import Paced, send_now
from notifier.transports.streaming import StreamingSubscriber
from notifier.transports.websocket import json_frame, raw_frame


class _Ok(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.content.seek(0)
        return b"got " + request.content.read()


def _channel(site: QuietSite) -> tuple[Channel, StringTransport]:
    channel = site.buildProtocol(None)
    transport = StringTransport()
    transport.protocol = channel
    channel.makeConnection(transport)
    return channel, transport


def _answer(transport: StringTransport) -> tuple[int, bytes]:
    transport.protocol.site.turn.run()  # the end of the reactor's turn
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_twisted_still_has_what_notifier_overrides_or_reads():
    # Overridden: a malformed request's refusal, OPTIONS/other methods on "*".
    assert callable(getattr(http.HTTPChannel, "_respondToBadRequestAndDisconnect", None))
    assert callable(getattr(http.HTTPChannel, "_send100Continue", None))
    assert callable(getattr(server.Request, "_handleStar", None))
    # Read: the channel's request line while the body comes in.
    channel, _ = _channel(QuietSite(_Ok()))
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n")
    assert (channel._command, channel._path) == (b"POST", b"/x")


def test_a_malformed_request_is_answered_by_the_overridden_refusal():
    channel, transport = _channel(QuietSite(_Ok()))
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: nope\r\n\r\n")
    status, body = _answer(transport)
    assert status == 400 and json.loads(body)["error"] == "bad_request"


def test_a_request_on_star_is_answered_by_the_overridden_handler():
    channel, transport = _channel(QuietSite(_Ok()))
    channel.dataReceived(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n")
    status, body = _answer(transport)
    chunk = body.split(b"\r\n")[1]  # the answer is chunked
    assert status == 405 and json.loads(chunk)["error"] == "method_not_allowed"


def test_the_body_gate_sees_the_request_line_and_headers_before_the_body():
    seen: list[Any] = []

    def gate(method: bytes, target: bytes, headers: Headers, length: int | None,
             in_hand: bool) -> tuple[int, None]:
        seen.append((method, target, headers.getRawHeaders(b"x-who"), length, in_hand))
        return 2, None

    channel, transport = _channel(QuietSite(_Ok(), body_gate=gate))
    # What came after the head is in LineReceiver's _buffer as the head ends.
    channel.dataReceived(b"POST /p?q HTTP/1.1\r\nHost: h\r\nX-Who: me\r\nContent-Length: 2\r\n\r\nhi")
    assert seen == [(b"POST", b"/p?q", [b"me"], 2, True)]
    assert _answer(transport) == (200, b"got hi")


def test_send_now_writes_to_the_socket_of_a_tcp_connection_itself():
    # What it reads of tcp.Connection: TLS, dataBuffer, _tempDataBuffer,
    # socket, connected, disconnecting.
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    connection = tcp.Connection(ours, Protocol(), reactor)
    connection.connected = True
    try:
        for name in ("TLS", "dataBuffer", "_tempDataBuffer", "socket", "disconnecting"):
            assert hasattr(connection, name), name
        send_now(connection, b"straight")
        assert connection.dataBuffer == b"" and connection._tempDataBuffer == []  # not buffered
        assert theirs.recv(100) == b"straight"
    finally:
        ours.close()
        theirs.close()


def test_frames_are_autobahn_s_own():
    message = Message("e-1", "news", "héllo", 1.5)
    assert raw_frame(message) == b"\x81\x06" + "héllo".encode()
    payload = json.loads(json_frame(message)[2:])
    assert payload == {"id": "e-1", "center": "news", "data": "héllo", "ts": 1.5}
    # Closes with 1001 and 4401 go through this, which sendClose does not allow.
    assert callable(getattr(WebSocketServerProtocol, "sendCloseFrame", None))


def test_the_streaming_subscriber_names_nothing_autobahn_has():
    # The WebSocket subscriber is both: a name of ours that Autobahn also
    # defines would replace Autobahn's (its own _send, once, did).
    ours = set(vars(StreamingSubscriber)) | set(vars(Paced))
    theirs = {name for cls in WebSocketServerProtocol.__mro__ for name in vars(cls)}
    shared = {name for name in ours & theirs if not name.startswith("__")}
    # IPushProducer's methods, and what Autobahn leaves to subclasses.
    assert shared <= {"pauseProducing", "resumeProducing", "stopProducing", "_abc_impl"}, shared


def test_the_answers_of_a_turn_are_sent_together_at_its_end_in_order():
    site = QuietSite(_Ok())
    channel, transport = _channel(site)
    channel.dataReceived(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n1"
                         b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n2")
    assert transport.value() == b""  # not yet: at the end of the turn
    site.turn.run()
    answers = transport.value()
    assert answers.count(b"HTTP/1.1 200 OK") == 2 and answers.index(b"got 1") < answers.index(b"got 2")


def test_what_is_queued_goes_out_before_the_connection_closes():
    site = QuietSite(_Ok())
    channel, transport = _channel(site)
    channel.dataReceived(b"POST /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1")
    assert transport.disconnecting and b"got 1" in transport.value()
    site.turn.run()  # nothing left to send twice
    assert transport.value().count(b"got 1") == 1


def test_a_large_answer_is_sent_at_once():
    class _Large(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            return b"x" * 100_000

    channel, transport = _channel(QuietSite(_Large()))
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(transport.value()) > 100_000  # past QUEUED_BYTES: not kept for the turn's end
