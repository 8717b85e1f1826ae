"""What one publisher's centers retain on a node, together (docs/protocol.rst:
Retained bytes): a running sum of their messages' bytes, held within a bound by
dropping the oldest messages across its centers first."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from sys import getsizeof
from typing import TYPE_CHECKING

from attrs import define, field

if TYPE_CHECKING:
    from notifier.domain.hub import Hub, Prepared


#: What a message's text takes in memory, counted against the bounds: O(1),
#: whatever its length.
message_bytes: Callable[[str], int] = getsizeof


@define(slots=True, eq=False)
class Retention:
    """One publisher's retained messages on this node, across its hubs.

    Each hub adds what it retains and takes off what it drops (``bytes``);
    past ``bound`` bytes, the oldest of them go, whichever their center,
    but never the message just published. Oldest is by ``Prepared.order``:
    each hub's retained messages are in that order, so the oldest of all is
    the oldest of some hub, found in a heap of the hubs by their oldest
    message. Nothing is kept per message: a publish costs the account an
    addition and a comparison, and the heap is touched only when a hub
    begins to retain and when messages are shed.
    """

    bound: int
    #: The publisher's live hubs on this node, by center name.
    hubs: dict[str, Hub] = field(factory=dict)
    #: Bytes retained by those hubs.
    bytes: int = 0
    #: ``(order, tie, hub)`` for every hub retaining messages, *order* that
    #: of its oldest when pushed: a hub that has dropped its oldest since
    #: (by its own bounds) is in it with an older *order*, put right when
    #: it comes out.
    _oldest: list[tuple[int, int, Hub]] = field(factory=list)
    #: The hubs in it (``id``): one entry each at most.
    _queued: set[int] = field(factory=set)

    def retaining(self, hub: Hub, first: Prepared) -> None:
        """*hub*, which retained nothing, retains *first*."""
        if id(hub) not in self._queued:
            self._queued.add(id(hub))
            heapq.heappush(self._oldest, (first.order, id(hub), hub))

    def released(self, freed: int) -> None:
        """A hub dropped messages of *freed* bytes, or let go of them all."""
        self.bytes -= freed

    def left(self) -> None:
        """A hub is no longer live: its entry, if any, goes when the heap
        holds as many again as there are hubs (a hub let go of is not kept)."""
        if len(self._oldest) > 2 * len(self.hubs) + 64:
            self._oldest = [(head.order, id(hub), hub) for hub in self.hubs.values()
                            if (head := hub.oldest) is not None]
            heapq.heapify(self._oldest)
            self._queued = {tie for _, tie, _ in self._oldest}

    def shed(self, keep: Prepared) -> None:
        """Drop the oldest messages across the hubs until within ``bound``,
        but never *keep* (the message just published)."""
        oldest, hubs = self._oldest, self.hubs
        while self.bytes > self.bound and oldest:
            order, tie, hub = oldest[0]
            head = hub.oldest
            if head is None or hubs.get(hub.center.name) is not hub:
                heapq.heappop(oldest)  # it retains nothing now, or is gone
                self._queued.discard(tie)
            elif head.order != order:
                heapq.heapreplace(oldest, (head.order, tie, hub))  # put right
            elif head is keep:
                return
            else:
                hub.drop_oldest()
                head = hub.oldest
                if head is None:
                    heapq.heappop(oldest)
                    self._queued.discard(tie)
                else:
                    heapq.heapreplace(oldest, (head.order, tie, hub))
