"""The SSE transport's entry point (``EventStreams.serve``) and its frames,
in memory: the headers, the head of a stream, its backlog and live events,
one center or several, and its end. No socket, time through a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.web import server
from twisted.web.test.requesthelper import DummyChannel

from notifier.deadlines import TokenDeadlines
from notifier.hub import Batch, Hub
from notifier.model import Center, Grant, Message
from notifier.presence import join_item
from notifier.transports import sse


class Stream:
    """A request served by ``EventStreams.serve``: what it was sent."""

    def __init__(self, hubs: list[Hub], cursors: list[str | None], clock: Clock,
                 grant: Grant | None = None) -> None:
        self.timeouts: list[object] = []
        channel = DummyChannel()
        channel.setTimeout = self.timeouts.append  # type: ignore[attr-defined]
        self.request = server.Request(channel)
        self.request.method, self.request.clientproto = b"GET", b"HTTP/1.1"
        self.written: list[bytes] = []
        self.request.write = self.written.append  # type: ignore[method-assign]
        self.dropped: list[Hub] = []
        streams = sse.EventStreams(65536, self.dropped.append, TokenDeadlines(clock))
        self.done = streams.serve(self.request, hubs, cursors, grant)

    @property
    def text(self) -> str:
        return b"".join(self.written).decode()


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
    assert list(stream.request.responseHeaders.getAllRawHeaders()) == [
        (b"Content-Type", [b"text/event-stream; charset=utf-8"]), (b"Cache-Control", [b"no-cache"]),
        (b"X-Accel-Buffering", [b"no"])]
    assert stream.timeouts == [None]  # the connection is the stream's: no idle timeout
    assert stream.text == "retry: 2000\nid: enews-0\n\n"
    publish(hub, "two\nlines")
    assert stream.text.endswith("id: enews-1\nevent: message\ndata: two\ndata: lines\n\n")
    assert hub.subscribers and not stream.done.called
    hub.close("deleted")
    assert stream.done.called and not hub.subscribers


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
    stream.written.clear()
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
