"""``Idempotency-Key``: a retried publish is answered, not delivered again."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Awaitable, Callable, Generic, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")

#: How long a key is remembered, in seconds (SPEC.md: 10 minutes).
KEY_TTL = 600.0
#: How many keys are remembered at most; the oldest go first.
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
    _entries: OrderedDict[tuple[str, str], _Entry[Any]] = field(factory=OrderedDict)

    async def once(self, publisher: str, key: str, action: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run *action* once for ``(publisher, key)``: its result, and whether it ran now.

        A retry while the first is still running waits for it. A failed
        action is forgotten, so that a retry may succeed.
        """
        now = self.clock.seconds()
        self._forget_before(now - self.ttl)
        entry = self._entries.get((publisher, key))
        if entry is not None:
            if entry.done:
                return entry.result, False
            waiter: Deferred[T] = Deferred()
            entry.waiting.append(waiter)
            return await waiter, False
        entry = self._entries[(publisher, key)] = _Entry(now)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
        try:
            result = await action()
        except BaseException as e:
            if self._entries.get((publisher, key)) is entry:
                del self._entries[(publisher, key)]
            for waiter in entry.waiting:
                waiter.errback(e)
            raise
        entry.result, entry.done = result, True
        for waiter in entry.waiting:
            waiter.callback(result)
        entry.waiting.clear()
        return result, True

    def _forget_before(self, oldest: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.at >= oldest or not entry.done:
                break
            del entries[key]
