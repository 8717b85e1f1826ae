"""Delivery on one node: its hubs are the only streams there are.

Messages are numbered after their hub's latest and handed back to the
centers to apply at once. ``Idempotency-Key``\\ s and request signatures
are remembered in memory.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from notifier.backends.interfaces import Arrival, BrokerHandler, LiveCenter, Publication, Published, Stream
from notifier.domain.idempotency import IdempotencyKeys, fingerprint, ids_of, kept_ids
from notifier.domain.model import Center
from notifier.domain.signatures import SIGNATURE_WINDOW, SignatureMemory


class LocalBroker:
    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.keys = IdempotencyKeys(clock, keep=kept_ids)
        self.signatures = SignatureMemory(clock, SIGNATURE_WINDOW)

    async def start(self, handler: BrokerHandler) -> None:
        pass  # nothing arrives from elsewhere

    async def stop(self) -> None:
        pass

    async def load(self, center: Center, ttl: int) -> Stream | None:
        return None

    async def stream(self, center: Center) -> Stream | None:
        return None

    async def publish(self, publisher: str, publications: list[Publication], key: str | None) -> Published:
        if key is None:
            return self._numbered(publications)
        published, fresh = await self.keys.once(publisher, key, lambda: self._now(publications),
                                                fingerprint((p.center, p.data, p.event) for p in publications))
        return published if fresh else Published(ids_of(published), False)

    async def _now(self, publications: list[Publication]) -> Published:
        return self._numbered(publications)

    def _numbered(self, publications: list[Publication]) -> Published:
        # Answered without yielding to the reactor: the centers apply
        # these before anything else is published to the same hubs.
        ts = self.clock.seconds()
        latest: dict[tuple[str, str], int] = {}
        arrivals = []
        for publication in publications:
            key = (publication.publisher, publication.center)
            seq = latest[key] = latest.get(key, publication.seq) + 1
            arrivals.append(Arrival(publication.publisher, publication.center, publication.epoch,
                                    seq, ts, publication.data, publication.event, publication.exclude))
        return Published(tuple(arrival.id for arrival in arrivals), True, tuple(arrivals))

    async def announce(self, event: dict[str, str]) -> None:
        # This node made the change itself; one made by
        # another process (the offline command) is found in the store
        # (Store.changed).
        pass

    def forget(self, publisher: str) -> None:
        self.keys.forget(publisher)

    async def first_use(self, publisher: str, signature: str, timestamp: int) -> bool:
        return self.signatures.first_use(publisher, signature, timestamp)

    async def due(self, now: float, live: list[LiveCenter]) -> list[tuple[str, str]]:
        return [(center.publisher, center.center) for center in live if center.idle]
