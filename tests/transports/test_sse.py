"""The SSE transport's entry point (``EventStreams.serve``) and its frames,
in memory: the headers, the head of a stream, its backlog and live events,
one center or several, its end, and the cut of a client too slow. A
listener's connection over a StringTransport, time through a Clock."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from notifier.domain.hub import Batch, Hub
from notifier.domain.model import Center, Grant, Message
from notifier.domain.presence import join_item
from notifier.domain.token_deadlines import TokenDeadlines
from notifier.end_of_turn import EndOfTurn
from notifier.http.connection import HttpSite
from notifier.http.request import Request
from notifier.transports import sse

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


class Transport(StringTransport):
    """A connection's transport that says whether it was cut."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """The body of a chunked answer so far, and whether it ended."""
    body = []
    while data:
        size, _, rest = data.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            return b"".join(body), True
        body.append(rest[:length])
        assert rest[length:length + 2] == b"\r\n", data
        data = rest[length + 2:]
    return b"".join(body), False


class Stream:
    """A request a listener's connection read, served by
    ``EventStreams.serve``: what it was sent."""

    def __init__(self, hubs: list[Hub], cursors: list[str | None], clock: Clock,
                 grant: Grant | None = None, send_buffer_bytes: int = 65536) -> None:
        self.dropped: list[Hub] = []
        streams = sse.EventStreams(send_buffer_bytes, self.dropped.append, TokenDeadlines(clock))

        class App:
            @staticmethod
            def serve(request: Request) -> object:
                self.request = request
                self.done = streams.serve(request, hubs, cursors, grant)
                return self.done

        self.site = HttpSite(App(), clock, turn=EndOfTurn(clock), timeout=60)
        self.connection = self.site.buildProtocol(PEER)
        self.transport = Transport(peerAddress=PEER)
        self.connection.makeConnection(self.transport)
        self.connection.dataReceived(b"GET /sub/site/news HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Accept: text/event-stream\r\n\r\n")
        self.clock = clock
        self._sent = 0

    @property
    def head(self) -> list[bytes]:
        """The answer's status line and header lines, without its date."""
        head = self.transport.value().partition(b"\r\n\r\n")[0]
        return [line for line in head.split(b"\r\n") if not line.startswith(b"Date: ")]

    @property
    def body(self) -> tuple[bytes, bool]:
        """The stream sent since ``clear``, and whether it ended."""
        return dechunk(self.transport.value().partition(b"\r\n\r\n")[2][self._sent:])

    @property
    def text(self) -> str:
        return self.body[0].decode()

    def clear(self) -> None:
        self._sent = len(self.transport.value().partition(b"\r\n\r\n")[2])


def make_hub(clock: Clock, name: str = "news") -> Hub:
    return Hub(Center("site", name, False, None, None, 0.0), f"e{name}", 100, clock.seconds)


def publish(hub: Hub, text: str) -> str:
    prepared = hub.append(text)
    hub.deliver(prepared)
    return prepared.message.id


def test_a_stream_has_its_headers_its_head_then_live_events_until_its_center_ends() -> None:
    clock = Clock()
    hub = make_hub(clock)
    stream = Stream([hub], [None], clock)
    status, server, *headers = stream.head
    assert status == b"HTTP/1.1 200 OK" and server.startswith(b"Server: notifier/")
    assert headers == [b"Content-Type: text/event-stream; charset=utf-8", b"Cache-Control: no-cache",
                       b"X-Accel-Buffering: no", b"Transfer-Encoding: chunked", b"X-Content-Type-Options: nosniff"]
    assert stream.text == "retry: 2000\nid: enews-0\n\n"
    # The connection is the stream's: no idle timeout while it is answered.
    for _ in range(60):
        clock.advance(60)
    assert not stream.transport.disconnecting
    publish(hub, "two\nlines")
    assert stream.text.endswith("id: enews-1\nevent: message\ndata: two\ndata: lines\n\n")
    assert hub.subscribers and not stream.done.called and not stream.body[1]
    hub.close("deleted")
    assert stream.done.called and not hub.subscribers
    assert stream.body[1] and not stream.transport.disconnecting  # the answer ended, the connection stays
    assert stream.connection.timer is not None  # idle again, until its next request


def test_a_stream_whose_client_reads_nothing_is_cut_once_too_far_behind() -> None:
    clock = Clock()
    hub = make_hub(clock)
    stream = Stream([hub], [None], clock, send_buffer_bytes=1000)
    stream.connection.pauseProducing()  # as the transport does when its buffer is full
    stream.clear()
    publish(hub, "x" * 600)
    assert stream.text == "" and not stream.transport.aborted  # waiting, within its bound
    publish(hub, "y" * 600)
    assert stream.transport.aborted and stream.dropped == [hub] and not hub.subscribers
    assert stream.text == ""  # nothing more was sent


def test_a_stream_from_a_cursor_says_whether_it_resumed_then_sends_the_backlog() -> None:
    clock = Clock()
    hub = make_hub(clock)
    publish(hub, "one")
    stream = Stream([hub], ["enews-0"], clock)
    assert stream.text == ('retry: 2000\n\nevent: recovery\ndata: {"recovered": true}\n\n'
                           "id: enews-1\nevent: message\ndata: one\n\n")
    lost = Stream([hub], ["other-7"], clock)
    assert 'event: recovery\ndata: {"recovered": false}' in lost.text


def test_a_stream_of_several_centers_sends_envelopes_with_compound_ids() -> None:
    clock = Clock()
    a, b = make_hub(clock, "a"), make_hub(clock, "b")
    stream = Stream([a, b], [None, None], clock)
    assert stream.text == ('retry: 2000\nid: ea-0,eb-0\n\n'
                           'event: recovery\ndata: {"recovered": true, "lost": []}\n\n')
    stream.clear()
    publish(b, "x")
    assert stream.text == ('id: ea-0,eb-1\nevent: message\n'
                           'data: {"id": "eb-1", "center": "b", "data": "x", "ts": 0.0}\n\n')


def test_a_stream_of_a_private_center_ends_with_its_token() -> None:
    clock = Clock()
    hub = make_hub(clock)
    stream = Stream([hub], [None], clock, Grant(expires=5.0))
    clock.advance(5)
    assert stream.done.called and not hub.subscribers


def test_the_frames() -> None:
    assert sse.HEARTBEAT == sse.comment("ping") == b": ping\n\n"
    assert sse.named_event("end", '{"reason": "slow"}') == b'event: end\ndata: {"reason": "slow"}\n\n'
    assert sse.item_event(join_item("room", "7", None)) == \
        b'event: join\ndata: {"presence": "join", "center": "room", "uid": "7", "info": null}\n\n'
    hub = make_hub(Clock(), "room")
    batch = Batch([hub.append("a"), hub.append("b")])
    assert sse.envelope_events(batch) == b"".join(
        b"id: " + message.id.encode() + sse.envelope_event(message) for message in batch.messages)
    assert sse.envelope_event(Message("e-1", "room", "a", 1.5)) == \
        b'\nevent: message\ndata: {"id": "e-1", "center": "room", "data": "a", "ts": 1.5}\n\n'
