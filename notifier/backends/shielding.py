"""Work that others may wait on, or that must finish once begun, goes on
when the request that started it is cancelled (its client gone): only that
request stops waiting for it."""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


def shielded(work: Deferred[T]) -> Deferred[T]:
    """A Deferred of *work*'s result whose cancelling leaves *work* be."""
    waiting: Deferred[T] = Deferred()

    def forward(result: Any) -> None:
        if not waiting.called:
            if isinstance(result, Failure):
                waiting.errback(result)
            else:
                waiting.callback(result)

    work.addBoth(forward)
    return waiting
