"""Signed requests that are not idempotent (``POST``) are accepted once
(docs/protocol.rst: Authentication): an idempotent one sent again does nothing
more than the first, so it is answered again, never remembered.

A signature is remembered until its timestamp leaves the window in which it
could be accepted, in buckets by timestamp: at most ``2 * window + 1``
buckets, each dropped whole once its timestamp is too old to be accepted.
Only signatures that verified are remembered, so what this holds grows
with the publishers' own traffic, never with a stranger's.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

#: How far a signed request's timestamp may be from the server's clock:
#: how long its signature is remembered.
SIGNATURE_WINDOW = 300
#: The methods whose signed requests may be sent again (RFC 9110 9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})


@define(slots=True, eq=False)
class SignatureMemory:
    clock: IReactorTime
    #: How far a timestamp may be from the clock (SIGNATURE_WINDOW).
    window: int
    _buckets: dict[int, set[bytes]] = field(factory=dict)
    _pruned: float = 0.0

    def first_use(self, publisher: str, signature: str, timestamp: int) -> bool:
        """Whether ``(publisher, signature)`` is seen for the first time
        (remembering it if so)."""
        now = self.clock.seconds()
        if now - self._pruned >= 1:
            self._pruned = now
            for stale in [t for t in self._buckets if t < now - self.window]:
                del self._buckets[stale]
        seen = self._buckets.setdefault(timestamp, set())
        key = publisher.encode() + b" " + bytes.fromhex(signature)
        if key in seen:
            return False
        seen.add(key)
        return True
