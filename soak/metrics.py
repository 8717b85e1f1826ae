"""What the clients and publishers count as they go, for the samples and
the report (the ledger holds what is judged)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs


@attrs.define(slots=True)
class Outage:
    """A subscriber without service: from its connection's loss (or the
    first refused attempt) until it was connected again."""

    transport: str
    store: str
    start: float
    end: float
    why: str
    #: A slow consumer's: dropped by the daemon for not reading, by design.
    slow: bool = False


class Metrics:
    def __init__(self) -> None:
        #: Delivery latencies (seconds) since the last sample.
        self.latencies: list[float] = []
        self.handed = 0
        self.published = 0
        self.acked = 0
        self.connected: Counter[str] = Counter()
        self.clients: Counter[str] = Counter()
        self.outages: list[Outage] = []
        #: Why connections ended, by transport: "websocket 1001 shutdown", "sse cut"...
        self.ends: Counter[str] = Counter()
        #: Publish attempts by outcome ("201", "200", "503 store_unavailable", "timeout"...).
        self.attempts: Counter[str] = Counter()
        #: (first attempt, acknowledged, attempts, store) of each publish that needed more than one.
        self.retried: list[tuple[float, float, int, str]] = []
        #: Answers no client should ever get from a daemon (500s, unexpected refusals).
        self.anomalies: list[dict[str, Any]] = []
        #: Exceptions in the harness itself (its own bugs, not the daemon's).
        self.harness_errors: list[str] = []
        self.final_reads_behind = 0

    def anomaly(self, t: float, what: str, **details: Any) -> None:
        if len(self.anomalies) < 1000:
            self.anomalies.append({"t": t, "what": what, **details})
