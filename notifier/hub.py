"""One notification center's live state: retained history, ids, subscribers.

A published message is appended once, wrapped once in a ``Prepared`` that
caches each wire form the first time a transport asks for it, and the same
``Prepared`` goes to every subscriber.
"""

from __future__ import annotations

from collections import deque
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
    """

    center: Center
    epoch: str
    history: int
    clock: Callable[[], float]
    subscribers: set[Subscriber] = field(factory=set)
    _retained: deque[Message] = field(init=False)
    _seq: int = 0

    def __attrs_post_init__(self) -> None:
        self._retained = deque(maxlen=self.history)

    @property
    def latest(self) -> Message | None:
        return self._retained[-1] if self._retained else None

    @property
    def last_id(self) -> str | None:
        return self._retained[-1].id if self._retained else None

    @property
    def position(self) -> str:
        """A cursor for "after everything published so far"."""
        return f"{self.epoch}-{self._seq}"

    def append(self, data: str) -> Message:
        self._seq += 1
        message = Message(f"{self.epoch}-{self._seq}", self.center.name, data, self.clock())
        self._retained.append(message)
        return message

    def deliver(self, message: Message) -> int:
        """Hand *message* to every subscriber; how many there were."""
        prepared = Prepared(message)
        # A copy: a subscriber may leave while delivered to (long-poll answers).
        subscribers = tuple(self.subscribers)
        for subscriber in subscribers:
            subscriber.deliver(prepared)
        return len(subscribers)

    def retained_after(self, cursor: str | None) -> tuple[list[Message], bool]:
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
        oldest = self._seq - len(self._retained) + 1  # seq of the oldest retained
        if seq < oldest - 1:
            return list(self._retained), False
        return list(self._retained)[len(self._retained) - (self._seq - seq):], True

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def close(self, reason: str) -> None:
        for subscriber in tuple(self.subscribers):
            subscriber.close(reason)
        self.subscribers.clear()
