"""What one publisher's centers retain on a node, together (docs/protocol.rst:
Retained bytes): a running sum of their messages' bytes, held within a bound by
dropping the oldest messages across its centers first."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from sys import getsizeof
from typing import TYPE_CHECKING

from attrs import define, field

if TYPE_CHECKING:
    from notifier.hub import Hub


#: What a message's text takes in memory, counted against the bounds: O(1),
#: whatever its length.
message_bytes: Callable[[str], int] = getsizeof


@define(slots=True, eq=False)
class Retention:
    """One publisher's retained messages on this node, across its hubs.

    Each hub tells it what it retains and drops (``added``, ``released``);
    past ``bound`` bytes, the oldest of them go, whichever their center,
    but never the message just published.
    """

    bound: int
    #: The publisher's live hubs on this node, by center name.
    hubs: dict[str, Hub] = field(factory=dict)
    #: Bytes and messages retained by those hubs.
    bytes: int = 0
    count: int = 0
    #: The center and id of every message retained, oldest first, with
    #: some its hub has dropped since (skipped, and cleared out now and then).
    _centers: deque[str] = field(factory=deque)
    _ids: deque[str] = field(factory=deque)

    def added(self, center: str, message_id: str, size: int, freed: int, gone: int) -> None:
        """A hub retained a message of *size* bytes, dropping *gone*
        messages of *freed* bytes to make room for it."""
        self.bytes += size - freed
        self.count += 1 - gone
        self._centers.append(center)
        ids = self._ids
        ids.append(message_id)
        if self.bytes > self.bound:
            self._shed()
        elif len(ids) > 2 * self.count + 1024:
            self._compact()

    def released(self, freed: int, gone: int) -> None:
        """A hub dropped *gone* messages of *freed* bytes."""
        self.bytes -= freed
        self.count -= gone

    def _shed(self) -> None:
        centers, ids, hubs = self._centers, self._ids, self.hubs
        while self.bytes > self.bound and len(ids) > 1:
            center, message_id = centers.popleft(), ids.popleft()
            hub = hubs.get(center)
            if hub is not None and hub.oldest_id == message_id:
                hub.drop_oldest()

    def _compact(self) -> None:
        live = {(name, message_id) for name, hub in self.hubs.items() for message_id in hub.retained_ids()}
        kept = [entry for entry in zip(self._centers, self._ids, strict=True) if entry in live]
        self._centers = deque(center for center, _ in kept)
        self._ids = deque(message_id for _, message_id in kept)
