"""The metrics history of a node (notifier.domain.history): its samples
taken every whole second on a Clock, kept in arrays that never grow (an
hour of seconds, a day of minutes), the minutes rolled up from their
seconds, the connections counted as they come and go exactly as the walk
of ``/admin/v1/stats`` counts them, and the answer composed from several
nodes' samples."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from notifier.domain.errors import BadRequest, Unavailable
from notifier.domain.history import (
    MINUTE_POINTS,
    SECOND_POINTS,
    SERIES,
    MetricsHistory,
    NodeHistory,
    Ring,
    Rollup,
    compose,
    history_query,
)
from notifier.domain.hub import Hub
from notifier.domain.model import Center
from notifier.domain.stats import Stats, Subscribed
from tests.support import Api, Recorder, result_of

#: A whole minute, so that the seconds of a test fall into minutes as they are counted.
T0 = 1_800_000_000 - 1_800_000_000 % 60


def _sampling(start: float = T0 - 0.5) -> tuple[Clock, Stats, MetricsHistory]:
    clock = Clock()
    clock.advance(start)
    stats = Stats(started=clock.seconds())
    history = MetricsHistory(clock, stats, "n1")
    history.start()
    return clock, stats, history


def _tick(clock: Clock, seconds: int = 1) -> None:
    for _ in range(seconds):
        clock.advance(1)


class Multiplexed(Recorder):
    """A subscriber of several hubs at once, as the transports' multiplexed ones are."""

    def __init__(self, transport_name: str, hubs: tuple[Hub, ...]) -> None:
        super().__init__(transport_name)
        self.hubs = hubs


def _hub(name: str, tally: Subscribed) -> Hub:
    return Hub(Center("site", name, False, None, None, 0.0), f"e{name}", 10, lambda: 0.0, tally=tally)


# the ring buffers


def test_a_ring_keeps_the_latest_samples_of_its_capacity_in_arrays_made_once():
    ring = Ring(1, 5, width=2)
    addresses = [values.buffer_info() for values in ring.series]
    for t in range(100, 1100):
        ring.put(t, (t, -t))
    assert [values.buffer_info() for values in ring.series] == addresses  # never made again, never grown
    assert ring.nbytes == 2 * 5 * 8
    assert list(ring.since()) == [(t, (t, -t)) for t in range(1095, 1100)]
    assert ring.get(1094) is None and ring.get(1100) is None
    assert list(ring.since(1097)) == [(1098, (1098, -1098)), (1099, (1099, -1099))]
    assert list(ring.since(1097.5)) == [(1098, (1098, -1098)), (1099, (1099, -1099))]


def test_the_times_a_ring_skips_have_no_sample_even_where_an_older_one_was():
    ring = Ring(60, 4, width=1)
    for t in (0, 60, 120, 180):
        ring.put(t, (t,))
    ring.put(360, (360,))  # 240 and 300 skipped: their slots held 0 and 60
    assert list(ring.since()) == [(180, (180,)), (360, (360,))]
    assert ring.get(240) is None and ring.get(300) is None
    ring.put(60 * 1000, (1,))  # far past: everything before is gone
    assert list(ring.since()) == [(60000, (1,))]
    with pytest.raises(ValueError):
        ring.put(60000, (2,))  # not later
    with pytest.raises(ValueError):
        ring.put(60030, (2,))  # not on a step


def test_a_minute_is_the_most_connections_of_its_seconds_and_the_mean_of_their_rates():
    rollup = Rollup()
    assert rollup.add(T0, (1, 5, 0, 0, 2.0, 4.0)) is None
    assert rollup.add(T0 + 1, (3, 1, 7, 0, 4.0, 0.0)) is None
    assert rollup.add(T0 + 59, (2, 2, 2, 1, 0.0, 2.0)) is None
    assert rollup.add(T0 + 125, (9, 9, 9, 9, 9.0, 9.0)) == (T0, (3, 5, 7, 1, 2.0, 2.0))
    assert rollup.add(T0 + 180, (0, 0, 0, 0, 0.0, 0.0)) == (T0 + 120, (9, 9, 9, 9, 9.0, 9.0))


# sampling


def test_samples_are_taken_at_every_whole_second_with_messages_per_second():
    clock, stats, history = _sampling(T0 - 0.75)
    assert not clock.getDelayedCalls()[0].getTime() % 1  # the next whole second
    stats.messages_in["site"] += 3
    stats.messages_out["site"] += 30
    _tick(clock)
    stats.messages_in["other"] += 2
    _tick(clock)
    _tick(clock)
    assert list(history.seconds.since()) == [
        (T0, (0, 0, 0, 0, 3.0, 30.0)), (T0 + 1, (0, 0, 0, 0, 2.0, 0.0)), (T0 + 2, (0, 0, 0, 0, 0.0, 0.0))]
    # A turn late: the seconds not sampled have none, and the rate is over what passed.
    stats.messages_in["site"] += 9
    clock.advance(3.4)
    assert [t for t, _ in history.seconds.since()][-2:] == [T0 + 2, T0 + 5]
    assert history.seconds.get(T0 + 5)[4] == 3.0
    _tick(clock)
    assert history.seconds.latest == T0 + 6  # back on whole seconds
    history.stop()
    _tick(clock, 5)
    assert history.seconds.latest == T0 + 6 and not clock.getDelayedCalls()


def test_connections_are_sampled_by_transport_as_the_stats_count_them():
    api = Api(start=T0 - 0.5)
    site = api.add_publisher("site")
    for name in ("news", "user.17"):
        assert api.put_center(site, name).status == 201
    news, user = api.hub("site", "news"), api.hub("site", "user.17")
    history = api.metrics.history
    history.start()
    for transport in ("websocket", "websocket", "sse", "longpoll"):
        news.subscribe(Recorder(transport))
    both = Multiplexed("sse", (news, user))
    news.subscribe(both)
    user.subscribe(both)
    user.subscribe(Recorder("pusher"))  # a channel of a Pusher connection: its connection counts
    api.publish(site, "news", "a")
    _tick(api.clock)
    assert history.seconds.get(T0) == (2, 2, 1, 0, 1.0, 5.0)
    news.unsubscribe(both)
    _tick(api.clock)
    assert history.seconds.get(T0 + 1)[:4] == (2, 2, 1, 0)  # still in one hub: still there
    user.unsubscribe(both)
    _tick(api.clock)
    assert history.seconds.get(T0 + 2)[:4] == (2, 1, 1, 0)


def test_the_counts_kept_as_subscribers_come_and_go_are_those_of_the_walk():
    api = Api()
    site = api.add_publisher("site")
    hubs = []
    for name in ("a", "b", "c"):
        assert api.put_center(site, name).status == 201
        hubs.append(api.hub("site", name))

    def walked() -> dict[str, int]:
        counts: dict[str, int] = {}
        for (transport, _), n in api.metrics.connections().items():
            counts[transport] = counts.get(transport, 0) + n
        return counts

    def kept() -> dict[str, int]:
        return {transport: n for transport, n in api.stats.subscribed.counts.items() if n}

    subscribers: list[Any] = []
    for i in range(30):
        transport = ("websocket", "sse", "longpoll", "pusher")[i % 4]
        if i % 3 == 0:
            subscriber: Any = Multiplexed(transport, tuple(hubs[:2 + i % 2]))
        else:
            subscriber = Recorder(transport)
            subscriber.hubs = (hubs[i % 3],)
        for hub in subscriber.hubs:
            hub.subscribe(subscriber)
            hub.subscribe(subscriber)  # twice: once
        subscribers.append(subscriber)
        assert kept() == walked()
    for subscriber in subscribers[::2]:
        for hub in subscriber.hubs:
            hub.unsubscribe(subscriber)
            hub.unsubscribe(subscriber)
        assert kept() == walked()
    api.centers.drop_hub("site", "a")  # closed: its subscribers that did not leave are taken off
    assert kept() == walked() and kept()
    for hub in hubs[1:]:
        hub.close("deleted")
    assert kept() == walked() == {}
    assert not api.stats.subscribed._held


def test_a_long_poll_counts_at_the_most_there_were_since_the_sample_before():
    tally = Subscribed()
    hub = _hub("news", tally)
    polls = [Recorder("longpoll") for _ in range(3)]
    for poll in polls:
        hub.subscribe(poll)
    for poll in polls:
        hub.unsubscribe(poll)
    hub.subscribe(polls[0])
    assert tally.counts["longpoll"] == 1
    assert tally.peak("longpoll") == 3
    assert tally.peak("longpoll") == 1  # counted again from what there is
    hub.unsubscribe(polls[0])
    assert tally.peak("longpoll") == 1
    assert tally.peak("longpoll") == 0


def test_the_samples_take_a_fixed_size_however_long_the_node_runs():
    clock, stats, history = _sampling()
    arrays = [values for ring in (history.seconds, history.minutes) for values in ring.series]
    addresses = [values.buffer_info() for values in arrays]
    sizes = [sys.getsizeof(values) for values in arrays]
    assert history.nbytes == len(SERIES) * (SECOND_POINTS + MINUTE_POINTS) * 8 == 241_920
    tally = stats.subscribed
    polls = [Recorder("longpoll") for _ in range(50)]
    hub = _hub("news", tally)
    seconds = 3 * 24 * 3600 + 1234  # three days and more: far past both capacities
    for second in range(seconds):
        t = T0 + second
        # as many long-polls as the minute of the day, at one second of each minute
        if second % 60 == 7:
            waiting = polls[:t // 60 % 50]
            for poll in waiting:
                hub.subscribe(poll)
            for poll in waiting:
                hub.unsubscribe(poll)
        stats.messages_in["site"] += second % 60  # a minute's mean: 29.5
        clock.advance(1)
    assert [values.buffer_info() for values in arrays] == addresses
    assert [sys.getsizeof(values) for values in arrays] == sizes
    assert [len(values) for values in arrays] == [SECOND_POINTS] * 6 + [MINUTE_POINTS] * 6
    last = T0 + seconds - 1
    kept = list(history.seconds.since())
    assert [t for t, _ in kept] == list(range(last - SECOND_POINTS + 1, last + 1))
    assert all(sample[4] == t % 60 for t, sample in kept)
    minutes = list(history.minutes.since())
    assert [t for t, _ in minutes] == list(range(last - last % 60 - MINUTE_POINTS * 60, last - last % 60, 60))
    assert all(sample[2] == t // 60 % 50 and sample[4] == 29.5 and sample[5] == 0.0 for t, sample in minutes)


# the answer


def _node(through: int, samples: dict[int, tuple[float, ...]], live: bool = True) -> NodeHistory:
    return NodeHistory(through, live, samples)


def _sample(n: float) -> tuple[float, ...]:
    return (n, 2 * n, 0.0, 1.0, n / 2, 0.25)


def test_nodes_are_summed_where_they_have_samples_and_null_where_none_has():
    a = _node(T0 + 5, {t: _sample(1) for t in (T0 + 1, T0 + 2, T0 + 5)})
    b = _node(T0 + 4, {t: _sample(3) for t in (T0 + 2, T0 + 4)})
    answer = compose("5m", T0 + 5.5, None, {"b": b, "a": a})
    assert answer["t"] == [T0 + 1, T0 + 2, T0 + 3, T0 + 4]  # up to what every live node has given
    assert answer["nodes"] == ["a", "b"] and answer["range"] == "5m" and answer["step"] == 1
    assert answer["series"]["websocket"] == [1, 4, None, 3]
    assert answer["series"]["messages_in"] == [0.5, 2.0, None, 1.5]
    assert answer["by_node"]["a"]["sse"] == [2, 2, None, None]
    assert answer["by_node"]["b"]["messages_out"] == [None, 0.25, None, 0.25]
    assert isinstance(answer["series"]["websocket"][0], int) and isinstance(answer["series"]["messages_out"][1], float)
    # a node that stopped sampling holds nothing back
    answer = compose("5m", T0 + 60, None, {"a": a, "b": _node(T0 + 4, b.samples, live=False)})
    assert answer["t"][-1] == T0 + 5
    # after: only later times; nodes without a sample among them are not there
    answer = compose("5m", T0 + 5.5, T0 + 4, {"a": a, "b": _node(T0 + 5, b.samples)})
    assert (answer["t"], answer["nodes"], answer["series"]["websocket"]) == ([T0 + 5], ["a"], [1])
    assert set(answer["by_node"]) == {"a"} and set(answer["series"]) == set(SERIES)
    empty = compose("24h", T0, None, {})
    assert empty == {"range": "24h", "step": 60, "now": T0, "nodes": [], "t": [],
                     "series": {series: [] for series in SERIES}, "by_node": {}}


def test_a_range_has_at_most_its_points_the_latest():
    samples = {t: _sample(t - T0) for t in range(T0, T0 + 4000)}
    answer = compose("5m", T0 + 4000, None, {"a": _node(T0 + 3999, samples)})
    assert answer["t"] == list(range(T0 + 3700, T0 + 4000))
    assert answer["series"]["websocket"][0] == 3700
    assert len(compose("1h", T0 + 4000, None, {"a": _node(T0 + 3999, samples)})["t"]) == 3600


def test_the_range_and_after_of_a_query():
    assert history_query({}) == ("5m", None)
    assert history_query({b"range": [b"24h"], b"after": [b"1795800000"]}) == ("24h", 1795800000.0)
    assert history_query({b"range": [b"1h"], b"after": [b"-1.5e3"]}) == ("1h", -1500.0)
    for args in ({b"range": [b"2h"]}, {b"range": [b""]}, {b"range": [b"5M"]}, {b"range": [b"\xff"]},
                 {b"after": [b""]}, {b"after": [b"soon"]}, {b"after": [b"nan"]}, {b"after": [b"inf"]},
                 {b"after": [b"1e999"]}, {b"after": [b"1_000"]}, {b"after": [b" 1"]}):
        with pytest.raises(BadRequest) as refused:
            history_query(args)
        assert refused.value.code == "invalid_query", args


@pytest.mark.parametrize("name", ["5m", "1h", "24h"])
def test_the_node_s_own_answer_from_a_clock(name):
    clock, stats, history = _sampling()
    _tick(clock, 3 * 60 + 10)
    answer = _answered(history, name)
    if name == "24h":
        assert answer["t"] == [T0, T0 + 60, T0 + 120]  # the minute going on is not over
    else:
        assert answer["t"] == list(range(T0, T0 + 190))
    assert answer["nodes"] == ["n1"] and answer["now"] == clock.seconds()
    assert answer["series"]["longpoll"] == answer["by_node"]["n1"]["longpoll"] == [0] * len(answer["t"])
    after = _answered(history, name, answer["t"][-1])
    assert after["t"] == [] and after["nodes"] == []


def _answered(history: MetricsHistory, name: str, after: float | None = None) -> dict[str, Any]:
    return result_of(Deferred.fromCoroutine(history.answer(name, after)))


# the cluster's store


class FailingStore:
    """A cluster's store that fails while told to, and keeps what it is written."""

    def __init__(self) -> None:
        self.failing = False
        self.seconds: list[int] = []
        self.minutes: list[int] = []
        self.writes = 0

    async def write(self, node: str, latest: int, seconds: list[Any], minutes: list[Any]) -> None:
        self.writes += 1
        if self.failing:
            raise Unavailable("the state store (Redis) is unreachable", code="store_unavailable")
        assert node == "n1" and latest == seconds[-1][0]
        self.seconds += [t for t, _ in seconds]
        self.minutes += [t for t, _ in minutes]

    async def read(self, step: int, since: float, count: int) -> dict[str, Any]:
        if self.failing:
            raise Unavailable("the state store (Redis) is unreachable", code="store_unavailable")
        return {}


@pytest.fixture
def logged():
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "notifier.domain.history":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def test_a_store_failing_is_told_once_the_samples_kept_here_and_written_once_it_works(logged):
    clock, stats, history = _sampling()
    store = history.cluster = FailingStore()
    _tick(clock, 3)
    assert store.seconds == [T0, T0 + 1, T0 + 2] and store.writes == 3
    store.failing = True
    _tick(clock, 120)
    assert store.writes == 123  # tried every second
    assert [event["log_level"] for event in logged] == [LogLevel.warn]
    assert "writing the metrics history to the store failed" in formatEvent(logged[0])
    assert history.seconds.latest == T0 + 122  # sampled all along
    with pytest.raises(Unavailable):  # the cluster's answer needs its store
        _answered(history, "5m")
    store.failing = False
    _tick(clock)
    assert store.seconds == list(range(T0, T0 + 124))  # what it missed, then the new one
    assert store.minutes == [T0, T0 + 60]
    assert [event["log_level"] for event in logged] == [LogLevel.warn, LogLevel.info]
    _tick(clock)
    assert store.seconds[-2:] == [T0 + 123, T0 + 124] and len(logged) == 2


def test_nothing_is_written_before_the_store_is_open():
    clock, stats, history = _sampling()
    store = history.cluster = FailingStore()
    opened = False
    history.ready = lambda: opened
    _tick(clock, 2)
    assert store.writes == 0
    opened = True
    _tick(clock)
    assert store.seconds == [T0, T0 + 1, T0 + 2] and store.writes == 1
