"""Counters for ``/admin/v1/stats`` and ``/metrics``.

Plain integers bumped once per publish (never per delivery), read by a
Prometheus collector at scrape time.
"""

from __future__ import annotations

from collections import Counter

from attrs import define, field


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
