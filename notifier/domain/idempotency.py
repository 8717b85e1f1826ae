"""``Idempotency-Key``: a retried publish is answered, not delivered again."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from sys import getsizeof
from typing import Any, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from notifier.domain.errors import Conflict
from notifier.domain.model import MESSAGE_EVENT

T = TypeVar("T")

#: How long a key is remembered, in seconds (docs/protocol.rst: Idempotency-Key: 10 minutes).
KEY_TTL = 600.0
#: How many keys are remembered at most per publisher; the oldest go first.
#: Kept per publisher, so that one publisher never evicts another's keys.
MAX_KEYS = 100_000
#: Bytes the keys of one publisher take at most, answers included; the oldest go first.
MAX_BYTES = 32 * 1024 * 1024
#: Bytes the keys of every publisher take at most together; the oldest go first.
MAX_TOTAL_BYTES = 512 * 1024 * 1024
#: What a key takes besides its text, its fingerprint and its answer (its
#: entry and its places in the publisher's and the node's order).
ENTRY_BYTES = 450


def fingerprint(messages: Iterable[tuple[str, str] | tuple[str, str, str]]) -> str:
    """What a publish asks, ``(center, data)`` or ``(center, data, event)``
    in order, as 32 hex digits: the same key with another fingerprint is
    another request. A message of the default event counts as it did
    before events were, so that a key kept then still answers its retry."""
    digest = hashlib.blake2b(digest_size=16)
    for message in messages:
        center, data = message[0], message[1]
        encoded = data.encode("utf-8", "surrogatepass")
        digest.update(b"%d:%s\0%d:" % (len(center), center.encode("utf-8", "surrogatepass"), len(encoded)))
        digest.update(encoded)
        if len(message) == 3 and message[2] != MESSAGE_EVENT:
            # After the data, whose length is given: never read as the
            # next message, whose first byte is a digit.
            named = message[2].encode("utf-8", "surrogatepass")
            digest.update(b"\0%d:" % len(named))
            digest.update(named)
    return digest.hexdigest()


def reused(key: str) -> Conflict:
    return Conflict(f"Idempotency-Key {key!r} was used for another request within 10 minutes",
                    code="idempotency_key_reused")


def same(kept: str, fresh: str) -> bool:
    """Whether fingerprints *kept* and *fresh* may be the same request (an
    empty one is unknown: a key kept by an earlier version)."""
    return kept == fresh or not kept or not fresh


def _same(result: Any) -> Any:
    return result


def _size(kept: Any) -> int:
    return len(kept) if isinstance(kept, str) else getsizeof(kept)


@define(slots=True, eq=False)
class _Entry:
    publisher: str
    key: str
    at: float
    fingerprint: str
    size: int
    result: Any = None
    done: bool = False
    live: bool = True
    waiting: list[Deferred[Any]] | None = None


@define(slots=True, eq=False)
class _Kept:
    """One publisher's keys, oldest first, and the bytes they take."""

    entries: OrderedDict[str, _Entry] = field(factory=OrderedDict)
    bytes: int = 0


@define(slots=True, eq=False)
class IdempotencyKeys:
    clock: IReactorTime
    ttl: float = KEY_TTL
    max_keys: int = MAX_KEYS
    max_bytes: int = MAX_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES
    #: What is remembered of an action's result: what a retry is answered with.
    keep: Callable[[Any], Any] = _same
    #: The bytes what is kept takes (beyond ``ENTRY_BYTES``).
    measure: Callable[[Any], int] = _size
    _publishers: dict[str, _Kept] = field(factory=dict)
    #: Every key, oldest first.
    _order: OrderedDict[_Entry, None] = field(factory=OrderedDict)
    #: The bytes all keys take.
    total_bytes: int = 0

    def bytes(self, publisher: str) -> int:
        """The bytes *publisher*'s keys take."""
        kept = self._publishers.get(publisher)
        return 0 if kept is None else kept.bytes

    async def once(self, publisher: str, key: str, action: Callable[[], Awaitable[T]],
                   fingerprint: str = "") -> tuple[Any, bool]:
        """Run *action* once for ``(publisher, key)``: its result (or, for a
        retry, what was kept of it), and whether it ran now.

        A retry while the first is still running waits for it; one with
        another *fingerprint* is refused (409 ``idempotency_key_reused``). A
        failed action is forgotten, so that a retry may succeed.
        """
        now = self.clock.seconds()
        self._forget_before(now - self.ttl)
        kept = self._publishers.get(publisher)
        entry = None if kept is None else kept.entries.get(key)
        if entry is not None:
            if not same(entry.fingerprint, fingerprint):
                raise reused(key)
            if entry.done:
                return entry.result, False
            waiter: Deferred[Any] = Deferred()
            if entry.waiting is None:
                entry.waiting = []
            entry.waiting.append(waiter)
            return await waiter, False
        entry = _Entry(publisher, key, now, fingerprint, ENTRY_BYTES + len(key) + len(fingerprint))
        self._add(entry)
        try:
            result = await action()
        except BaseException as e:
            self._drop(entry)
            for waiter in entry.waiting or ():
                waiter.errback(e)
            raise
        entry.result, entry.done = self.keep(result), True
        if entry.live:
            self._grow(entry, self.measure(entry.result))
        waiting, entry.waiting = entry.waiting, None
        for waiter in waiting or ():
            waiter.callback(entry.result)
        return result, True

    def remember(self, publisher: str, key: str, at: float, kept: Any, fingerprint: str = "") -> None:
        """Know ``(publisher, key)`` as run at *at*, *kept* what a retry is
        answered with (as read back from a store that outlives the daemon);
        keys come oldest first."""
        old = self._publishers.get(publisher)
        if old is not None and key in old.entries:
            self._drop(old.entries[key])
        entry = _Entry(publisher, key, at, fingerprint, ENTRY_BYTES + len(key) + len(fingerprint), kept, True)
        self._add(entry)
        if entry.live:
            self._grow(entry, self.measure(kept))

    def forget(self, publisher: str) -> None:
        """Forget every key of *publisher* (removed)."""
        kept = self._publishers.get(publisher)
        if kept is not None:
            for entry in list(kept.entries.values()):
                self._drop(entry)

    def _add(self, entry: _Entry) -> None:
        kept = self._publishers.get(entry.publisher)
        if kept is None:
            kept = self._publishers[entry.publisher] = _Kept()
        kept.entries[entry.key] = entry
        self._order[entry] = None
        kept.bytes += entry.size
        self.total_bytes += entry.size
        self._bound(kept)

    def _grow(self, entry: _Entry, size: int) -> None:
        kept = self._publishers[entry.publisher]
        entry.size += size
        kept.bytes += size
        self.total_bytes += size
        self._bound(kept)

    def _bound(self, kept: _Kept) -> None:
        """Forget the oldest keys of *kept*'s publisher past its bounds, then
        the oldest of any publisher past the node's."""
        entries = kept.entries
        while entries and (len(entries) > self.max_keys or kept.bytes > self.max_bytes):
            self._drop(next(iter(entries.values())))
        order = self._order
        while order and self.total_bytes > self.max_total_bytes:
            self._drop(next(iter(order)))

    def _drop(self, entry: _Entry) -> None:
        if not entry.live:
            return
        entry.live = False
        kept = self._publishers[entry.publisher]
        del kept.entries[entry.key]
        del self._order[entry]
        kept.bytes -= entry.size
        self.total_bytes -= entry.size
        if not kept.entries:
            del self._publishers[entry.publisher]

    def _forget_before(self, oldest: float) -> None:
        order = self._order
        while order:
            entry = next(iter(order))
            if entry.at >= oldest or not entry.done:
                break
            self._drop(entry)


def kept_ids(published: Any) -> str:
    """What is kept of a publish for its retries: its ids, in one string
    (``Published.ids``; an id holds no newline)."""
    return "\n".join(published.ids)


def ids_of(kept: str) -> tuple[str, ...]:
    """The ids *kept* (``kept_ids``)."""
    return tuple(kept.split("\n"))
