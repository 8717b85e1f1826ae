"""Delivery of published messages to every node's hubs.

``Broker`` is the seam between publishing and fan-out. The local broker
hands a message straight to the hub on this node; the Redis broker
(notifier.broker.redis) publishes it through Redis and delivers what comes
back, so that every node, this one included, delivers the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from notifier.hub import Hub
from notifier.auth import SIGNATURE_WINDOW
from notifier.idempotency import IdempotencyKeys
from notifier.replay import SignatureMemory

if TYPE_CHECKING:
    from notifier.registry import HubRegistry


class Broker(Protocol):
    def bind(self, registry: HubRegistry) -> None:
        """Called once by the registry that uses this broker."""

    async def start(self) -> None:
        """Begin receiving (a networked broker connects)."""

    async def stop(self) -> None: ...

    async def load(self, hub: Hub) -> None:
        """Bring a hub just made for an existing center up to date."""

    async def publish(self, publisher: str, entries: list[tuple[Hub, str]],
                      key: str | None) -> tuple[list[str], int, bool]:
        """Give each ``(hub, data)`` its id, retain it, and fan it out, all
        or none; once per ``(publisher, key)`` when *key* is given.

        Answers the ids, how many subscribers of this node were reached, and
        whether the messages were published now (``False``: a retry, answered
        with the first publish's ids).
        """

    async def announce(self, event: dict[str, str]) -> None:
        """Tell every node of a change the registry has made: ``{"type":
        "center_deleted", "publisher", "center"}`` or ``{"type":
        "publisher_changed", "publisher"}``."""

    async def due(self, now: float) -> list[tuple[str, str]]:
        """``(publisher, center)`` of centers idle past their ttl."""

    async def first_use(self, publisher: str, signature: str, timestamp: int) -> bool:
        """Whether a verified request signature is used for the first time
        on any node (remembering it until *timestamp* leaves the window)."""


class LocalBroker:
    """One node: ids and history live in the hubs themselves."""

    def __init__(self) -> None:
        self.registry: HubRegistry | None = None
        self.keys: IdempotencyKeys | None = None
        self.signatures: SignatureMemory | None = None

    def bind(self, registry: HubRegistry) -> None:
        self.registry = registry
        self.keys = IdempotencyKeys(registry.clock)
        self.signatures = SignatureMemory(registry.clock, SIGNATURE_WINDOW)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def load(self, hub: Hub) -> None:
        pass

    async def publish(self, publisher: str, entries: list[tuple[Hub, str]],
                      key: str | None) -> tuple[list[str], int, bool]:
        if key is None:
            ids, reached = self._deliver(entries)
            return ids, reached, True
        assert self.keys is not None
        (ids, reached), fresh = await self.keys.once(publisher, key, lambda: self._now(entries))
        return ids, reached if fresh else 0, fresh

    async def _now(self, entries: list[tuple[Hub, str]]) -> tuple[list[str], int]:
        return self._deliver(entries)

    @staticmethod
    def _deliver(entries: list[tuple[Hub, str]]) -> tuple[list[str], int]:
        ids, reached = [], 0
        for hub, data in entries:
            prepared = hub.append(data)
            reached += hub.deliver(prepared)
            ids.append(prepared.message.id)
        return ids, reached

    async def announce(self, event: dict[str, str]) -> None:
        pass  # the registry of the only node made the change itself

    async def first_use(self, publisher: str, signature: str, timestamp: int) -> bool:
        assert self.signatures is not None
        return self.signatures.first_use(publisher, signature, timestamp)

    async def due(self, now: float) -> list[tuple[str, str]]:
        assert self.registry is not None
        return [(hub.center.publisher, hub.center.name) for hub in self.registry.hubs() if hub.idle(now)]
