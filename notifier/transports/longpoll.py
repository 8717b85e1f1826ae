"""Long-poll subscribers: one request held until a message or the timeout,
on one center or on several (docs/protocol.rst: Many centers on one connection)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from notifier.envelope import envelope_json
from notifier.errors import NotFound, Unauthorized
from notifier.hub import Batch, Hub, Prepared
from notifier.model import Member, Message
from notifier.transports.ordering import InOrder

#: The most bytes of envelopes a long-poll answer of history holds (one
#: message at least): a client that reads nothing pins little of the
#: kernel's memory, and one that reads polls on from the answer's cursor.
ANSWER_BYTES = 128 * 1024


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
    __slots__ = ("hub", "answer", "cursor", "_timer")

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
    __slots__ = ("hubs", "positions", "index", "in_order", "answer", "_timer")

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
