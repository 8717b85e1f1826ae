"""Waits that are always bounded, and the result of a Deferred fired already."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

#: How long any one exchange with a daemon may take, in seconds.
WAIT = 15


def sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def bounded(awaitable: Deferred[Any] | Coroutine[Any, Any, Any], seconds: float = WAIT) -> Deferred[Any]:
    """*awaitable* (a Deferred or a coroutine), failing after *seconds*."""
    d = awaitable if isinstance(awaitable, Deferred) else Deferred.fromCoroutine(awaitable)
    return d.addTimeout(seconds, reactor)


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "the condition") -> None:
    """Poll *predicate* every 20 ms until it holds; fail after *timeout* seconds."""
    for _ in range(int(timeout / 0.02) + 1):
        if predicate():
            return
        await sleep(0.02)
    raise AssertionError(f"not within {timeout} s: {what}")


async def eventually(attempt: Callable[[], Awaitable[Any]], accept: Callable[[Any], bool],
                     seconds: float = 5.0, every: float = 0.1) -> Any:
    """``attempt()`` until ``accept(result)``, for at most *seconds*; the accepted result."""
    deadline = reactor.seconds() + seconds
    result = None
    while True:
        result = await attempt()
        if accept(result):
            return result
        if reactor.seconds() >= deadline:
            raise AssertionError(f"not reached within {seconds} s; last: {result!r}")
        await sleep(every)


def result_of(d: Deferred[Any]) -> Any:
    """The result of a Deferred that has fired already (like ``successResultOf``)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired: something waited on I/O or time"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
