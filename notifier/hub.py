"""One notification center's live state: retained history, ids, subscribers.

A published message is appended once, wrapped once in a ``Prepared`` that
caches each wire form the first time a transport asks for it, and the same
``Prepared`` goes to every subscriber, live or catching up from history.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Callable, Protocol, TypeVar

from attrs import define, field

from notifier.model import Center, Message

T = TypeVar("T")


class Subscriber(Protocol):
    """What a hub needs of a transport's subscriber."""

    transport_name: str

    def deliver(self, prepared: Prepared) -> None:
        """Send one message, already prepared for every wire form."""

    def close(self, reason: str) -> None:
        """End the subscription: ``"deleted"`` or ``"shutdown"``."""


class Prepared:
    """A message and its wire forms, each encoded at most once."""

    __slots__ = ("message", "_forms")

    def __init__(self, message: Message) -> None:
        self.message = message
        self._forms: dict[Callable[[Message], object], object] = {}

    def form(self, encode: Callable[[Message], T]) -> T:
        try:
            return self._forms[encode]  # type: ignore[return-value]
        except KeyError:
            value = self._forms[encode] = encode(self.message)
            return value


def parse_id(message_id: str) -> tuple[str, int] | None:
    """``(epoch, seq)`` of an id, or ``None`` when it is not one of ours."""
    epoch, sep, seq = message_id.rpartition("-")
    if not sep or not epoch or not seq.isdigit() or len(seq) > 18:
        return None
    return epoch, int(seq)


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
    subscribers: set[Subscriber] = field(factory=set)
    touched: float = field()
    _retained: deque[Prepared] = field(init=False)
    _seq: int = 0

    @touched.default
    def _now(self) -> float:
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
        """A cursor for "after everything published so far"."""
        return f"{self.epoch}-{self._seq}"

    @property
    def seq(self) -> int:
        """The sequence number of the latest message (0: none yet)."""
        return self._seq

    def append(self, data: str, seq: int | None = None, ts: float | None = None) -> Prepared:
        """Retain *data* with the next id, or with *seq* and *ts* given by a
        shared store (which must be the next in order)."""
        self._seq = self._seq + 1 if seq is None else seq
        now = self.touched = self.clock()
        message = Message(f"{self.epoch}-{self._seq}", self.center.name, data, now if ts is None else ts)
        prepared = Prepared(message)
        self._retained.append(prepared)
        return prepared

    def restore(self, epoch: str, seq: int, retained: list[tuple[int, float, str]]) -> None:
        """Start from a shared store's state: its epoch, its latest seq, and
        the ``(seq, ts, data)`` it retains, oldest first."""
        self.epoch = epoch
        self._retained.clear()
        for number, ts, data in retained:
            self.append(data, number, ts)
        self._seq = seq

    def deliver(self, prepared: Prepared) -> int:
        """Hand *prepared* to every subscriber; how many there were."""
        # A copy: a subscriber may leave while delivered to (long-poll answers).
        subscribers = tuple(self.subscribers)
        for subscriber in subscribers:
            subscriber.deliver(prepared)
        return len(subscribers)

    def retained_after(self, cursor: str | None) -> tuple[list[Prepared], bool]:
        """Retained messages after *cursor*, and whether none were missed.

        ``None`` asks for nothing retained. A cursor of another epoch, from
        the future, or older than the oldest retained message is answered
        with everything retained and ``False``.
        """
        if cursor is None:
            return [], True
        parsed = parse_id(cursor)
        if parsed is None or parsed[0] != self.epoch or parsed[1] > self._seq:
            return list(self._retained), False
        seq = parsed[1]
        oldest = self._seq - len(self._retained) + 1  # the seq of the oldest retained
        if seq < oldest - 1:
            return list(self._retained), False
        return list(islice(self._retained, seq - oldest + 1, None)), True

    def attach(self, subscriber: Subscriber, cursor: str | None) -> tuple[list[Prepared], bool]:
        """Subscribe and return the backlog after *cursor*, in one step.

        Nothing can be published between the two, so the backlog and the live
        messages that follow meet with no gap and no duplicate.
        """
        backlog = self.retained_after(cursor)
        self.subscribers.add(subscriber)
        return backlog

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscribers = self.subscribers
        if subscriber in subscribers:
            subscribers.discard(subscriber)
            if not subscribers:
                self.touched = self.clock()

    def idle(self, now: float) -> bool:
        """Whether the center has outlived its ``ttl`` unused."""
        return self.ttl > 0 and not self.subscribers and now - self.touched >= self.ttl

    def close(self, reason: str) -> None:
        for subscriber in tuple(self.subscribers):
            subscriber.close(reason)
        self.subscribers.clear()
