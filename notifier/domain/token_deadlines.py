"""Subscriptions that end when their token does: one timer for them all."""

from __future__ import annotations

import heapq
from itertools import count
from weakref import ref

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from notifier.domain.hub import Hub, Subscriber

#: Additions between two sweeps of the entries of subscribers gone, at least.
SLACK = 1024


class TokenDeadlines:
    """Closes each subscriber added (``"expired"``) when its token expires,
    if it is still subscribed then.

    One delayed call, set for the earliest deadline, serves every
    subscription; entries of subscribers that left meanwhile are skipped,
    and swept out once they outnumber the live ones. An entry refers to
    its hub and subscriber weakly: a subscriber that left is freed when it
    closes, not kept with its connection until its entry is swept.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, ref[Hub], ref[Subscriber]]] = []
        self._order = count()
        self._call: IDelayedCall | None = None
        self._added = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: float, hub: Hub, subscriber: Subscriber) -> None:
        heapq.heappush(self._heap, (when, next(self._order), ref(hub), ref(subscriber)))
        self._added += 1
        if self._added >= max(SLACK, len(self._heap) // 2):
            # Sweep out the subscribers that left: a sweep every so many
            # additions keeps the heap at most about twice the live ones.
            self._added = 0
            self._heap = [entry for entry in self._heap if _subscribed(entry) is not None]
            heapq.heapify(self._heap)
        self._arm()

    def _arm(self) -> None:
        if not self._heap:
            return
        earliest = self._heap[0][0]
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= earliest:
                return
            call.cancel()
        self._call = self.clock.callLater(max(0.0, earliest - self.clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        now = self.clock.seconds()
        heap = self._heap
        while heap and heap[0][0] <= now:
            subscriber = _subscribed(heapq.heappop(heap))
            if subscriber is not None:
                subscriber.close("expired")
        self._arm()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._heap.clear()


def _subscribed(entry: tuple[float, int, ref[Hub], ref[Subscriber]]) -> Subscriber | None:
    """The subscriber of *entry* if it is still subscribed to its hub."""
    hub, subscriber = entry[2](), entry[3]()
    if hub is None or subscriber is None or subscriber not in hub.subscribers:
        return None
    return subscriber
