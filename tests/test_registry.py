"""The registry against its backends, in memory: what it notices of a store
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
from notifier.errors import NotFound
from notifier.hub import Batch
from notifier.model import Center, Publisher
from notifier.registry import PUBLISHER_TTL, HubRegistry
from tests.memory_store import MemoryStore


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
    now(store.add_publisher(Publisher("site", "secret", 1.0)))
    return store


def local(store: MemoryStore, clock: Clock) -> HubRegistry:
    return HubRegistry(store, LocalBroker(clock), CentersConfig(), clock)


def subscribed(registry: HubRegistry, center: str, private: bool = False) -> Recorder:
    now(registry.create_center("site", center, private=private))
    recorder = Recorder()
    now(registry.hub("site", center)).subscribe(recorder)
    return recorder


# a store changed by another process


def test_a_publisher_removed_elsewhere_closes_its_hubs_at_the_next_sweep(store, clock):
    registry = local(store, clock)
    news, private = subscribed(registry, "news"), subscribed(registry, "private", private=True)
    now(store.remove_publisher("site"))
    assert registry.loaded("site", "news") is not None
    now(registry.expire_idle())
    assert news.closed == ["deleted"] and private.closed == ["deleted"]
    assert registry.loaded("site", "news") is None and registry.loaded("site", "private") is None


def test_a_secret_changed_elsewhere_revokes_private_subscriptions_only(store, clock):
    registry = local(store, clock)
    news, private = subscribed(registry, "news"), subscribed(registry, "private", private=True)
    assert now(registry.publisher("site")) is not None  # what admitted the private subscriber
    now(store.set_secret("site", "rotated"))
    now(registry.expire_idle())
    assert private.closed == ["revoked"] and news.closed == []
    assert registry.loaded("site", "news") is not None
    now(registry.expire_idle())  # once
    assert private.closed == ["revoked"]


def test_a_secret_changed_elsewhere_is_acted_on_by_the_first_read_that_sees_it(store, clock):
    registry = local(store, clock)
    private = subscribed(registry, "private", private=True)
    assert now(registry.publisher("site")).secret == "secret"
    now(store.set_secret("site", "rotated"))
    clock.advance(PUBLISHER_TTL)
    assert now(registry.publisher("site")).secret == "rotated"
    assert private.closed == ["revoked"]
    now(registry.expire_idle())
    assert private.closed == ["revoked"]


def test_a_center_deleted_or_made_again_elsewhere_closes_its_hub(store, clock):
    registry = local(store, clock)
    news, remade, kept = subscribed(registry, "news"), subscribed(registry, "remade"), subscribed(registry, "kept")
    now(store.remove_center("site", "news"))
    now(store.remove_center("site", "remade"))
    now(store.add_center(Center("site", "remade", False, None, None, 2.0, "another")))
    now(registry.expire_idle())
    assert news.closed == ["deleted"] and remade.closed == ["deleted"] and kept.closed == []
    assert registry.loaded("site", "kept") is not None
    assert now(registry.hub("site", "remade")).center.epoch == "another"


def test_nothing_is_read_again_while_the_store_says_nothing_changed(store, clock):
    registry = local(store, clock)
    news = subscribed(registry, "news")
    store.changed = lambda: _false()  # type: ignore[method-assign]
    now(store.remove_publisher("site"))
    now(registry.expire_idle())
    assert news.closed == []


async def _false() -> bool:
    return False


# what a broker keeping the streams reports


def shared(store: MemoryStore, clock: Clock) -> tuple[HubRegistry, SharedBroker, Center]:
    broker = SharedBroker()
    registry = HubRegistry(store, broker, CentersConfig(), clock, make_epoch=lambda: "made")
    now(broker.start(registry))
    center = Center("site", "news", False, None, None, 1.0, "e1")
    now(store.add_center(center))
    broker.add(center, 2, ((1, 1.0, "one"), (2, 2.0, "two")))
    return registry, broker, center


def arrival(seq: int, data: str, epoch: str = "e1") -> Arrival:
    return Arrival("site", "news", epoch, seq, float(seq), data)


def test_a_hub_starts_where_the_broker_says_and_takes_what_follows_once_in_order(store, clock):
    registry, broker, _ = shared(store, clock)
    hub = now(registry.hub("site", "news"))
    assert (hub.epoch, hub.seq, hub.last_id) == ("e1", 2, "e1-2")
    recorder = Recorder()
    hub.subscribe(recorder)
    for message in (arrival(2, "two"), arrival(3, "three"), arrival(3, "three"), arrival(4, "four")):
        registry.message_arrived(message)
    clock.advance(0)  # the fan-out
    assert recorder.delivered == ["three", "four"]
    assert broker.asked == ["site/news"]


def test_a_gap_or_a_reconnection_catches_up_from_the_broker(store, clock):
    registry, broker, center = shared(store, clock)
    hub = now(registry.hub("site", "news"))
    recorder = Recorder()
    hub.subscribe(recorder)
    broker.add(center, 4, ((2, 2.0, "two"), (3, 3.0, "three"), (4, 4.0, "four")))
    registry.message_arrived(arrival(4, "four"))  # 3 went missing
    clock.advance(0)
    assert recorder.delivered == ["three", "four"] and hub.seq == 4
    broker.add(center, 5, ((4, 4.0, "four"), (5, 5.0, "five")))
    registry.reconnected()
    clock.advance(0)
    assert recorder.delivered == ["three", "four", "five"]
    assert broker.asked == ["site/news"] * 3


def test_more_missed_than_the_broker_retains_sends_subscribers_back(store, clock):
    registry, broker, center = shared(store, clock)
    recorder = Recorder()
    now(registry.hub("site", "news")).subscribe(recorder)
    broker.add(center, 9, ((8, 8.0, "eight"), (9, 9.0, "nine")))
    registry.reconnected()
    assert recorder.closed == ["shutdown"] and recorder.delivered == []
    assert registry.loaded("site", "news") is None


@pytest.mark.parametrize("remade", [False, True])
def test_a_center_gone_or_remade_behind_a_hub_closes_it(store, clock, remade):
    registry, broker, center = shared(store, clock)
    recorder = Recorder()
    now(registry.hub("site", "news")).subscribe(recorder)
    del broker.streams[center.path]
    if remade:
        broker.add(attrs.evolve(center, epoch="e2"), 1, ((1, 1.0, "new one"),))
    registry.message_arrived(arrival(1, "new one", epoch="e2"))
    assert recorder.closed == ["deleted"] and recorder.delivered == []
    assert registry.loaded("site", "news") is None


def test_control_events_drop_hubs_and_forget_publishers(store, clock):
    registry, _, _ = shared(store, clock)
    recorder = Recorder()
    now(registry.hub("site", "news")).subscribe(recorder)
    registry.control({"type": "publisher_changed", "publisher": "site"})
    assert recorder.closed == []  # a public center
    registry.control({"type": "center_deleted", "publisher": "site", "center": "news"})
    assert recorder.closed == ["deleted"]


def test_the_local_broker_numbers_after_each_hub_and_the_registry_applies_at_once(store, clock):
    registry = local(store, clock)
    recorder = subscribed(registry, "news")
    ids, fresh = now(registry.publish_batch("site", [("news", "a"), ("news", "b")]))
    epoch = registry.loaded("site", "news").epoch
    assert (ids, fresh) == ([f"{epoch}-1", f"{epoch}-2"], True)
    assert now(registry.publish("site", "news", "c", key="k")) == (f"{epoch}-3", 1, True)
    assert now(registry.publish("site", "news", "c", key="k")) == (f"{epoch}-3", 0, False)
    clock.advance(0)
    assert recorder.delivered == ["a", "b", "c"]


class Failing(Recorder):
    def deliver(self, batch: Batch) -> None:
        raise RuntimeError("a subscriber that breaks")


def test_the_hubs_fanning_out_in_one_turn_share_one_delayed_call(store, clock):
    registry = local(store, clock)
    broken = subscribed(registry, "broken")
    now(registry.hub("site", "broken")).subscribe(Failing())
    recorders = [subscribed(registry, f"c{i}") for i in range(20)]
    for name in ["broken"] + [f"c{i}" for i in range(20)]:
        now(registry.publish("site", name, "m"))
    assert len(clock.getDelayedCalls()) == 1
    assert all(recorder.delivered == [] for recorder in recorders)
    clock.advance(0)
    # A subscriber that fails stops neither the others of its hub, nor the
    # other hubs, nor what its hub sends next.
    assert all(recorder.delivered == ["m"] for recorder in recorders + [broken])
    assert len(clock.getDelayedCalls()) == 0
    now(registry.publish("site", "broken", "n"))
    clock.advance(0)
    assert broken.delivered == ["m", "n"]
