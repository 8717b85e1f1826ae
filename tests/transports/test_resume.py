"""Nothing missed: resume with ``since`` on every transport, SSE, expiry."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.support import (
    WebSocket,
    call,
    event_source,
    opened,
    published,
    setup_site,
    sleep,
    start_daemon,
    websocket,
)

pytestmark = pytest.mark.integration

PUBLISHER, CENTER = "site", "news"
SUB = f"/sub/{PUBLISHER}/{CENTER}"


@pytest_twisted.ensureDeferred
async def test_websocket_raw_resumes_after_a_disconnect(daemon):
    auth = await setup_site(daemon)
    ws = await websocket(f"{daemon.ws}{SUB}", daemon.public_port)
    first = await published(daemon, auth, "1")
    assert await ws.next() == "1"
    ws.close()
    await ws.closed
    for text in ("2", "3"):
        await published(daemon, auth, text)
    ws = await websocket(f"{daemon.ws}{SUB}?since={first}", daemon.public_port)
    await published(daemon, auth, "4")
    assert [await ws.next() for _ in range(3)] == ["2", "3", "4"]
    await published(daemon, auth, "5")
    assert await ws.next() == "5"


@pytest_twisted.ensureDeferred
async def test_websocket_json_tells_recovery_first(daemon):
    auth = await setup_site(daemon, history=2)
    ids = [await published(daemon, auth, str(i)) for i in range(1, 5)]  # retained: 3, 4
    ws = await websocket(f"{daemon.ws}{SUB}?format=json&since={ids[1]}", daemon.public_port)
    assert json.loads(await ws.next()) == {"cursor": ids[1], "recovered": True, "lost": []}
    assert [json.loads(await ws.next())["data"] for _ in range(2)] == ["3", "4"]
    # older than what is retained: told so (starting just before the oldest
    # retained), then everything retained
    ws = await websocket(f"{daemon.ws}{SUB}?format=json&since={ids[0]}", daemon.public_port)
    assert json.loads(await ws.next()) == {"cursor": ids[1], "recovered": False, "lost": ["news"]}
    assert [json.loads(await ws.next())["id"] for _ in range(2)] == ids[2:]
    # a cursor of no known epoch
    ws = await websocket(f"{daemon.ws}{SUB}?format=json&since=gone-9", daemon.public_port)
    assert json.loads(await ws.next()) == {"cursor": ids[1], "recovered": False, "lost": ["news"]}


@pytest_twisted.ensureDeferred
async def test_websocket_without_since_gets_only_live_messages(daemon):
    auth = await setup_site(daemon)
    old = await published(daemon, auth, "old")
    ws = await websocket(f"{daemon.ws}{SUB}?format=json", daemon.public_port)
    assert await opened(ws) == {"cursor": old, "recovered": True, "lost": []}
    await published(daemon, auth, "new")
    assert json.loads(await ws.next())["data"] == "new"  # no replay


@pytest_twisted.ensureDeferred
async def test_sse_headers_backlog_live_and_multiline(daemon):
    auth = await setup_site(daemon)
    first = await published(daemon, auth, "1")
    await published(daemon, auth, "two\nlines\r\nand\rmore")
    es = await event_source(daemon.public_port, f"{SUB}?since={first}", {"Origin": "http://site.test"})
    assert es.status == 200
    assert es.headers[b"content-type"].startswith(b"text/event-stream")
    assert es.headers[b"cache-control"] == b"no-cache"
    assert es.headers[b"x-accel-buffering"] == b"no"
    assert es.headers[b"access-control-allow-origin"] == b"http://site.test"
    assert await es.next() == {"retry": "2000"}
    recovery = await es.next()
    assert recovery["event"] == "recovery" and json.loads(recovery["data"]) == {"recovered": True}
    backlog = await es.next()
    assert backlog["event"] == "message"
    assert backlog["data"] == "two\nlines\nand\nmore"
    live_id = await published(daemon, auth, "live")
    live = await es.next()
    assert (live["id"], live["event"], live["data"]) == (live_id, "message", "live")
    es.close()


@pytest_twisted.ensureDeferred
async def test_sse_last_event_id_wins_over_since(daemon):
    auth = await setup_site(daemon)
    ids = [await published(daemon, auth, str(i)) for i in range(1, 4)]
    # a browser reconnecting on its own: the URL's since= is stale, the header is not
    es = await event_source(daemon.public_port, f"{SUB}?since={ids[0]}", {"Last-Event-ID": ids[1]})
    await es.next()  # retry
    assert json.loads((await es.next())["data"]) == {"recovered": True}
    assert (await es.next())["data"] == "3"
    es.close()


@pytest_twisted.ensureDeferred
async def test_sse_heartbeat_comments(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}", subscribers={"ping_interval": 0.1})
    try:
        await setup_site(daemon)
        es = await event_source(daemon.public_port, SUB)
        await sleep(0.5)
        assert es.comments >= 2
        es.close()
    finally:
        await daemon.service.stopService()


@pytest_twisted.ensureDeferred
async def test_sse_ends_when_the_center_is_deleted(daemon):
    auth = await setup_site(daemon)
    es = await event_source(daemon.public_port, SUB)
    await es.next()
    status, _ = await call("DELETE", f"{daemon.api}/api/v1/centers/{CENTER}", auth=auth)
    assert status == 204
    ended = es.ended
    ended.addTimeout(5, reactor)
    await ended


@pytest_twisted.ensureDeferred
async def test_sse_client_leaving_unsubscribes(daemon):
    auth = await setup_site(daemon)
    es = await event_source(daemon.public_port, SUB)
    await es.next()
    hub = daemon.service.centers.loaded(PUBLISHER, CENTER)
    assert len(hub.subscribers) == 1
    es.close()
    for _ in range(50):
        if not hub.subscribers:
            break
        await sleep(0.02)
    assert not hub.subscribers
    assert (await published(daemon, auth, "x"))  # publishing to nobody still works


@pytest_twisted.ensureDeferred
async def test_long_poll_loop_misses_nothing_while_publishing(daemon):
    auth = await setup_site(daemon, history=1000)
    sent: list[str] = []
    received: list[str] = []

    async def publisher():
        for i in range(60):
            sent.append(await published(daemon, auth, f"m{i}"))
            if i % 7 == 0:
                await sleep(0.01)

    async def poller():
        cursor = None
        status, body = await call("GET", f"{daemon.public}{SUB}?timeout=0")
        cursor = body["last_id"]
        while len(received) < 60:
            url = f"{daemon.public}{SUB}?timeout=5" + (f"&since={cursor}" if cursor else "")
            status, body = await call("GET", url)
            assert status == 200 and body["recovered"] is True
            received.extend(m["id"] for m in body["messages"])
            cursor = body["last_id"]

    # the poller starts first, with no cursor: its first answer is the live first message
    poll = defer.ensureDeferred(poller())
    await sleep(0.1)
    await publisher()
    poll.addTimeout(20, reactor)
    await poll
    assert received == sent


@pytest_twisted.ensureDeferred
async def test_the_seam_between_backlog_and_live_has_no_gap_and_no_duplicate(daemon):
    """Subscribers resume with since= while messages keep being sent."""
    auth = await setup_site(daemon, history=1000)
    start = await published(daemon, auth, "start")
    sent = [start]
    done = defer.Deferred()

    async def keep_publishing():
        for i in range(80):
            sent.append(await published(daemon, auth, f"p{i}"))
        done.callback(None)

    publishing = defer.ensureDeferred(keep_publishing())
    subscribers = []
    for _ in range(4):  # joining at different points of the stream
        await sleep(0.03)
        subscribers.append(await websocket(f"{daemon.ws}{SUB}?format=json&since={start}", daemon.public_port))
        subscribers.append(await event_source(daemon.public_port, f"{SUB}?since={start}"))
    await publishing
    expected = sent[1:]
    for subscriber in subscribers:
        got: list[str] = []
        if isinstance(subscriber, WebSocket):
            assert json.loads(await subscriber.next()) == {"cursor": start, "recovered": True, "lost": []}
            while len(got) < len(expected):
                got.append(json.loads(await subscriber.next())["id"])
        else:
            await subscriber.next()  # retry
            assert json.loads((await subscriber.next())["data"]) == {"recovered": True}
            while len(got) < len(expected):
                got.append((await subscriber.next())["id"])
            subscriber.close()
        assert got == expected


@pytest_twisted.ensureDeferred
async def test_a_cursor_from_before_a_restart_with_history_in_memory_is_not_recovered(tmp_path):
    store, in_memory = f"sqlite:{tmp_path / 'n.db'}", {"durable": False}
    daemon = await start_daemon(store, store=in_memory)
    auth = await setup_site(daemon)
    old = await published(daemon, auth, "before")
    await daemon.service.stopService()
    daemon = await start_daemon(store, store=in_memory)
    try:
        new = await published(daemon, auth, "after")
        assert new != old
        status, body = await call("GET", f"{daemon.public}{SUB}?since={old}")
        assert body["recovered"] is False
        assert [m["data"] for m in body["messages"]] == ["after"]
    finally:
        await daemon.service.stopService()


@pytest_twisted.ensureDeferred
async def test_idle_centers_expire_unless_used(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}", centers={"idle_ttl": 1})
    try:
        auth = await setup_site(daemon)  # the server default, 1 s
        for name, ttl in (("kept", 0), ("watched", None)):
            status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/{name}",
                                   {"ttl": ttl} if ttl is not None else None, auth=auth)
            assert status == 201
        ws = await websocket(f"{daemon.ws}/sub/{PUBLISHER}/watched", daemon.public_port)
        await sleep(2.5)
        names = lambda body: sorted(c["name"] for c in body["centers"])  # noqa: E731
        status, body = await call("GET", f"{daemon.api}/api/v1/centers", auth=auth)
        assert names(body) == ["kept", "watched"]  # news expired; watched has a subscriber
        status, body = await call("GET", f"{daemon.public}{SUB}?timeout=0")
        assert status == 404
        ws.close()
        await ws.closed
        await sleep(2.5)
        status, body = await call("GET", f"{daemon.api}/api/v1/centers", auth=auth)
        assert names(body) == ["kept"]
    finally:
        await daemon.service.stopService()
