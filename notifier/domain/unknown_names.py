"""Names known for a moment to be no publisher's (notifier.domain.publishers).

A request naming no publisher must cost what one naming a publisher does
(docs/security.rst): the store is not asked again for each, as it is not
for a publisher read a moment ago. Bounded: once full, a new name pushes
the oldest out, so a stranger's many names cost a fixed amount of memory.
"""

from __future__ import annotations

from collections import OrderedDict

from attrs import define, field


@define(slots=True, eq=False)
class UnknownNames:
    #: Seconds a name is taken to name no publisher.
    ttl: float
    #: Names held at most.
    limit: int
    #: When each was found in no publisher, oldest first.
    _since: OrderedDict[str, float] = field(factory=OrderedDict)

    def __contains__(self, name: str) -> bool:
        return name in self._since

    def __len__(self) -> int:
        return len(self._since)

    def holds(self, name: str, now: float) -> bool:
        """Whether *name* was found to be no publisher's less than ``ttl`` ago."""
        since = self._since.get(name)
        return since is not None and now - since < self.ttl

    def add(self, name: str, now: float) -> None:
        """Remember that *name* is no publisher's, as of *now*."""
        self._since[name] = now
        self._since.move_to_end(name)
        # Oldest first: what is too many, then what is too old.
        while self._since and (len(self._since) > self.limit or now - next(iter(self._since.values())) >= self.ttl):
            self._since.popitem(last=False)

    def discard(self, name: str) -> None:
        """Forget *name*: it is a publisher's now."""
        self._since.pop(name, None)

    def clear(self) -> None:
        self._since.clear()
