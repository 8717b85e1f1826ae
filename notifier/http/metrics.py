"""``/admin/v1/stats`` and ``/metrics``: one snapshot of the node, two
renderings; and ``/admin/v1/history``, its samples over time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.interfaces import IReactorTime

from notifier.domain.centers import Centers
from notifier.domain.history import MetricsHistory
from notifier.domain.presence import Presence
from notifier.domain.publishers import Publishers
from notifier.domain.stats import Stats

if TYPE_CHECKING:
    from notifier.pusher.face import PusherFace

TRANSPORTS = ("websocket", "sse", "longpoll", "pusher")


class _Snapshot:
    """A collector that yields metrics gathered before the scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families

    def describe(self) -> Iterable[Metric]:
        return []


class Metrics:
    """What the node counts and holds, gathered for ``/admin/v1/stats`` and ``/metrics``."""

    def __init__(self, publishers: Publishers, centers: Centers, stats: Stats, clock: IReactorTime,
                 node: str = "", store: str = "sqlite", presence: Presence | None = None,
                 history: MetricsHistory | None = None) -> None:
        self.publishers = publishers
        self.centers = centers
        self.counted = stats
        self.presence = presence
        self.clock = clock
        #: This daemon's id among the nodes of a shared store, and the kind of store.
        self.node = node
        self.store = store
        #: The Pusher face, whose connections count as ``pusher`` (each once, whatever its channels).
        self.pusher: PusherFace | None = None
        #: The node's samples over time (this node's own only, unless given one that shares them).
        self.history = history if history is not None else MetricsHistory(clock, stats, node)
        self.history.pushers = self.pusher_connections

    def pusher_connections(self) -> int:
        """The Pusher connections, as ``connections`` counts them: every
        one the face holds is open to an app."""
        return 0 if self.pusher is None else len(self.pusher.connections)

    def connections(self) -> Counter[tuple[str, str]]:
        """Live subscribers by ``(transport, publisher)``: connections, a
        multiplexed one counted once however many centers it follows."""
        counts: Counter[tuple[str, str]] = Counter()
        seen: set[int] = set()
        for hub in self.centers.hubs():
            for subscriber in tuple(hub.subscribers):
                if subscriber.transport_name == "pusher":
                    continue  # a channel of a connection counted below
                if len(getattr(subscriber, "hubs", ())) > 1:
                    if id(subscriber) in seen:
                        continue
                    seen.add(id(subscriber))
                counts[subscriber.transport_name, hub.center.publisher] += 1
        if self.pusher is not None:
            for connection in self.pusher.every_connection():
                if connection.publisher is not None:
                    counts["pusher", connection.publisher.name] += 1
        return counts

    async def stats(self) -> dict[str, Any]:
        stats = self.counted
        publishers = await self.publishers.list_publishers()
        by_transport = Counter[str]()
        for (transport, _), n in self.connections().items():
            by_transport[transport] += n
        return {
            "connections": {t: by_transport[t] for t in TRANSPORTS},
            "publishers": len(publishers),
            "centers": sum(count for _, count in publishers),
            "centers_live": sum(1 for _ in self.centers.hubs()),
            "messages_in": sum(stats.messages_in.values()),
            "messages_out": sum(stats.messages_out.values()),
            "dropped_subscribers": sum(stats.drops.values()),
            "uptime": self.clock.seconds() - stats.started,
            "node": self.node,
            "store": self.store,
        }

    async def exposition(self) -> tuple[bytes, str]:
        stats = self.counted
        publishers = await self.publishers.list_publishers()
        connections = GaugeMetricFamily(
            "notifier_connections", "Subscribers connected to this node.", labels=["transport", "publisher"])
        for (transport, publisher), n in sorted(self.connections().items()):
            connections.add_metric([transport, publisher], n)
        centers = GaugeMetricFamily("notifier_centers", "Notification centers.", labels=["publisher"])
        for owner, count in publishers:
            centers.add_metric([owner.name], count)
        members = GaugeMetricFamily("notifier_members", "Members of presence centers on this node "
                                    "(a uid counted once per center).", labels=["publisher"])
        presence = self.presence
        for publisher, n in sorted((presence.local_members() if presence is not None else {}).items()):
            members.add_metric([publisher], n)
        families: list[Metric] = [connections, centers, members]
        for name, doc, counter in (
            ("notifier_messages_in", "Messages published through this node.", stats.messages_in),
            ("notifier_messages_out", "Deliveries to subscribers of this node.", stats.messages_out),
            ("notifier_dropped_subscribers", "Subscribers dropped as too slow.", stats.drops),
            ("notifier_webhook_requests_sent", "Webhook requests the site accepted.", stats.webhooks_sent),
            ("notifier_webhook_requests_failed", "Webhook requests given up after retrying for retry_for.",
             stats.webhooks_failed),
            ("notifier_webhook_retries", "Webhook requests tried again.", stats.webhooks_retried),
            ("notifier_webhook_events_dropped", "Webhook events dropped from a full queue.",
             stats.webhooks_dropped),
        ):
            family = CounterMetricFamily(name, doc, labels=["publisher"])
            for publisher, n in sorted(counter.items()):
                family.add_metric([publisher], n)
            families.append(family)
        families.append(GaugeMetricFamily("notifier_publishers", "Publishers.", value=len(publishers)))
        families.append(GaugeMetricFamily(
            "notifier_uptime_seconds", "Seconds since the node started.", value=self.clock.seconds() - stats.started))
        collectors = CollectorRegistry(auto_describe=False)
        collectors.register(_Snapshot(families))
        return generate_latest(collectors), CONTENT_TYPE_LATEST
