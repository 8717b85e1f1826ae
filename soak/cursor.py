"""Where a subscriber stands, by the rules of ``notifier/static/notifier.js``.

A port of its ``Cursor``: one position per center of the subscription
(``None`` until one is known), a compound cursor for several centers, and
the last ids handed to the application, so that nothing is handed twice:
a message is new when its id is not among the last ``SEEN_IDS`` handed and
it is *newer* than its center's position (a position of another epoch, or
one that cannot be compared, counts as newer). The soak's clients hand
the application exactly what this accepts, as the browser client does.
"""

from __future__ import annotations

import re
from collections import deque

#: Ids remembered to drop any duplicate (``SEEN_IDS`` of notifier.js).
SEEN_IDS = 256

_ID = re.compile(r"^(.*)-(\d+)$")


def parse_id(value: str | None) -> tuple[str, int] | None:
    """``(epoch, seq)`` of a position ``{epoch}-{seq}``, or None."""
    if value is None:
        return None
    match = _ID.match(str(value))
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def newer(value: str, current: str) -> bool:
    """Whether position *value* comes after *current* (notifier.js ``newer``)."""
    if value == current:
        return False
    a, b = parse_id(value), parse_id(current)
    if a is None or b is None or a[0] != b[0]:
        return True
    return a[1] > b[1]


class Cursor:
    """The positions of a subscription to *centers*, and the ids handed."""

    def __init__(self, centers: list[str], since: str | None = None) -> None:
        self.centers = list(centers)
        self.positions: list[str | None] = [None] * len(centers)
        self._seen: deque[str] = deque()
        self._seen_set: set[str] = set()
        if since:
            self.fill(since)

    def entries(self, cursor: str) -> list[str] | None:
        if len(self.centers) == 1:
            return [cursor]
        entries = cursor.split(",")
        return entries if len(entries) == len(self.centers) else None

    def index(self, center: str) -> int:
        if len(self.centers) == 1:
            return 0
        try:
            return self.centers.index(center)
        except ValueError:
            return -1

    def value(self) -> str | None:
        """The cursor to resume from: None when no center has a position."""
        if all(position is None for position in self.positions):
            return None
        if len(self.centers) == 1:
            return self.positions[0]
        return ",".join(position or "" for position in self.positions)

    def complete(self) -> bool:
        return all(position is not None for position in self.positions)

    def advance(self, index: int, value: str) -> bool:
        current = self.positions[index]
        if current is not None and not newer(value, current):
            return False
        self.positions[index] = value
        return True

    def merge(self, cursor: str | None) -> None:
        """Moves every center to its entry of *cursor* where that is ahead."""
        entries = self.entries(cursor) if cursor else None
        for i, entry in enumerate(entries or ()):
            if entry:
                self.advance(i, entry)

    def fill(self, cursor: str | None) -> None:
        """Sets the centers that have no position yet from *cursor*."""
        entries = self.entries(cursor) if cursor else None
        for i, entry in enumerate(entries or ()):
            if entry and self.positions[i] is None:
                self.positions[i] = entry

    def accept(self, center: str, message_id: str) -> bool:
        """Whether the message is new (its center then moves to it), or a
        duplicate to drop."""
        index = self.index(center)
        if index == -1:
            return True
        key = f"{index} {message_id}"
        if key in self._seen_set:
            return False
        if not self.advance(index, message_id):
            return False
        self._seen.append(key)
        self._seen_set.add(key)
        if len(self._seen) > SEEN_IDS:
            self._seen_set.discard(self._seen.popleft())
        return True
