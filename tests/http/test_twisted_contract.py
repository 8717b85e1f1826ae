"""What notifier relies on inside Twisted and Autobahn, each checked alone.

The api listener answers what Klein routes with twisted.web's public
``server.Request``, made on a channel of notifier's own
(notifier.http.web.WebChannel): it relies on what that request asks of its
channel and when. The transports write to Twisted's TCP connection
themselves and make Autobahn's frames. Each such dependency has a test here
that fails loudly, with its name, when an upgrade changes what it relies on.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from typing import Any

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import reactor, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.http_headers import Headers

from notifier.domain.model import Message
from notifier.end_of_turn import EndOfTurn
from notifier.http import web
from notifier.http.connection import HttpConnection, HttpSite
from notifier.http.web import KleinSeam, WebChannel
from notifier.transports.backpressure import Paced, send_now
from notifier.transports.streaming import StreamingSubscriber
from notifier.transports.websocket import json_frame, raw_frame

PEER = IPv4Address("TCP", "127.0.0.1", 40000)

# twisted.web's request on notifier's channel (notifier.http.web)


class _Ok(resource.Resource):
    """A whole answer: the body it was sent."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        request.content.seek(0)
        return b"got " + request.content.read()


class _Streamed(resource.Resource):
    """An answer written in parts, of no length said."""

    isLeaf = True

    def render(self, request: Any) -> int:
        request.write(b"one")
        request.write(b"two")
        request.finish()
        return server.NOT_DONE_YET


class _Form(resource.Resource):
    """What twisted.web made of a request's query and body."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.content.seek(0)
        return json.dumps({"args": {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()},
                           "body": request.content.read().decode()}).encode()


class _Late(resource.Resource):
    """An answer given later: the requests waiting for one."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Any] = []

    def render(self, request: Any) -> int:
        self.waiting.append(request)
        return server.NOT_DONE_YET


class _Recording(WebChannel):
    """notifier's channel, recording what twisted.web's request asks of it."""

    calls: list[tuple[Any, ...]] = []

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        names = {name.lower() for name, _ in headers.getAllRawHeaders()}
        self.calls.append(("writeHeaders", version, code, reason, names))
        super().writeHeaders(version, code, reason, headers)

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))
        super().write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        data = list(data)
        self.calls.append(("writeSequence", data))
        super().writeSequence(data)

    def requestDone(self, request: server.Request) -> None:
        self.calls.append(("requestDone", request is self.web))
        super().requestDone(request)


@pytest.fixture
def calls(monkeypatch: Any) -> list[tuple[Any, ...]]:
    """What twisted.web's requests ask of their channels, in order."""
    recorded: list[tuple[Any, ...]] = []
    monkeypatch.setattr(_Recording, "calls", recorded)
    monkeypatch.setattr(web, "WebChannel", _Recording)
    return recorded


def _connection(root: resource.Resource) -> tuple[HttpConnection, StringTransport]:
    """A connection of a listener answering with *root* through the seam,
    as the api listener does (its answers wait for the end of the turn)."""
    clock = Clock()
    site = HttpSite(KleinSeam(root), clock, turn=EndOfTurn(clock), at_end_of_turn=True)
    connection = site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    connection.makeConnection(transport)
    return connection, transport


def _answered(connection: HttpConnection, transport: StringTransport, data: bytes) -> bytes:
    connection.dataReceived(data)
    for _ in range(3):  # the end of the turn, and the requests served after an answer
        connection.site.turn.run()
        connection.site.reactor.advance(0)
    return transport.value()


def _parts(answer: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines)}
    return int(status.split(b" ")[1]), headers, body


def test_a_whole_answer_is_written_through_write_headers_then_write_then_request_done(calls: Any) -> None:
    connection, transport = _connection(_Ok())
    answer = _answered(connection, transport, b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    assert [call[0] for call in calls] == ["writeHeaders", "write", "requestDone"], calls
    _, version, code, reason, names = calls[0]
    assert (version, code, reason) == (b"HTTP/1.1", b"200", b"OK")
    assert {b"content-type", b"content-length"} <= names  # the resource's, and the length twisted.web set
    assert calls[1:] == [("write", b"got hi"), ("requestDone", True)]
    status, headers, body = _parts(answer)
    assert (status, body) == (200, b"got hi")
    assert headers[b"content-length"] == b"6" and headers[b"content-type"] == b"text/plain"
    # The connection's own Server and Date, once each, not twisted.web's.
    assert headers[b"server"].startswith(b"notifier/") and answer.count(b"\r\nDate: ") == 1
    assert b"TwistedWeb" not in answer


def test_an_answer_of_no_length_is_chunked_by_twisted_web(calls: Any) -> None:
    connection, transport = _connection(_Streamed())
    answer = _answered(connection, transport, b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n"
                                              b"GET /s HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b"transfer-encoding" in calls[0][4]
    assert calls[1:4] == [("writeSequence", [b"3", b"\r\n", b"one", b"\r\n"]),
                          ("writeSequence", [b"3", b"\r\n", b"two", b"\r\n"]),
                          ("write", b"0\r\n\r\n")]  # the last chunk, from finish
    assert calls[4] == ("requestDone", True)
    first, second = answer.split(b"HTTP/1.1 200 OK")[1:]  # kept open: the next request answered too
    for one in (first, second):
        assert b"Transfer-Encoding: chunked\r\n" in one and one.endswith(b"\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")
    assert not transport.disconnecting


def test_an_answer_of_no_length_over_http_1_0_ends_with_the_connection(calls: Any) -> None:
    connection, transport = _connection(_Streamed())
    answer = _answered(connection, transport, b"GET /s HTTP/1.0\r\nHost: h\r\n\r\n")
    assert b"transfer-encoding" not in calls[0][4]
    assert [call for call in calls if call[0] != "writeHeaders"] == [
        ("write", b"one"), ("write", b"two"), ("requestDone", True)]
    assert answer.endswith(b"\r\n\r\nonetwo") and b"chunked" not in answer
    assert transport.disconnecting


def test_a_head_request_gets_the_length_of_its_get_and_no_body() -> None:
    # twisted.web writes no body for HEAD: the next request's answer
    # follows the head at once.
    connection, transport = _connection(_Ok())
    answer = _answered(connection, transport, b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n"
                                              b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert b"Content-Length: 4\r\n" in head and rest.startswith(b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"\r\n\r\ngot x")


@pytest.mark.parametrize("content_type, body", [
    (b"application/x-www-form-urlencoded", b"a=1&b=2"),
    (b"multipart/form-data; boundary=xyz", b"not multipart at all"),  # twisted.web would refuse it itself
])
def test_a_form_body_is_left_to_the_handler_not_parsed_by_twisted_web(content_type: bytes, body: bytes) -> None:
    # The seam makes its requests with parsePOSTFormSubmission=False: the
    # arguments are the query's only, the body is the handler's.
    connection, transport = _connection(_Form())
    answer = _answered(connection, transport, b"POST /f?q=1 HTTP/1.1\r\nHost: h\r\nContent-Type: " + content_type
                       + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    status, _, got = _parts(answer)
    assert status == 200 and json.loads(got) == {"args": {"q": ["1"]}, "body": body.decode()}


def test_a_connection_lost_before_the_answer_fails_the_request_s_notify_finish() -> None:
    late = _Late()
    connection, transport = _connection(late)
    connection.dataReceived(b"GET /late HTTP/1.1\r\nHost: h\r\n\r\n")
    [request] = late.waiting
    failed: list[Failure] = []
    request.notifyFinish().addErrback(failed.append)
    connection.connectionLost(Failure(ConnectionError("gone")))
    assert len(failed) == 1
    request.write(b"too late")  # dropped, as twisted.web drops what comes after a loss
    assert transport.value() == b""


def test_what_a_request_asks_of_its_channel_is_what_the_channel_has() -> None:
    # twisted.web's request asks its channel for these, by name (Twisted's
    # own HTTP/2 stream offers the same); the web channel has each.
    for name in ("getPeer", "getHost", "isSecure", "writeHeaders", "write", "writeSequence", "requestDone",
                 "registerProducer", "unregisterProducer", "loseConnection"):
        assert callable(getattr(WebChannel, name, None)), name
    assert callable(getattr(server.Request, "requestReceived", None))
    assert "parsePOSTFormSubmission" in server.Request.__init__.__code__.co_varnames


# the answers of the api listener, at the end of the reactor's turn


def test_the_answers_of_a_turn_are_sent_together_at_its_end_in_order() -> None:
    connection, transport = _connection(_Ok())
    connection.dataReceived(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n1"
                            b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n2")
    assert transport.value() == b""  # not yet: at the end of the turn
    connection.site.turn.run()
    connection.site.reactor.advance(0)
    connection.site.turn.run()
    answers = transport.value()
    assert answers.count(b"HTTP/1.1 200 OK") == 2 and answers.index(b"got 1") < answers.index(b"got 2")


def test_what_is_queued_goes_out_before_the_connection_closes() -> None:
    connection, transport = _connection(_Ok())
    connection.dataReceived(b"POST /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1")
    assert transport.disconnecting and b"got 1" in transport.value()
    connection.site.turn.run()  # nothing left to send twice
    assert transport.value().count(b"got 1") == 1


def test_a_large_answer_is_sent_at_once() -> None:
    class _Large(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            return b"x" * 100_000

    connection, transport = _connection(_Large())
    connection.dataReceived(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert len(transport.value()) > 100_000  # past QUEUED_BYTES: not kept for the turn's end
    connection.connectionLost(connectionDone)


# Twisted's TCP connection, Autobahn's frames


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
