"""Publishing: messages numbered by the broker and applied to this node's
hubs, and what else the broker reports, each to the object it concerns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from attrs import define, field

from notifier.backends.interfaces import Arrival, Broker, Publication
from notifier.domain.centers import Centers
from notifier.domain.hub import Hub
from notifier.domain.publishers import Outboxes, Publishers
from notifier.domain.stats import Stats


@define(slots=True, eq=False)
class Publishing:
    """Publishes to centers, one message or a batch, all or none, once
    per ``Idempotency-Key`` (the broker's), and counts what went in and out."""

    broker: Broker
    centers: Centers
    stats: Stats
    #: ``centers.publishable`` and ``centers.message_arrived``, bound once:
    #: every publish goes through them.
    _publishable: Callable[[str, str], Awaitable[Hub]] = field(init=False)
    _arrived: Callable[[Arrival], None] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._publishable = self.centers.publishable
        self._arrived = self.centers.message_arrived

    async def publish(self, publisher: str, name: str, data: str,
                      key: str | None = None) -> tuple[str, int, bool]:
        """Publish *data* to ``publisher/name``: its id, how many it reached
        on this node, and whether it was published now (``False``: a retry
        of *key*, answered with the first id)."""
        hub = await self._publishable(publisher, name)
        ids, reached, fresh = await self._publish(publisher, [(hub, data)], key)
        return ids[0], reached, fresh

    async def publish_batch(self, publisher: str, batch: list[tuple[str, str]],
                            key: str | None = None) -> tuple[list[str], bool]:
        """Publish ``(center, data)`` pairs in order, or none if a center is missing."""
        hubs: dict[str, Hub] = {}
        for name, _ in batch:
            if name not in hubs:
                hubs[name] = await self._publishable(publisher, name)
        ids, _, fresh = await self._publish(publisher, [(hubs[name], data) for name, data in batch], key)
        return ids, fresh

    async def _publish(self, publisher: str, entries: list[tuple[Hub, str]],
                       key: str | None) -> tuple[list[str], int, bool]:
        publications = [Publication(hub.center.publisher, hub.center.name, data, hub.epoch, hub.seq,
                                    hub.history, hub.ttl) for hub, data in entries]
        published = await self.broker.publish(publisher, publications, key)
        arrived = self._arrived
        for arrival in published.arrivals:
            arrived(arrival)
        if not published.fresh:
            return list(published.ids), 0, False
        reached = sum(len(hub.subscribers) for hub, _ in entries)
        self.stats.messages_in[publisher] += len(published.ids)
        self.stats.messages_out[publisher] += reached
        return list(published.ids), reached, True


@define(slots=True, eq=False)
class BrokerEvents:
    """The node's ``BrokerHandler``: what the broker reports, handed to the
    object that owns it (messages to the centers, changes to the publishers,
    the centers, the webhook outboxes and presence)."""

    centers: Centers
    publishers: Publishers
    outboxes: Outboxes | None = None
    #: Presence items from other nodes (``Presence.remote``), if any.
    presence: Callable[[dict[str, str]], None] | None = None
    #: ``centers.message_arrived`` itself: no step between the broker and the hubs.
    message_arrived: Callable[[Arrival], None] = field(init=False)
    reconnected: Callable[[], None] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.message_arrived = self.centers.message_arrived
        self.reconnected = self.centers.reconnected

    def control(self, event: dict[str, str]) -> None:
        """A change a node made (``Broker.announce``)."""
        kind, publisher = event.get("type"), event.get("publisher", "")
        if kind == "presence":
            if self.presence is not None:
                self.presence(event)
        elif kind == "webhook_changed":
            if self.outboxes is not None:
                self.outboxes.changed(publisher)
        elif kind == "center_deleted":
            self.centers.drop_hub(publisher, event.get("center", ""))
        elif kind in ("publisher_changed", "publisher_removed"):
            self.publishers.forget_publisher(publisher, removed=kind == "publisher_removed")
        elif kind == "publisher_added":
            self.publishers.publisher_added(publisher)
