"""Publish order across the centers of a multiplexed subscription.

Each hub fans its messages out on its own, a slice of subscribers per
turn: a subscriber of several centers could get a message of one before
one published earlier to another (a batch across centers, or a center
still writing to its many subscribers). It holds back what comes after a
message another hub still owes it, and sends it once that has come,
merged in publish order (``Prepared.order``). What is merged and split is
made once for every subscriber holding the same, as a ``Batch``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from notifier.domain.hub import Batch, Hub, Prepared


def _order(prepared: Prepared) -> int:
    return prepared.order


def _merged(held: Batch, key: tuple[str, Batch]) -> Batch:
    """What was *held* and the batch of *key*, in publish order."""
    return Batch(list(heapq.merge(held.items, key[1].items, key=_order)))


def _split(batch: Batch, key: tuple[str, float]) -> tuple[Batch | None, Batch | None]:
    """*batch* as what goes before the bound of *key* (an ``order``) and what waits."""
    items, bound = batch.items, key[1]
    cut = next((i for i, prepared in enumerate(items) if prepared.order > bound), len(items))
    return (Batch(items[:cut]) if cut else None), (Batch(items[cut:]) if cut < len(items) else None)


def _owed(hubs: Sequence[Hub], seen: Sequence[int]) -> float:
    """The ``order`` of the earliest message one of *hubs* still owes a
    subscriber that has had each one's messages up to its *seen* seq."""
    bound = math.inf
    for hub, last in zip(hubs, seen, strict=True):
        if hub.seq > last:
            bound = min(bound, hub.owed_order(last))
    return bound


def held_back(hubs: Sequence[Hub], backlog: list[Prepared]) -> tuple[list[Prepared], list[Prepared]]:
    """A *backlog* of *hubs* replayed now (up to what each has sent): what
    goes now, and what was published after a message still on its way,
    which waits for it."""
    bound = _owed(hubs, [hub.sent for hub in hubs])
    if bound == math.inf or not any(prepared.order > bound for prepared in backlog):
        return backlog, []
    return ([prepared for prepared in backlog if prepared.order < bound],
            [prepared for prepared in backlog if prepared.order > bound])


class InOrder:
    """What one subscriber of several *hubs* has had of each, and holds back."""

    __slots__ = ("hubs", "index", "seen", "held")

    def __init__(self, hubs: Sequence[Hub], held: list[Prepared] | None = None) -> None:
        self.hubs = tuple(hubs)
        self.index = {hub.center.name: i for i, hub in enumerate(hubs)}
        #: The seq of the latest message of each hub it had (live or in its
        #: backlog): attached now, everything sent so far.
        self.seen = [hub.sent for hub in hubs]
        self.held: Batch | None = Batch(held) if held else None

    def backlog(self, items: list[Prepared]) -> list[Prepared]:
        """What of a backlog replayed on attaching goes now (``held_back``);
        the rest is held."""
        now, held = held_back(self.hubs, items)
        if held:
            self.held = Batch(held)
        return now

    def take(self, batch: Batch) -> Batch | None:
        """What goes now, a hub's *batch* being delivered: the batch itself,
        or what it and what was held make in publish order, up to a
        message another hub still owes (``None``: nothing yet)."""
        slot = self.index[batch.items[0].message.center]
        self.seen[slot] = self.hubs[slot].sent  # its fan-out writes everything up to there
        bound = _owed(self.hubs, self.seen)
        held = self.held
        if held is None:
            if batch.items[-1].order < bound:
                return batch
        else:
            batch = held.shared(("merged", batch), _merged)
        now, self.held = batch.shared(("split", bound), _split)
        return now
