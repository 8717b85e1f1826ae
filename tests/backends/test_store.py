"""The Store contract, run against every implementation.

``MemoryStore`` (what the in-memory HTTP tests use), ``SQLiteStore``, in
memory and on disk, and ``RedisStore`` (against a real ``redis-server``
started for this module) must behave alike; SQLite runs its queries on
adbapi's thread and Redis is over the network, so these tests run on the
real reactor.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat

import pytest
import pytest_twisted
from twisted.internet import reactor

from notifier.backends.redis.client import Redis, RedisAddress
from notifier.backends.redis.keys import Keys
from notifier.backends.redis.store import RedisStore
from notifier.backends.sqlite import SQLiteStore
from notifier.domain.model import Center, Publisher, Webhook
from tests.memory_store import MemoryStore
from tests.redis_server import RedisServer

STORES = ["memory", "sqlite-memory", "sqlite-file", pytest.param("redis", marks=pytest.mark.redis)]


@pytest_twisted.async_yield_fixture(scope="module")
async def redis_server(tmp_path_factory):
    """One redis-server for the module, started by the first test that needs it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    await server.stop()


async def _make(kind: str, tmp_path, redis_server: RedisServer) -> MemoryStore | SQLiteStore | RedisStore:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite-memory":
        return SQLiteStore(":memory:", reactor)
    if kind == "sqlite-file":
        return SQLiteStore(str(tmp_path / "n.db"), reactor)
    if not redis_server.running:
        await redis_server.start()
    redis_server.flush()  # every test starts from an empty database
    address = RedisAddress.parse(redis_server.url)
    return RedisStore(Redis(address, reactor), Keys(address.db))


@pytest_twisted.async_yield_fixture(params=STORES)
async def store(request, tmp_path, redis_server):
    opened = await _make(request.param, tmp_path, redis_server)
    await opened.open()
    yield opened
    await opened.close()


def publisher(name: str, secret: str | None = None, created: float = 1_700_000_000.5,
              client_events: bool | None = None) -> Publisher:
    """Publisher *name*, with an app id and key of its own, the same at every call."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    return Publisher(name, secret or f"secret-of-{name}-0123456789_abcdefghijklmnopqrstu", created,
                     str(int(digest[:15], 16)), digest[-20:], client_events)


def center(owner: str, name: str, private: bool = False, history: int | None = None,
           ttl: int | None = None, created: float = 1_700_000_100.25, epoch: str = "e0") -> Center:
    return Center(owner, name, private, history, ttl, created, epoch)


async def _with_publishers(store, *names: str) -> None:
    for name in names:
        assert await store.add_publisher(publisher(name)) is True


# publishers


@pytest_twisted.ensureDeferred
async def test_add_and_get_publisher(store):
    site = publisher("site", "s3cr3t-_xyz", 1_712_345_678.123456)
    assert await store.get_publisher("site") is None
    assert await store.add_publisher(site) is True
    found = await store.get_publisher("site")
    assert found == site
    assert type(found.created) is float
    assert await store.get_publisher("other") is None
    assert await store.get_publisher("SITE") is None


@pytest_twisted.ensureDeferred
async def test_adding_an_existing_publisher_changes_nothing(store):
    first = publisher("site", "first-secret", 10.0)
    assert await store.add_publisher(first) is True
    await store.add_center(center("site", "news"))
    assert await store.add_publisher(publisher("site", "second-secret", 20.0)) is False
    assert await store.get_publisher("site") == first
    assert await store.list_publishers() == [(first, 1)]
    assert await store.list_centers("site") == [center("site", "news")]


@pytest_twisted.ensureDeferred
async def test_list_publishers_by_name_with_center_counts(store):
    assert await store.list_publishers() == []
    names = ["zeta", "alpha", "m_1", "m-1", "0x", "beta"]
    for n, name in enumerate(names):
        assert await store.add_publisher(publisher(name, created=100.0 + n))
    for name, count in (("alpha", 2), ("beta", 1), ("m_1", 3)):
        for i in range(count):
            await store.add_center(center(name, f"c{i}"))
    listed = await store.list_publishers()
    assert [p.name for p, _ in listed] == sorted(names)
    counts = {p.name: count for p, count in listed}
    assert counts == {"zeta": 0, "alpha": 2, "m_1": 3, "m-1": 0, "0x": 0, "beta": 1}
    for p, _ in listed:
        assert p == publisher(p.name, created=100.0 + names.index(p.name))
        assert all(type(count) is int for _, count in listed)


@pytest_twisted.ensureDeferred
async def test_set_secret(store):
    await _with_publishers(store, "site", "other")
    assert await store.set_secret("site", "new-secret") is True
    assert await store.get_publisher("site") == publisher("site", "new-secret")
    assert await store.get_publisher("other") == publisher("other")
    assert await store.set_secret("ghost", "whatever") is False
    assert await store.get_publisher("ghost") is None
    assert [p.name for p, _ in await store.list_publishers()] == ["other", "site"]


@pytest_twisted.ensureDeferred
async def test_remove_publisher_removes_its_centers(store):
    await _with_publishers(store, "site", "other")
    await store.add_center(center("site", "news"))
    await store.add_center(center("site", "alerts", private=True))
    await store.add_center(center("other", "news"))
    assert await store.remove_publisher("site") is True
    assert await store.get_publisher("site") is None
    assert await store.get_center("site", "news") is None
    assert await store.list_centers("site") == []
    assert await store.list_publishers() == [(publisher("other"), 1)]
    assert await store.all_centers() == [center("other", "news")]
    assert await store.get_center("other", "news") == center("other", "news")
    # the name is free again, with no centers of its own
    assert await store.add_publisher(publisher("site", "fresh")) is True
    assert await store.list_centers("site") == []
    assert await store.list_publishers() == [(publisher("other"), 1), (publisher("site", "fresh"), 0)]


@pytest_twisted.ensureDeferred
async def test_remove_unknown_publisher(store):
    await _with_publishers(store, "site")
    await store.add_center(center("site", "news"))
    assert await store.remove_publisher("ghost") is False
    assert await store.remove_publisher("SITE") is False
    assert await store.list_publishers() == [(publisher("site"), 1)]
    assert await store.remove_publisher("site") is True
    assert await store.remove_publisher("site") is False


# centers


@pytest_twisted.ensureDeferred
async def test_add_center_once(store):
    await _with_publishers(store, "site")
    news = center("site", "news", private=False, history=None, ttl=None, created=1.5)
    assert await store.add_center(news) == (news, True)
    other_options = center("site", "news", private=True, history=7, ttl=60, created=99.0)
    stored, created = await store.add_center(other_options)
    assert created is False
    assert stored == news
    assert await store.get_center("site", "news") == news
    assert await store.list_centers("site") == [news]


@pytest_twisted.ensureDeferred
async def test_get_list_remove_centers(store):
    await _with_publishers(store, "site")
    names = ["news", "Zeta", "alpha", "beta.1", "beta:2", "~x", "-dash", "user@host", "_u"]
    for n, name in enumerate(names):
        assert (await store.add_center(center("site", name, created=float(n))))[1] is True
    listed = await store.list_centers("site")
    assert [c.name for c in listed] == sorted(names)
    assert listed == [center("site", name, created=float(names.index(name))) for name in sorted(names)]
    assert await store.get_center("site", "alpha") == center("site", "alpha", created=2.0)
    assert await store.get_center("site", "ALPHA") is None
    assert await store.get_center("site", "missing") is None

    assert await store.remove_center("site", "alpha") is True
    assert await store.get_center("site", "alpha") is None
    assert await store.remove_center("site", "alpha") is False
    assert await store.remove_center("site", "missing") is False
    assert await store.remove_center("ghost", "news") is False
    assert [c.name for c in await store.list_centers("site")] == sorted(set(names) - {"alpha"})
    assert await store.list_publishers() == [(publisher("site"), len(names) - 1)]
    # a removed center can be added again, as new, in an epoch of its own
    again = center("site", "alpha", private=True, created=50.0, epoch="e1")
    assert await store.add_center(again) == (again, True)
    assert await store.get_center("site", "alpha") == again


@pytest_twisted.ensureDeferred
async def test_centers_are_paged_by_name_within_a_prefix_with_their_total(store):
    await _with_publishers(store, "site", "other")
    names = ["user.1", "user.10", "user.2", "user", "user~", "users", "usez", "Zeta", "-dash", "uses.1", "u"]
    for name in names:
        await store.add_center(center("site", name))
    await store.add_center(center("other", "user.3"))

    async def walk(prefix: str, limit: int) -> list[list[str]]:
        pages, after = [], None
        while True:
            page, total = await store.page_centers("site", prefix, after, limit)
            assert total == sum(1 for name in names if name.startswith(prefix))
            if not page:
                return pages
            pages.append([c.name for c in page])
            after = page[-1].name

    assert await walk("", 4) == [sorted(names)[i:i + 4] for i in range(0, len(names), 4)]
    assert await walk("user.", 2) == [["user.1", "user.10"], ["user.2"]]
    assert await walk("user", 10) == [["user", "user.1", "user.10", "user.2", "users", "user~"]]
    assert await walk("nobody", 10) == []
    # the centers themselves, as stored; a count alone with no room for any
    assert (await store.page_centers("site", "Zeta", None, 5)) == ([center("site", "Zeta")], 1)
    assert (await store.page_centers("site", "user", None, 0)) == ([], 6)
    # a name to start after that sorts before the prefix starts at the prefix
    assert [c.name for c in (await store.page_centers("site", "user.", "a", 5))[0]] == \
        ["user.1", "user.10", "user.2"]
    # removals and additions between pages: nothing given twice, nothing later skipped
    first, _ = await store.page_centers("site", "", None, 3)
    assert await store.remove_center("site", first[0].name) is True
    await store.add_center(center("site", "aaa"))  # before the page reached: not in what follows
    await store.add_center(center("site", "zzz"))
    rest, total = await store.page_centers("site", "", first[-1].name, 100)
    assert [c.name for c in rest] == sorted(set(names) | {"zzz"})[3:]
    assert total == len(names) + 1
    # a removed publisher has none left to page
    assert await store.remove_publisher("site") is True
    assert await store.page_centers("site", "", None, 10) == ([], 0)


@pytest_twisted.ensureDeferred
async def test_centers_of_two_publishers_never_mix(store):
    await _with_publishers(store, "a", "b")
    mine = center("a", "news", private=True, history=5, ttl=10, created=1.0)
    theirs = center("b", "news", private=False, history=None, ttl=None, created=2.0)
    assert await store.add_center(mine) == (mine, True)
    assert await store.add_center(theirs) == (theirs, True)
    await store.add_center(center("a", "only-a"))
    await store.add_center(center("b", "only-b"))
    assert await store.get_center("a", "news") == mine
    assert await store.get_center("b", "news") == theirs
    assert await store.get_center("a", "only-b") is None
    assert await store.get_center("b", "only-a") is None
    assert await store.list_centers("a") == [mine, center("a", "only-a")]
    assert await store.list_centers("b") == [theirs, center("b", "only-b")]
    assert await store.list_centers("c") == []
    assert await store.remove_center("b", "only-a") is False
    assert await store.remove_center("a", "news") is True
    assert await store.get_center("b", "news") == theirs
    assert await store.list_centers("a") == [center("a", "only-a")]
    assert [(p.name, count) for p, count in await store.list_publishers()] == [("a", 1), ("b", 2)]


@pytest_twisted.ensureDeferred
async def test_all_centers_of_every_publisher(store):
    assert await store.all_centers() == []
    await _with_publishers(store, "b", "a")
    for owner, name in (("b", "x"), ("a", "y"), ("a", "x"), ("b", "a")):
        await store.add_center(center(owner, name))
    assert [(c.publisher, c.name) for c in await store.all_centers()] == [
        ("a", "x"), ("a", "y"), ("b", "a"), ("b", "x")]


@pytest.mark.parametrize(("private", "history", "ttl", "created"), [
    (True, None, None, 1_700_000_000.123456),
    (False, 0, 0, 0.0),
    (True, 1, 86_400, 12.5),
    (False, 100_000, None, 1e-6),
    (False, None, 3600, 1_700_000_000.0),
])
@pytest_twisted.ensureDeferred
async def test_center_values_round_trip_exactly(store, private, history, ttl, created):
    await _with_publishers(store, "site")
    original = center("site", "round.trip", private, history, ttl, created)
    await store.add_center(original)
    for found in (
        await store.get_center("site", "round.trip"),
        (await store.list_centers("site"))[0],
        (await store.all_centers())[0],
        (await store.add_center(center("site", "round.trip", not private, 9, 9, 9.0)))[0],
    ):
        assert found == original
        assert type(found.private) is bool and found.private is private
        assert found.history == history and type(found.history) is type(history)
        assert found.ttl == ttl and type(found.ttl) is type(ttl)
        assert found.created == created and type(found.created) is float


@pytest_twisted.ensureDeferred
async def test_publisher_values_round_trip_exactly(store):
    original = Publisher("p-1_x", "Aa0-_" * 9, 1_700_000_000.987654, "9" * 20, "z0" * 10, True)
    await store.add_publisher(original)
    for found in (await store.get_publisher("p-1_x"), (await store.list_publishers())[0][0],
                  await store.get_publisher_by_app_id("9" * 20), await store.get_publisher_by_key("z0" * 10)):
        assert found == original
        assert type(found.secret) is str and type(found.created) is float
        assert type(found.app_id) is str and type(found.key) is str and found.client_events is True


# publishers as Pusher apps


APP_ID = re.compile(r"[0-9]{1,20}\Z")
KEY = re.compile(r"[a-z0-9]{20}\Z")


@pytest_twisted.ensureDeferred
async def test_app_ids_and_keys_find_their_publisher_and_are_each_one_publisher_s(store):
    site, other = publisher("site"), publisher("other")
    await _with_publishers(store, "site", "other")
    assert await store.get_publisher_by_app_id(site.app_id) == site
    assert await store.get_publisher_by_key(site.key) == site
    assert await store.get_publisher_by_app_id(other.app_id) == other
    assert await store.get_publisher_by_key(other.key) == other
    for absent in ("", "0", "12345", site.key, site.app_id + "0", " " + site.app_id):
        assert await store.get_publisher_by_app_id(absent) is None
    for absent in ("", site.app_id, site.key[:-1], site.key.upper()):
        assert await store.get_publisher_by_key(absent) is None
    # another publisher with either of site's is refused, and nothing changes
    taken_app_id = Publisher("third", "s" * 43, 3.0, site.app_id, "t" * 20)
    taken_key = Publisher("fourth", "s" * 43, 4.0, "4444", site.key)
    assert await store.add_publisher(taken_app_id) is False
    assert await store.add_publisher(taken_key) is False
    for name in ("third", "fourth"):
        assert await store.get_publisher(name) is None
    assert await store.get_publisher_by_key("t" * 20) is None
    assert await store.get_publisher_by_app_id("4444") is None
    assert await store.get_publisher_by_app_id(site.app_id) == site
    assert await store.get_publisher_by_key(site.key) == site
    assert [p for p, _ in await store.list_publishers()] == [other, site]
    # a name taken keeps its publisher's app id and key
    assert await store.add_publisher(Publisher("site", "s" * 43, 5.0, "5555", "f" * 20)) is False
    assert await store.get_publisher_by_app_id("5555") is None
    assert await store.get_publisher_by_key("f" * 20) is None


@pytest_twisted.ensureDeferred
async def test_app_ids_only_go_up_removals_included(store):
    given = [await store.next_app_id() for _ in range(3)]
    assert all(APP_ID.match(app_id) for app_id in given)
    assert [int(app_id) for app_id in given] == sorted({int(app_id) for app_id in given})
    made = Publisher("site", "s" * 43, 1.0, await store.next_app_id(), "k" * 20)
    assert await store.add_publisher(made) is True
    assert await store.remove_publisher("site") is True
    later = await store.next_app_id()
    assert int(later) > int(made.app_id) > int(given[-1])


@pytest_twisted.ensureDeferred
async def test_a_removed_publisher_s_app_id_and_key_find_nothing_and_are_free(store):
    site = publisher("site")
    await _with_publishers(store, "site", "other")
    assert await store.remove_publisher("site") is True
    assert await store.get_publisher_by_app_id(site.app_id) is None
    assert await store.get_publisher_by_key(site.key) is None
    assert await store.get_publisher_by_key(publisher("other").key) == publisher("other")
    again = Publisher("again", "a" * 43, 2.0, site.app_id, site.key)
    assert await store.add_publisher(again) is True
    assert await store.get_publisher_by_app_id(site.app_id) == again
    assert await store.get_publisher_by_key(site.key) == again


@pytest_twisted.ensureDeferred
async def test_a_rotated_secret_keeps_the_app_id_the_key_and_the_client_events(store):
    await store.add_publisher(publisher("site", client_events=True))
    assert await store.set_secret("site", "rotated") is True
    rotated = publisher("site", "rotated", client_events=True)
    assert await store.get_publisher("site") == rotated
    assert await store.get_publisher_by_app_id(rotated.app_id) == rotated
    assert await store.get_publisher_by_key(rotated.key) == rotated


@pytest_twisted.ensureDeferred
async def test_client_events_are_the_publisher_s_choice_or_none(store):
    await _with_publishers(store, "site", "other")
    assert (await store.get_publisher("site")).client_events is None
    for chosen in (True, False, None, False):
        assert await store.set_client_events("site", chosen) is True
        expected = publisher("site", client_events=chosen)
        for found in (await store.get_publisher("site"), await store.get_publisher_by_app_id(expected.app_id),
                      await store.get_publisher_by_key(expected.key), (await store.list_publishers())[1][0]):
            assert found == expected
            assert found.client_events is chosen
        assert await store.get_publisher("other") == publisher("other")
    assert await store.set_client_events("ghost", True) is False
    assert await store.get_publisher("ghost") is None
    # the secret rotated keeps the choice
    assert await store.set_secret("site", "rotated") is True
    assert await store.get_publisher("site") == publisher("site", "rotated", client_events=False)


# SQLite on disk


@pytest_twisted.ensureDeferred
async def test_sqlite_file_persists_across_reopen(tmp_path):
    path = str(tmp_path / "n.db")
    first = SQLiteStore(path, reactor)
    await first.open()
    try:
        await _with_publishers(first, "site", "gone")
        news = center("site", "news", private=True, history=3, ttl=None, created=4.25)
        await first.add_center(news)
        await first.add_center(center("site", "deleted"))
        await first.add_center(center("gone", "news"))
        assert await first.set_secret("site", "rotated")
        assert await first.remove_center("site", "deleted")
        assert await first.remove_publisher("gone")
    finally:
        await first.close()

    second = SQLiteStore(path, reactor)
    await second.open()
    try:
        assert await second.get_publisher("site") == publisher("site", "rotated")
        assert await second.get_publisher("gone") is None
        assert await second.list_publishers() == [(publisher("site", "rotated"), 1)]
        assert await second.get_center("site", "news") == news
        assert await second.list_centers("site") == [news]
        assert await second.get_center("gone", "news") is None
        # still writable, and the schema is not created twice
        assert await second.add_publisher(publisher("later")) is True
    finally:
        await second.close()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest_twisted.ensureDeferred
async def test_sqlite_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "n.db"
    opened = SQLiteStore(str(path), reactor)
    await opened.open()
    try:
        assert _mode(path) == 0o600
        await opened.add_publisher(publisher("site"))
        await opened.add_center(center("site", "news"))
        # the database and whatever journal files SQLite keeps beside it
        files = sorted(p for p in tmp_path.iterdir() if p.name.startswith("n.db"))
        assert files
        for file in files:
            assert _mode(file) == 0o600, file
    finally:
        await opened.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_narrows_an_existing_file_to_its_owner(tmp_path):
    path = tmp_path / "n.db"
    first = SQLiteStore(str(path), reactor)
    await first.open()
    await first.add_publisher(publisher("site"))
    await first.close()
    os.chmod(path, 0o644)
    second = SQLiteStore(str(path), reactor)
    await second.open()
    try:
        assert _mode(path) == 0o600
        assert await second.get_publisher("site") == publisher("site")
    finally:
        await second.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_tells_of_changes_made_by_another_process(tmp_path):
    path = str(tmp_path / "n.db")
    daemon, offline = SQLiteStore(path, reactor), SQLiteStore(path, reactor)
    await daemon.open()
    await offline.open()
    try:
        assert await daemon.changed() is False
        # its own changes are not news to it
        await _with_publishers(daemon, "site")
        await daemon.add_center(center("site", "news"))
        assert await daemon.changed() is False
        assert await offline.changed() is True
        assert await offline.changed() is False
        # another connection's are, once
        assert await offline.set_secret("site", "rotated")
        assert await daemon.changed() is True
        assert await daemon.changed() is False
        assert await offline.remove_center("site", "news")
        assert await offline.remove_publisher("site")
        assert await daemon.changed() is True
        assert await daemon.get_publisher("site") is None
    finally:
        await offline.close()
        await daemon.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_opens_a_file_from_before_centers_kept_their_epoch(tmp_path):
    path = tmp_path / "n.db"
    with sqlite3.connect(path) as old:
        old.executescript(
            "CREATE TABLE publishers (name TEXT PRIMARY KEY, secret TEXT NOT NULL, created REAL NOT NULL);"
            "CREATE TABLE centers (publisher TEXT NOT NULL REFERENCES publishers(name) ON DELETE CASCADE,"
            " name TEXT NOT NULL, private INTEGER NOT NULL, history INTEGER, ttl INTEGER,"
            " created REAL NOT NULL, PRIMARY KEY (publisher, name));"
            "INSERT INTO publishers VALUES ('site', 'secret', 1.0);"
            "INSERT INTO centers VALUES ('site', 'news', 0, NULL, NULL, 2.0);")
    old.close()
    store = SQLiteStore(str(path), reactor)
    await store.open()
    try:
        assert await store.get_center("site", "news") == center("site", "news", created=2.0, epoch="")
        later = center("site", "later", epoch="e7")
        assert await store.add_center(later) == (later, True)
        assert await store.list_centers("site") == [later, center("site", "news", created=2.0, epoch="")]
    finally:
        await store.close()


#: The publishers table of a file made before publishers were Pusher apps.
OLD_PUBLISHERS = "CREATE TABLE publishers (name TEXT PRIMARY KEY, secret TEXT NOT NULL, created REAL NOT NULL);"


@pytest_twisted.ensureDeferred
async def test_sqlite_gives_the_publishers_of_a_file_from_before_app_ids_theirs_when_it_opens(tmp_path):
    path = tmp_path / "n.db"
    with sqlite3.connect(path) as old:
        old.executescript(
            OLD_PUBLISHERS +
            "CREATE TABLE centers (publisher TEXT NOT NULL REFERENCES publishers(name) ON DELETE CASCADE,"
            " name TEXT NOT NULL, private INTEGER NOT NULL, history INTEGER, ttl INTEGER,"
            " created REAL NOT NULL, epoch TEXT NOT NULL DEFAULT '', presence INTEGER NOT NULL DEFAULT 0,"
            " PRIMARY KEY (publisher, name));"
            "INSERT INTO publishers VALUES ('young', 'secret-y', 20.5);"
            "INSERT INTO publishers VALUES ('old', 'secret-o', 10.25);"
            "INSERT INTO publishers VALUES ('older', 'secret-oo', 1.0);"
            "INSERT INTO centers VALUES ('old', 'news', 0, NULL, NULL, 2.0, 'e1', 0);")
    old.close()
    store = SQLiteStore(str(path), reactor)
    await store.open()
    try:
        found = {p.name: p for p, _ in await store.list_publishers()}
        # numbered oldest first, each with a key of its own; nothing else changed
        assert [(name, found[name].app_id) for name in ("older", "old", "young")] == [
            ("older", "1"), ("old", "2"), ("young", "3")]
        assert all(KEY.match(p.key) for p in found.values())
        assert len({p.key for p in found.values()}) == 3
        assert [(p.secret, p.created, p.client_events) for p in (found["older"], found["old"], found["young"])] == [
            ("secret-oo", 1.0, None), ("secret-o", 10.25, None), ("secret-y", 20.5, None)]
        for p in found.values():
            assert await store.get_publisher_by_app_id(p.app_id) == p
            assert await store.get_publisher_by_key(p.key) == p
        assert await store.get_center("old", "news") == center("old", "news", created=2.0, epoch="e1")
        assert await store.next_app_id() == "4"
        assert await store.add_publisher(Publisher("taken", "s" * 43, 30.0, "5", found["old"].key)) is False
    finally:
        await store.close()
    again = SQLiteStore(str(path), reactor)
    await again.open()
    try:  # opened again: kept as they were given
        assert {p.name: p for p, _ in await again.list_publishers()} == found
        assert await again.next_app_id() == "5"
    finally:
        await again.close()


@pytest.mark.redis
@pytest_twisted.ensureDeferred
async def test_redis_gives_publishers_stored_before_app_ids_theirs_at_open_or_when_read(tmp_path, redis_server):
    store = await _make("redis", tmp_path, redis_server)
    keys = store.keys
    await store.redis.ready()
    try:
        for name, created in (("young", 1_700_000_000.987654), ("older", 20.5)):
            record = json.dumps({"secret": f"secret-of-{name}", "created": created})
            await store.redis.call("hset", keys.publishers, name, record)
        await store.open()
        older, young = await store.get_publisher("older"), await store.get_publisher("young")
        assert (older.app_id, young.app_id) == ("1", "2")  # oldest first
        assert young.created == 1_700_000_000.987654 and young.secret == "secret-of-young"
        assert KEY.match(older.key) and KEY.match(young.key) and older.key != young.key
        assert await store.get_publisher_by_key(older.key) == older
        assert await store.get_publisher_by_app_id(young.app_id) == young
        # one a daemon of an earlier version stores later is given them when read
        await store.redis.call("hset", keys.publishers, "late", json.dumps({"secret": "s", "created": 30.0}))
        listed = {p.name: p for p, _ in await store.list_publishers()}
        assert listed["late"].app_id == "3" and KEY.match(listed["late"].key)
        assert listed["older"] == older and listed["young"] == young
        assert await store.get_publisher_by_key(listed["late"].key) == listed["late"]
        await store.redis.call("hset", keys.publishers, "later", json.dumps({"secret": "s", "created": 40.0}))
        assert await store.set_client_events("later", True) is True
        later = await store.get_publisher("later")
        assert later.app_id == "4" and later.client_events is True
        assert await store.get_publisher_by_app_id("4") == later
        assert await store.remove_publisher("later") is True
        assert await store.get_publisher_by_app_id("4") is None
        assert await store.get_publisher_by_key(later.key) is None
    finally:
        await store.close()


@pytest.mark.redis
@pytest_twisted.ensureDeferred
async def test_redis_pages_the_centers_a_daemon_of_an_earlier_version_stored(tmp_path, redis_server):
    """Centers stored with no sorted set of their names (as before paging)
    are paged all the same: the set is made from the hash when it is found
    not to match it."""
    store = await _make("redis", tmp_path, redis_server)
    await store.open()
    try:
        await _with_publishers(store, "site")
        for name in ("b", "a"):
            await store.add_center(center("site", name))
        for name in ("d", "c"):  # as an earlier daemon added them: into the hash only
            await store.redis.call("hset", store.keys.centers("site"), name, json.dumps(
                {"private": False, "history": None, "ttl": None, "created": 1.0, "epoch": "e9"}))
        page, total = await store.page_centers("site", "", "a", 2)
        assert ([c.name for c in page], total) == (["b", "c"], 4)
        assert int(await store.redis.call("zcard", store.keys.center_names("site"))) == 4
        # an earlier daemon removes "b" (from the hash only) and adds "e":
        # as many names as records, but not the same ones
        await store.redis.call("hdel", store.keys.centers("site"), "b")
        await store.redis.call("hset", store.keys.centers("site"), "e", json.dumps(
            {"private": False, "history": None, "ttl": None, "created": 1.0, "epoch": "e9"}))
        page, _ = await store.page_centers("site", "", None, 2)
        assert [c.name for c in page] == ["a", "c"]  # "b" skipped, the page full all the same
        page, total = await store.page_centers("site", "", "c", 5)
        assert ([c.name for c in page], total) == (["d", "e"], 4)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_presence_center_round_trips(store):
    await _with_publishers(store, "site")
    original = Center("site", "room.1", True, None, None, 5.0, "e1", True)
    assert await store.add_center(original) == (original, True)
    assert await store.get_center("site", "room.1") == original
    assert (await store.list_centers("site"))[0].presence is True


@pytest_twisted.ensureDeferred
async def test_webhooks_are_kept_per_publisher_and_go_with_it(store):
    await _with_publishers(store, "site", "other")
    hook = Webhook("https://site.example/notifier", ("center_occupied", "member_left"))
    assert await store.get_webhook("site") is None
    assert await store.set_webhook("site", hook) is True
    assert await store.get_webhook("site") == hook
    assert await store.get_webhook("other") is None
    replaced = Webhook("http://127.0.0.1:8000/hook", ("member_joined",))
    assert await store.set_webhook("site", replaced) is True
    assert await store.get_webhook("site") == replaced
    assert await store.set_webhook("nobody", hook) is False
    assert await store.get_webhook("nobody") is None
    await store.set_webhook("other", hook)
    assert await store.remove_webhook("other") is True
    assert await store.remove_webhook("other") is False
    assert await store.remove_publisher("site")
    assert await store.get_webhook("site") is None
    await store.add_publisher(publisher("site", "s" * 43, 1.0))
    assert await store.get_webhook("site") is None


@pytest_twisted.ensureDeferred
async def test_a_webhooks_format_is_kept(store):
    await _with_publishers(store, "site")
    hook = Webhook("https://site.example/pusher", ("channel_occupied", "client_event"), "pusher")
    assert await store.set_webhook("site", hook) is True
    assert await store.get_webhook("site") == hook
    plain = Webhook("https://site.example/notifier", ("center_occupied",))
    assert await store.set_webhook("site", plain) is True
    assert await store.get_webhook("site") == plain


@pytest_twisted.ensureDeferred
async def test_sqlite_history_writes_are_no_change_and_deletions_take_their_streams(tmp_path):
    """The durable history (notifier.backends.journal) shares the file: its writes
    are not changes the daemon must look into, and removing a center (or a
    publisher) removes its streams, whichever process removes it."""
    from notifier.backends.journal import Journal

    path = str(tmp_path / "n.db")
    daemon = SQLiteStore(path, reactor)
    await daemon.open()
    journal = Journal(path, "normal")
    try:
        await _with_publishers(daemon, "site", "other")
        for owner, name in (("site", "news"), ("site", "kept"), ("other", "news")):
            await daemon.add_center(center(owner, name))
        assert await daemon.changed() is False
        rows = [(owner, name, "e", 1, 1.0, "x", 10) for owner, name in (("site", "news"), ("site", "kept"),
                                                                       ("other", "news"))]
        assert journal.handle([("write", rows, ("site", "k", 1e12, "[]"))])[0] == [("ok",)]
        assert await daemon.changed() is False  # another connection wrote, but no publisher, center or webhook
        assert await daemon.remove_center("site", "news")
        assert await daemon.remove_publisher("other")
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT publisher, center FROM streams").fetchall() == [("site", "kept")]
        assert journal.handle([("keys", 0.0)])[0] == [("ok", [("site", "k", 1e12, "[]")])]
        assert journal.handle([("forget", "site", "news"), ("forget", "other", None)])[0] == [("ok", None)] * 2
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM log").fetchone()[0] == 1
    finally:
        journal.close()
        await daemon.close()


def test_check_file_refuses_what_is_no_database_whatever_its_name(tmp_path):
    from notifier.backends.sqlite import StoreError, check_file

    for name in ("n.db", "a#b?c%20.db"):
        path = tmp_path / name
        path.write_bytes(b"no database here " * 100)
        with pytest.raises(StoreError) as refused:
            check_file(str(path))
        assert str(path) in str(refused.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"n.db", name})  # nothing else made
    check_file(str(tmp_path / "absent.db"))  # made later, by the store
