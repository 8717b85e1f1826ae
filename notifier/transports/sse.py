"""Server-Sent Events subscribers: one streamed response per subscriber.

``EventStreams.serve`` opens the stream of an admitted request; the frames
(``event``, ``named_event``, ``comment``, ...) are those of every event
stream the daemon writes, the console's tail (notifier.http.console_tail) too.

A message is an event of its own event's name (``event: message`` for the
default); with ``format=json`` every message is a ``message`` event whose
data is its envelope, which names its event (docs/protocol.rst:
Server-Sent Events): a browser's ``EventSource`` hands an event only to
the listeners of its name, and a client that cannot know every name
(notifier.js) listens for ``message`` alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence

from twisted.internet.defer import Deferred

from notifier.domain.hub import Batch, Hub, Opening, Prepared
from notifier.domain.model import MESSAGE_EVENT, Grant, Message
from notifier.domain.presence import Item
from notifier.domain.token_deadlines import TokenDeadlines
from notifier.http.request import Answering, Request
from notifier.transports.envelope import envelope_json
from notifier.transports.streaming import StreamingSubscriber

#: How long a browser waits before reconnecting, in milliseconds.
RETRY_MS = 2000
_LINES = re.compile(r"\r\n|\r|\n")


def start_response(request: Answering, cache_control: bytes = b"no-cache") -> None:
    """Make *request*'s answer an event stream: its type, never cached,
    never buffered by a proxy (nginx's ``X-Accel-Buffering``)."""
    request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
    request.setHeader(b"cache-control", cache_control)
    request.setHeader(b"x-accel-buffering", b"no")


def comment(text: str) -> bytes:
    """A comment line: read by no browser, it keeps a quiet connection alive."""
    return f": {text}\n\n".encode()


def named_event(name: str, data: str) -> bytes:
    """An event *name* with one line of *data* (JSON), no id."""
    return f"event: {name}\ndata: {data}\n\n".encode()


HEARTBEAT = comment("ping")


def event(message: Message) -> bytes:
    """One event of the message's event name (``message`` for the default);
    a multi-line text becomes several ``data:`` lines."""
    data = "".join(f"data: {line}\n" for line in _LINES.split(message.data))
    return f"id: {message.id}\nevent: {message.event}\n{data}\n".encode()


def recovery(recovered: bool) -> bytes:
    return b"event: recovery\ndata: " + json.dumps({"recovered": recovered}).encode() + b"\n\n"


def envelope_event(message: Message) -> bytes:
    """A multiplexed event after its ``id:`` line (which is each
    subscriber's own), of the message's event name: the envelope as one
    line of JSON, encoded once."""
    if message.event == MESSAGE_EVENT:
        return b"\nevent: message\ndata: " + envelope_json(message).encode() + b"\n\n"
    return b"".join((b"\nevent: ", message.event.encode(), b"\ndata: ", envelope_json(message).encode(), b"\n\n"))


def envelope_message_event(message: Message) -> bytes:
    """``envelope_event`` as a ``message`` event whatever the message's own
    event, which its envelope names (``format=json``, the console's tail)."""
    return b"\nevent: message\ndata: " + envelope_json(message).encode() + b"\n\n"


def json_event(message: Message) -> bytes:
    """One message of a ``format=json`` stream of one center: a ``message``
    event, its ``id:`` the message's, its data the envelope."""
    return b"id: " + message.id.encode() + envelope_message_event(message)


def _id_bytes(message: Message) -> bytes:
    return message.id.encode()


#: The events of a multiplexed stream after each ``id:`` line: ``envelope_event``
#: or ``envelope_message_event``.
EnvelopeForm = Callable[[Message], bytes]


def _events_in(batch: Batch, cursor: tuple[bytes, ...] | None, index: dict[str, int],
               form: EnvelopeForm = envelope_event) -> tuple[tuple[bytes, ...], bytes]:
    """A multiplexed stream's events for *batch*, from *cursor* (*index*:
    each center's place in it), in the *form* of its format: the cursor
    after them, and the events, each ``id:`` the compound cursor after it."""
    assert cursor is not None
    events: list[bytes] = []
    for prepared in batch.items:
        slot = index[prepared.message.center]
        cursor = (*cursor[:slot], prepared.form(_id_bytes), *cursor[slot + 1:])
        events += (b"id: ", b",".join(cursor), prepared.form(form))
    return cursor, b"".join(events)


def _events(batch: Batch, at: tuple[tuple[bytes, ...] | None, tuple[Hub, ...], EnvelopeForm]
            ) -> tuple[tuple[bytes, ...], bytes]:
    """``_events_in`` for every stream of the hubs, the cursor and the form *at*."""
    cursor, hubs, form = at
    return _events_in(batch, cursor, {hub.center.name: i for i, hub in enumerate(hubs)}, form)


def envelope_events(batch: Batch) -> bytes:
    """*batch* as ``message`` events of envelopes, each ``id:`` its message's
    own (each message encoded once for every stream of envelopes)."""
    return b"".join([b"id: " + prepared.form(_id_bytes) + prepared.form(envelope_message_event)
                     for prepared in batch.items])


def item_event(item: Item) -> bytes:
    """A presence item: ``event: members|join|leave``, its JSON as data, no id."""
    return named_event(item.kind, item.json())


class EventStream(StreamingSubscriber):
    """A subscriber whose messages are written to a streaming response; the
    streaming producer of that response (notifier.transports.backpressure)."""

    transport_name = "sse"
    encode = staticmethod(event)
    tells_presence = True
    encode_item = staticmethod(item_event)

    def __init__(self, request: Request, send_buffer_bytes: int, dropped: Callable[[Hub], None]) -> None:
        self.request = request
        self.send_buffer_bytes = send_buffer_bytes
        self.dropped = dropped
        # Fires (ending the response) when a hub closes the stream; cancelled
        # when the client goes away.
        self.done: Deferred[bytes] = Deferred(lambda _: self._leave())
        request.registerProducer(self, True)

    def _announce_many(self, positions: list[str], lost: list[str]) -> None:
        raise TypeError("a stream of several centers is a MultiEventStream")

    def _announce(self, cursor: str | None, opening: Opening) -> None:
        head = [f"retry: {RETRY_MS}\n".encode()]
        if not opening.backlog:
            # An id with no data sets a browser's Last-Event-ID without an
            # event: its own reconnection then resumes from here.
            head.append(f"id: {opening.position}\n".encode())
        head.append(b"\n")
        if cursor is not None:
            head.append(recovery(opening.recovered))
        self._pace(b"".join(head))

    def _keep_alive(self) -> None:
        if self._waiting is None:  # a stream that is behind needs no keep-alive
            self.request.write(HEARTBEAT)

    def close(self, reason: str) -> None:
        self._leave()
        if not self.done.called:
            self.request.unregisterProducer()
            self.done.callback(b"")

    def _write(self, data: bytes) -> None:
        self.request.write(data)

    def _limit(self) -> int:
        return self.send_buffer_bytes

    def _cut_slow(self) -> None:
        # Nothing more can reach a client this far behind: cut the connection.
        self.request.abort()


class MultiEventStream(EventStream):
    """A stream of several centers: each event's ``data:`` is the envelope,
    its ``id:`` the compound cursor after it (docs/protocol.rst: Many centers on one
    connection), so that the browser's own reconnection resumes every
    center. Streams at the same cursor share what a batch makes of it."""

    #: The position of each center, in the order of the URL (set by the announcement).
    _cursor: tuple[bytes, ...] | None = None
    _index: dict[str, int]

    def _announce_many(self, positions: list[str], lost: list[str]) -> None:
        self._cursor = tuple(position.encode() for position in positions)
        self._index = {hub.center.name: i for i, hub in enumerate(self.hubs)}
        self._pace(b"".join((
            f"retry: {RETRY_MS}\nid: {','.join(positions)}\n\n".encode(),
            b"event: recovery\ndata: ", json.dumps({"recovered": not lost, "lost": lost}).encode(), b"\n\n",
        )))

    #: Its messages' events after each ``id:`` line: of their own names.
    envelope_form = staticmethod(envelope_event)

    def _replayed(self, backlog: list[Prepared]) -> Iterable[bytes]:
        for prepared in backlog:
            self._cursor, events = _events_in(Batch([prepared]), self._cursor, self._index, self.envelope_form)
            yield events

    def deliver(self, batch: Batch) -> None:
        in_order = self._in_order
        assert in_order is not None
        taken = in_order.take(batch)
        if taken is not None:
            self._cursor, events = taken.shared((self._cursor, self.hubs, self.envelope_form), _events)
            self._pace(events)


class JsonEventStream(EventStream):
    """A ``format=json`` stream of one center: every message a ``message``
    event of its envelope, which names its event."""

    encode = staticmethod(json_event)


class JsonMultiEventStream(MultiEventStream):
    """A ``format=json`` stream of several centers: every message a
    ``message`` event, whatever its own event, which its envelope names."""

    envelope_form = staticmethod(envelope_message_event)


class EventStreams:
    """The SSE transport of a listener: opens the stream of each admitted request."""

    def __init__(self, send_buffer_bytes: int, dropped: Callable[[Hub], None], deadlines: TokenDeadlines) -> None:
        #: Bytes a stream may have waiting before it is dropped as too slow.
        self.send_buffer_bytes = send_buffer_bytes
        #: Called with the hub of a stream dropped as too slow.
        self.dropped = dropped
        #: Ends the streams of private centers when their tokens expire.
        self.deadlines = deadlines

    def serve(self, request: Request, hubs: Sequence[Hub], cursors: Sequence[str | None],
              grant: Grant | None, as_json: bool = False) -> Deferred[bytes]:
        """Stream *hubs* to *request* from their *cursors* (``None``: live
        only), every message as its envelope in a ``message`` event if
        *as_json* (``format=json``): done when a hub ends the stream; until
        the *grant* of a private center's token expires, if given
        (``None``: public centers)."""
        start_response(request)
        if len(hubs) == 1:
            stream = (JsonEventStream if as_json else EventStream)(request, self.send_buffer_bytes, self.dropped)
            stream.attach(hubs[0], cursors[0], grant, self.deadlines)
        else:
            stream = (JsonMultiEventStream if as_json else MultiEventStream)(
                request, self.send_buffer_bytes, self.dropped)
            stream.attach_many(hubs, cursors, grant, self.deadlines)
        return stream.done
