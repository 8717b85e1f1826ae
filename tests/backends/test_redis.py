"""Several daemons sharing one real ``redis-server``.

A message published on any node reaches subscribers on every node, on every
transport, with the same ids; cursors resume on any node; centers and
publishers changed on one node are seen by all; Redis going away (stopped,
cut off, or stalled) makes publishing answer 503 while subscribers stay, and
a node catches up from Redis once it is back, or sends its subscribers back
to resume when Redis no longer holds what they missed. Then real ``twistd`` processes: one SIGKILLed while
its clients move to another, and two sharing one ``reuseport:`` port.

In-process daemons come from ``tests.support.start_daemon``; processes are
spawned through the reactor as in ``tests.test_process``. Every wait is
bounded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor

import notifier.backends.redis.client
from notifier.backends.redis.client import Redis, RedisAddress
from notifier.domain.errors import Unavailable
from notifier.domain.publishers import PUBLISHER_TTL
from tests.process import Process, clean_exit, command
from tests.redis_server import RedisServer, raw_command
from tests.relay import Relay
from tests.support import (
    ADMIN_TOKEN,
    Daemon,
    WebSocket,
    bounded,
    call,
    config_text,
    event_source,
    eventually,
    free_port,
    handshake_headers,
    make_center,
    nothing_more,
    opened,
    publish,
    published,
    setup_site,
    sleep,
    start_daemon,
    subscriber_token,
    websocket,
)

pytestmark = pytest.mark.redis

PUBLISHER, CENTER = "site", "news"
SUB = f"/sub/{PUBLISHER}/{CENTER}"
#: How long something published on one node may take to show on another.
DELIVERY_SECONDS = 5.0


# fixtures


@pytest_twisted.async_yield_fixture
async def nodes(redis):
    """``await nodes()`` starts one more daemon on the test's Redis; all are stopped after."""
    started: list[Daemon] = []

    async def start(url: str | None = None, **sections: dict[str, Any]) -> Daemon:
        daemon = await start_daemon(url or redis.url, **sections)
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        stopping = [defer.Deferred.fromCoroutine(_stop(d)) for d in started]
        await defer.DeferredList(stopping, consumeErrors=True)


async def _stop(daemon: Daemon) -> None:
    if daemon.service.running:
        await daemon.service.stopService()


# helpers


async def longpoll(daemon: Daemon, path: str = SUB, since: str | None = None,
                   timeout: float = 0) -> tuple[int, Any]:
    query = f"?timeout={timeout}" + (f"&since={since}" if since is not None else "")
    return await call("GET", f"{daemon.public}{path}{query}")


async def subscribers(daemon: Daemon, count: int, center: str = CENTER) -> None:
    """Wait until *daemon* holds *count* subscribers of *center* (any transport)."""
    def held() -> int:
        hub = daemon.service.centers.loaded(PUBLISHER, center)
        return len(hub.subscribers) if hub is not None else 0

    async def attempt() -> int:
        return held()

    await eventually(attempt, lambda n: n >= count)


async def frames(ws: WebSocket, count: int, timeout: float = DELIVERY_SECONDS) -> list[Any]:
    """The next *count* JSON frames of a ``format=json`` WebSocket."""
    return [json.loads(await ws.next(timeout)) for _ in range(count)]


async def websocket_refused(daemon: Daemon, path: str) -> tuple[int, Any]:
    """The HTTP answer to a WebSocket handshake that is refused."""
    response = await treq.get(f"{daemon.public}{path}", headers=handshake_headers(), persistent=False)
    content = await response.content()
    return response.code, json.loads(content) if content else None


# one message, every node, every transport


@pytest_twisted.ensureDeferred
async def test_a_message_published_on_one_node_reaches_every_transport_on_the_others(nodes):
    a, b, c = [await nodes() for _ in range(3)]
    auth = await setup_site(a)

    clients = []
    for node in (b, c):
        raw = await websocket(f"{node.ws}{SUB}", node.public_port)
        js = await websocket(f"{node.ws}{SUB}?format=json", node.public_port)
        await opened(js)
        es = await event_source(node.public_port, SUB)
        assert es.status == 200
        assert (await es.next())["retry"] == "2000"
        poll = defer.Deferred.fromCoroutine(longpoll(node, timeout=20))
        clients.append((node, raw, js, es, poll))
        await subscribers(node, 4)

    texts = ["one", "two\nlines", "thrée ✓"]
    ids = [await published(a, auth, text) for text in texts]
    assert len(set(ids)) == 3

    for node, raw, js, es, poll in clients:
        assert [await raw.next() for _ in texts] == texts
        envelopes = await frames(js, len(texts))
        assert [(e["id"], e["center"], e["data"]) for e in envelopes] == \
            list(zip(ids, [CENTER] * 3, texts, strict=False))
        events = [await es.next() for _ in texts]
        assert [(e["id"], e["event"], e["data"]) for e in events] == \
            list(zip(ids, ["message"] * 3, texts, strict=False))
        # The long-poll is answered with the first; the rest follow its cursor.
        status, body = await poll.addTimeout(DELIVERY_SECONDS, reactor)
        assert status == 200, body
        polled = body["messages"]
        while len(polled) < len(texts):
            status, body = await longpoll(node, since=polled[-1]["id"], timeout=5)
            assert status == 200 and body["recovered"] is True, body
            polled += body["messages"]
        assert [(m["id"], m["data"]) for m in polled] == list(zip(ids, texts, strict=False))
        # The same ids everywhere, and what each node reports of the center.
        status, body = await call("GET", f"{node.api}/api/v1/centers/{CENTER}", auth=auth)
        assert status == 200 and body["last_id"] == ids[-1], body
        status, last = await call("GET", f"{node.public}{SUB}/last")
        assert (status, last) == (200, texts[-1].encode())
    # Publishing on another node reaches the first one too.
    a_ws = await websocket(f"{a.ws}{SUB}?format=json", a.public_port)
    await opened(a_ws)
    status, body = await publish(c, auth, "from c")
    assert status == 201, body
    assert body["subscribers"] == 3  # reached on c itself (its long-poll was answered)
    [envelope] = await frames(a_ws, 1)
    assert (envelope["id"], envelope["data"]) == (body["id"], "from c")
    for _, raw, js, es, _ in clients:
        assert await raw.next() == "from c"
        assert (await frames(js, 1))[0]["id"] == body["id"]
        assert (await es.next())["id"] == body["id"]
        es.close()


@pytest_twisted.ensureDeferred
async def test_a_cursor_from_one_node_resumes_on_another(nodes):
    a, b, c = [await nodes() for _ in range(3)]
    auth = await setup_site(a)
    ws = await websocket(f"{a.ws}{SUB}?format=json", a.public_port)
    await opened(ws)
    first = await published(c, auth, "1")
    [envelope] = await frames(ws, 1)
    assert envelope["id"] == first
    ws.close()
    await ws.closed.addTimeout(5, reactor)
    missed = [await published(c, auth, text) for text in ("2", "3")]

    # Reconnecting to another node with the last id seen: exactly the missed ones, then live.
    ws = await websocket(f"{b.ws}{SUB}?format=json&since={first}", b.public_port)
    assert (await opened(ws))["recovered"] is True
    assert [(e["id"], e["data"]) for e in await frames(ws, 2)] == list(zip(missed, ["2", "3"], strict=False))
    live = await published(a, auth, "4")
    assert [(e["id"], e["data"]) for e in await frames(ws, 1)] == [(live, "4")]

    # Every transport of every node resumes from any node's ids.
    raw = await websocket(f"{c.ws}{SUB}?since={first}", c.public_port)
    assert [await raw.next() for _ in range(3)] == ["2", "3", "4"]
    es = await event_source(c.public_port, SUB, {"Last-Event-ID": missed[0]})
    await es.next()  # retry
    assert json.loads((await es.next())["data"]) == {"recovered": True}
    events = [await es.next() for _ in range(2)]
    assert [(e["id"], e["data"]) for e in events] == [(missed[1], "3"), (live, "4")]
    es.close()
    status, body = await longpoll(b, since=first)
    assert status == 200 and body["recovered"] is True, body
    assert [m["id"] for m in body["messages"]] == [*missed, live]
    assert body["last_id"] == live
    # A cursor of no epoch Redis knows: told so, then everything retained.
    status, body = await longpoll(c, since="deadbeef-2")
    assert status == 200 and body["recovered"] is False
    assert [m["data"] for m in body["messages"]][-4:] == ["1", "2", "3", "4"]
    await nothing_more(ws, a, auth, as_json=True)


@pytest_twisted.ensureDeferred
async def test_a_batch_retried_on_another_node_is_delivered_once(nodes):
    a, b, c = [await nodes() for _ in range(3)]
    auth = await setup_site(a)
    await make_center(a, auth, "alerts")
    news = await websocket(f"{c.ws}{SUB}?format=json", c.public_port)
    await opened(news)
    alerts = await websocket(f"{c.ws}/sub/{PUBLISHER}/alerts", c.public_port)
    await subscribers(c, 1)
    await subscribers(c, 1, "alerts")

    batch = {"messages": [{"center": CENTER, "data": "n1"}, {"center": "alerts", "data": "a1"},
                          {"center": CENTER, "data": "n2"}]}
    key = {"Idempotency-Key": "batch-1"}
    status, first = await call("POST", f"{a.api}/api/v1/messages", batch, auth=auth, headers=key)
    assert status == 201, first
    assert len(first["ids"]) == 3
    for node in (b, a, c):
        status, again = await call("POST", f"{node.api}/api/v1/messages", batch, auth=auth, headers=key)
        assert (status, again) == (200, first)
    # A single publish retried elsewhere likewise.
    one = {"Idempotency-Key": "single-1"}
    status, single = await publish(b, auth, "s1", headers=one)
    assert status == 201, single
    status, again = await publish(a, auth, "s1", headers=one)
    assert status == 200 and again["id"] == single["id"], again
    # The same key of another publisher is another publish.
    other = ("other", await a.add_publisher("other"))
    await make_center(a, other, CENTER)
    status, body = await call("POST", f"{b.api}/api/v1/messages",
                              {"messages": [{"center": CENTER, "data": "theirs"}]}, auth=other, headers=key)
    assert status == 201, body

    received = await frames(news, 3)
    assert [(e["id"], e["data"]) for e in received] == [
        (first["ids"][0], "n1"), (first["ids"][2], "n2"), (single["id"], "s1")]
    assert await alerts.next() == "a1"
    await nothing_more(news, b, auth, as_json=True)
    await nothing_more(alerts, a, auth, "alerts")


# centers and publishers changed on one node


@pytest_twisted.ensureDeferred
async def test_a_center_created_and_deleted_on_one_node_is_seen_by_every_node(nodes):
    a, b = await nodes(), await nodes()
    auth = await setup_site(a)
    status, body = await call("GET", f"{b.api}/api/v1/centers/{CENTER}", auth=auth)
    assert status == 200 and body["path"] == f"{PUBLISHER}/{CENTER}", body
    status, body = await call("GET", f"{b.api}/api/v1/centers", auth=auth)
    assert [c["name"] for c in body["centers"]] == [CENTER]
    status, body = await b.admin("GET", "/admin/v1/publishers")
    assert body["publishers"][0]["name"] == PUBLISHER and body["publishers"][0]["centers"] == 1
    old = await published(a, auth, "before")

    ws = await websocket(f"{b.ws}{SUB}", b.public_port)
    es = await event_source(b.public_port, SUB)
    await es.next()
    poll = defer.Deferred.fromCoroutine(longpoll(b, timeout=30))
    await subscribers(b, 3)

    status, _ = await call("DELETE", f"{a.api}/api/v1/centers/{CENTER}", auth=auth)
    assert status == 204
    code, _ = await ws.closed.addTimeout(DELIVERY_SECONDS, reactor)
    assert code == 1001
    await es.ended.addTimeout(DELIVERY_SECONDS, reactor)
    status, body = await poll.addTimeout(DELIVERY_SECONDS, reactor)
    assert status == 404 and body["error"], body

    for node in (a, b):
        status, body = await call("GET", f"{node.api}/api/v1/centers/{CENTER}", auth=auth)
        assert status == 404 and body["error"] == "no_such_center", body
        status, body = await longpoll(node)
        assert status == 404, body
        assert (await websocket_refused(node, SUB))[0] == 404
        status, body = await publish(node, auth, "gone")
        assert status == 404, body

    # Made again on the other node: a new epoch, so an old cursor is not recovered.
    await make_center(b, auth)
    again = await published(b, auth, "after")
    assert again != old
    status, body = await longpoll(a, since=old)
    assert status == 200 and body["recovered"] is False, body
    assert [(m["id"], m["data"]) for m in body["messages"]] == [(again, "after")]


@pytest_twisted.ensureDeferred
async def test_a_publisher_added_rotated_and_removed_on_one_node(nodes):
    a, b = await nodes(), await nodes()
    secret = await a.add_publisher(PUBLISHER)
    auth = (PUBLISHER, secret)
    await make_center(b, auth)  # B authenticates a publisher added on A
    assert await published(b, auth, "with the first secret")

    status, body = await a.admin("POST", f"/admin/v1/publishers/{PUBLISHER}/rotate")
    assert status == 200, body
    rotated = (PUBLISHER, body["secret"])
    assert rotated[1] != secret
    since = reactor.seconds()
    await eventually(lambda: publish(b, auth, "old secret"), lambda r: r[0] == 401,
                     seconds=PUBLISHER_TTL + 2)
    assert reactor.seconds() - since <= PUBLISHER_TTL + 2
    await eventually(lambda: publish(b, rotated, "new secret"), lambda r: r[0] == 201)

    ws = await websocket(f"{b.ws}{SUB}", b.public_port)
    await subscribers(b, 1)
    status, _ = await a.admin("DELETE", f"/admin/v1/publishers/{PUBLISHER}")
    assert status == 204
    for node in (a, b):
        await eventually(lambda node=node: publish(node, rotated, "removed"), lambda r: r[0] == 401,
                         seconds=PUBLISHER_TTL + 2)
        status, body = await node.admin("GET", "/admin/v1/publishers")
        assert body["publishers"] == []
    code, _ = await ws.closed.addTimeout(DELIVERY_SECONDS, reactor)
    assert code == 1001


@pytest_twisted.ensureDeferred
async def test_the_offline_command_on_a_redis_configuration_reaches_a_running_daemon(nodes, redis, tmp_path):
    daemon = await nodes()
    config = tmp_path / "notifier.toml"
    config.write_text(config_text(redis.url), encoding="utf-8")

    code, out, err = await command("publisher", "add", "offline", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    name, secret = out.splitlines()[0].split()  # then its Pusher app id and key
    assert name == "offline"
    auth = ("offline", secret)
    await eventually(lambda: call("PUT", f"{daemon.api}/api/v1/centers/{CENTER}", auth=auth),
                     lambda r: r[0] == 201)
    ws = await websocket(f"{daemon.ws}/sub/offline/{CENTER}", daemon.public_port)
    assert await published(daemon, auth, "from offline", CENTER)
    assert await ws.next() == "from offline"

    code, out, err = await command("publisher", "list", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    assert out.startswith("offline\tcenters=1") and secret not in out

    code, out, err = await command("publisher", "rotate", "offline", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    rotated = ("offline", out.split()[1])
    await eventually(lambda: publish(daemon, auth, "old"), lambda r: r[0] == 401, seconds=PUBLISHER_TTL + 2)
    await eventually(lambda: publish(daemon, rotated, "new"), lambda r: r[0] == 201)


@pytest_twisted.ensureDeferred
async def test_an_idle_center_expires_on_every_node_unless_held_or_published_to(nodes):
    a, b = await nodes(), await nodes()
    auth = (PUBLISHER, await a.add_publisher(PUBLISHER))
    created = reactor.seconds()
    for name in ("idle", "held", "busy"):
        await make_center(a, auth, name, ttl=2)
    ws = await websocket(f"{b.ws}/sub/{PUBLISHER}/held", b.public_port)  # held on the other node
    await subscribers(b, 1, "held")

    async def status_everywhere(name: str) -> list[int]:
        return [(await call("GET", f"{node.api}/api/v1/centers/{name}", auth=auth))[0] for node in (a, b)]

    async def keep_busy() -> None:
        status, body = await publish(b, auth, "busy", "busy")
        assert status == 201, body

    await keep_busy()
    assert await status_everywhere("idle") == [200, 200]
    # "idle" goes after its ttl (and a sweep), on both nodes; the others stay.
    while reactor.seconds() - created < 6:
        await keep_busy()
        if await status_everywhere("idle") == [404, 404]:
            break
        await sleep(0.25)
    assert await status_everywhere("idle") == [404, 404]
    assert reactor.seconds() - created >= 2
    for _ in range(8):  # two more ttls
        await keep_busy()
        await sleep(0.5)
    assert await status_everywhere("held") == [200, 200]
    assert await status_everywhere("busy") == [200, 200]

    # Let go of both: they expire too, and "held"'s subscriber does not come back.
    ws.close()
    await ws.closed.addTimeout(5, reactor)
    assert await status_everywhere("held") == [200, 200]
    for name in ("held", "busy"):
        await eventually(lambda name=name: status_everywhere(name), lambda r: r == [404, 404],
                         seconds=8, every=0.25)
    status, body = await b.admin("GET", "/admin/v1/publishers")
    assert body["publishers"][0]["centers"] == 0


@pytest_twisted.ensureDeferred
async def test_a_private_center_token_opens_it_on_any_node(nodes):
    a, b = await nodes(), await nodes()
    auth = await setup_site(a, "inbox", private=True)
    granted = subscriber_token(auth[1], sub="inbox", lifetime=600)
    path = f"/sub/{PUBLISHER}/inbox"
    ws = await websocket(f"{b.ws}{path}?format=json&token={granted}", b.public_port)
    await opened(ws)
    status, body = await websocket_refused(b, path)
    assert status == 401 and body["error"], body
    forged = subscriber_token("a forged secret, as long as a real one: 0123456789", sub="inbox", lifetime=600)
    status, body = await websocket_refused(b, f"{path}?token={forged}")
    assert status == 401, body
    elsewhere = subscriber_token(auth[1], sub="other", lifetime=600)
    status, body = await websocket_refused(b, f"{path}?token={elsewhere}")
    assert status == 401, body
    status, body = await call("GET", f"{b.public}{path}/last")
    assert status == 401, body

    message = await published(a, auth, "for you", "inbox")
    [envelope] = await frames(ws, 1)
    assert (envelope["id"], envelope["data"]) == (message, "for you")
    status, body = await call("GET", f"{b.public}{path}?timeout=0&since=x-0&token={granted}")
    assert status == 200 and [m["id"] for m in body["messages"]] == [message], body


@pytest_twisted.ensureDeferred
async def test_a_center_history_override_is_what_redis_retains(nodes, redis):
    a, b = await nodes(centers={"history": 5}), await nodes(centers={"history": 5})
    auth = await setup_site(a, history=3)
    await make_center(a, auth, "default")
    ids = [await published(a, auth, str(i)) for i in range(1, 6)]
    for i in range(1, 8):
        await published(b, auth, str(i), "default")
    assert raw_command(redis.port, "LLEN", f"notifier:log:{PUBLISHER}/{CENTER}").startswith(b":3\r\n")
    assert raw_command(redis.port, "LLEN", f"notifier:log:{PUBLISHER}/default").startswith(b":5\r\n")

    status, body = await longpoll(b, since=ids[0])  # 2 is no longer retained
    assert status == 200 and body["recovered"] is False, body
    assert [m["data"] for m in body["messages"]] == ["3", "4", "5"]
    status, body = await longpoll(b, since=ids[1])
    assert status == 200 and body["recovered"] is True, body
    assert [m["id"] for m in body["messages"]] == ids[2:]
    ws = await websocket(f"{b.ws}{SUB}?format=json&since={ids[0]}", b.public_port)
    assert (await opened(ws))["recovered"] is False
    assert [e["data"] for e in await frames(ws, 3)] == ["3", "4", "5"]
    status, body = await longpoll(a, f"/sub/{PUBLISHER}/default", since="x-0")
    assert [m["data"] for m in body["messages"]] == ["3", "4", "5", "6", "7"]


# faults


@pytest_twisted.ensureDeferred
async def test_publishing_answers_503_while_redis_is_down_and_works_again_once_it_is_back(nodes, redis):
    a, b = await nodes(), await nodes()
    auth = await setup_site(a)
    ws = await websocket(f"{b.ws}{SUB}?format=json", b.public_port)
    await opened(ws)
    raw = await websocket(f"{a.ws}{SUB}", a.public_port)
    es = await event_source(b.public_port, SUB)
    await es.next()
    await subscribers(b, 2)
    await subscribers(a, 1)
    first = await published(a, auth, "before")
    assert (await frames(ws, 1))[0]["id"] == first
    assert await raw.next() == "before"
    assert (await es.next())["id"] == first

    await redis.stop()
    for node in (a, b):
        sent = reactor.seconds()
        status, body = await bounded(publish(node, auth, "while down"), 10)
        assert reactor.seconds() - sent < 3
        assert status == 503 and body["error"] == "store_unavailable" and body["message"], body
        status, body = await call("POST", f"{node.api}/api/v1/messages",
                                  {"messages": [{"center": CENTER, "data": "x"}]}, auth=auth)
        assert status == 503 and body["error"] == "store_unavailable", body
        status, body = await node.admin("POST", "/admin/v1/publishers", {"name": "newcomer"})
        assert status == 503 and body["error"] == "store_unavailable", body
    await sleep(1)
    assert not ws.closed.called and not raw.closed.called and not es.ended.called

    # Back, empty (no persistence): each daemon reconnects by itself, and
    # finds the center gone, as if deleted: its subscribers are closed.
    await redis.start()
    for client in (ws, raw):
        code, _ = await client.closed.addTimeout(10, reactor)
        assert code == 1001
    await es.ended.addTimeout(10, reactor)
    status, body = await eventually(lambda: a.admin("POST", "/admin/v1/publishers", {"name": PUBLISHER}),
                                    lambda r: r[0] == 201, seconds=10)
    auth = (PUBLISHER, body["secret"])
    await eventually(lambda: call("PUT", f"{b.api}/api/v1/centers/{CENTER}", auth=auth),
                     lambda r: r[0] == 201, seconds=10)
    fresh = [await websocket(f"{node.ws}{SUB}?format=json", node.public_port) for node in (a, b)]
    for client in fresh:
        await opened(client)
    await subscribers(b, 1)
    await subscribers(a, 1)
    again = await published(b, auth, "after")
    for client in fresh:
        [envelope] = await frames(client, 1)
        assert (envelope["id"], envelope["data"]) == (again, "after")
    # The old cursor belongs to a history Redis lost: not recovered.
    status, body = await longpoll(a, since=first)
    assert status == 200 and body["recovered"] is False, body
    assert [m["id"] for m in body["messages"]] == [again]


@pytest_twisted.ensureDeferred
async def test_a_node_cut_off_from_redis_catches_up_when_it_is_back(nodes, redis):
    relay = Relay(redis.port)
    await relay.start()
    try:
        a = await nodes()
        b = await nodes(f"redis://127.0.0.1:{relay.port_number}/0")
        auth = await setup_site(a)
        ws = await websocket(f"{b.ws}{SUB}?format=json", b.public_port)
        await opened(ws)
        raw = await websocket(f"{b.ws}{SUB}", b.public_port)
        es = await event_source(b.public_port, SUB)
        await es.next()
        await subscribers(b, 3)
        first = await published(a, auth, "0")
        assert (await frames(ws, 1))[0]["id"] == first
        assert await raw.next() == "0"
        assert (await es.next())["id"] == first

        await relay.cut()
        meanwhile = [await published(a, auth, str(i)) for i in range(1, 6)]
        sent = reactor.seconds()
        status, body = await publish(b, auth, "cut off")
        assert reactor.seconds() - sent < 3
        assert status == 503 and body["error"] == "store_unavailable", body
        await sleep(0.5)
        assert not ws.closed.called and not raw.closed.called and not es.ended.called

        await relay.restore()
        # Everything published meanwhile, in order, once, with A's ids.
        assert [(e["id"], e["data"]) for e in await frames(ws, 5, timeout=10)] == list(
            zip(meanwhile, ["1", "2", "3", "4", "5"], strict=False))
        assert [await raw.next(10) for _ in range(5)] == ["1", "2", "3", "4", "5"]
        assert [(e["id"], e["data"]) for e in [await es.next(10) for _ in range(5)]] == list(
            zip(meanwhile, ["1", "2", "3", "4", "5"], strict=False))
        # B publishes again, and both nodes carry on from there with nothing doubled.
        await eventually(lambda: publish(b, auth, "6"), lambda r: r[0] == 201, seconds=10)
        assert (await frames(ws, 1))[0]["data"] == "6"
        assert await raw.next() == "6"
        assert (await es.next())["data"] == "6"
        await nothing_more(ws, a, auth, as_json=True)
        es.close()
    finally:
        await relay.cut()


@pytest_twisted.ensureDeferred
async def test_a_position_another_node_reached_first_resumes_whole_on_a_node_behind(nodes, redis):
    """A client given a position by one node and resuming on another that
    has not seen it yet (the message is on its way, or the node is cut off
    from Redis) is not told "from the future": the node catches up with
    Redis first, or, unable to, answers 503 and the client comes back."""
    relay = Relay(redis.port)
    await relay.start()
    try:
        a = await nodes()
        b = await nodes(f"redis://127.0.0.1:{relay.port_number}/0")
        auth = await setup_site(a)
        ws = await websocket(f"{b.ws}{SUB}?format=json", b.public_port)
        await opened(ws)
        await subscribers(b, 1)
        await published(a, auth, "0")
        await relay.cut()
        meanwhile = [await published(a, auth, str(i)) for i in range(1, 4)]
        status, body = await longpoll(b, since=meanwhile[-1])
        assert status == 503 and body["error"] == "store_unavailable", body
        await relay.restore()
        status, body = await eventually(lambda: longpoll(b, since=meanwhile[-1]), lambda r: r[0] == 200,
                                        seconds=10)
        assert body["recovered"] is True and body["messages"] == [] and body["last_id"] == meanwhile[-1], body
        later = await published(a, auth, "later")
        resumed = await websocket(f"{b.ws}{SUB}?format=json&since={meanwhile[1]}", b.public_port)
        assert (await opened(resumed))["recovered"] is True
        assert [f["id"] for f in await frames(resumed, 2)] == [meanwhile[2], later]
    finally:
        await relay.cut()


@pytest_twisted.ensureDeferred
async def test_a_multiplexed_subscriber_gets_every_node_s_messages_and_each_center_catches_up(nodes, redis):
    relay = Relay(redis.port)
    await relay.start()
    try:
        a = await nodes()
        b = await nodes(f"redis://127.0.0.1:{relay.port_number}/0")
        auth = await setup_site(a)
        await make_center(a, auth, "user.17")
        path = f"/sub/{PUBLISHER}/{CENTER},user.17"
        ws = await websocket(f"{b.ws}{path}", b.public_port)
        opening = json.loads(await ws.next())
        assert opening["recovered"] is True and len(opening["cursor"].split(",")) == 2
        es = await event_source(b.public_port, path)
        await es.next()  # the starting point
        await es.next()  # recovery
        await subscribers(b, 2, "user.17")

        def expect(sent: list[tuple[str, str]], got: list[dict[str, Any]]) -> None:
            assert [(g["id"], g["center"]) for g in got] == sent

        sent = [(await published(a, auth, f"{center} live", center), center) for center in (CENTER, "user.17")]
        expect(sent, await frames(ws, 2))
        expect(sent, [json.loads((await es.next())["data"]) for _ in sent])

        await relay.cut()
        meanwhile = [(await published(a, auth, f"{center} {i}", center), center)
                     for i in range(3) for center in ("user.17", CENTER)]
        await relay.restore()
        # Each center caught up on its own: in order, once, nothing missed.
        got = await frames(ws, len(meanwhile), timeout=10)
        for center in (CENTER, "user.17"):
            assert [g["id"] for g in got if g["center"] == center] == [i for i, c in meanwhile if c == center]
        events = [json.loads((await es.next(10))["data"]) for _ in meanwhile]
        assert sorted((e["id"], e["center"]) for e in events) == sorted(meanwhile)
        # The long-poll's compound cursor from node A resumes on node B.
        status, body = await call("GET", f"{a.public}{path}?timeout=0")
        cursor = body["last_id"]
        more = await published(a, auth, "more", "user.17")
        status, body = await call("GET", f"{b.public}{path}?timeout=5&since={cursor}")
        assert status == 200 and [m["id"] for m in body["messages"]] == [more], body
        assert body["recovered"] is True and body["lost"] == []
        assert (await frames(ws, 1))[0]["id"] == more
        es.close()
    finally:
        await relay.cut()


@pytest_twisted.ensureDeferred
async def test_a_node_that_missed_more_than_redis_retains_sends_its_subscribers_back(nodes, redis):
    relay = Relay(redis.port)
    await relay.start()
    try:
        a = await nodes()
        b = await nodes(f"redis://127.0.0.1:{relay.port_number}/0")
        auth = await setup_site(a, history=2)
        ws = await websocket(f"{b.ws}{SUB}?format=json", b.public_port)
        await opened(ws)
        es = await event_source(b.public_port, SUB)
        await es.next()
        await subscribers(b, 2)
        first = await published(a, auth, "0")
        assert (await frames(ws, 1))[0]["id"] == first
        assert (await es.next())["id"] == first

        await relay.cut()
        meanwhile = [await published(a, auth, str(i)) for i in range(1, 5)]  # 3 and 4 retained
        poll = defer.Deferred.fromCoroutine(longpoll(b, since=first, timeout=30))
        await subscribers(b, 3)
        await relay.restore()
        # Not a stream with a hole in it: closed as on a shutdown, so that
        # each comes back with its cursor and is told what was lost.
        code, _ = await ws.closed.addTimeout(10, reactor)
        assert code == 1001
        await es.ended.addTimeout(10, reactor)
        status, body = await poll.addTimeout(10, reactor)
        assert status == 200 and body["messages"] == [] and body["last_id"] == first, body
        status, body = await longpoll(b, since=first)
        assert status == 200 and body["recovered"] is False, body
        assert [m["id"] for m in body["messages"]] == meanwhile[2:]
        ws = await websocket(f"{b.ws}{SUB}?format=json&since={first}", b.public_port)
        assert (await opened(ws))["recovered"] is False
        assert [e["id"] for e in await frames(ws, 2)] == meanwhile[2:]
        await eventually(lambda: publish(b, auth, "5"), lambda r: r[0] == 201, seconds=10)
        assert (await frames(ws, 1))[0]["data"] == "5"
    finally:
        await relay.cut()


# real processes


async def _process(folder: Path, redis: RedisServer, public: str, public_port: int) -> Process:
    folder.mkdir()
    api = free_port()
    config = folder / "notifier.toml"
    config.write_text(config_text(
        redis.url,
        public={"endpoint": public},
        api={"endpoint": f"tcp:{api}:interface=127.0.0.1", "admin_token": ADMIN_TOKEN},
        subscribers={"drain_seconds": 0.5},
    ), encoding="utf-8")
    process = Process(config, public_port, api)
    await process.start()
    return process


async def _stop_processes(*processes: Process) -> None:
    for process in processes:
        if process.running:
            process.terminate()
    for process in processes:
        if process.running:
            reason = await process.stopped(10)
            assert clean_exit(reason), f"{reason!r}\n{process.log()}"


async def _follow(processes: list[Process], auth: tuple[str, str], cursor: str, until: str) -> list[dict]:
    """A long-poll client: from the first process, and on to the next when it is gone."""
    received: list[dict] = []
    at = 0
    while not received or received[-1]["data"] != until:
        try:
            status, body = await bounded(call(
                "GET", f"{processes[at].public}{SUB}?timeout=5&since={cursor}"), 10)
        except Exception:
            at += 1  # gone: resume at the next one
            assert at < len(processes), "every process is gone"
            continue
        assert status == 200 and body["recovered"] is True, body
        received += body["messages"]
        cursor = body["last_id"]
    return received


@pytest_twisted.ensureDeferred
async def test_a_sigkilled_daemon_loses_nothing_acknowledged(redis, tmp_path):
    ports = [free_port(), free_port()]
    a = b = None
    try:
        a, b = [await _process(tmp_path / name, redis, f"tcp:{port}:interface=127.0.0.1", port)
                for name, port in zip("ab", ports, strict=False)]
        status, body = await a.admin("POST", "/admin/v1/publishers", {"name": PUBLISHER})
        assert status == 201, body
        auth = (PUBLISHER, body["secret"])
        status, body = await bounded(call("PUT", f"{b.api}/api/v1/centers/{CENTER}", auth=auth))
        assert status == 201, body
        status, body = await bounded(publish(b, auth, "start"))
        assert status == 201, body
        start = body["id"]

        # Subscribed to A: a WebSocket (json) and a long-poll loop.
        ws = await websocket(f"{a.ws}{SUB}?format=json&since={start}", a.public_port)
        assert (await opened(ws))["recovered"] is True
        polling = defer.Deferred.fromCoroutine(_follow([a, b], auth, start, "end"))
        await eventually(lambda: a.admin("GET", "/admin/v1/stats"),
                         lambda r: r[1]["connections"]["websocket"] == 1)

        acknowledged: list[tuple[str, str]] = []
        for i in range(40):
            if i == 15:
                a.transport.signalProcess("KILL")
            status, body = await bounded(publish(b, auth, f"m{i}"))
            assert status == 201, body
            acknowledged.append((body["id"], f"m{i}"))
            await sleep(0.02)
        reason = await a.stopped(10)
        assert not clean_exit(reason)
        status, body = await bounded(publish(b, auth, "end"))
        assert status == 201, body
        acknowledged.append((body["id"], "end"))

        # The WebSocket saw some before A died; it resumes on B with its last id.
        await ws.closed.addTimeout(10, reactor)
        seen: list[dict] = []
        while ws.messages.pending:
            seen.append(json.loads(await ws.next()))
        assert seen, "no message reached the WebSocket before the kill"
        ws = await websocket(f"{b.ws}{SUB}?format=json&since={seen[-1]['id']}", b.public_port)
        assert (await opened(ws))["recovered"] is True
        seen += await frames(ws, len(acknowledged) - len(seen))
        assert [(m["id"], m["data"]) for m in seen] == acknowledged
        await nothing_more(ws, b, auth, as_json=True)

        polled = await polling.addTimeout(30, reactor)
        assert [(m["id"], m["data"]) for m in polled] == acknowledged
        await _stop_processes(b)
    finally:
        for process in (a, b):
            if process is not None:
                await process.kill()


@pytest_twisted.ensureDeferred
async def test_two_processes_share_one_reuseport_port(redis, tmp_path):
    port = free_port()
    shared = f"reuseport:{port}:interface=127.0.0.1"
    a = b = None
    clients: list[WebSocket] = []
    try:
        a = await _process(tmp_path / "a", redis, shared, port)
        b = await _process(tmp_path / "b", redis, shared, port)
        status, body = await a.admin("POST", "/admin/v1/publishers", {"name": PUBLISHER})
        assert status == 201, body
        auth = (PUBLISHER, body["secret"])
        status, body = await bounded(call("PUT", f"{a.api}/api/v1/centers/{CENTER}", auth=auth))
        assert status == 201, body

        async def counts() -> list[int]:
            answers = [await a.admin("GET", "/admin/v1/stats"), await b.admin("GET", "/admin/v1/stats")]
            return [body["connections"]["websocket"] for _, body in answers]

        for _ in range(5):  # the kernel spreads connections by their source port
            for _ in range(40):
                clients.append(await websocket(f"ws://127.0.0.1:{port}{SUB}?format=json", port))
                await opened(clients[-1])
            spread = await eventually(counts, lambda c: sum(c) == len(clients))
            if all(spread):
                break
        assert all(spread), f"one process got every connection: {spread}"

        for process in (a, b, a):
            status, body = await bounded(publish(process, auth, f"via {process.api}"))
            assert status == 201, body
            for client in clients:
                [envelope] = await frames(client, 1)
                assert (envelope["id"], envelope["data"]) == (body["id"], f"via {process.api}")
        for client in clients:
            client.close()
        await _stop_processes(a, b)
    finally:
        for process in (a, b):
            if process is not None:
                await process.kill()


@pytest_twisted.ensureDeferred
async def test_a_stalled_redis_answers_503_and_is_recovered_from(nodes, redis):
    a = await nodes()
    auth = await setup_site(a)
    ws = await websocket(f"{a.ws}{SUB}", a.public_port)
    await subscribers(a, 1)
    assert await published(a, auth, "before")
    assert await ws.next() == "before"

    redis.pause()  # connections stay up, nothing answers
    sent = reactor.seconds()
    status, body = await defer.Deferred.fromCoroutine(publish(a, auth, "stalled")).addTimeout(10, reactor)
    assert status == 503 and body["error"] == "store_unavailable", body
    assert reactor.seconds() - sent < 8
    await sleep(3)  # reconnection attempts meet the stalled server too
    redis.resume()

    await eventually(lambda: publish(a, auth, "after"), lambda r: r[0] == 201, seconds=20, every=0.5)
    received = [await ws.next(10)]
    while received[-1] != "after":
        received.append(await ws.next(10))
    assert not ws.closed.called


@pytest_twisted.ensureDeferred
async def test_connections_to_redis_come_back_after_a_stall_longer_than_the_reply_timeout(redis, monkeypatch):
    # One connection and a short reply timeout: the reconnection's first
    # command (SELECT) times out too while the server is stalled.
    monkeypatch.setattr(notifier.backends.redis.client, "REPLY_TIMEOUT", 0.5)
    connection = Redis(RedisAddress.parse(redis.url), reactor, poolsize=1)
    await connection.ready()
    try:
        assert await connection.call("set", "k", "v")
        redis.pause()
        sent = reactor.seconds()
        with pytest.raises(Unavailable) as refused:
            await connection.call("get", "k")
        assert refused.value.code == "store_unavailable"
        assert reactor.seconds() - sent < 2
        await sleep(2)  # reconnecting meets the stalled server
        redis.resume()

        async def attempt() -> Any:
            try:
                return await connection.call("get", "k")
            except Unavailable:
                return None

        assert await eventually(attempt, lambda value: value == "v", seconds=10) == "v"
    finally:
        await connection.stop()


# hardening across nodes


@pytest_twisted.ensureDeferred
async def test_a_signed_request_accepted_by_one_node_is_refused_by_every_other(nodes):
    import hashlib
    import hmac

    a, b = await nodes(), await nodes()
    auth = await setup_site(a)
    target = f"/api/v1/centers/{CENTER}/messages"
    timestamp = int(time.time())
    signed = f"POST\n{target}\n{timestamp}\n{hashlib.sha256(b'once').hexdigest()}"
    signature = hmac.new(auth[1].encode(), signed.encode(), hashlib.sha256).hexdigest()
    headers = {"Authorization": f"Notifier-HMAC-SHA256 publisher={PUBLISHER}, timestamp={timestamp}, "
                                f"signature={signature}", "Content-Type": "text/plain"}
    status, body = await call("POST", a.api + target, raw=b"once", headers=headers)
    assert status == 201, body
    for node in (b, a):
        status, body = await call("POST", node.api + target, raw=b"once", headers=headers)
        assert (status, body["error"]) == (401, "replayed_signature"), body


@pytest_twisted.ensureDeferred
async def test_rotating_a_secret_on_one_node_ends_private_streams_on_every_node(nodes):
    a, b = await nodes(), await nodes()
    auth = await setup_site(a, "private", private=True)
    token = jwt.encode({"sub": "private", "exp": int(time.time()) + 600}, auth[1].encode(), algorithm="HS256")
    ws = await websocket(f"{b.ws}/sub/{PUBLISHER}/private?token={token}", b.public_port)
    status, body = await a.admin("POST", f"/admin/v1/publishers/{PUBLISHER}/rotate")
    assert status == 200, body
    ws.closed.addTimeout(DELIVERY_SECONDS, reactor)
    code, _ = await ws.closed
    assert code == 4401


# presence and webhooks across nodes


class _Site:
    """A site's webhook route: the events of every request it accepted."""

    def __init__(self) -> None:
        from twisted.web import resource, server

        site = self

        class Route(resource.Resource):
            isLeaf = True

            def render_POST(self, request: Any) -> bytes:
                site.events.extend(json.loads(request.content.read())["events"])
                request.setResponseCode(204)
                return b""

        self.events: list[dict[str, Any]] = []
        self.factory = server.Site(Route())

    async def start(self) -> str:
        from twisted.internet import endpoints

        self.port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.factory)
        return f"http://127.0.0.1:{self.port.getHost().port}/hook"

    def names(self) -> list[tuple[str, str, str | None]]:
        return [(e["name"], e["center"], e.get("uid")) for e in self.events]


PRESENCE = {"presence": {"leave_grace": 0.3}, "webhooks": {"batch_seconds": 0.1, "timeout": 1}}


def _member_token(secret: str, uid: str) -> str:
    return subscriber_token(secret, sub="room", uid=uid)


@pytest_twisted.ensureDeferred
async def test_presence_is_cluster_wide_and_each_event_is_sent_once(nodes):
    a, b = await nodes(**PRESENCE), await nodes(**PRESENCE)
    auth = await setup_site(a)
    await make_center(a, auth, "room", private=True, presence=True)
    site = _Site()
    url = await site.start()
    try:
        status, _ = await call("PUT", f"{b.api}/api/v1/webhook", {"url": url, "events": [
            "center_occupied", "center_vacated", "member_joined", "member_left"]}, auth=auth)
        assert status == 200
        path = f"/sub/{PUBLISHER}/room?format=json&token="
        ann_a = await websocket(f"{a.ws}{path}{_member_token(auth[1], 'ann')}", a.public_port)
        await opened(ann_a)
        assert [m["uid"] for m in json.loads(await ann_a.next())["members"]] == ["ann"]
        # Ann on the other node too, and Bob there: one join each, seen on every node.
        ann_b = await websocket(f"{b.ws}{path}{_member_token(auth[1], 'ann')}", b.public_port)
        await opened(ann_b)
        assert [m["uid"] for m in json.loads(await ann_b.next())["members"]] == ["ann"]
        bob_b = await websocket(f"{b.ws}{path}{_member_token(auth[1], 'bob')}", b.public_port)
        await opened(bob_b)
        assert [m["uid"] for m in json.loads(await bob_b.next())["members"]] == ["ann", "bob"]
        assert json.loads(await ann_a.next(DELIVERY_SECONDS)) == {
            "presence": "join", "center": "room", "uid": "bob", "info": None}
        assert json.loads(await ann_b.next(DELIVERY_SECONDS))["uid"] == "bob"
        for node in (a, b):
            status, body = await call("GET", f"{node.api}/api/v1/centers/room/presence", auth=auth)
            assert body == {"count": 2, "members": [{"uid": "ann", "info": None}, {"uid": "bob", "info": None}]}
            status, body = await call("GET", f"{node.api}/api/v1/centers/room", auth=auth)
            assert body["members"] == 2
        # Ann leaves node A only: still there (on B).
        ann_a.close()
        await sleep(1.0)
        assert bob_b.messages.pending == []
        # Bob leaves: node A's... nobody; node B's Ann is told, once.
        bob_b.close()
        assert json.loads(await ann_b.next(5)) == {"presence": "leave", "center": "room", "uid": "bob"}
        ann_b.close()
        await eventually(lambda: _presence_count(a, auth), lambda n: n == 0)
        await sleep(1.0)
        # Every event once for the cluster, in an order that makes sense.
        names = site.names()
        assert sorted(names) == sorted([
            ("center_occupied", "room", None), ("member_joined", "room", "ann"), ("member_joined", "room", "bob"),
            ("member_left", "room", "bob"), ("member_left", "room", "ann"), ("center_vacated", "room", None)]), names
    finally:
        await site.port.stopListening()


async def _presence_count(node: Daemon, auth: tuple[str, str]) -> int:
    status, body = await call("GET", f"{node.api}/api/v1/centers/room/presence", auth=auth)
    assert status == 200, body
    return body["count"]


@pytest_twisted.ensureDeferred
async def test_a_node_gone_silent_leaves_no_ghost_members(nodes, redis, monkeypatch):
    import notifier.backends.redis.presence as redis_presence
    import notifier.service

    monkeypatch.setattr(redis_presence, "NODE_TTL", 1.5)
    monkeypatch.setattr(notifier.service, "REFRESH", 0.3)
    relay = Relay(redis.port)
    await relay.start()
    try:
        a = await nodes(**PRESENCE)
        lost = await nodes(f"redis://127.0.0.1:{relay.port_number}/0", **PRESENCE)
        auth = await setup_site(a)
        await make_center(a, auth, "room", private=True, presence=True)
        path = f"/sub/{PUBLISHER}/room?format=json&token="
        ann = await websocket(f"{a.ws}{path}{_member_token(auth[1], 'ann')}", a.public_port)
        await opened(ann)
        await ann.next()
        ghost = await websocket(f"{lost.ws}{path}{_member_token(auth[1], 'ghost')}", lost.public_port)
        await opened(ghost)
        await ghost.next()
        assert json.loads(await ann.next(DELIVERY_SECONDS))["uid"] == "ghost"
        await sleep(0.5)  # held: it says so again in time
        assert await _presence_count(a, auth) == 2
        # The node goes silent (as one killed would): the others forget what it held.
        await relay.cut()
        assert json.loads(await ann.next(10)) == {"presence": "leave", "center": "room", "uid": "ghost"}
        assert await _presence_count(a, auth) == 1
        # Back, it says so again: the member it still holds is there again.
        await relay.restore()
        assert json.loads(await ann.next(10))["presence"] == "join"
        assert await _presence_count(a, auth) == 2
        ghost.close()
        ann.close()
    finally:
        await relay.cut()


@pytest_twisted.ensureDeferred
async def test_a_sigkilled_node_leaves_no_ghost_member_behind(nodes, redis, tmp_path):
    """A real process holding a member is killed: another node reports the
    member gone once the dead node's entries have expired (NODE_TTL), with
    nothing but Redis to tell it."""
    from notifier.backends.redis.presence import NODE_TTL, REFRESH

    port = free_port()
    doomed = None
    try:
        doomed = await _process(tmp_path / "doomed", redis, f"tcp:{port}:interface=127.0.0.1", port)
        a = await nodes(**PRESENCE)
        status, body = await a.admin("POST", "/admin/v1/publishers", {"name": PUBLISHER})
        auth = (PUBLISHER, body["secret"])
        await make_center(a, auth, "room", private=True, presence=True)
        path = f"/sub/{PUBLISHER}/room?format=json&token="
        ann = await websocket(f"{a.ws}{path}{_member_token(auth[1], 'ann')}", a.public_port)
        await opened(ann)
        await ann.next()
        ghost = await websocket(f"{doomed.ws}{path}{_member_token(auth[1], 'ghost')}", doomed.public_port)
        await opened(ghost)
        await ghost.next()
        assert json.loads(await ann.next(DELIVERY_SECONDS))["uid"] == "ghost"
        doomed.transport.signalProcess("KILL")
        await doomed.stopped(10)
        killed = reactor.seconds()
        left = json.loads(await ann.next(NODE_TTL + 2 * REFRESH + 5))
        assert left == {"presence": "leave", "center": "room", "uid": "ghost"}
        assert reactor.seconds() - killed >= NODE_TTL - REFRESH  # not before its entries expired
        assert await _presence_count(a, auth) == 1
        ann.close()
    finally:
        if doomed is not None:
            await doomed.kill()
