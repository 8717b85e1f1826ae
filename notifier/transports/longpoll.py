"""Long-poll subscribers: one request held until a message or the timeout,
on one center or on several (docs/protocol.rst: Many centers on one connection).

How an admitted poll is answered (``LongPolls.serve``): from history, at
most ``answer_bytes`` of it, an answer kept for the polls asking the same;
else the first live messages; with the cursor after the answer, compound
for several centers; as JSON, or JSONP for a callback given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from notifier.domain.errors import NotFound, Unauthorized
from notifier.domain.hub import Batch, Hub, Prepared, interleave
from notifier.domain.model import Grant, Member, Message
from notifier.domain.token_deadlines import TokenDeadlines
from notifier.http.answers import jsonp_answer
from notifier.http.request import Request
from notifier.transports.envelope import envelope_json
from notifier.transports.ordering import InOrder, held_back

#: The most bytes of envelopes a long-poll answer of history holds (one
#: message at least): a client that reads nothing pins little of the
#: kernel's memory, and one that reads polls on from the answer's cursor.
ANSWER_BYTES = 128 * 1024
#: Long-poll answers kept for the subscribers asking the same are at most
#: this large; larger ones are built for each request (and bounded too).
MEMO_BYTES = 64 * 1024


def envelope_bytes(message: Message) -> bytes:
    """A message's envelope as it stands in a long-poll body (kept by its Prepared)."""
    return envelope_json(message).encode()


def body(items: list[Prepared], last_id: str | None, recovered: bool, lost: list[str] | None = None) -> bytes:
    """``{"messages": [...], "last_id", "recovered"}`` (and ``"lost"``, the
    centers a multiplexed poll could not resume), each message's envelope
    encoded once for every answer it is in."""
    return b"".join((
        b'{"messages": [', b", ".join([prepared.form(envelope_bytes) for prepared in items]),
        b'], "last_id": ', json.dumps(last_id).encode(),
        b', "recovered": ', b"true" if recovered else b"false",
        b"" if lost is None else b', "lost": ' + json.dumps(lost).encode(), b"}",
    ))


def ended(reason: str) -> Exception | None:
    """The error a waiting poll closed for *reason* is answered with
    (``None``: the answer of a timeout)."""
    if reason == "deleted":
        return NotFound("the center was deleted", code="center_deleted")
    if reason == "expired":
        return Unauthorized("the subscriber token has expired", code="expired_token")
    if reason == "revoked":
        return Unauthorized("the publisher's secret changed: the token is void", code="invalid_token")
    return None


def live_items(batch: Batch, hub_of: Callable[[str], Hub]) -> list[Prepared]:
    """What of *batch* a waiting long-poll is answered with: the first
    ``ANSWER_BYTES`` of them, as an answer of history, when the rest is
    retained for the next poll (by the hub of each center, ``hub_of``, that
    has messages past the cut); else all of them."""
    items = batch.items
    kept = backlog_answer(items, ANSWER_BYTES) if len(items) > 1 else items
    if len(kept) < len(items):
        first: dict[str, str] = {}  # each center's first message past the cut
        for prepared in items[len(kept):]:
            first.setdefault(prepared.message.center, prepared.message.id)
        if not all(hub_of(center).retains(id_) for center, id_ in first.items()):
            return items
    return kept


def live_body(batch: Batch, hub: Hub) -> tuple[bytes, str]:
    """The answer every waiting long-poll of *hub* gets for live messages,
    encoded once, and the cursor after it."""
    items = live_items(batch, lambda _: hub)
    cursor = items[-1].message.id
    return body(items, cursor, True), cursor


def backlog_answer(items: list[Prepared], limit: int) -> list[Prepared]:
    """The first of *items* whose envelopes take at most *limit* bytes (the
    first one at least): a long-poll answer is bounded, and the client polls
    again from its ``last_id`` for the rest."""
    size = 0
    for count, prepared in enumerate(items):
        size += len(prepared.form(envelope_bytes))
        if size > limit and count:
            return items[:count]
    return items


class LongPoll:
    """A waiting long-poll request, subscribed to its hub until answered
    with its body and the cursor after it (``None``: the hub's position
    when it is answered)."""

    transport_name = "longpoll"
    __slots__ = ("hub", "answer", "cursor", "_timer", "__weakref__")  # weakly in TokenDeadlines

    def __init__(self, hub: Hub, cursor: str | None, timeout: float, clock: IReactorTime,
                 member: Member | None = None) -> None:
        self.hub = hub
        self.cursor = cursor
        self.answer: Deferred[tuple[bytes, str | None]] = Deferred(lambda _: self._leave())
        self._timer: IDelayedCall | None = clock.callLater(timeout, self._expire)
        hub.subscribe(self, member)

    def _leave(self) -> None:
        self.hub.unsubscribe(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _respond(self, result: tuple[bytes, str | None] | Exception) -> None:
        self._leave()
        if not self.answer.called:
            self.answer.errback(result) if isinstance(result, Exception) else self.answer.callback(result)

    def _unchanged(self) -> tuple[bytes, None]:
        return body([], self.cursor, True), None

    def _expire(self) -> None:
        self._timer = None
        self._respond(self._unchanged())

    def deliver(self, batch: Batch) -> None:
        self._respond(batch.shared(self.hub, live_body))

    def close(self, reason: str) -> None:
        self._respond(ended(reason) or self._unchanged())


def advanced(positions: Sequence[str], index: dict[str, int], items: list[Prepared]) -> list[str]:
    """A multiplexed poll's *positions* after *items*: each center's entry
    moved to the last of its messages."""
    after = list(positions)
    for prepared in items:
        message = prepared.message
        after[index[message.center]] = message.id
    return after


class MultiLongPoll:
    """A waiting long-poll on several hubs, subscribed to each until one of
    them has messages for it (in publish order across them: *held*, the
    backlog published after a message still on its way, waits for it);
    answered with the body and the compound cursor after it."""

    transport_name = "longpoll"
    __slots__ = ("hubs", "positions", "index", "in_order", "answer", "_timer", "__weakref__")

    def __init__(self, hubs: Sequence[Hub], positions: list[str], timeout: float, clock: IReactorTime,
                 member: Member | None = None, held: list[Prepared] | None = None) -> None:
        self.hubs = tuple(hubs)
        self.positions = tuple(positions)
        self.index = {hub.center.name: i for i, hub in enumerate(hubs)}
        self.in_order = InOrder(hubs, held)
        self.answer: Deferred[tuple[bytes, str]] = Deferred(lambda _: self._leave())
        self._timer: IDelayedCall | None = clock.callLater(timeout, self._expire)
        for hub in hubs:
            hub.subscribe(self, member)

    def _leave(self) -> None:
        for hub in self.hubs:
            hub.unsubscribe(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _respond(self, result: tuple[bytes, str] | Exception) -> None:
        self._leave()
        if not self.answer.called:
            self.answer.errback(result) if isinstance(result, Exception) else self.answer.callback(result)

    def _unchanged(self) -> tuple[bytes, str]:
        cursor = ",".join(self.positions)
        return body([], cursor, True, []), cursor

    def _expire(self) -> None:
        self._timer = None
        self._respond(self._unchanged())

    def deliver(self, batch: Batch) -> None:
        taken = self.in_order.take(batch)
        if taken is not None:
            # The polls waiting with the same cursor share their answer.
            self._respond(taken.form(self._live, (self.hubs, self.positions)))

    def _live(self, batch: Batch) -> tuple[bytes, str]:
        items = live_items(batch, lambda center: self.hubs[self.index[center]])
        cursor = ",".join(advanced(self.positions, self.index, items))
        return body(items, cursor, True, []), cursor

    def close(self, reason: str) -> None:
        self._respond(ended(reason) or self._unchanged())


def _small_answer(answer: tuple[bytes, str]) -> bool:
    """Whether a long-poll answer (its body and cursor) is small enough to
    keep for others (a larger one is built for each request, never kept)."""
    return len(answer[0]) <= MEMO_BYTES


def answered(request: Request, cursor: str, payload: bytes, callback: str | None) -> bytes:
    """A long-poll's answer: its *payload*, as JSONP for a *callback*, and
    the cursor to poll on from."""
    # Where to go on from, even when the body's last_id is null (a
    # timeout without since): nothing published after this answer is lost.
    request.setHeader(b"notifier-cursor", cursor.encode())
    if callback is not None:
        return jsonp_answer(request, callback, payload)
    request.setHeader(b"content-type", b"application/json")
    return payload


class LongPolls:
    """The long-poll transport of a listener: answers each admitted poll."""

    def __init__(self, clock: IReactorTime, deadlines: TokenDeadlines, answer_bytes: int = ANSWER_BYTES) -> None:
        self.clock = clock
        #: Ends the waiting polls of private centers when their tokens expire.
        self.deadlines = deadlines
        #: The most bytes of envelopes an answer of history holds.
        self.answer_bytes = answer_bytes

    def serve(self, request: Request, hubs: Sequence[Hub], cursors: Sequence[str | None], timeout: float,
              callback: str | None, grant: Grant | None) -> bytes | Deferred[bytes]:
        """Answer a poll of *hubs* from their *cursors* (``None``: live only):
        now with what they have after them, else with their first live
        messages or, past *timeout* seconds, with none; until the *grant* of
        a private center's token expires, if given (``None``: public centers)."""
        request.setHeader(b"cache-control", b"no-store")
        if len(hubs) > 1:
            return self._serve_many(request, hubs, cursors, timeout, callback, grant)
        hub, since = hubs[0], cursors[0]
        # Clients polling again after the same message ask the same:
        # answered once, kept by what the answer holds, never by the
        # cursor's text (at most one answer per retained message).
        start, end, recovered = hub.resume_point(since)
        if start == end and recovered:
            if timeout == 0:
                return answered(request, hub.position, body([], since, True), callback)
            poll = LongPoll(hub, since, timeout, self.clock, grant.member if grant is not None else None)
            if grant is not None:  # it ends with its token, as a stream does
                self.deadlines.add(grant.expires, hub, poll)
            return poll.answer.addCallback(
                lambda answer: answered(request, answer[1] or hub.position, answer[0], callback))
        # The cursor is where the answer ends: a backlog cut short at
        # answer_bytes goes on from its last message.
        payload, cursor = hub.memo(("longpoll", start, recovered),
                                   lambda: self._backlog_body(hub, start, end, recovered), _small_answer)
        return answered(request, cursor, payload, callback)

    def _serve_many(self, request: Request, hubs: Sequence[Hub], cursors: Sequence[str | None],
                    timeout: float, callback: str | None, grant: Grant | None) -> bytes | Deferred[bytes]:
        """A long-poll on several centers: what any of them has after its
        entry of the compound cursor, else the first live messages of any."""
        points = [hub.resume_point(cursor) for hub, cursor in zip(hubs, cursors, strict=True)]
        positions = [hub.start_position(start, end) for hub, (start, end, _) in zip(hubs, points, strict=True)]
        lost = [hub.center.name for hub, (_, _, recovered) in zip(hubs, points, strict=True) if not recovered]
        backlog: list[Prepared] = []
        held: list[Prepared] = []
        if lost or any(start < end for start, end, _ in points):
            # Not kept for others: the answer depends on every entry. What
            # was published after a message still on its way waits for it.
            backlog, held = held_back(
                hubs, interleave([hub.retained(start, end) for hub, (start, end, _) in zip(hubs, points, strict=True)]))
        if lost or backlog:
            items = backlog_answer(backlog, self.answer_bytes)
            index = {hub.center.name: i for i, hub in enumerate(hubs)}
            cursor = ",".join(advanced(positions, index, items))
            payload = body(items, cursor, not lost, lost)
        elif timeout == 0:
            cursor = ",".join(positions)
            payload = body([], cursor, True, [])
        else:
            poll = MultiLongPoll(hubs, positions, timeout, self.clock,
                                 grant.member if grant is not None else None, held)
            if grant is not None:
                self.deadlines.add(grant.expires, hubs[0], poll)  # it leaves every hub at once
            return poll.answer.addCallback(lambda answer: answered(request, answer[1], answer[0], callback))
        return answered(request, cursor, payload, callback)

    def _backlog_body(self, hub: Hub, start: int, end: int, recovered: bool) -> tuple[bytes, str]:
        """The answer to a long-poll with the retained messages ``[start,
        end)`` (``Hub.resume_point``): at most ``answer_bytes`` of them; and
        the cursor after it."""
        backlog = backlog_answer(hub.retained(start, end), self.answer_bytes)
        cursor = backlog[-1].message.id if backlog else hub.position
        return body(backlog, cursor, recovered), cursor
