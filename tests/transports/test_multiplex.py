"""Many centers on one connection, on every transport, over real sockets.

A subscription to ``/sub/{publisher}/{c1},{c2},…`` is one connection and one
subscriber: envelopes tell the centers apart, each center's messages come in
order with no gap and no duplicate, and the compound cursor (one position
per center, in the order of the URL) says where it starts and resumes every
center at once.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool

from tests.support import (
    Daemon,
    admin_stats,
    call,
    event_source,
    expect_json_error,
    handshake_headers,
    make_center,
    opened,
    published,
    running,
    setup_site,
    sleep,
    subscriber_count,
    subscriber_token,
    until,
    websocket,
)

pytestmark = pytest.mark.integration

CENTERS = ("news", "user.17", "node.5")
SUB = "/sub/site/" + ",".join(CENTERS)


async def _site(daemon: Daemon, **options: Any) -> tuple[str, str]:
    auth = await setup_site(daemon, CENTERS[0], **options)
    for center in CENTERS[1:]:
        await make_center(daemon, auth, center, **options)
    return auth


async def _poll(daemon: Daemon, path: str = SUB, **query: Any) -> tuple[int, Any, Any]:
    """A long-poll: status, decoded body, and its ``Notifier-Cursor``."""
    query.setdefault("timeout", 0)
    response = await treq.get(f"{daemon.public}{path}", params={k: str(v) for k, v in query.items()},
                              persistent=False).addTimeout(10, reactor)
    content = await response.content()
    cursor = response.headers.getRawHeaders(b"notifier-cursor", [None])[0]
    body = json.loads(content) if content else None
    return response.code, body, cursor.decode() if cursor else None


async def _handshake(daemon: Daemon, path: str) -> tuple[int, Any]:
    """The HTTP answer to a WebSocket handshake the daemon refuses."""
    response = await treq.get(f"{daemon.public}{path}", headers=handshake_headers(),
                              persistent=False).addTimeout(10, reactor)
    content = await response.content()
    return response.code, json.loads(content) if content else None


async def _frames(ws: Any, count: int) -> list[dict[str, Any]]:
    return [json.loads(await ws.next()) for _ in range(count)]


def _entries(cursor: str) -> list[str]:
    entries = cursor.split(",")
    assert len(entries) == len(CENTERS), cursor
    return entries


async def _publish_interleaved(daemon: Daemon, auth: tuple[str, str], rounds: int = 2) -> list[tuple[str, str, str]]:
    """Publish to every center in turn: ``(id, center, text)`` in publish order."""
    sent = []
    for i in range(rounds):
        for center in CENTERS:
            text = f"{center} {i}"
            sent.append((await published(daemon, auth, text, center), center, text))
    return sent


def _per_center(items: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    ordered: dict[str, list[str]] = {center: [] for center in CENTERS}
    for message_id, center, _ in items:
        ordered[center].append(message_id)
    return ordered


# refusals


@pytest_twisted.ensureDeferred
async def test_a_center_list_is_refused_as_the_documentation_says_on_every_transport():
    async with running() as daemon:
        auth = await _site(daemon)
        too_many = ",".join(f"c{i}" for i in range(33))
        refusals = [
            (f"/sub/site/{too_many}", {}, 400, "bad_center_list"),
            ("/sub/site/news,news", {}, 400, "bad_center_list"),
            ("/sub/site/news,,user.17", {}, 400, "bad_center_list"),
            ("/sub/site/news,", {}, 400, "bad_center_list"),
            ("/sub/site/news,user.17/last", {}, 400, "bad_center_list"),
            (SUB, {"since": "a-1,b-2"}, 400, "bad_cursor"),            # 2 entries for 3 centers
            (SUB, {"since": "a-1,b-2,c-3,d-4"}, 400, "bad_cursor"),
            (SUB, {"since": "a-1,b-x,"}, 400, "bad_cursor"),
            (SUB, {"since": "a-1,b-1234567890123456789,"}, 400, "bad_cursor"),
            ("/sub/site/news,gone,user.17,absent", {}, 404, "no_such_center"),
            ("/sub/nobody/news,user.17", {}, 404, "no_such_center"),
        ]
        for path, query, status, code in refusals:
            suffix = "?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""
            got, body, _ = await _poll(daemon, path, **query)
            expect_json_error(got, body, status, code)
            if code == "no_such_center" and "gone" in path:
                assert "'gone'" in body["message"], body  # the first missing one, named
            got, body = await _handshake(daemon, path + suffix)
            expect_json_error(got, body, status, code)
            stream = await event_source(daemon.public_port, path + suffix)
            assert stream.status == status, path
        # format=raw cannot tell several centers apart.
        expect_json_error(*await _handshake(daemon, SUB + "?format=raw"), 400, "raw_needs_one_center")
        expect_json_error(*await _handshake(daemon, SUB + "?format=xml"), 400, "invalid_format")
        # 32 distinct existing centers are fine.
        names = [f"c{i}" for i in range(32)]
        for name in names:
            await make_center(daemon, auth, name)
        status, body, cursor = await _poll(daemon, "/sub/site/" + ",".join(names))
        assert status == 200 and len(cursor.split(",")) == 32, body
        # A refused one left no subscriber behind anywhere.
        for center in CENTERS:
            assert await subscriber_count(daemon, auth, center) == 0


@pytest_twisted.ensureDeferred
async def test_a_percent_encoded_comma_separates_centers_too():
    async with running() as daemon:
        auth = await _site(daemon)
        ws = await websocket(f"{daemon.ws}/sub/site/news%2Cuser.17%2cnode.5", daemon.public_port)
        opening = json.loads(await ws.next())
        assert len(_entries(opening["cursor"])) == 3
        message_id = await published(daemon, auth, "hello", "node.5")
        [envelope] = await _frames(ws, 1)
        assert (envelope["id"], envelope["center"], envelope["data"]) == (message_id, "node.5", "hello")
        ws.close()


@pytest_twisted.ensureDeferred
async def test_one_token_must_cover_every_private_center_of_the_list():
    async with running() as daemon:
        auth = await setup_site(daemon, "news")
        for center in ("user.17.inbox", "user.17.alerts", "user.18.inbox"):
            await make_center(daemon, auth, center, private=True)
        secret = auth[1]
        mine = subscriber_token(secret, centers=["user.17.*"])
        path = "/sub/site/news,user.17.inbox,user.17.alerts"
        for transport in ("longpoll", "websocket", "sse"):
            for query in ("", "?token=" + subscriber_token(secret, sub="user.17.inbox"),
                          "?token=" + subscriber_token(secret, centers=["user.17.*"], lifetime=-5)):
                if transport == "longpoll":
                    status, body, _ = await _poll(daemon, path + query)
                elif transport == "websocket":
                    status, body = await _handshake(daemon, path + query)
                else:
                    stream = await event_source(daemon.public_port, path + query)
                    status, body = stream.status, {"error": "x", "message": "x"}
                    stream.close()
                expect_json_error(status, body, 401)
        # One token granting them all opens it; another user's center stays shut.
        status, body, cursor = await _poll(daemon, path, token=mine)
        assert status == 200 and body["recovered"] is True, body
        status, body, _ = await _poll(daemon, "/sub/site/news,user.18.inbox", token=mine)
        expect_json_error(status, body, 401)
        ws = await websocket(f"{daemon.ws}{path}?token={mine}", daemon.public_port)
        json.loads(await ws.next())
        message_id = await published(daemon, auth, "for 17", "user.17.alerts")
        assert (await _frames(ws, 1))[0]["id"] == message_id
        ws.close()


@pytest_twisted.ensureDeferred
async def test_a_multiplexed_stream_ends_when_its_token_does():
    async with running() as daemon:
        auth = await setup_site(daemon, "news")
        await make_center(daemon, auth, "user.17.inbox", private=True)
        token = subscriber_token(auth[1], centers=["user.17.*"], lifetime=1.5)
        ws = await websocket(f"{daemon.ws}/sub/site/news,user.17.inbox?token={token}", daemon.public_port)
        stream = await event_source(daemon.public_port, f"/sub/site/news,user.17.inbox?token={token}")
        assert stream.status == 200
        code, _ = await ws.closed.addTimeout(10, reactor)
        assert code == 4401
        await stream.ended.addTimeout(10, reactor)
        assert await subscriber_count(daemon, auth, "news") == 0


# WebSocket


@pytest_twisted.ensureDeferred
async def test_websocket_carries_every_center_in_order_and_resumes_them_all():
    async with running() as daemon:
        auth = await _site(daemon)
        ws = await websocket(f"{daemon.ws}{SUB}", daemon.public_port)  # envelopes without format=json
        opening = json.loads(await ws.next())
        assert opening["recovered"] is True and opening["lost"] == [], opening
        start = _entries(opening["cursor"])
        # One connection, one subscriber, counted by each of its centers.
        assert (await admin_stats(daemon))["connections"]["websocket"] == 1
        for center in CENTERS:
            assert await subscriber_count(daemon, auth, center) == 1

        sent = await _publish_interleaved(daemon, auth)
        got = await _frames(ws, len(sent))
        assert [(f["id"], f["center"], f["data"]) for f in got] == sent
        ws.close()
        await ws.closed

        # Resume: the client advanced the entry of each envelope's center.
        cursor = list(start)
        for message_id, center, _ in sent[:4]:  # it saw only these before a cut
            cursor[CENTERS.index(center)] = message_id
        more = await _publish_interleaved(daemon, auth, rounds=1)
        ws = await websocket(f"{daemon.ws}{SUB}?format=json&since={','.join(cursor)}", daemon.public_port)
        opening = json.loads(await ws.next())
        assert opening == {"cursor": ",".join(cursor), "recovered": True, "lost": []}
        rest = sent[4:] + more
        got = await _frames(ws, len(rest))
        # Each center's messages in order, none missed, none twice.
        assert _per_center([(f["id"], f["center"], f["data"]) for f in got]) == _per_center(rest)
        assert sorted((f["id"], f["center"], f["data"]) for f in got) == sorted(rest)
        ws.close()


@pytest_twisted.ensureDeferred
async def test_websocket_says_which_centers_it_could_not_resume():
    async with running(centers={"history": 3}) as daemon:
        auth = await _site(daemon)
        ws = await websocket(f"{daemon.ws}{SUB}", daemon.public_port)
        start = _entries(json.loads(await ws.next())["cursor"])
        news = [await published(daemon, auth, f"n{i}", "news") for i in range(6)]  # 3 of them forgotten
        ws.close()
        # news: too old; user.17: from another epoch; node.5: live only.
        since = f"{start[0]},other-4,"
        ws = await websocket(f"{daemon.ws}{SUB}?since={since}", daemon.public_port)
        opening = json.loads(await ws.next())
        assert opening["recovered"] is False and opening["lost"] == ["news", "user.17"], opening
        cursor = _entries(opening["cursor"])
        # Every entry filled: where each center's delivery starts from.
        assert cursor[0] == news[2] and cursor[1] == start[1] and cursor[2] == start[2], opening
        got = await _frames(ws, 3)
        assert [f["id"] for f in got] == news[3:]
        # Handing the opening cursor back reports nothing lost any more.
        ws2 = await websocket(f"{daemon.ws}{SUB}?since={opening['cursor']}", daemon.public_port)
        again = json.loads(await ws2.next())
        assert again["recovered"] is True and again["lost"] == [], again
        assert [f["id"] for f in await _frames(ws2, 3)] == news[3:]
        ws.close()
        ws2.close()


@pytest_twisted.ensureDeferred
async def test_deleting_one_center_ends_a_multiplexed_subscription_on_every_transport():
    async with running() as daemon:
        auth = await _site(daemon)
        ws = await websocket(f"{daemon.ws}{SUB}", daemon.public_port)
        await ws.next()
        stream = await event_source(daemon.public_port, SUB)
        assert stream.status == 200
        poll = defer.Deferred.fromCoroutine(_poll(daemon, timeout=20))
        await until(lambda: len(daemon.service.centers.loaded("site", "news").subscribers) == 3)
        status, _ = await call("DELETE", f"{daemon.api}/api/v1/centers/user.17", auth=auth)
        assert status == 204
        code, _ = await ws.closed.addTimeout(5, reactor)
        assert code == 1001
        await stream.ended.addTimeout(5, reactor)
        status, body, _ = await poll.addTimeout(5, reactor)
        expect_json_error(status, body, 404, "center_deleted")
        # Nothing left behind on the centers that remain.
        assert await subscriber_count(daemon, auth, "news") == 0
        assert await subscriber_count(daemon, auth, "node.5") == 0


# Server-Sent Events


@pytest_twisted.ensureDeferred
async def test_sse_ids_are_compound_cursors_that_resume_every_center():
    async with running() as daemon:
        auth = await _site(daemon)
        stream = await event_source(daemon.public_port, SUB)
        assert stream.status == 200
        opening = await stream.next()
        start = _entries(opening["id"])
        recovery = await stream.next()
        assert recovery["event"] == "recovery"
        assert json.loads(recovery["data"]) == {"recovered": True, "lost": []}
        assert (await admin_stats(daemon))["connections"]["sse"] == 1

        sent = await _publish_interleaved(daemon, auth)
        events = [await stream.next() for _ in sent]
        envelopes = [json.loads(e["data"]) for e in events]
        assert [(e["id"], e["center"], e["data"]) for e in envelopes] == sent
        assert all(e["event"] == "message" for e in events)
        # Each id is the compound cursor after its event.
        cursor = list(start)
        for event, (message_id, center, _) in zip(events, sent, strict=True):
            cursor[CENTERS.index(center)] = message_id
            assert event["id"] == ",".join(cursor)
        stream.close()

        # The browser's own reconnection: Last-Event-ID, on the same URL.
        more = await _publish_interleaved(daemon, auth, rounds=1)
        stream = await event_source(daemon.public_port, SUB + "?since=" + ",".join(start),
                                    headers={"Last-Event-ID": events[3]["id"]})
        assert _entries((await stream.next())["id"]) == events[3]["id"].split(",")
        assert json.loads((await stream.next())["data"]) == {"recovered": True, "lost": []}
        rest = sent[4:] + more
        got = [json.loads((await stream.next())["data"]) for _ in rest]
        assert _per_center([(g["id"], g["center"], g["data"]) for g in got]) == _per_center(rest)
        assert len(got) == len(rest)
        stream.close()
        # A Last-Event-ID of the wrong shape is refused like a since.
        stream = await event_source(daemon.public_port, SUB, headers={"Last-Event-ID": sent[0][0]})
        assert stream.status == 400


@pytest_twisted.ensureDeferred
async def test_one_center_keeps_its_own_wire_forms():
    async with running() as daemon:
        auth = await _site(daemon)
        stream = await event_source(daemon.public_port, "/sub/site/news")
        opening = await stream.next()
        assert "," not in opening["id"]
        message_id = await published(daemon, auth, "plain text", "news")
        event = await stream.next()
        assert (event["id"], event["data"]) == (message_id, "plain text")
        stream.close()
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        await published(daemon, auth, "raw", "news")
        assert await ws.next() == "raw"
        ws.close()
        status, body, cursor = await _poll(daemon, "/sub/site/news")
        assert set(body) == {"messages", "last_id", "recovered"} and "," not in cursor, body


# long-poll


@pytest_twisted.ensureDeferred
async def test_longpoll_chains_through_every_center_with_a_compound_last_id():
    async with running() as daemon:
        auth = await _site(daemon)
        status, body, header = await _poll(daemon)
        assert status == 200, body
        assert body["messages"] == [] and body["recovered"] is True and body["lost"] == []
        cursor = body["last_id"]
        assert _entries(cursor) and header == cursor
        # An empty entry is "live only": filled in the answer.
        status, body, _ = await _poll(daemon, since=",,")
        assert body["last_id"] == cursor, body

        # A poll waiting on every center is answered by whichever gets a message.
        waiting = defer.Deferred.fromCoroutine(_poll(daemon, since=cursor, timeout=20))
        await until(lambda: len(daemon.service.centers.loaded("site", "node.5").subscribers) == 1)
        first = await published(daemon, auth, "first", "node.5")
        status, body, header = await waiting.addTimeout(5, reactor)
        assert [m["id"] for m in body["messages"]] == [first]
        entries = _entries(cursor)
        entries[2] = first
        assert body["last_id"] == header == ",".join(entries)
        assert await subscriber_count(daemon, auth, "news") == 0  # left every center once answered

        sent = await _publish_interleaved(daemon, auth)
        polled, cursor = [], body["last_id"]
        while len(polled) < len(sent):
            status, body, _ = await _poll(daemon, since=cursor, timeout=2)
            assert status == 200 and body["recovered"] is True, body
            assert body["messages"], "a poll with messages retained answers with them"
            polled += body["messages"]
            cursor = body["last_id"]
        assert [(m["id"], m["center"], m["data"]) for m in polled] == sent
        # Caught up: a timed-out poll answers the cursor it was given, filled.
        status, body, _ = await _poll(daemon, since=cursor, timeout=0.2)
        assert body == {"messages": [], "last_id": cursor, "recovered": True, "lost": []}


@pytest_twisted.ensureDeferred
async def test_a_longpoll_answer_is_bounded_and_the_next_poll_gets_the_rest():
    async with running(subscribers={"send_buffer_bytes": 4096}) as daemon:
        auth = await _site(daemon)
        _, body, _ = await _poll(daemon)
        start = body["last_id"]
        texts = {center: [f"{center} {i} " + "x" * 500 for i in range(12)] for center in CENTERS}
        sent = []
        for i in range(12):
            for center in CENTERS:
                sent.append((await published(daemon, auth, texts[center][i], center), center))
        polled, cursor, answers = [], start, 0
        while len(polled) < len(sent):
            status, body, _ = await _poll(daemon, since=cursor)
            assert status == 200 and body["recovered"], body
            assert len(json.dumps(body["messages"])) < 4096 + 1024
            polled += [(m["id"], m["center"]) for m in body["messages"]]
            cursor, answers = body["last_id"], answers + 1
        assert answers > 3
        assert sorted(polled) == sorted(sent) and len(polled) == len(set(polled))
        assert _per_center([(i, c, "") for i, c in polled]) == _per_center([(i, c, "") for i, c in sent])


@pytest_twisted.ensureDeferred
async def test_a_longpoll_names_the_centers_it_could_not_resume():
    async with running(centers={"history": 2}) as daemon:
        auth = await _site(daemon)
        _, body, _ = await _poll(daemon)
        start = _entries(body["last_id"])
        ids = [await published(daemon, auth, f"u{i}", "user.17") for i in range(4)]
        status, body, _ = await _poll(daemon, since=",".join(start))
        assert body["recovered"] is False and body["lost"] == ["user.17"], body
        assert [m["id"] for m in body["messages"]] == ids[2:]
        # Nothing retained but from another epoch: answered at once, lost, and the cursor filled.
        status, body, _ = await _poll(daemon, since=f"{start[0]},{ids[-1]},gone-9", timeout=20)
        assert body["lost"] == ["node.5"] and body["messages"] == [], body
        assert _entries(body["last_id"])[2] == start[2]


@pytest_twisted.ensureDeferred
async def test_jsonp_of_a_multiplexed_longpoll():
    async with running() as daemon:
        await _site(daemon)
        response = await treq.get(f"{daemon.public}{SUB}?timeout=0&callback=cb", persistent=False)
        text = (await response.content()).decode()
        assert text.startswith("/**/cb(") and text.endswith(");")
        assert json.loads(text[len("/**/cb("):-2])["lost"] == []


@pytest_twisted.ensureDeferred
async def test_many_multiplexed_subscribers_each_get_every_center_once():
    """A burst on three centers to 50 multiplexed WebSockets, 50 single ones
    and 20 SSE streams at once: every one gets all of its messages."""
    async with running() as daemon:
        auth = await _site(daemon)
        multi = [await websocket(f"{daemon.ws}{SUB}", daemon.public_port) for _ in range(50)]
        single = [await websocket(f"{daemon.ws}/sub/site/user.17?format=json", daemon.public_port)
                  for _ in range(50)]
        for ws in single:
            await opened(ws)
        streams = [await event_source(daemon.public_port, SUB) for _ in range(20)]
        for ws in multi:
            await ws.next()
        for stream in streams:
            await stream.next()
            await stream.next()
        sent = await _publish_interleaved(daemon, auth, rounds=5)
        for ws in multi:
            got = await _frames(ws, len(sent))
            assert [(f["id"], f["center"], f["data"]) for f in got] == sent
        for ws in single:
            got = await _frames(ws, 5)
            assert [f["id"] for f in got] == [i for i, c, _ in sent if c == "user.17"]
        for stream in streams:
            got = [json.loads((await stream.next())["data"]) for _ in sent]
            assert [(f["id"], f["center"], f["data"]) for f in got] == sent
        stats = await admin_stats(daemon)
        assert stats["connections"]["websocket"] == 100 and stats["connections"]["sse"] == 20
        for stream in streams:
            stream.close()
        for ws in multi + single:
            ws.close()
        await sleep(0)


@pytest_twisted.ensureDeferred
async def test_chained_longpolls_lose_nothing_while_several_publishers_publish_to_every_center():
    async with running() as daemon:
        auth = await _site(daemon)
        pool = HTTPConnectionPool(reactor)
        pool.maxPersistentPerHost = 100
        _, body, _ = await _poll(daemon)
        start = body["last_id"]
        got: list[dict[str, list[str]]] = [{center: [] for center in CENTERS} for _ in range(80)]
        stopping = False

        async def client(n: int) -> None:
            cursor = start
            while not stopping:
                response = await treq.get(f"{daemon.public}{SUB}", params={"since": cursor, "timeout": "2"},
                                          pool=pool).addTimeout(10, reactor)
                answer = json.loads(await response.content())
                assert answer["recovered"] is True, answer
                for message in answer["messages"]:
                    got[n][message["center"]].append(message["id"])
                cursor = answer["last_id"]

        clients = [defer.Deferred.fromCoroutine(client(n)) for n in range(len(got))]
        sent: dict[str, list[str]] = {center: [] for center in CENTERS}

        async def publisher(k: int) -> None:
            for j in range(24):
                center = CENTERS[(j + k) % len(CENTERS)]
                sent[center].append(await published(daemon, auth, f"{k}.{j}", center))

        await defer.gatherResults([defer.Deferred.fromCoroutine(publisher(k)) for k in range(4)])
        await until(lambda: all(len(g[c]) >= len(sent[c]) for g in got for c in CENTERS), timeout=20)
        stopping = True
        await defer.gatherResults(clients)
        await pool.closeCachedConnections()
        # Each center's messages in publish (id) order, nothing missed or doubled.
        in_order = {center: sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1])) for center, ids in sent.items()}
        for received in got:
            assert received == in_order
