"""Publishing: messages numbered by the broker and applied to this node's
hubs, and what else the broker reports, each to the object it concerns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from attrs import define, field

from notifier.backends.interfaces import Arrival, Broker, Publication
from notifier.domain.centers import Centers
from notifier.domain.hub import Hub
from notifier.domain.model import MESSAGE_EVENT
from notifier.domain.publishers import Outboxes, Publishers
from notifier.domain.stats import Stats

#: One message of a batch: ``(center, data)``, a message of the default
#: event; ``(center, data, event)``; or ``(center, data, event, exclude)``,
#: one that skips a connection (``Message``).
BatchItem = tuple[str, str] | tuple[str, str, str] | tuple[str, str, str, str | None]
#: A message to publish to a hub: its data, its event, what it skips.
_Entry = tuple[Hub, str, str, str | None]


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

    async def publish(self, publisher: str, name: str, data: str, key: str | None = None, *,
                      event: str = MESSAGE_EVENT, exclude: str | None = None) -> tuple[str, int, bool]:
        """Publish *data* to ``publisher/name``, a message of *event* that
        skips the connection *exclude* (``Message``): its id, how many it
        reached on this node, and whether it was published now (``False``:
        a retry of *key*, answered with the first id)."""
        hub = await self._publishable(publisher, name)
        ids, reached, fresh = await self._publish(publisher, [(hub, data, event, exclude)], key)
        return ids[0], reached, fresh

    async def publish_batch(self, publisher: str, batch: Sequence[BatchItem],
                            key: str | None = None) -> tuple[list[str], bool]:
        """Publish the items of *batch* (``BatchItem``) in order, or none if a
        center is missing."""
        hubs: dict[str, Hub] = {}
        for item in batch:
            if item[0] not in hubs:
                hubs[item[0]] = await self._publishable(publisher, item[0])
        entries: list[_Entry] = [
            (hubs[item[0]], item[1], MESSAGE_EVENT, None) if len(item) == 2
            else (hubs[item[0]], item[1], item[2], item[3] if len(item) == 4 else None)
            for item in batch]
        ids, _, fresh = await self._publish(publisher, entries, key)
        return ids, fresh

    async def _publish(self, publisher: str, entries: list[_Entry],
                       key: str | None) -> tuple[list[str], int, bool]:
        publications = [Publication(hub.center.publisher, hub.center.name, data, hub.epoch, hub.seq,
                                    hub.history, hub.ttl, event, exclude) for hub, data, event, exclude in entries]
        published = await self.broker.publish(publisher, publications, key)
        arrived = self._arrived
        for arrival in published.arrivals:
            arrived(arrival)
        if not published.fresh:
            return list(published.ids), 0, False
        reached = sum(len(entry[0].subscribers) for entry in entries)
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
    #: What the Pusher face of other nodes announced (``PusherFace.remote``), if served.
    pusher: Callable[[dict[str, str]], None] | None = None
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
        elif kind == "pusher":
            if self.pusher is not None:
                self.pusher(event)
        elif kind == "webhook_changed":
            if self.outboxes is not None:
                self.outboxes.changed(publisher)
        elif kind == "center_deleted":
            self.centers.drop_hub(publisher, event.get("center", ""))
        elif kind in ("publisher_changed", "publisher_removed"):
            # A change of its settings only (``"change": "settings"``) leaves its subscriptions be.
            self.publishers.forget_publisher(publisher, removed=kind == "publisher_removed",
                                             secret=event.get("change") != "settings")
        elif kind == "publisher_added":
            self.publishers.publisher_added(publisher)
