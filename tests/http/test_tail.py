"""The console's tail of a center in memory: an event stream in the SSE
transport's frames, an observer of its hub and no subscriber, ended past
its buffer. No socket, time through a Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.web import server
from twisted.web.test.requesthelper import DummyChannel

from notifier.domain.hub import Batch, Hub
from notifier.domain.model import Center
from notifier.domain.presence import join_item
from notifier.http import console_tail
from notifier.transports import sse


class Watched:
    """A tail of a hub, and what its request was sent."""

    def __init__(self, members: list[tuple[str, Any]] | None = None) -> None:
        self.clock = Clock()
        self.hub = Hub(Center("site", "room", True, None, None, 0.0), "er", 100, self.clock.seconds)
        self.request = server.Request(DummyChannel())
        self.request.method, self.request.clientproto = b"GET", b"HTTP/1.1"
        self.written: list[bytes] = []
        self.request.write = self.written.append  # type: ignore[method-assign]
        self.tail = console_tail.Tail(self.request, self.hub, self.clock)
        self.tail.start(members)

    def sent(self) -> bytes:
        """What was sent since asked last."""
        sent = b"".join(self.written)
        self.written.clear()
        return sent


def test_a_tail_opens_with_where_the_center_stands_and_who_is_there() -> None:
    watched = Watched([("7", {"name": "Ann"})])
    assert list(watched.request.responseHeaders.getAllRawHeaders()) == [
        (b"Content-Type", [b"text/event-stream; charset=utf-8"]), (b"Cache-Control", [b"no-store"]),
        (b"X-Accel-Buffering", [b"no"])]
    assert watched.sent() == (
        b'event: hello\ndata: {"center": "room", "position": "er-0", "recovered": true}\n\n'
        b'event: members\ndata: {"presence": "members", "center": "room", '
        b'"members": [{"uid": "7", "info": {"name": "Ann"}}]}\n\n')
    # an observer: no subscriber, no member
    assert watched.hub.observers == {watched.tail} and not watched.hub.subscribers


def test_a_tail_shows_messages_and_presence_in_the_frames_of_sse() -> None:
    watched = Watched()
    watched.sent()
    prepared = [watched.hub.append("one"), watched.hub.append("two\nlines")]
    for item in prepared:
        watched.hub.deliver(item)
    assert watched.sent() == sse.envelope_events(Batch(prepared)) == (
        b'id: er-1\nevent: message\ndata: {"id": "er-1", "center": "room", "data": "one", "ts": 0.0}\n\n'
        b'id: er-2\nevent: message\ndata: {"id": "er-2", "center": "room", "data": "two\\nlines", "ts": 0.0}\n\n')
    item = join_item("room", "7", None)
    watched.tail.present(item)
    assert watched.sent() == item.form(sse.item_event)


def test_an_idle_tail_gets_a_comment_line_every_keep_alive() -> None:
    watched = Watched()
    watched.sent()
    watched.clock.advance(console_tail.KEEP_ALIVE)
    watched.clock.advance(console_tail.KEEP_ALIVE)
    assert watched.sent() == b": keep-alive\n\n" * 2


def test_a_tail_ends_saying_why_and_a_new_secret_does_not_end_it() -> None:
    watched = Watched()
    watched.hub.close("revoked", observers=False)  # the publisher's secret changed
    assert not watched.tail.ended.called
    watched.sent()
    watched.hub.close("deleted")
    assert watched.sent() == b'event: end\ndata: {"reason": "deleted"}\n\n'
    assert watched.tail.ended.called and watched.request.finished and not watched.hub.observers
    watched.clock.advance(console_tail.KEEP_ALIVE)
    assert watched.sent() == b"" and not watched.clock.getDelayedCalls()


def test_a_tail_that_is_not_read_is_ended_past_its_buffer(monkeypatch: Any) -> None:
    watched = Watched()
    monkeypatch.setattr(watched.request.transport, "dataBuffer", b"x" * (console_tail.MAX_BUFFER + 1), raising=False)
    watched.hub.deliver(watched.hub.append("one"))
    assert watched.sent().endswith(b'event: end\ndata: {"reason": "slow"}\n\n')
    assert watched.tail.ended.called and not watched.hub.observers


def test_a_tail_whose_reader_leaves_is_forgotten() -> None:
    watched = Watched()
    watched.request.connectionLost(Exception("gone"))
    assert watched.tail.ended.called and not watched.hub.observers and not watched.clock.getDelayedCalls()
