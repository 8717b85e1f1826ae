"""What the daemon keeps in memory for a publisher is bounded, in bytes
(docs/protocol.rst: Retained bytes, Idempotency-Key), and let go of when the
publisher is removed. Measured, never timed: the bytes the hubs and the
key cache account for, checked against the messages they hold, and the
memory of a real daemon."""

from __future__ import annotations

import gc
import json
import random
import tracemalloc
import weakref
from collections import deque
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from notifier.config import CentersConfig, ConfigError, WebhooksConfig, parse_config
from notifier.domain.hub import Hub
from notifier.domain.idempotency import IdempotencyKeys
from notifier.domain.model import Center, Publisher, Webhook
from notifier.domain.retention import Retention, message_bytes
from notifier.webhooks import Webhooks
from tests.redis_server import RedisServer
from tests.support import (
    TEXT,
    Api,
    Recorder,
    call,
    expect_json_error,
    publish,
    result_of,
    rss,
    running,
    setup_site,
    start_daemon,
)

KIB = 1024
MIB = 1024 * KIB
#: What the memory of a real daemon may grow by besides what is measured:
#: the allocator's own, buffers of the requests, the interpreter's caches.
SLACK = 24 * MIB


def _big(n: int, size: int = 64 * KIB) -> str:
    """A message of *size* characters, told apart by *n*."""
    head = f"{n}:"
    return head + "x" * (size - len(head))


def _retained(hub: Hub) -> list[str]:
    return [prepared.message.data for prepared in hub.retained(0, len(list(hub.retained_ids())))]


def _counted(hubs: list[Hub]) -> int:
    """The bytes the hubs' messages take, counted again from the messages."""
    return sum(message_bytes(data) for hub in hubs for data in _retained(hub))


# one center, one publisher: the eviction rule


def test_a_center_keeps_its_newest_messages_within_its_bytes():
    clock = Clock()
    hub = Hub(Center("site", "news", False, None, None, 0.0), "e", 100_000, clock.seconds,
              max_bytes=1 * MIB)
    first = hub.append(_big(0)).message.id
    for n in range(1, 200):
        hub.deliver(hub.append(_big(n)))
    kept = _retained(hub)
    assert hub.retained_bytes == _counted([hub]) <= 1 * MIB
    assert kept == [_big(n) for n in range(200 - len(kept), 200)]  # the newest, in order
    assert len(kept) == 1 * MIB // message_bytes(_big(0))
    # A resume from before what is retained is told it missed some.
    _, recovered = hub.retained_after(first)
    assert recovered is False
    # A message larger than the bound by itself is kept, alone.
    hub.append("y" * (2 * MIB))
    assert _retained(hub) == ["y" * (2 * MIB)]
    assert hub.retained_bytes == message_bytes("y" * (2 * MIB))


def test_the_oldest_messages_across_a_publisher_s_centers_go_first():
    clock = Clock()
    account = Retention(bound=10 * message_bytes(_big(0)))
    hubs = {}
    for name in ("a", "b", "c"):
        hubs[name] = account.hubs[name] = Hub(Center("site", name, False, None, None, 0.0), "e", 100,
                                              clock.seconds, account=account)
    for n in range(30):
        hubs["abc"[n % 3]].append(_big(n))
    assert account.bytes == _counted(list(hubs.values())) <= account.bound
    assert sorted(int(data.split(":")[0]) for hub in hubs.values() for data in _retained(hub)) == list(range(20, 30))


@st.composite
def _publishes(draw: Any) -> tuple[int, int, int, list[tuple[int, int]]]:
    history = draw(st.integers(0, 6))
    center_bound = draw(st.integers(1024, 8000))
    publisher_bound = draw(st.integers(1024, 20000))
    sizes = st.integers(0, 5000)
    publishes = draw(st.lists(st.tuples(st.integers(0, 3), sizes), max_size=60))
    return history, center_bound, publisher_bound, publishes


def _check_against_the_rule(history: int, center_bound: int, publisher_bound: int,
                            publishes: list[tuple[int, int]]) -> None:
    """Publish ``(center, length)`` to four hubs of one publisher, checking
    the bounds after each, and what they retain against the documented
    rule, kept in the simplest way."""
    clock = Clock()
    account = Retention(bound=publisher_bound)
    hubs = []
    for name in "abcd":
        hub = Hub(Center("site", name, False, None, None, 0.0), "e", history, clock.seconds,
                  max_bytes=center_bound, account=account)
        account.hubs[name] = hub
        hubs.append(hub)
    model: list[deque[tuple[int, int]]] = [deque() for _ in hubs]
    total = 0
    for n, (center, length) in enumerate(publishes):
        data = f"{n}:" + "z" * length
        hubs[center].append(data)
        size = message_bytes(data)
        if not history:
            continue
        kept = model[center]
        kept.append((n, size))
        total += size
        while len(kept) > history or (sum(s for _, s in kept) > center_bound and len(kept) > 1):
            total -= kept.popleft()[1]
        while total > publisher_bound:
            oldest = min((m for m in model if m and m[0][0] != n), key=lambda m: m[0][0], default=None)
            if oldest is None:
                break
            total -= oldest.popleft()[1]
        for hub in hubs:  # each within its own bound, or its newest message alone
            assert hub.retained_bytes <= center_bound or len(list(hub.retained_ids())) == 1
        assert account.bytes == total
        assert account.bytes <= publisher_bound or sum(map(len, model)) == 1
    assert account.bytes == _counted(hubs)
    for hub, kept in zip(hubs, model, strict=True):
        assert [int(data.split(":")[0]) for data in _retained(hub)] == [m for m, _ in kept]


@settings(max_examples=300, deadline=None)
@given(_publishes())
def test_retained_bytes_stay_within_both_bounds_keeping_the_newest_in_order(case):
    _check_against_the_rule(*case)


def test_the_rule_holds_over_many_publishes_as_the_account_clears_out_what_hubs_dropped():
    chance = random.Random(7)
    publishes = [(chance.choice((0, 0, 0, 1, 2, 3)), chance.randrange(0, 3000)) for _ in range(6000)]
    _check_against_the_rule(40, 30_000, 100_000, publishes)  # often past the publisher's bound
    _check_against_the_rule(3, 30_000, 26_000, publishes)  # now and then, its hubs dropping most


def test_a_publisher_s_account_forgets_what_its_hubs_dropped_by_themselves():
    # Messages a history of 1 drops by itself are not held on to by the
    # publisher's account, however many are published.
    clock = Clock()
    account = Retention(bound=1 << 40)
    hub = account.hubs["news"] = Hub(Center("site", "news", False, None, None, 0.0), "e", 1, clock.seconds,
                                     account=account)
    for n in range(10_000):
        hub.append(str(n))
    assert account.bytes == message_bytes("9999")
    assert len(account._oldest) == 1  # nothing kept per message: one entry per hub
    # Hubs let go of are not held by it either.
    for n in range(200):
        other = account.hubs[f"c{n}"] = Hub(Center("site", f"c{n}", False, None, None, 0.0), "e", 1,
                                            clock.seconds, account=account)
        other.append("x")
        other.release()
    assert len(account._oldest) <= 2 * len(account.hubs) + 64


# a registry of many centers


def test_many_large_messages_to_many_centers_stay_within_the_publisher_s_bound():
    api = Api(centers={"history": 1000, "max_retained_bytes": 2 * MIB,
                       "max_retained_bytes_per_publisher": 8 * MIB})
    site = api.add_publisher("site")
    other = api.add_publisher("other")
    assert api.put_center(other, "keep").status == 201
    assert api.publish(other, "keep", _big(-1)).status == 201
    for name in range(20):
        assert api.put_center(site, f"c{name}").status == 201
    for n in range(400):  # 25 MiB, to 20 centers
        answer = api.publish(site, f"c{n % 20}", _big(n))
        assert answer.status == 201, answer
    hubs = [api.hub("site", f"c{name}") for name in range(20)]
    assert api.centers.retained_bytes("site") == _counted(hubs) <= 8 * MIB
    assert all(hub.retained_bytes <= 2 * MIB for hub in hubs)
    kept = sorted(int(data.split(":")[0]) for hub in hubs for data in _retained(hub))
    assert kept == list(range(400 - len(kept), 400))  # the newest of all
    # Another publisher's centers are left alone.
    assert _retained(api.hub("other", "keep")) == [_big(-1)]
    assert api.centers.retained_bytes("other") == message_bytes(_big(-1))


def test_a_subscriber_gets_every_message_published_however_large():
    api = Api(centers={"max_retained_bytes": 1024, "max_retained_bytes_per_publisher": 1024})
    site = api.add_publisher("site")
    assert api.put_center(site, "news").status == 201
    hub = api.hub("site", "news")
    subscriber = Recorder()
    hub.attach(subscriber, None)
    for n in range(5):
        assert api.publish(site, "news", _big(n, 4 * KIB)).status == 201
    assert subscriber.delivered == [_big(n, 4 * KIB) for n in range(5)]
    assert _retained(hub) == [_big(4, 4 * KIB)]


# the Idempotency-Key cache


def _batch(api: Api, auth: tuple[str, str], messages: list[dict[str, str]], key: str) -> Any:
    return api.request("POST", "/api/v1/messages", json.dumps({"messages": messages}), auth=auth,
                       headers={"Idempotency-Key": key})


def test_the_keys_of_10000_message_batches_are_bounded_in_bytes_newest_kept():
    api = Api(centers={"history": 0})
    keys: IdempotencyKeys = api.broker.keys  # type: ignore[attr-defined]
    keys.max_bytes = 1 * MIB
    site = api.add_publisher("site")
    assert api.put_center(site, "news").status == 201
    messages = [{"center": "news", "data": f"m{n}"} for n in range(10_000)]
    answers = []
    for n in range(12):
        answer = _batch(api, site, messages, f"batch-{n}")
        assert answer.status == 201, answer
        answers.append(answer.json())
        assert keys.bytes("site") <= 1 * MIB
    # The newest are still answered exactly as the first time, and deliver nothing.
    seq = api.hub("site", "news").seq
    again = _batch(api, site, messages, "batch-11")
    assert (again.status, again.json()) == (200, answers[-1])
    assert api.hub("site", "news").seq == seq
    # The oldest went first: its retry is a publish of its own.
    assert _batch(api, site, messages, "batch-0").status == 201


def test_a_kept_key_takes_what_its_ids_take_not_its_messages():
    api = Api(centers={"history": 0})
    site = api.add_publisher("site")
    assert api.put_center(site, "news").status == 201
    messages = [{"center": "news", "data": f"message {n} " + "x" * 100} for n in range(10_000)]
    assert _batch(api, site, messages, "warm-up").status == 201
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(8):
            assert _batch(api, site, messages, f"batch-{n}").status == 201
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 10,000 ids of about 10 characters each: well under 256 KB a key.
    assert grown / 8 < 256 * KIB, f"{grown / 8 / KIB:.0f} KiB a key"
    keys: IdempotencyKeys = api.broker.keys  # type: ignore[attr-defined]
    assert keys.bytes("site") / 9 < 256 * KIB


def test_the_keys_of_every_publisher_are_bounded_together_oldest_first():
    clock = Clock()
    keys = IdempotencyKeys(clock, max_bytes=1 * MIB, max_total_bytes=2 * MIB)

    async def answer() -> str:
        return "x" * (100 * KIB)

    for n in range(60):
        result_of(Deferred.fromCoroutine(keys.once(f"p{n % 6}", f"k{n}", answer)))
        assert keys.total_bytes <= 2 * MIB
        assert all(keys.bytes(f"p{p}") <= 1 * MIB for p in range(6))
    assert sum(keys.bytes(f"p{p}") for p in range(6)) == keys.total_bytes
    # The newest are kept, whoever they are of.
    assert result_of(Deferred.fromCoroutine(keys.once("p5", "k59", answer)))[1] is False
    assert result_of(Deferred.fromCoroutine(keys.once("p0", "k0", answer)))[1] is True


def test_a_key_reused_for_another_request_is_refused_and_keeps_its_first_answer():
    api = Api()
    site = api.add_publisher("site")
    for name in ("news", "other"):
        assert api.put_center(site, name).status == 201
    key = {"Idempotency-Key": "order-7", **TEXT}
    path = "/api/v1/centers/{}/messages"
    first = api.request("POST", path.format("news"), "paid", auth=site, headers=key)
    assert first.status == 201
    seq = api.hub("site", "news").seq
    for center, body in (("news", "refunded"), ("other", "paid")):
        answer = api.request("POST", path.format(center), body, auth=site, headers=key)
        expect_json_error(*answer.decoded(), 409, "idempotency_key_reused")
    batch = _batch(api, site, [{"center": "news", "data": "paid"}, {"center": "news", "data": "x"}], "order-7")
    expect_json_error(*batch.decoded(), 409, "idempotency_key_reused")
    assert api.hub("site", "news").seq == seq and api.hub("site", "other").seq == 0  # nothing published
    again = api.request("POST", path.format("news"), "paid", auth=site, headers=key)
    assert (again.status, again.json()) == (200, first.json())
    # A batch's key, the same way.
    entries = [{"center": "news", "data": "a"}, {"center": "other", "data": "b"}]
    made = _batch(api, site, entries, "batch-1")
    assert made.status == 201
    expect_json_error(*_batch(api, site, entries[::-1], "batch-1").decoded(), 409, "idempotency_key_reused")
    same = _batch(api, site, entries, "batch-1")
    assert (same.status, same.json()) == (200, made.json())


# removing a publisher


def test_removing_a_publisher_frees_its_hubs_keys_and_cached_credentials():
    api = Api()
    site = api.add_publisher("site")
    other = api.add_publisher("other")
    for auth in (site, other):
        assert api.put_center(auth, "news").status == 201
        for n in range(5):
            headers = {"Idempotency-Key": f"k{n}", **TEXT}
            answer = api.request("POST", "/api/v1/centers/news/messages", _big(n), auth=auth, headers=headers)
            assert answer.status == 201
    hub = api.hub("site", "news")
    subscriber = Recorder()
    hub.attach(subscriber, None)
    gone = weakref.ref(hub)
    keys: IdempotencyKeys = api.broker.keys  # type: ignore[attr-defined]
    assert api.centers.retained_bytes("site") > 5 * 64 * KIB and keys.bytes("site") > 0
    kept = (api.centers.retained_bytes("other"), keys.bytes("other"))

    assert api.admin("DELETE", "/admin/v1/publishers/site").status == 204
    assert subscriber.closed == ["deleted"]
    assert api.centers.retained_bytes("site") == 0 and _retained(hub) == []
    assert keys.bytes("site") == 0
    assert "site" not in api.publishers._publishers
    del hub, subscriber
    gc.collect()
    assert gone() is None
    assert (api.centers.retained_bytes("other"), keys.bytes("other")) == kept

    # Made again, the name starts afresh: its old keys answer nothing.
    site = api.add_publisher("site")
    assert api.put_center(site, "news").status == 201
    answer = api.request("POST", "/api/v1/centers/news/messages", _big(0), auth=site,
                         headers={"Idempotency-Key": "k0", **TEXT})
    assert answer.status == 201


def test_removing_a_publisher_drops_its_webhook_events_waiting():
    async def find(publisher: str) -> tuple[Webhook | None, Publisher | None]:
        return Webhook("https://example.org/hook", ("center_occupied",)), Publisher(publisher, "s", 0.0, "1", "k" * 20)

    async def send(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        return await Deferred()  # the site never answers

    api = Api(webhooks=lambda clock, stats: Webhooks(WebhooksConfig(), clock, stats, find, send))
    site = api.add_publisher("site")
    api.add_publisher("other")
    webhooks = api.webhooks
    for publisher in ("site", "other"):
        for n in range(100):
            webhooks.event(publisher, "center_occupied", f"c{n}", {})
    api.clock.advance(1)  # a batch of each is being sent
    waiting = webhooks.outboxes["site"]
    assert len(waiting.events) == 100

    assert api.admin("DELETE", f"/admin/v1/publishers/{site[0]}").status == 204
    assert "site" not in webhooks.outboxes and not waiting.events
    assert len(webhooks.outboxes["other"].events) == 100


def test_removing_a_publisher_gives_back_the_memory_of_its_messages_and_keys():
    api = Api()
    api.add_publisher("warm-up")  # what the first publisher's requests make once
    site = api.add_publisher("site")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(40):
            if n % 10 == 0:
                assert api.put_center(site, f"c{n}").status == 201
            answer = api.request("POST", f"/api/v1/centers/c{n - n % 10}/messages", _big(n), auth=site,
                                 headers={"Idempotency-Key": f"k{n}", **TEXT})
            assert answer.status == 201
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
        assert api.admin("DELETE", "/admin/v1/publishers/site").status == 204
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held > 40 * 64 * KIB
    assert left < 256 * KIB, f"{left / KIB:.0f} KiB left of {held / KIB:.0f} KiB"


# the configuration


def test_the_byte_bounds_are_configured_and_checked():
    config = parse_config("[centers]\nmax_retained_bytes = 2048\nmax_retained_bytes_per_publisher = 4096\n")
    assert (config.centers.max_retained_bytes, config.centers.max_retained_bytes_per_publisher) == (2048, 4096)
    assert (CentersConfig().max_retained_bytes, CentersConfig().max_retained_bytes_per_publisher) == (
        16 * MIB, 256 * MIB)


@pytest.mark.parametrize("key", ["max_retained_bytes", "max_retained_bytes_per_publisher"])
@pytest.mark.parametrize("value", ["0", "1023", "-1", "true", '"1M"', "1.5e6"])
def test_a_bad_byte_bound_is_refused(key, value):
    with pytest.raises(ConfigError, match=f"centers.{key}"):
        parse_config(f"[centers]\n{key} = {value}\n")


# a real daemon


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_daemon_s_memory_stays_within_the_publisher_s_bound():
    bound = 32 * MIB
    async with running(centers={"history": 10_000, "max_retained_bytes_per_publisher": bound}) as daemon:
        auth = await setup_site(daemon, "c0")
        for name in range(1, 16):
            status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/c{name}", auth=auth)
            assert status == 201
        for n in range(64):  # the allocator's own, before measuring
            assert (await publish(daemon, auth, _big(n), f"c{n % 16}"))[0] == 201
        gc.collect()
        before = rss()
        for n in range(64, 1664):  # 100 MiB, three times the bound
            status, body = await publish(daemon, auth, _big(n), f"c{n % 16}")
            assert status == 201, body
        gc.collect()
        grown = rss() - before
        node = daemon.service
        assert node.centers.retained_bytes("site") <= bound
        assert grown <= bound + SLACK, f"grew {grown / MIB:.0f} MiB"

        assert (await daemon.admin("DELETE", "/admin/v1/publishers/site"))[0] == 204
        assert node.centers.retained_bytes("site") == 0
        assert list(node.centers.hubs()) == []


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_daemon_s_memory_for_the_keys_of_large_batches_is_bounded():
    async with running(centers={"history": 0}) as daemon:
        auth = await setup_site(daemon)
        body = json.dumps({"messages": [{"center": "news", "data": f"m{n}"} for n in range(10_000)]}).encode()

        async def batch(key: str) -> tuple[int, Any]:
            return await call("POST", f"{daemon.api}/api/v1/messages", raw=body, auth=auth,
                              headers={"Idempotency-Key": key, "Content-Type": "application/json"})

        for n in range(4):
            assert (await batch(f"warm-{n}"))[0] == 201
        gc.collect()
        before = rss()
        for n in range(30):
            assert (await batch(f"batch-{n}"))[0] == 201
        gc.collect()
        grown = rss() - before
        # 30 keys of 10,000 ids: about 4 MiB kept.
        assert grown <= 4 * MIB + SLACK / 2, f"grew {grown / MIB:.0f} MiB"
        status, again = await batch("batch-29")
        assert status == 200 and len(again["ids"]) == 10_000


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_reused_key_is_refused_by_a_durable_store_across_a_restart(tmp_path):
    url = f"sqlite:{tmp_path / 'n.db'}"
    daemon = await start_daemon(url, store={"durable": True})
    try:
        auth = await setup_site(daemon)
        headers = {**TEXT, "Idempotency-Key": "order-3"}
        target = f"{daemon.api}/api/v1/centers/news/messages"
        status, first = await call("POST", target, raw=b"paid", auth=auth, headers=headers)
        assert status == 201, first
    finally:
        await daemon.service.stopService()
    daemon = await start_daemon(url, store={"durable": True})
    try:
        target = f"{daemon.api}/api/v1/centers/news/messages"
        expect_json_error(*await call("POST", target, raw=b"refunded", auth=auth, headers=headers),
                          409, "idempotency_key_reused")
        assert await call("POST", target, raw=b"paid", auth=auth, headers=headers) == (200, first)
    finally:
        await daemon.service.stopService()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_reused_key_is_refused_by_redis_on_every_node(tmp_path):
    server = RedisServer(tmp_path / "redis")
    await server.start()
    daemons = []
    try:
        for _ in range(2):
            daemons.append(await start_daemon(server.url))
        auth = await setup_site(daemons[0])
        headers = {**TEXT, "Idempotency-Key": "order-5"}
        status, first = await call("POST", f"{daemons[0].api}/api/v1/centers/news/messages", raw=b"paid",
                                   auth=auth, headers=headers)
        assert status == 201, first
        for daemon in daemons:
            target = f"{daemon.api}/api/v1/centers/news/messages"
            expect_json_error(*await call("POST", target, raw=b"refunded", auth=auth, headers=headers),
                              409, "idempotency_key_reused")
            assert await call("POST", target, raw=b"paid", auth=auth, headers=headers) == (200, first)
    finally:
        for daemon in daemons:
            await daemon.service.stopService()
        await server.stop()


@pytest.mark.integration
@pytest.mark.parametrize("store", ["durable", "redis"])
@pytest_twisted.ensureDeferred
async def test_a_publisher_removed_and_made_again_has_none_of_its_former_keys(tmp_path, store):
    server = RedisServer(tmp_path / "redis") if store == "redis" else None
    if server is not None:
        await server.start()
    daemon = await (start_daemon(server.url) if server is not None
                    else start_daemon(f"sqlite:{tmp_path / 'n.db'}", store={"durable": True}))
    try:
        headers = {**TEXT, "Idempotency-Key": "order-9"}
        for round_ in range(2):
            auth = await setup_site(daemon)
            target = f"{daemon.api}/api/v1/centers/news/messages"
            status, body = await call("POST", target, raw=b"paid", auth=auth, headers=headers)
            assert status == 201, (round_, body)  # never the former publisher's answer
            status, _ = await daemon.admin("DELETE", "/admin/v1/publishers/site")
            assert status == 204
    finally:
        await daemon.service.stopService()
        if server is not None:
            await server.stop()
