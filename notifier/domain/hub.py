"""One notification center's live state: retained history, ids, subscribers.

A published message is appended once, wrapped once in a ``Prepared`` that
caches each wire form the first time a transport asks for it. Fan-out is a
step of its own: the messages published since the last one go out together
as a ``Batch`` (one write per subscriber, its frames joined once for all),
a slice of subscribers per reactor turn, so that publishing goes on while a
large center is being written to, and a busy center sends fewer, larger
writes.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import count, islice
from typing import Any, NamedTuple, Protocol, TypeVar

from attrs import define, field
from twisted.logger import Logger

from notifier.backends.interfaces import Retained
from notifier.domain.model import MESSAGE_EVENT, Center, Member, Message
from notifier.domain.retention import Retention, message_bytes
from notifier.domain.stats import Subscribed

log = Logger()

T = TypeVar("T")
K = TypeVar("K")


class Subscriber(Protocol):
    """What a hub needs of a transport's subscriber."""

    transport_name: str

    def deliver(self, batch: Batch) -> None:
        """Send messages, already prepared for every wire form."""

    def close(self, reason: str) -> None:
        """End the subscription: ``"deleted"``, ``"shutdown"``, or, for a
        private center, ``"expired"`` (its token) or ``"revoked"`` (the
        publisher's secret changed)."""


class Observer(Protocol):
    """Sees a hub's messages as they go out, and its presence items
    (notifier.domain.presence), without being one of its subscribers."""

    def deliver(self, batch: Batch) -> None: ...

    def present(self, item: Any) -> None: ...

    def close(self, reason: str) -> None: ...


#: Numbers every message made on this node, across its centers, in the
#: order they are appended: publish order (``Prepared.order``).
_ORDER = count(1)


class Prepared:
    """A message and its wire forms, each encoded at most once; ``order``
    is its place among every message of the node, in publish order."""

    __slots__ = ("message", "order", "_forms")

    def __init__(self, message: Message) -> None:
        self.message = message
        self.order = next(_ORDER)
        self._forms: dict[Callable[[Message], object], object] = {}

    def form(self, encode: Callable[[Message], T]) -> T:
        try:
            return self._forms[encode]  # type: ignore[return-value]
        except KeyError:
            value = self._forms[encode] = encode(self.message)
            return value


class Batch:
    """Messages fanned out together; what is built of them is built once."""

    __slots__ = ("items", "_forms")

    def __init__(self, items: list[Prepared]) -> None:
        self.items = items
        self._forms: dict[Callable[[Batch], object], object] = {}

    @property
    def messages(self) -> list[Message]:
        return [prepared.message for prepared in self.items]

    def joined(self, encode: Callable[[Message], bytes]) -> bytes:
        """The messages' *encode* forms, one after the other."""
        if len(self.items) == 1:
            return self.items[0].form(encode)
        return self.form(lambda batch: b"".join(prepared.form(encode) for prepared in batch.items), encode)

    def shared(self, key: K, build: Callable[[Batch, K], T]) -> T:
        """``build(self, key)``, built once for every subscriber asking with
        an equal *key* (what it depends on besides the batch)."""
        try:
            return self._forms[key]  # type: ignore[index, return-value]
        except KeyError:
            value = self._forms[key] = build(self, key)  # type: ignore[index]
            return value

    def form(self, build: Callable[[Batch], T], key: object = None) -> T:
        key = build if key is None else key
        try:
            return self._forms[key]  # type: ignore[index, return-value]
        except KeyError:
            value = self._forms[key] = build(self)  # type: ignore[index]
            return value


class Watcher(Protocol):
    """Told when a hub gets its first subscriber and loses its last, and
    when members of a presence center come and go (notifier.domain.presence)."""

    def filled(self, hub: Hub) -> None: ...

    def emptied(self, hub: Hub) -> None: ...

    def came(self, hub: Hub, subscriber: Subscriber, member: Member) -> None: ...

    def went(self, hub: Hub, subscriber: Subscriber) -> None: ...


def _at_once(call: Callable[[], object]) -> None:
    call()


def counted_bytes(message: Message) -> int:
    """What a retained message counts against the bounds of retention: its
    text, and the name of its event when it has one of its own (the
    default's is one string for every message)."""
    if message.event == MESSAGE_EVENT:
        return message_bytes(message.data)
    return message_bytes(message.data) + message_bytes(message.event)


#: Subscribers written to per reactor turn by one fan-out. Between two
#: slices the reactor reads what else came (publishes among it), and what
#: was published meanwhile goes out with the next batch, in the same write
#: or answer as the rest of it: under load, several messages per write.
#: Measured against 1,000 (docs/performance.rst: Fan-out in slices): 1,000
#: subscribers took 3.8x the WebSocket and 4.9x the long-poll deliveries/s
#: with flat-out publishing, at about the same p99 for a fixed rate.
FANOUT_SLICE = 150


#: A position: ``{epoch}-{seq}``, the seq 1 to 18 ASCII digits (docs/protocol.rst: Cursors and resuming).
CURSOR = re.compile(r"([A-Za-z0-9._~-]{1,64})-([0-9]{1,18})\Z", re.ASCII)


def parse_id(message_id: str) -> tuple[str, int] | None:
    """``(epoch, seq)`` of an id, or ``None`` when it is not one of ours."""
    match = CURSOR.match(message_id)
    if match is None:
        return None
    return match[1], int(match[2])


class Opening(NamedTuple):
    """What a subscriber attaching to a hub starts with."""

    #: The retained messages it is sent first.
    backlog: list[Prepared]
    #: Whether none it asked for were missed.
    recovered: bool
    #: The position just before its first message: what it has seen of the
    #: center, as a cursor to hand back (docs/protocol.rst: Cursors and resuming).
    position: str


def interleave(backlogs: list[list[Prepared]]) -> list[Prepared]:
    """The backlogs of several centers as one, in the order they were
    published: by publish time, then (a batch's messages share theirs)
    as they were appended; each center's own order kept whatever the
    clock did."""
    if len(backlogs) == 1:
        return backlogs[0]
    return list(heapq.merge(*backlogs, key=lambda prepared: (prepared.message.ts, prepared.order)))


@define(slots=True, eq=False)
class Hub:
    """The live side of one center.

    ``epoch`` changes whenever retained history could have been lost (a new
    hub is a new epoch), so ids from before never pass for current ones.
    ``touched`` is when it last had a publish or lost its last subscriber.
    """

    center: Center
    epoch: str
    history: int
    clock: Callable[[], float]
    #: Seconds without a publish or a subscriber before the center expires; 0: never.
    ttl: int = 0
    #: Runs a fan-out step later (the reactor's next turn); at once by default.
    schedule: Callable[[Callable[[], object]], object] = _at_once
    subscribers: set[Subscriber] = field(factory=set)
    touched: float = field()
    _retained: deque[Prepared] = field(init=False)
    _seq: int = 0
    #: The last message handed to a fan-out; later ones are on their way.
    _sent: int = 0
    _outbox: list[Prepared] = field(factory=list)
    #: What the latest fan-out writes: the messages up to ``_sent``.
    _fanned: list[Prepared] = field(factory=list)
    _fanning_out: bool = False
    _memo: dict[object, object] = field(factory=dict)
    #: Told of subscribers coming and going (occupancy, presence), if set.
    watcher: Watcher | None = field(default=None, kw_only=True)
    #: The subscribers that are members (a presence center): their uid.
    members: dict[Subscriber, str] = field(factory=dict)
    #: Watch what the center's subscribers get (the console's tail) without
    #: being subscribers: not counted, not members, no occupancy.
    observers: set[Observer] = field(factory=set)
    #: Bytes of retained messages kept at most (0: no bound); the newest is
    #: kept whatever its size.
    max_bytes: int = field(default=0, kw_only=True)
    #: What its publisher's hubs retain together (notifier.domain.retention), if told.
    account: Retention | None = field(default=None, kw_only=True)
    #: Counts the node's subscribers by transport as they come and go, if told.
    tally: Subscribed | None = field(default=None, kw_only=True)
    _bytes: int = field(default=0, init=False)

    @touched.default
    def _created(self) -> float:
        return self.clock()

    def __attrs_post_init__(self) -> None:
        self._retained = deque(maxlen=self.history)

    @property
    def latest(self) -> Message | None:
        return self._retained[-1].message if self._retained else None

    @property
    def last_id(self) -> str | None:
        return self._retained[-1].message.id if self._retained else None

    @property
    def position(self) -> str:
        """A cursor for "after everything subscribers have been sent": what is
        published after it reaches a subscriber attached now, live."""
        return f"{self.epoch}-{self._sent}"

    @property
    def seq(self) -> int:
        """The sequence number of the latest message (0: none yet)."""
        return self._seq

    @property
    def sent(self) -> int:
        """The sequence number of the latest message handed to a fan-out:
        what a subscriber attached now has had, or is sent in its backlog."""
        return self._sent

    def owed_order(self, seen: int) -> float:
        """The ``order`` of the message after seq *seen*, on its way to a
        subscriber that has had every one up to *seen* (``inf``: none is)."""
        if seen >= self._seq:
            return math.inf
        index = seen - self._sent  # in the outbox, when not yet fanned out
        items = self._outbox
        if index < 0:
            items = self._fanned
            index += len(items)
        return items[index].order if 0 <= index < len(items) else math.inf

    def append(self, data: str, seq: int | None = None, ts: float | None = None,
               event: str = MESSAGE_EVENT, exclude: str | None = None) -> Prepared:
        """Retain *data* with the next id, or with *seq* and *ts* given by a
        shared store (which must be the next in order), as a message of
        *event* that skips the connection *exclude* (``Message``)."""
        self._seq = self._seq + 1 if seq is None else seq
        now = self.touched = self.clock()
        message = Message(f"{self.epoch}-{self._seq}", self.center.name, data, now if ts is None else ts,
                          event, exclude)
        prepared = Prepared(message)
        # What was kept answers by position in the retained messages, which
        # a full history has just moved by one.
        self._memo.clear()
        retained = self._retained
        if not self.history:
            return prepared
        # A running sum of the bytes retained: one step per message, whatever
        # is kept (the deque drops its oldest itself once ``history`` long).
        added = message_bytes(data) if event == MESSAGE_EVENT else counted_bytes(message)
        if len(retained) == self.history:
            added -= counted_bytes(retained[0].message)
        elif not retained and self.account is not None:
            self.account.retaining(self, prepared)
        retained.append(prepared)
        total = self._bytes + added
        if total > self.max_bytes > 0:
            while total > self.max_bytes and len(retained) > 1:
                dropped = counted_bytes(retained.popleft().message)
                total -= dropped
                added -= dropped
        self._bytes = total
        account = self.account
        if account is not None:
            account.bytes += added
            if account.bytes > account.bound:
                account.shed(prepared)
        return prepared

    def append_retained(self, entry: Retained) -> Prepared:
        """Retain a message as a shared store retained it (``append``)."""
        number, ts, data, *named = entry
        return self.append(data, number, ts, named[0] if named else MESSAGE_EVENT)

    @property
    def retained_bytes(self) -> int:
        """The bytes of its retained messages (``notifier.domain.retention.message_bytes``)."""
        return self._bytes

    @property
    def oldest(self) -> Prepared | None:
        return self._retained[0] if self._retained else None

    def retained_ids(self) -> Iterator[str]:
        return (prepared.message.id for prepared in self._retained)

    def drop_oldest(self) -> None:
        """Drop the oldest retained message (its publisher's centers retain too much)."""
        size = counted_bytes(self._retained.popleft().message)
        self._bytes -= size
        self._memo.clear()
        if self.account is not None:
            self.account.released(size)

    def release(self) -> None:
        """Let go of everything retained: the centers let go of this hub."""
        self._forget_retained()
        account, self.account = self.account, None
        if account is not None and account.hubs.get(self.center.name) is self:
            del account.hubs[self.center.name]
            account.left()

    def _forget_retained(self) -> None:
        if self.account is not None:
            self.account.released(self._bytes)
        self._retained.clear()
        self._bytes = 0
        self._memo.clear()

    def restore(self, epoch: str, seq: int, retained: Iterable[Retained]) -> None:
        """Start from a shared store's state: its epoch, its latest seq, and
        the messages it retains, oldest first (their events with them)."""
        self.epoch = epoch
        self._forget_retained()
        for entry in retained:
            self.append_retained(entry)
        self._seq = self._sent = seq
        self._memo.clear()

    def deliver(self, prepared: Prepared) -> int:
        """Fan *prepared* (the latest appended) out to every subscriber;
        how many there are."""
        reached = len(self.subscribers)
        if not reached and not self._fanning_out and not self.observers:
            # Nobody to send it to: sent already, as far as anyone attaching
            # later is concerned (it is in the retained history).
            self._sent = self._seq
            return 0
        self._outbox.append(prepared)
        if not self._fanning_out:
            self._fanning_out = True
            self.schedule(self._fan_out)
        return reached

    def _fan_out(self) -> None:
        outbox, self._outbox = self._outbox, []
        if not outbox:
            self._fanning_out = False
            self._fanned = []  # every subscriber has had it
            return
        self._sent = self._seq  # everything appended is in the outbox
        self._fanned = outbox
        self._memo.clear()
        batch = Batch(outbox)
        for observer in tuple(self.observers):
            try:
                observer.deliver(batch)
            except Exception:
                log.failure("a watcher of {path} failed", path=self.center.path)
        self._write(batch, list(self.subscribers), 0)

    def _write(self, batch: Batch, targets: list[Subscriber], start: int) -> None:
        end = start + FANOUT_SLICE
        subscribers = self.subscribers
        for subscriber in targets[start:end]:
            if subscriber in subscribers:  # it may have left meanwhile
                # One that fails is logged: the others, and what comes
                # next, are sent all the same.
                try:
                    subscriber.deliver(batch)
                except Exception:
                    log.failure("a subscriber of {path} failed", path=self.center.path)
        if end < len(targets):
            self.schedule(lambda: self._write(batch, targets, end))
        else:
            self._fan_out()  # what was published meanwhile, or done

    def memo(self, key: object, build: Callable[[], T], keep: Callable[[T], bool] | None = None) -> T:
        """*build()*, kept until the next fan-out (if *keep* says so of
        it): answers many subscribers asking the same thing share."""
        try:
            return self._memo[key]  # type: ignore[return-value]
        except KeyError:
            value = build()
            if keep is None or keep(value):
                self._memo[key] = value
            return value

    def resume_point(self, cursor: str | None) -> tuple[int, int, bool]:
        """Where a subscriber resuming after *cursor* starts: the slice
        ``[start, end)`` of the retained messages it is sent, and whether
        none were missed. Every cursor maps to one of at most
        ``history + 1`` answers, whatever its text.

        ``None`` asks for nothing retained. A cursor of another epoch, from
        the future, or older than the oldest retained message is answered
        with everything retained and ``False``.
        """
        # What is not sent yet is on its way to every subscriber: not here.
        sent = self._sent
        end = max(len(self._retained) - (self._seq - sent), 0)
        if cursor is None:
            return end, end, True
        parsed = parse_id(cursor)
        if parsed is None or parsed[0] != self.epoch or parsed[1] > sent:
            return 0, end, False
        seq = parsed[1]
        oldest = self._seq - len(self._retained) + 1  # the seq of the oldest retained
        if seq < sent and seq < oldest - 1:  # some it has not seen are gone
            return 0, end, False
        # Up to date (seq == sent): nothing to send, however little is retained.
        return max(seq - oldest + 1, 0), end, True

    def ahead(self, cursor: str) -> bool:
        """Whether *cursor* is a position of this hub's epoch past what its
        subscribers have been sent: one another node reached first."""
        parsed = parse_id(cursor)
        return parsed is not None and parsed[0] == self.epoch and parsed[1] > self._sent

    def retains(self, message_id: str) -> bool:
        """Whether the message *message_id* is retained: a resume just
        before it starts with it."""
        parsed = parse_id(message_id)
        return parsed is not None and parsed[0] == self.epoch and parsed[1] > self._seq - len(self._retained)

    def start_position(self, start: int, end: int) -> str:
        """The position just before the retained message *start* (of the
        slice ``[start, end)`` a resume is sent), or, with nothing to
        send, the position of everything sent so far."""
        if start < end:
            return f"{self.epoch}-{self._seq - len(self._retained) + start}"
        return self.position

    def retained_after(self, cursor: str | None) -> tuple[list[Prepared], bool]:
        """Retained messages after *cursor*, and whether none were missed
        (``resume_point``)."""
        start, end, recovered = self.resume_point(cursor)
        return self.retained(start, end), recovered

    def retained(self, start: int, end: int) -> list[Prepared]:
        """The retained messages ``[start, end)`` (``resume_point``)."""
        return list(islice(self._retained, start, end))

    @property
    def retained_count(self) -> int:
        """How many messages it retains that subscribers have been sent."""
        return max(len(self._retained) - (self._seq - self._sent), 0)

    def retained_before(self, before: str | None, limit: int) -> tuple[list[Message], bool]:
        """At most *limit* of the retained messages subscribers have been
        sent, newest first, those older than the message *before* (``None``:
        from the newest); and whether older ones are retained still. An id
        of another epoch, or older than any retained, has none before it."""
        end = stop = self.retained_count
        if before is not None:
            parsed = parse_id(before)
            if parsed is None or parsed[0] != self.epoch:
                return [], False
            oldest = self._seq - len(self._retained) + 1
            stop = min(max(parsed[1] - oldest, 0), end)
        start = max(stop - limit, 0)
        messages = [prepared.message for prepared in islice(self._retained, start, stop)]
        messages.reverse()
        return messages, start > 0

    def attach(self, subscriber: Subscriber, cursor: str | None, member: Member | None = None) -> Opening:
        """Subscribe (as *member*, in a presence center) and return the
        backlog after *cursor*, in one step.

        Nothing can be published between the two, so the backlog and the live
        messages that follow meet with no gap and no duplicate.
        """
        start, end, recovered = self.resume_point(cursor)
        opening = Opening(self.retained(start, end), recovered, self.start_position(start, end))
        self.subscribe(subscriber, member)
        return opening

    def subscribe(self, subscriber: Subscriber, member: Member | None = None) -> None:
        subscribers = self.subscribers
        tally = self.tally
        if tally is not None and subscriber not in subscribers:
            tally.came(subscriber)
        watcher = self.watcher
        if watcher is None:
            subscribers.add(subscriber)
            return
        if not subscribers:
            watcher.filled(self)
        subscribers.add(subscriber)
        if member is not None and self.center.presence:
            self.members[subscriber] = member[0]
            watcher.came(self, subscriber, member)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscribers = self.subscribers
        if subscriber in subscribers:
            subscribers.discard(subscriber)
            if self.tally is not None:
                self.tally.went(subscriber)
            watcher = self.watcher
            if watcher is not None and subscriber in self.members:
                watcher.went(self, subscriber)
                del self.members[subscriber]
            if not subscribers:
                self.touched = self.clock()
                if watcher is not None:
                    watcher.emptied(self)

    def idle(self, now: float) -> bool:
        """Whether the center has outlived its ``ttl`` unused."""
        return self.ttl > 0 and not self.subscribers and now - self.touched >= self.ttl

    def close(self, reason: str, observers: bool = True) -> None:
        """Close every subscriber, and every observer unless *observers* is
        false (a private center's subscriptions revoked: the console's tail,
        which no publisher's token admits, goes on)."""
        if observers:
            for observer in tuple(self.observers):
                observer.close(reason)
            self.observers.clear()
        for subscriber in tuple(self.subscribers):
            subscriber.close(reason)
        for subscriber in tuple(self.subscribers):  # one that did not leave when closed
            self.unsubscribe(subscriber)
