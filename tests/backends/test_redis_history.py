"""The metrics history of several nodes sharing a real ``redis-server``
(notifier.backends.redis.history): each node's samples written there, any
node answering the sum of all with each node's own, ``null`` where a node
has no sample; Redis going away told once while the samples are kept,
and written once it is back. Then two daemons, as they run."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, globalLogPublisher

from notifier.backends.redis.client import Redis, RedisAddress
from notifier.backends.redis.history import RedisHistory
from notifier.backends.redis.keys import Keys
from notifier.domain.history import SERIES, MetricsHistory
from notifier.domain.hub import Hub
from notifier.domain.model import Center
from notifier.domain.stats import Stats
from tests.redis_server import raw_command
from tests.support import Recorder, eventually, start_daemon, until

pytestmark = pytest.mark.redis

#: A whole minute: the nodes' clocks start half a second before it.
T0 = 1_800_000_000 - 1_800_000_000 % 60


class Node:
    """A node's metrics history on a Clock of its own, written to the test's Redis."""

    def __init__(self, name: str, redis: Redis) -> None:
        self.clock = Clock()
        self.clock.advance(T0 - 0.5)
        self.stats = Stats(started=self.clock.seconds())
        self.history = MetricsHistory(self.clock, self.stats, name, cluster=RedisHistory(redis, Keys(0)))
        self.hub = Hub(Center("site", "news", False, None, None, 0.0), "e1", 10, self.clock.seconds,
                       tally=self.stats.subscribed)

    def connect(self, *transports: str) -> None:
        for transport in transports:
            self.hub.subscribe(Recorder(transport))

    async def tick(self, seconds: int = 1) -> None:
        """*seconds* of samples, each written before the next."""
        for _ in range(seconds):
            self.clock.advance(1)
            for _ in range(5000):
                if not self.history.writing:
                    break
                await deferLater(reactor, 0.001, lambda: None)
            assert not self.history.writing, "the samples are not written within 5 s"

    async def answer(self, query: str = "5m", after: float | None = None) -> dict[str, Any]:
        return await self.history.answer(query, after)


@pytest_twisted.async_yield_fixture
async def client(redis):
    connection = Redis(RedisAddress.parse(redis.url), reactor)
    await connection.ready()
    yield connection
    await connection.stop()


@pytest_twisted.ensureDeferred
async def test_every_node_answers_the_sum_of_all_and_each_node_s_own(redis, client):
    a, b = Node("aaaa", client), Node("bbbb", client)
    a.connect("websocket")
    b.connect("sse", "sse", "pusher")  # a channel of a Pusher connection is no connection of its own
    a.history.start()
    a.stats.messages_in["site"] += 4
    await a.tick(62)
    b.clock.advance(62)
    b.history.start()
    b.stats.messages_out["site"] += 6
    for _ in range(123):  # side by side: a to T0 + 184, b from T0 + 62
        await a.tick()
        await b.tick()

    for node in (a, b):
        answer = await node.answer("5m")
        assert answer["nodes"] == ["aaaa", "bbbb"]
        assert answer["t"] == list(range(T0, T0 + 185))
        at = answer["t"].index(T0 + 62)
        assert answer["series"]["websocket"] == [1] * 185
        assert answer["series"]["sse"] == [0] * at + [2] * (185 - at)
        assert answer["series"]["messages_in"][0] == 4.0 and answer["series"]["messages_out"][at] == 6.0
        assert answer["by_node"]["bbbb"]["sse"] == [None] * at + [2] * (185 - at)
        assert answer["by_node"]["aaaa"]["sse"] == [0] * 185
        assert answer["by_node"]["bbbb"]["pusher"] == [None] * at + [0] * (185 - at)
        assert set(answer["series"]) == set(answer["by_node"]["aaaa"]) == set(SERIES)

        day = await node.answer("24h")
        assert day["t"] == [T0, T0 + 60, T0 + 120] and day["step"] == 60
        assert day["series"]["sse"] == [0, 2, 2] and day["by_node"]["bbbb"]["sse"] == [None, 2, 2]
        assert day["by_node"]["aaaa"]["messages_in"] == [round(4 / 60, 3), 0.0, 0.0]

        later = await node.answer("1h", T0 + 182)
        assert later["t"] == [T0 + 183, T0 + 184] and later["series"]["sse"] == [2, 2]
        assert later["nodes"] == ["aaaa", "bbbb"]

    # One round trip a second, each node's lists bounded.
    assert raw_command(redis.port, "LLEN", "notifier:history:aaaa:1") == b":185\r\n"
    assert raw_command(redis.port, "LLEN", "notifier:history:bbbb:60") == b":2\r\n"
    assert raw_command(redis.port, "ZCARD", "notifier:history_nodes") == b":2\r\n"
    a.history.stop()
    b.history.stop()


@pytest_twisted.ensureDeferred
async def test_a_node_that_stopped_holds_no_answer_back(client):
    a, b = Node("aaaa", client), Node("bbbb", client)
    a.history.start()
    b.history.start()
    for _ in range(3):
        await a.tick()
        await b.tick()
    b.history.stop()
    await a.tick(10)
    answer = await a.answer()
    assert answer["t"] == list(range(T0, T0 + 13))
    assert answer["by_node"]["bbbb"]["websocket"] == [0, 0, 0] + [None] * 10
    a.history.stop()


@pytest_twisted.ensureDeferred
async def test_redis_going_away_is_told_once_and_the_samples_go_there_once_it_is_back(redis, client):
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "notifier.domain.history":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        a, b = Node("aaaa", client), Node("bbbb", client)
        a.history.start()
        b.history.start()
        b.connect("longpoll")
        await b.tick(2)
        await redis.stop()
        await b.tick(5)  # kept here, told once
        assert [event["log_level"] for event in events] == [LogLevel.warn]
        assert b.history.seconds.latest == T0 + 6
        await redis.start()  # empty
        await until(lambda: client.up, timeout=10, what="Redis again")
        await b.tick()
        assert [event["log_level"] for event in events] == [LogLevel.warn, LogLevel.info]
        await a.tick(8)
        answer = await a.answer()
        # what was written before Redis went away went with it; the rest was written once it was back
        assert answer["by_node"]["bbbb"]["longpoll"] == [None, None] + [1] * 6
        assert answer["t"] == list(range(T0, T0 + 8))
    finally:
        globalLogPublisher.removeObserver(observe)


@pytest_twisted.ensureDeferred
async def test_two_daemons_answer_the_history_of_both(redis):
    nodes = [await start_daemon(redis.url) for _ in range(2)]
    try:
        ids = sorted(node.service.api.metrics.node for node in nodes)

        async def history() -> dict[str, Any]:
            status, body = await nodes[0].admin("GET", "/admin/v1/history?range=5m")
            assert status == 200, body
            return body

        answer = await eventually(history, lambda body: body["nodes"] == ids and len(body["t"]) >= 2,
                                  seconds=10)
        assert set(answer["by_node"]) == set(ids)
        assert all(value is not None for value in answer["series"]["websocket"])
        status, body = await nodes[1].admin("GET", "/admin/v1/history?range=1h&after=x")
        assert (status, body["error"]) == (400, "invalid_query")
    finally:
        stopping = [defer.ensureDeferred(_stopped(node)) for node in nodes]
        await defer.DeferredList(stopping, consumeErrors=True)


async def _stopped(daemon: Any) -> None:
    if daemon.service.running:
        await daemon.service.stopService()
