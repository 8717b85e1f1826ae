"""The node against its backends, in memory: what it notices of a store
changed by another process, and how it applies what a broker reports."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from notifier.backends.interfaces import (
    Arrival,
    BrokerHandler,
    LiveCenter,
    Publication,
    Published,
    Stream,
)
from notifier.backends.local import LocalBroker
from notifier.config import CentersConfig
from notifier.domain.centers import Centers
from notifier.domain.errors import NotFound
from notifier.domain.hub import Batch
from notifier.domain.model import Center, Publisher
from notifier.domain.publishers import PUBLISHER_TTL
from notifier.domain.publishing import Publishing
from notifier.domain.stats import Stats
from tests.memory_store import MemoryStore
from tests.support import Node


def now(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The result of a coroutine that completes without waiting."""
    results: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    assert results, "it waited"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


class Recorder:
    transport_name = "test"

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.closed: list[str] = []

    def deliver(self, batch: Batch) -> None:
        self.delivered.extend(message.data for message in batch.messages)

    def close(self, reason: str) -> None:
        self.closed.append(reason)


@attrs.define
class SharedBroker:
    """A broker keeping each center's stream, as Redis does: what it
    publishes arrives only when the test says so."""

    streams: dict[str, Stream] = attrs.field(factory=dict)
    handler: BrokerHandler | None = None
    asked: list[str] = attrs.field(factory=list)

    async def start(self, handler: BrokerHandler) -> None:
        self.handler = handler

    async def stop(self) -> None:
        pass

    async def load(self, center: Center, ttl: int) -> Stream:
        return await self.stream(center)

    async def stream(self, center: Center) -> Stream:
        self.asked.append(center.path)
        if center.path not in self.streams:
            raise NotFound("gone", code="no_such_center")
        return self.streams[center.path]

    def add(self, center: Center, seq: int = 0, retained: tuple[tuple[int, float, str], ...] = ()) -> None:
        self.streams[center.path] = Stream(center.epoch, seq, retained)

    async def publish(self, publisher: str, publications: list[Publication], key: str | None) -> Published:
        return Published((), True)

    async def announce(self, event: dict[str, str]) -> None:
        pass

    async def due(self, now: float, live: list[LiveCenter]) -> list[tuple[str, str]]:
        return []

    def forget(self, publisher: str) -> None:
        pass

    async def first_use(self, publisher: str, signature: str, timestamp: int) -> bool:
        return True


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_000)
    return clock


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    now(store.add_publisher(Publisher("site", "secret", 1.0, "1", "k" * 20)))
    return store


def local(store: MemoryStore, clock: Clock) -> Node:
    return Node(store, LocalBroker(clock), clock)


def subscribed(node: Node, center: str, private: bool = False) -> Recorder:
    now(node.centers.create_center("site", center, private=private))
    recorder = Recorder()
    now(node.centers.hub("site", center)).subscribe(recorder)
    return recorder


# a store changed by another process


def test_a_publisher_removed_elsewhere_closes_its_hubs_at_the_next_sweep(store, clock):
    node = local(store, clock)
    news, private = subscribed(node, "news"), subscribed(node, "private", private=True)
    now(store.remove_publisher("site"))
    assert node.centers.loaded("site", "news") is not None
    now(node.sweep())
    assert news.closed == ["deleted"] and private.closed == ["deleted"]
    assert node.centers.loaded("site", "news") is None and node.centers.loaded("site", "private") is None


def test_a_secret_changed_elsewhere_revokes_private_subscriptions_only(store, clock):
    node = local(store, clock)
    news, private = subscribed(node, "news"), subscribed(node, "private", private=True)
    assert now(node.publishers.publisher("site")) is not None  # what admitted the private subscriber
    now(store.set_secret("site", "rotated"))
    now(node.sweep())
    assert private.closed == ["revoked"] and news.closed == []
    assert node.centers.loaded("site", "news") is not None
    now(node.sweep())  # once
    assert private.closed == ["revoked"]


def test_a_secret_changed_elsewhere_is_acted_on_by_the_first_read_that_sees_it(store, clock):
    node = local(store, clock)
    private = subscribed(node, "private", private=True)
    assert now(node.publishers.publisher("site")).secret == "secret"
    now(store.set_secret("site", "rotated"))
    clock.advance(PUBLISHER_TTL)
    assert now(node.publishers.publisher("site")).secret == "rotated"
    assert private.closed == ["revoked"]
    now(node.sweep())
    assert private.closed == ["revoked"]


def test_a_center_deleted_or_made_again_elsewhere_closes_its_hub(store, clock):
    node = local(store, clock)
    news, remade, kept = subscribed(node, "news"), subscribed(node, "remade"), subscribed(node, "kept")
    now(store.remove_center("site", "news"))
    now(store.remove_center("site", "remade"))
    now(store.add_center(Center("site", "remade", False, None, None, 2.0, "another")))
    now(node.sweep())
    assert news.closed == ["deleted"] and remade.closed == ["deleted"] and kept.closed == []
    assert node.centers.loaded("site", "kept") is not None
    assert now(node.centers.hub("site", "remade")).center.epoch == "another"


def test_nothing_is_read_again_while_the_store_says_nothing_changed(store, clock):
    node = local(store, clock)
    news = subscribed(node, "news")
    store.changed = lambda: _false()  # type: ignore[method-assign]
    now(store.remove_publisher("site"))
    now(node.sweep())
    assert news.closed == []


async def _false() -> bool:
    return False


# what a broker keeping the streams reports


def shared(store: MemoryStore, clock: Clock) -> tuple[Node, SharedBroker, Center]:
    broker = SharedBroker()
    node = Node(store, broker, clock, make_epoch=lambda: "made")
    now(broker.start(node.events))
    center = Center("site", "news", False, None, None, 1.0, "e1")
    now(store.add_center(center))
    broker.add(center, 2, ((1, 1.0, "one"), (2, 2.0, "two")))
    return node, broker, center


def arrival(seq: int, data: str, epoch: str = "e1") -> Arrival:
    return Arrival("site", "news", epoch, seq, float(seq), data)


def test_a_hub_starts_where_the_broker_says_and_takes_what_follows_once_in_order(store, clock):
    node, broker, _ = shared(store, clock)
    hub = now(node.centers.hub("site", "news"))
    assert (hub.epoch, hub.seq, hub.last_id) == ("e1", 2, "e1-2")
    recorder = Recorder()
    hub.subscribe(recorder)
    for message in (arrival(2, "two"), arrival(3, "three"), arrival(3, "three"), arrival(4, "four")):
        node.centers.message_arrived(message)
    clock.advance(0)  # the fan-out
    assert recorder.delivered == ["three", "four"]
    assert broker.asked == ["site/news"]


def test_a_gap_or_a_reconnection_catches_up_from_the_broker(store, clock):
    node, broker, center = shared(store, clock)
    hub = now(node.centers.hub("site", "news"))
    recorder = Recorder()
    hub.subscribe(recorder)
    broker.add(center, 4, ((2, 2.0, "two"), (3, 3.0, "three"), (4, 4.0, "four")))
    node.centers.message_arrived(arrival(4, "four"))  # 3 went missing
    clock.advance(0)
    assert recorder.delivered == ["three", "four"] and hub.seq == 4
    broker.add(center, 5, ((4, 4.0, "four"), (5, 5.0, "five")))
    node.centers.reconnected()
    clock.advance(0)
    assert recorder.delivered == ["three", "four", "five"]
    assert broker.asked == ["site/news"] * 3


def test_more_missed_than_the_broker_retains_sends_subscribers_back(store, clock):
    node, broker, center = shared(store, clock)
    recorder = Recorder()
    now(node.centers.hub("site", "news")).subscribe(recorder)
    broker.add(center, 9, ((8, 8.0, "eight"), (9, 9.0, "nine")))
    node.centers.reconnected()
    assert recorder.closed == ["shutdown"] and recorder.delivered == []
    assert node.centers.loaded("site", "news") is None


@pytest.mark.parametrize("remade", [False, True])
def test_a_center_gone_or_remade_behind_a_hub_closes_it(store, clock, remade):
    node, broker, center = shared(store, clock)
    recorder = Recorder()
    now(node.centers.hub("site", "news")).subscribe(recorder)
    del broker.streams[center.path]
    if remade:
        broker.add(attrs.evolve(center, epoch="e2"), 1, ((1, 1.0, "new one"),))
    node.centers.message_arrived(arrival(1, "new one", epoch="e2"))
    assert recorder.closed == ["deleted"] and recorder.delivered == []
    assert node.centers.loaded("site", "news") is None


def test_control_events_drop_hubs_and_forget_publishers(store, clock):
    node, _, _ = shared(store, clock)
    recorder = Recorder()
    now(node.centers.hub("site", "news")).subscribe(recorder)
    node.events.control({"type": "publisher_changed", "publisher": "site"})
    assert recorder.closed == []  # a public center
    node.events.control({"type": "center_deleted", "publisher": "site", "center": "news"})
    assert recorder.closed == ["deleted"]


def test_the_local_broker_numbers_after_each_hub_and_the_centers_apply_at_once(store, clock):
    node = local(store, clock)
    recorder = subscribed(node, "news")
    ids, fresh = now(node.publishing.publish_batch("site", [("news", "a"), ("news", "b")]))
    epoch = node.centers.loaded("site", "news").epoch
    assert (ids, fresh) == ([f"{epoch}-1", f"{epoch}-2"], True)
    assert now(node.publishing.publish("site", "news", "c", key="k")) == (f"{epoch}-3", 1, True)
    assert now(node.publishing.publish("site", "news", "c", key="k")) == (f"{epoch}-3", 0, False)
    clock.advance(0)
    assert recorder.delivered == ["a", "b", "c"]


class Failing(Recorder):
    def deliver(self, batch: Batch) -> None:
        raise RuntimeError("a subscriber that breaks")


def test_the_hubs_fanning_out_in_one_turn_share_one_delayed_call(store, clock):
    node = local(store, clock)
    broken = subscribed(node, "broken")
    now(node.centers.hub("site", "broken")).subscribe(Failing())
    recorders = [subscribed(node, f"c{i}") for i in range(20)]
    for name in ["broken"] + [f"c{i}" for i in range(20)]:
        now(node.publishing.publish("site", name, "m"))
    assert len(clock.getDelayedCalls()) == 1
    assert all(recorder.delivered == [] for recorder in recorders)
    clock.advance(0)
    # A subscriber that fails stops neither the others of its hub, nor the
    # other hubs, nor what its hub sends next.
    assert all(recorder.delivered == ["m"] for recorder in recorders + [broken])
    assert len(clock.getDelayedCalls()) == 0
    now(node.publishing.publish("site", "broken", "n"))
    clock.advance(0)
    assert broken.delivered == ["m", "n"]


class Steps:
    """Steps kept for the test to run: what the service's end of the turn is given."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def step(self, call: Any) -> None:
        self.calls.append(call)


def test_the_hubs_fan_out_through_the_steps_the_centers_are_given(store, clock):
    steps, broker = Steps(), LocalBroker(clock)
    centers = Centers(store, broker, CentersConfig(), clock, Stats(started=0.0), steps)
    now(centers.create_center("site", "news"))
    recorder = Recorder()
    now(centers.hub("site", "news")).subscribe(recorder)
    publishing = Publishing(broker, centers, centers.stats)
    now(publishing.publish("site", "news", "m"))
    assert len(steps.calls) == 1 and recorder.delivered == [] and clock.getDelayedCalls() == []
    steps.calls.pop()()
    assert recorder.delivered == ["m"]
