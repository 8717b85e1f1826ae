"""The node's metrics over time, for ``GET /admin/v1/history``
(docs/protocol.rst: History).

Every second, on the reactor, the node samples its connections by
transport (``Stats.subscribed``, and the Pusher face's connections; for
long-polls the most that waited at once since the sample before) and the
messages published through it and delivered by it since the sample
before, per second. It keeps the last hour of samples at one a second and
the last day at one a minute (a minute: the most connections of its
seconds, the mean of their rates), each series in an array of doubles
made once at its full size: 6 series × (3,600 + 1,440) points × 8 bytes =
241,920 bytes, however long the node runs.

Where the nodes share a store that keeps every node's samples
(``ClusterHistory``: Redis), each node writes its new samples there after
each one (what a failed write did not get there goes with the next), and
any node answers the history of all, summed.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from notifier.domain.errors import BadRequest
from notifier.domain.stats import Stats

log = Logger()

#: The series of a sample, in order: connections by transport, then messages per second.
SERIES = ("websocket", "sse", "longpoll", "pusher", "messages_in", "messages_out")
#: The first series count connections; the others are rates.
CONNECTIONS = 4
#: Samples kept at one a second (an hour), and at one a minute (a day).
SECOND_POINTS = 3600
MINUTE_POINTS = 1440
MINUTE = 60
#: Each range: its step in seconds, and its points at most.
RANGES: dict[str, tuple[int, int]] = {"5m": (1, 300), "1h": (1, SECOND_POINTS), "24h": (MINUTE, MINUTE_POINTS)}
DEFAULT_RANGE = "5m"
#: Seconds after its latest sample a node still holds an answer back
#: until it has written the next; past them, it stopped or lost the store.
LIVE = 5
#: How an ``after`` is written: a decimal number.
NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")

#: A sample: one value of each series.
Sample = tuple[float, ...]
#: A sample and its time (a multiple of its step).
Entry = tuple[int, Sample]


def history_query(args: Mapping[bytes, list[bytes]]) -> tuple[str, float | None]:
    """The ``range`` (``5m`` when not given) and ``after`` of the query
    *args* of ``GET /admin/v1/history``; 400 ``invalid_query`` for another
    range, or an ``after`` that is not a (finite) number."""
    given = args.get(b"range")
    name = given[0].decode("latin-1") if given else DEFAULT_RANGE
    if name not in RANGES:
        raise BadRequest("range is 5m, 1h or 24h", code="invalid_query")
    given = args.get(b"after")
    if given is None:
        return name, None
    text = given[0].decode("latin-1")
    after = float(text) if NUMBER.match(text) else math.nan
    if not math.isfinite(after):
        raise BadRequest("after is a time, in seconds", code="invalid_query")
    return name, after


class Ring:
    """The samples of the last *capacity* steps of *step* seconds: each
    series an array of doubles made once at its full size (NaN: no sample
    for that time), its slot the time's step modulo *capacity*. Written in
    time order; never grows."""

    __slots__ = ("step", "capacity", "series", "latest")

    def __init__(self, step: int, capacity: int, width: int = len(SERIES)) -> None:
        self.step = step
        self.capacity = capacity
        self.series = tuple(array("d", [math.nan]) * capacity for _ in range(width))
        #: The time of the latest sample (``None``: none yet).
        self.latest: int | None = None

    @property
    def nbytes(self) -> int:
        """The bytes of its values."""
        return sum(values.itemsize * len(values) for values in self.series)

    def put(self, t: int, sample: Sequence[float]) -> None:
        """Keep *sample* as the one of time *t*, later than the latest: the
        times between, if any, have none."""
        step, capacity, latest = self.step, self.capacity, self.latest
        if t % step or (latest is not None and t <= latest):
            raise ValueError(f"a sample of {t} after one of {latest}, every {step} s")
        if latest is not None:
            for skipped in range(latest + step, min(t, latest + (capacity + 1) * step), step):
                slot = skipped // step % capacity
                for values in self.series:
                    values[slot] = math.nan
        slot = t // step % capacity
        for values, value in zip(self.series, sample, strict=True):
            values[slot] = value
        self.latest = t

    def get(self, t: int) -> Sample | None:
        """The sample of time *t*, if it has one."""
        latest, step = self.latest, self.step
        if latest is None or t > latest or t <= latest - self.capacity * step or t % step:
            return None
        slot = t // step % self.capacity
        if math.isnan(self.series[0][slot]):
            return None
        return tuple(values[slot] for values in self.series)

    def since(self, after: float | None = None) -> Iterator[Entry]:
        """Its samples later than *after* (``None``: all), oldest first."""
        latest, step = self.latest, self.step
        if latest is None:
            return
        first = latest - (self.capacity - 1) * step
        if after is not None:
            first = max(first, (math.floor(after / step) + 1) * step)
        for t in range(first, latest + 1, step):
            sample = self.get(t)
            if sample is not None:
                yield t, sample


class Rollup:
    """The minute being sampled: the most connections of its seconds, and
    the sum of their rates, for their mean."""

    __slots__ = ("minute", "largest", "sums", "count")

    def __init__(self) -> None:
        self.minute: int | None = None
        self.largest = [0.0] * CONNECTIONS
        self.sums = [0.0] * (len(SERIES) - CONNECTIONS)
        self.count = 0

    def add(self, t: int, sample: Sample) -> Entry | None:
        """Count the sample of second *t*; the minute before, done, when *t* is of another."""
        minute = t - t % MINUTE
        done = None
        if minute != self.minute:
            if self.minute is not None and self.count:
                done = self.minute, (*self.largest, *(total / self.count for total in self.sums))
            self.minute = minute
            self.largest[:] = sample[:CONNECTIONS]
            self.sums[:] = sample[CONNECTIONS:]
            self.count = 1
            return done
        largest = self.largest
        for i in range(CONNECTIONS):
            if sample[i] > largest[i]:
                largest[i] = sample[i]
        sums = self.sums
        for i, value in enumerate(sample[CONNECTIONS:]):
            sums[i] += value
        self.count += 1
        return None


def through(latest: int, step: int) -> int:
    """The latest time of *step* a node whose latest sample is of second
    *latest* has every sample of: that second, or the minute before its own
    (its own minute is not over)."""
    return latest if step == 1 else (latest // MINUTE - 1) * MINUTE


class ClusterHistory(Protocol):
    """Where the nodes sharing a store keep their samples (notifier.backends.redis.history)."""

    async def write(self, node: str, latest: int, seconds: list[Entry], minutes: list[Entry]) -> None:
        """Add a node's new samples of every second and of every minute
        (each in time order, after those written before); *latest* is the
        time of its latest sample."""

    async def read(self, step: int, since: float, count: int) -> dict[str, tuple[int, list[Entry]]]:
        """Every node whose latest sample is of *since* or later: that
        sample's time, and its latest *count* samples of every *step*
        seconds (1 or 60), oldest first."""


@frozen
class NodeHistory:
    """What a node has of a range: the time it has every sample up to, whether it
    is still sampling, and its samples by time."""

    through: int
    live: bool
    samples: dict[int, Sample]


def _value(series: int, value: float) -> int | float:
    return int(value) if series < CONNECTIONS else round(value, 3)


def compose(name: str, now: float, after: float | None, nodes: Mapping[str, NodeHistory]) -> dict[str, Any]:
    """The answer of ``GET /admin/v1/history?range=<name>&after=<after>``
    from what each node has: the times of the range, up to the latest
    every node still sampling has given, oldest first, from the first any
    node has a sample of (later than *after*); each series summed over the
    nodes, and by node (``None``: no sample, from any node / that node)."""
    step, points = RANGES[name]
    answer: dict[str, Any] = {"range": name, "step": step, "now": now, "nodes": [], "t": [],
                              "series": {series: [] for series in SERIES}, "by_node": {}}
    ends = [node.through for node in nodes.values() if node.live] or [node.through for node in nodes.values()]
    if not ends:
        return answer
    end = min(ends)
    lowest = end - (points - 1) * step
    if after is not None:
        lowest = max(lowest, (math.floor(after / step) + 1) * step)
    first = min((t for node in nodes.values() for t in node.samples if lowest <= t <= end), default=None)
    if first is None:
        return answer
    times = range(first, end + 1, step)
    by_node: dict[str, dict[str, list[int | float | None]]] = {}
    for node in sorted(nodes):
        samples = nodes[node].samples
        rows = [samples.get(t) for t in times]
        if any(row is not None for row in rows):
            by_node[node] = {series: [None if row is None else _value(index, row[index]) for row in rows]
                             for index, series in enumerate(SERIES)}
    answer["nodes"] = list(by_node)
    answer["t"] = list(times)
    for index, series in enumerate(SERIES):
        columns = [values[series] for values in by_node.values()]
        answer["series"][series] = list(columns[0]) if len(columns) == 1 else \
            [_sum(index, at) for at in zip(*columns, strict=True)]
    answer["by_node"] = by_node
    return answer


def _sum(series: int, values: Sequence[int | float | None]) -> int | float | None:
    """The sum of the values some nodes have (``None``: none has one)."""
    present = [value for value in values if value is not None]
    return _value(series, sum(present)) if present else None


def _never() -> int:
    return 0


def _always() -> bool:
    return True


class MetricsHistory:
    """Samples the node's metrics every second while started (on *clock*,
    at each whole second), keeps them (``seconds``, ``minutes``), writes
    them to the *cluster*'s store if there is one (once *ready*), and
    answers ``GET /admin/v1/history``."""

    def __init__(self, clock: IReactorTime, stats: Stats, node: str, *, cluster: ClusterHistory | None = None,
                 ready: Callable[[], bool] = _always, pushers: Callable[[], int] = _never) -> None:
        self.clock = clock
        self.stats = stats
        #: This daemon's id among the nodes of a shared store.
        self.node = node
        self.cluster = cluster
        #: Whether the store is open (writing to it before would fail).
        self.ready = ready
        #: The node's Pusher connections (notifier.http.metrics.Metrics.pusher_connections).
        self.pushers = pushers
        self.seconds = Ring(1, SECOND_POINTS)
        self.minutes = Ring(MINUTE, MINUTE_POINTS)
        self._minute = Rollup()
        #: The time of the latest sample, and the messages counted then.
        self._last: int | None = None
        self._messages_then = (0, 0)
        self._call: IDelayedCall | None = None
        self._broken = False
        #: The latest samples of every second and every minute the cluster's store has.
        self._written: tuple[int | None, int | None] = (None, None)
        self._writing = False
        self._failing = False

    @property
    def nbytes(self) -> int:
        """The bytes of the samples kept: fixed."""
        return self.seconds.nbytes + self.minutes.nbytes

    # sampling

    @property
    def running(self) -> bool:
        return self._call is not None

    def start(self) -> None:
        """Sample at every whole second from now on."""
        if self._call is not None:
            return
        self._messages_then = self._messages()
        self.stats.subscribed.peak("longpoll")  # counted from now on
        self._schedule()

    def stop(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _schedule(self) -> None:
        now = self.clock.seconds()
        self._call = self.clock.callLater(math.floor(now) + 1 - now, self._tick)

    def _tick(self) -> None:
        try:
            self.sample(math.floor(self.clock.seconds()))
        except Exception:
            if not self._broken:
                log.failure("sampling the metrics history failed")
            self._broken = True
        self._schedule()

    def _messages(self) -> tuple[int, int]:
        stats = self.stats
        return sum(stats.messages_in.values()), sum(stats.messages_out.values())

    def sample(self, t: int) -> None:
        """Take the sample of second *t* (none if it has one already), and
        write what the cluster's store lacks."""
        last = self._last
        if last is not None and t <= last:
            return
        tally = self.stats.subscribed
        counts = tally.counts
        messages, then = self._messages(), self._messages_then
        elapsed = t - last if last is not None else 1
        sample = (float(counts["websocket"]), float(counts["sse"]), float(tally.peak("longpoll")),
                  float(self.pushers()),
                  max(messages[0] - then[0], 0) / elapsed, max(messages[1] - then[1], 0) / elapsed)
        self._messages_then = messages
        self._last = t
        self.seconds.put(t, sample)
        minute = self._minute.add(t, sample)
        if minute is not None:
            self.minutes.put(*minute)
        self._write()

    # the cluster's store

    @property
    def writing(self) -> bool:
        """Whether a write to the cluster's store is under way."""
        return self._writing

    def _write(self) -> None:
        """Write to the cluster's store the samples it lacks, unless a write
        is under way (those then go with the next)."""
        cluster, last = self.cluster, self._last
        if cluster is None or last is None or self._writing or not self.ready():
            return
        seconds = list(self.seconds.since(self._written[0]))
        minutes = list(self.minutes.since(self._written[1]))
        if not seconds and not minutes:
            return
        self._writing = True
        Deferred.fromCoroutine(cluster.write(self.node, last, seconds, minutes)).addCallbacks(
            self._wrote, self._failed, callbackArgs=(seconds, minutes))

    def _wrote(self, _: object, seconds: list[Entry], minutes: list[Entry]) -> None:
        self._writing = False
        written_second, written_minute = self._written
        self._written = (seconds[-1][0] if seconds else written_second,
                         minutes[-1][0] if minutes else written_minute)
        if self._failing:
            log.info("the metrics history is written to the store again")
        self._failing = False

    def _failed(self, failure: Failure) -> None:
        self._writing = False
        if not self._failing and self.running:
            log.warn("writing the metrics history to the store failed: {error}; "
                     "it is kept on this node until it works again", error=failure.getErrorMessage())
        self._failing = True

    # answering

    async def answer(self, name: str, after: float | None = None) -> dict[str, Any]:
        """``GET /admin/v1/history?range=<name>&after=<after>`` (``compose``):
        this node's samples, and every other node's with a cluster's store."""
        step, points = RANGES[name]
        nodes: dict[str, NodeHistory] = {}
        if self.cluster is not None:
            now = self.clock.seconds()
            count = points if after is None else min(points, max(math.ceil((now - after) / step), 0) + 1)
            # a few more, for samples written twice (a write whose answer was lost, made again)
            found = await self.cluster.read(step, now - points * step, count + 2)
            for node, (latest, entries) in found.items():
                if node != self.node:
                    nodes[node] = NodeHistory(through(latest, step), latest >= now - LIVE,
                                              {t: sample for t, sample in entries if not t % step})
        now = self.clock.seconds()
        last = self._last
        if last is not None:
            ring = self.seconds if step == 1 else self.minutes
            end = through(last, step)
            lowest = end - points * step if after is None else max(end - points * step, after)
            nodes[self.node] = NodeHistory(end, last >= now - LIVE, dict(ring.since(lowest)))
        return compose(name, now, after, nodes)
