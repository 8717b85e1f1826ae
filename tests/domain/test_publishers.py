"""The publishers found by Pusher app id and key (``Publishers.by_app_id``,
``by_key``): held as one found by name is, on a Clock, over a store that
counts what it is asked."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from notifier.backends.local import LocalBroker
from notifier.domain.errors import Conflict, NotFound
from notifier.domain.model import Publisher
from notifier.domain.publishers import PUBLISHER_TTL, Publishers, new_key
from tests.memory_store import MemoryStore
from tests.support import result_of


class CountingStore(MemoryStore):
    """A MemoryStore that counts its look-ups by app id and key; with
    *pending*, a look-up's answer comes only once it fires."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: Counter[str] = Counter()
        self.pending: Deferred[None] | None = None

    async def _later(self, found: Publisher | None) -> Publisher | None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            await pending
        return found

    async def get_publisher_by_app_id(self, app_id: str) -> Publisher | None:
        self.asked["app_id"] += 1
        return await self._later(await super().get_publisher_by_app_id(app_id))

    async def get_publisher_by_key(self, key: str) -> Publisher | None:
        self.asked["key"] += 1
        return await self._later(await super().get_publisher_by_key(key))


def now(coroutine: Any) -> Any:
    return result_of(Deferred.fromCoroutine(coroutine))


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_700_000_000)
    return clock


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def publishers(store: CountingStore, clock: Clock) -> Publishers:
    return Publishers(store, LocalBroker(clock), clock)


def test_a_new_key_is_twenty_of_a_z_and_0_9_and_random():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(key) == 20 and key.isascii() and key.isalnum() and key == key.lower() for key in keys)


def test_app_ids_come_from_the_store_and_keys_from_the_maker(store, clock):
    made = iter(["a" * 20, "b" * 20])
    publishers = Publishers(store, LocalBroker(clock), clock, make_key=lambda: next(made))
    first, second = now(publishers.add_publisher("site")), now(publishers.add_publisher("other"))
    assert (first.app_id, first.key, second.app_id, second.key) == ("1", "a" * 20, "2", "b" * 20)
    assert first.client_events is None


def test_a_key_or_app_id_another_has_is_made_again_a_name_taken_is_refused(store, clock):
    made = iter(["a" * 20, "a" * 20] + [f"{n:020d}" for n in range(100)])
    publishers = Publishers(store, LocalBroker(clock), clock, make_key=lambda: next(made))
    now(publishers.add_publisher("site"))
    other = now(publishers.add_publisher("other"))  # "a" * 20 is site's: made again
    assert other.key == f"{0:020d}" and other.app_id == "3"
    store.last_app_id = 0  # a counter gone back: the store still refuses the numbers it gives again
    assert now(publishers.add_publisher("third")).app_id == "2"  # 1 is site's; 2 went unused
    with pytest.raises(Conflict, match="exists"):
        now(publishers.add_publisher("site"))
    assert [p.name for p, _ in now(publishers.list_publishers())] == ["other", "site", "third"]


@pytest.mark.parametrize("kind", ["app_id", "key"])
def test_a_publisher_found_is_held_for_publisher_ttl_without_asking_the_store(publishers, store, clock, kind):
    site = now(publishers.add_publisher("site"))
    look_up = publishers.by_app_id if kind == "app_id" else publishers.by_key
    value = getattr(site, kind)
    assert now(look_up(value)) == site
    assert store.asked[kind] == 1
    clock.advance(PUBLISHER_TTL - 0.01)
    for _ in range(3):
        assert now(look_up(value)) == site
    assert store.asked[kind] == 1
    clock.advance(0.01)
    assert now(look_up(value)) == site
    assert store.asked[kind] == 2


@pytest.mark.parametrize("kind", ["app_id", "key"])
def test_an_unknown_app_id_or_key_is_held_too(publishers, store, clock, kind):
    look_up = publishers.by_app_id if kind == "app_id" else publishers.by_key
    value = "12345" if kind == "app_id" else "nosuchkey00000000000"
    for _ in range(3):
        assert now(look_up(value)) is None
    assert store.asked[kind] == 1
    clock.advance(PUBLISHER_TTL)
    assert now(look_up(value)) is None
    assert store.asked[kind] == 2


@pytest.mark.parametrize(("kind", "value"), [
    ("app_id", ""), ("app_id", "1" * 21), ("app_id", "12a"), ("app_id", "-1"), ("app_id", " 1"), ("app_id", "1\n"),
    ("app_id", "١٢"), ("key", ""), ("key", "k" * 65), ("key", "key-with-dash"), ("key", "key_"), ("key", "ké"),
    ("key", "key\n"), ("key", "a b"),
])
def test_a_malformed_app_id_or_key_is_none_without_asking_the_store(publishers, store, kind, value):
    look_up = publishers.by_app_id if kind == "app_id" else publishers.by_key
    assert now(look_up(value)) is None
    assert store.asked[kind] == 0


def test_the_longest_well_formed_ones_are_asked(publishers, store):
    assert now(publishers.by_app_id("9" * 20)) is None
    assert now(publishers.by_key("K" * 64)) is None
    assert store.asked == {"app_id": 1, "key": 1}


def test_a_removed_publisher_is_no_longer_found_at_once(publishers, store):
    site = now(publishers.add_publisher("site"))
    assert now(publishers.by_key(site.key)) == site
    assert now(publishers.by_app_id(site.app_id)) == site
    now(publishers.remove_publisher("site"))
    assert now(publishers.by_key(site.key)) is None  # no time passed
    assert now(publishers.by_app_id(site.app_id)) is None


def test_a_publisher_removed_elsewhere_stops_resolving_once_forgotten(publishers, store):
    site = now(publishers.add_publisher("site"))
    other = now(publishers.add_publisher("other"))
    assert now(publishers.by_key(site.key)) == site
    assert now(publishers.by_key(other.key)) == other
    assert now(store.remove_publisher("site"))  # another node's doing
    assert now(publishers.by_key(site.key)) == site  # held
    publishers.forget_publisher("site", removed=True)  # as its announcement does
    assert now(publishers.by_key(site.key)) is None
    assert now(publishers.by_app_id(site.app_id)) is None
    asked = store.asked["key"]
    assert now(publishers.by_key(other.key)) == other  # still held: no other is dropped
    assert store.asked["key"] == asked


def test_a_rotated_secret_is_seen_at_once(publishers):
    site = now(publishers.add_publisher("site"))
    assert now(publishers.by_key(site.key)).secret == site.secret
    rotated = now(publishers.rotate_secret("site"))
    assert now(publishers.by_key(site.key)) == rotated
    assert now(publishers.by_app_id(site.app_id)) == rotated
    assert rotated.secret != site.secret and (rotated.app_id, rotated.key) == (site.app_id, site.key)


def test_client_events_set_here_are_seen_at_once(publishers):
    site = now(publishers.add_publisher("site"))
    assert now(publishers.by_key(site.key)).client_events is None
    assert now(publishers.set_client_events("site", True)).client_events is True
    assert now(publishers.by_key(site.key)).client_events is True
    assert now(publishers.by_app_id(site.app_id)).client_events is True
    with pytest.raises(NotFound, match="ghost"):
        now(publishers.set_client_events("ghost", False))


def test_a_publisher_added_after_its_key_was_found_unknown_is_found_at_once(store, clock):
    publishers = Publishers(store, LocalBroker(clock), clock, make_key=lambda: "k" * 20)
    assert now(publishers.by_key("k" * 20)) is None
    assert now(publishers.by_app_id("1")) is None
    site = now(publishers.add_publisher("site"))
    assert now(publishers.by_key("k" * 20)) == site
    assert now(publishers.by_app_id("1")) == site


def test_what_a_look_up_read_before_the_publisher_changed_is_not_held(publishers, store):
    site = now(publishers.add_publisher("site"))
    gate: Deferred[None] = Deferred()
    store.pending = gate
    looking = Deferred.fromCoroutine(publishers.by_key(site.key))
    rotated = now(publishers.rotate_secret("site"))
    gate.callback(None)
    assert result_of(looking) == site  # what it read, before
    assert now(publishers.by_key(site.key)) == rotated  # not held: read again
