"""Counters for ``/admin/v1/stats`` and ``/metrics``.

Plain integers bumped once per publish (never per delivery), read by a
Prometheus collector at scrape time; and the subscribers of the node's
hubs by transport, counted as they come and go (``Subscribed``).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from attrs import define, field


class _Subscriber(Protocol):
    @property
    def transport_name(self) -> str: ...


class Subscribed:
    """The subscribers of the node's hubs by transport, counted as they
    come and go (every hub the centers make tells it, ``Hub.tally``), as
    ``notifier.http.metrics.Metrics.connections`` counts them walking the
    hubs: a connection following several centers once, a Pusher
    connection's channels not at all (its connection counts, kept by the
    Pusher face). Each subscriber costs an entry of ``_held`` (how many of
    the hubs it is in: about 50 bytes) while it is in one.

    ``peak`` is the most there were at once since it was last asked: a
    long-poll is a subscriber only while it waits, so a poll answered
    between two samples still counts in the next one.
    """

    __slots__ = ("counts", "_peaks", "_held")

    def __init__(self) -> None:
        #: Subscribers by transport, now.
        self.counts: Counter[str] = Counter()
        self._peaks: Counter[str] = Counter()
        self._held: dict[object, int] = {}

    def came(self, subscriber: _Subscriber) -> None:
        """*subscriber* is in one more hub."""
        name = subscriber.transport_name
        if name == "pusher":
            return
        held = self._held
        hubs = held.get(subscriber, 0)
        held[subscriber] = hubs + 1
        if not hubs:  # (dict's own get: Counter's item lookup is slower, on every subscription)
            counts = self.counts
            now = counts[name] = counts.get(name, 0) + 1
            if now > self._peaks.get(name, 0):
                self._peaks[name] = now

    def went(self, subscriber: _Subscriber) -> None:
        """*subscriber* left one of the hubs it is in."""
        name = subscriber.transport_name
        if name == "pusher":
            return
        held = self._held
        hubs = held.pop(subscriber, 0)
        if hubs > 1:
            held[subscriber] = hubs - 1
        elif hubs:
            counts = self.counts
            counts[name] = counts.get(name, 0) - 1

    def peak(self, name: str) -> int:
        """The most subscribers of transport *name* there were at once since
        the last time it was asked (or now, if more); counted from now on."""
        now = self.counts[name]
        most = max(self._peaks[name], now)
        self._peaks[name] = now
        return most


@define(slots=True)
class Stats:
    started: float
    messages_in: Counter[str] = field(factory=Counter)
    messages_out: Counter[str] = field(factory=Counter)
    drops: Counter[str] = field(factory=Counter)
    #: Webhook requests accepted by the site, given up, tried again; events dropped from a full queue.
    webhooks_sent: Counter[str] = field(factory=Counter)
    webhooks_failed: Counter[str] = field(factory=Counter)
    webhooks_retried: Counter[str] = field(factory=Counter)
    webhooks_dropped: Counter[str] = field(factory=Counter)
    #: The subscribers of the node's hubs by transport (notifier.domain.history samples them).
    subscribed: Subscribed = field(factory=Subscribed)
