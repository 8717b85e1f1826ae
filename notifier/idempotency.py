"""``Idempotency-Key``: a retried publish is answered, not delivered again."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")

#: How long a key is remembered, in seconds (README.rst: Retries: 10 minutes).
KEY_TTL = 600.0
#: How many keys are remembered at most per publisher; the oldest go first.
#: Kept per publisher, so that one publisher never evicts another's keys.
MAX_KEYS = 100_000


@define(slots=True, eq=False)
class _Entry(Generic[T]):
    at: float
    result: Any = None
    done: bool = False
    waiting: list[Deferred[Any]] = field(factory=list)


@define(slots=True, eq=False)
class IdempotencyKeys:
    clock: IReactorTime
    ttl: float = KEY_TTL
    max_keys: int = MAX_KEYS
    _publishers: dict[str, OrderedDict[str, _Entry[Any]]] = field(factory=dict)

    async def once(self, publisher: str, key: str, action: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run *action* once for ``(publisher, key)``: its result, and whether it ran now.

        A retry while the first is still running waits for it. A failed
        action is forgotten, so that a retry may succeed.
        """
        now = self.clock.seconds()
        entries = self._publishers.get(publisher)
        if entries is None:
            entries = self._publishers[publisher] = OrderedDict()
        self._forget_before(entries, now - self.ttl)
        entry = entries.get(key)
        if entry is not None:
            if entry.done:
                return entry.result, False
            waiter: Deferred[T] = Deferred()
            entry.waiting.append(waiter)
            return await waiter, False
        entry = entries[key] = _Entry(now)
        while len(entries) > self.max_keys:
            entries.popitem(last=False)
        try:
            result = await action()
        except BaseException as e:
            if entries.get(key) is entry:
                del entries[key]
            if not entries and self._publishers.get(publisher) is entries:
                del self._publishers[publisher]
            for waiter in entry.waiting:
                waiter.errback(e)
            raise
        entry.result, entry.done = result, True
        for waiter in entry.waiting:
            waiter.callback(result)
        entry.waiting.clear()
        return result, True

    def remember(self, publisher: str, key: str, at: float, result: Any) -> None:
        """Know ``(publisher, key)`` as run at *at* with *result* (as read
        back from a store that outlives the daemon); keys come oldest first."""
        entries = self._publishers.setdefault(publisher, OrderedDict())
        entries[key] = _Entry(at, result, True)
        while len(entries) > self.max_keys:
            entries.popitem(last=False)

    @staticmethod
    def _forget_before(entries: OrderedDict[str, _Entry[Any]], oldest: float) -> None:
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.at >= oldest or not entry.done:
                break
            del entries[key]
