"""Several daemons on one real ``redis-server``, and the events of
messages: a message's event, published on one node, reaches every
transport of the others, and is retained in Redis for a resume on any
node; the connection a message skips (``exclude``) reaches the hubs of
every node, live; a message of the default event is kept in Redis and
carried between nodes exactly as before events were."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from notifier.backends.interfaces import Arrival
from notifier.backends.redis.broker import RedisBroker
from notifier.backends.redis.client import Redis, RedisAddress
from notifier.domain.model import Message
from tests.redis_server import RedisServer
from tests.support import (
    Daemon,
    Recorder,
    call,
    event_source,
    eventually,
    opened,
    publish,
    setup_site,
    start_daemon,
    websocket,
)

pytestmark = pytest.mark.redis

SUB = "/sub/site/news"
DELIVERY_SECONDS = 5.0


@pytest_twisted.async_yield_fixture
async def nodes(redis, monkeypatch):
    """``await nodes()`` starts one more daemon on the test's Redis, and
    ``nodes.carried`` is every message any of them got from the channel,
    as it came."""
    started: list[Daemon] = []
    carried: list[Any] = []
    received = RedisBroker._received

    def recording(broker: RedisBroker, channel: str, raw: str) -> None:
        if channel == broker.keys.messages:
            carried.append(json.loads(raw))
        received(broker, channel, raw)

    monkeypatch.setattr(RedisBroker, "_received", recording)

    async def start() -> Daemon:
        daemon = await start_daemon(redis.url)
        started.append(daemon)
        return daemon

    start.carried = carried  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for daemon in started:
            if daemon.service.running:
                await daemon.service.stopService()


async def _published(daemon: Daemon, auth: tuple[str, str], text: str, event: str | None = None) -> str:
    status, body = await publish(daemon, auth, text, headers={"Notifier-Event": event} if event else None)
    assert status == 201, body
    return str(body["id"])


async def _retained(redis: RedisServer) -> list[Any]:
    """What Redis retains of ``site/news``, entry by entry, decoded."""
    client = Redis(RedisAddress.parse(redis.url), reactor, poolsize=1)
    try:
        await client.ready()
        entries = await client.call("lrange", "notifier:log:site/news", 0, -1)
    finally:
        await client.stop()
    return [json.loads(entry) for entry in entries]


@pytest_twisted.ensureDeferred
async def test_a_named_event_published_on_one_node_reaches_every_transport_of_another(nodes):
    a, b = await nodes(), await nodes()
    auth = await setup_site(a)
    js = await websocket(f"{b.ws}{SUB}?format=json", b.public_port)
    await opened(js)
    es = await event_source(b.public_port, SUB)
    await es.next()  # retry
    named = await _published(a, auth, "A-1 is 12.50", "price")
    plain = await _published(a, auth, "plain")
    envelopes = [json.loads(await js.next(DELIVERY_SECONDS)) for _ in range(2)]
    assert [(e["id"], e["data"], e.get("event")) for e in envelopes] == [
        (named, "A-1 is 12.50", "price"), (plain, "plain", None)]
    events = [await es.next(DELIVERY_SECONDS) for _ in range(2)]
    assert [(e["id"], e["event"]) for e in events] == [(named, "price"), (plain, "message")]
    es.close()
    js.close()
    # Between the nodes: the default event's message as it always was.
    carried = [payload for payload in nodes.carried if payload[5] == "plain"]
    assert carried and all(len(payload) == 6 for payload in carried)
    assert all(payload[6:] == ["price"] for payload in nodes.carried if payload[5] == "A-1 is 12.50")


@pytest_twisted.ensureDeferred
async def test_events_are_retained_in_redis_and_a_resume_on_another_node_gets_them(nodes, redis):
    a, b = await nodes(), await nodes()
    auth = await setup_site(a)
    first = await _published(a, auth, "first")
    status, body = await call("POST", f"{a.api}/api/v1/messages", {"messages": [
        {"center": "news", "data": "one", "event": "price"}, {"center": "news", "data": "two"}]}, auth=auth)
    assert status == 201, body
    named, plain = body["ids"]
    retained = await _retained(redis)
    assert [len(entry) for entry in retained] == [3, 4, 3]  # nothing more for the default event
    assert [entry[2:] for entry in retained] == [["first"], ["one", "price"], ["two"]]
    # A node that loads the center now reads its stream from Redis.
    status, body = await call("GET", f"{b.public}{SUB}?since={first}&timeout=0")
    assert status == 200 and body["recovered"] is True, body
    assert [(m["id"], m.get("event")) for m in body["messages"]] == [(named, "price"), (plain, None)]
    es = await event_source(b.public_port, SUB, {"Last-Event-ID": first})
    await es.next()  # retry
    assert json.loads((await es.next())["data"]) == {"recovered": True}
    assert [(e["id"], e["event"]) for e in [await es.next() for _ in range(2)]] == [
        (named, "price"), (plain, "message")]
    es.close()


@pytest_twisted.ensureDeferred
async def test_the_connection_a_message_skips_reaches_the_hubs_of_every_node_live(nodes):
    a, b = await nodes(), await nodes()
    await setup_site(a)
    hub = await b.service.centers.hub("site", "news")
    seen = Recorder()
    hub.subscribe(seen)
    try:
        await a.service.publishing.publish("site", "news", "hi", event="client-hello", exclude="123.456")
        await a.service.publishing.publish_batch("site", [("news", "both", "price", "7.8"), ("news", "plain")])
        await eventually(_ready(seen), lambda count: count >= 3, seconds=DELIVERY_SECONDS)
    finally:
        hub.unsubscribe(seen)
    messages: list[Message] = [message for batch in seen.batches for message in batch.messages]
    assert [(m.data, m.event, m.exclude) for m in messages] == [
        ("hi", "client-hello", "123.456"), ("both", "price", "7.8"), ("plain", "message", None)]
    # Each node got each from the channel; the batch's plain one as if alone.
    assert {payload[5]: payload[6:] for payload in nodes.carried} == {
        "hi": ["client-hello", "123.456"], "both": ["price", "7.8"], "plain": []}


def _ready(seen: Recorder) -> Any:
    async def count() -> int:
        return len(seen.delivered)
    return count


def test_what_comes_from_the_channel_is_read_with_its_event_and_what_it_skips():
    arrived: list[Arrival] = []

    class Handler:
        def message_arrived(self, arrival: Arrival) -> None:
            arrived.append(arrival)

    broker = RedisBroker.__new__(RedisBroker)
    broker.keys = type("Keys", (), {"control": "c", "messages": "m"})()  # type: ignore[assignment]
    broker._handler = Handler()  # type: ignore[assignment]
    base = ["site", "news", "e", 1, "1.5", "x"]
    for payload in (base, [*base, "price"], [*base, "message", "1.2"], [*base, 7], [*base, "a", 7], base[:5]):
        broker._received("m", json.dumps(payload))
    assert arrived == [Arrival("site", "news", "e", 1, 1.5, "x"),
                       Arrival("site", "news", "e", 1, 1.5, "x", "price"),
                       Arrival("site", "news", "e", 1, 1.5, "x", "message", "1.2")]
