"""Presence centers over real sockets: members, join and leave on every
transport that carries them, the grace that keeps reloads from flapping,
and the refusals.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.support import (
    Daemon,
    call,
    event_source,
    expect_json_error,
    make_center,
    opened,
    published,
    running,
    setup_site,
    sleep,
    subscriber_token,
    until,
    websocket,
)

pytestmark = pytest.mark.integration

GRACE = 0.4
ROOM = "/sub/site/room.1"


async def _room(daemon: Daemon) -> tuple[str, str]:
    auth = await setup_site(daemon, "news")
    body = await make_center(daemon, auth, "room.1", private=True, presence=True)
    assert body["presence"] is True and body["members"] == 0, body
    return auth


def _token(auth: tuple[str, str], uid: str | None, info: Any = None, **claims: Any) -> str:
    if uid is not None:
        claims["uid"] = uid
    if info is not None:
        claims["info"] = info
    claims.setdefault("centers", ["room.*"])
    return subscriber_token(auth[1], **claims)


async def _member(daemon: Daemon, auth: tuple[str, str], uid: str, info: Any = None, path: str = ROOM) -> Any:
    ws = await websocket(f"{daemon.ws}{path}?format=json&token={_token(auth, uid, info)}", daemon.public_port)
    await opened(ws)
    return ws


async def _presence(daemon: Daemon, auth: tuple[str, str], center: str = "room.1") -> Any:
    status, body = await call("GET", f"{daemon.api}/api/v1/centers/{center}/presence", auth=auth)
    assert status == 200, body
    return body


async def _item(ws: Any, timeout: float = 5) -> dict[str, Any]:
    return json.loads(await ws.next(timeout))


async def _nothing(ws: Any, seconds: float = GRACE * 2) -> None:
    await sleep(seconds)
    assert ws.messages.pending == [], ws.messages.pending


@pytest_twisted.ensureDeferred
async def test_presence_refusals():
    async with running() as daemon:
        auth = await _room(daemon)
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/open", {"presence": True}, auth=auth)
        expect_json_error(status, body, 400, "presence_needs_private")
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/open", {"presence": "yes"}, auth=auth)
        expect_json_error(status, body, 400, "invalid_center_options")
        status, body = await call("GET", f"{daemon.api}/api/v1/centers/news/presence", auth=auth)
        expect_json_error(status, body, 400, "no_presence")
        status, body = await call("GET", f"{daemon.api}/api/v1/centers/absent/presence", auth=auth)
        expect_json_error(status, body, 404)
        status, body = await call("GET", f"{daemon.api}/api/v1/centers/room.1/presence")
        expect_json_error(status, body, 401)
        status, body = await call("GET", f"{daemon.api}/api/v1/centers/news", auth=auth)
        assert body["presence"] is False and "members" not in body, body
        for token, code in ((_token(auth, None), "uid_required"), (_token(auth, ""), "uid_required"),
                            (_token(auth, "x" * 129), "uid_required"), (_token(auth, 17), "uid_required"),
                            (_token(auth, "ann", info=["not", "an object"]), "invalid_token"),
                            (_token(auth, "ann", info={"bio": "x" * 1100}), "invalid_token")):
            for path in (ROOM, "/sub/site/news,room.1"):
                status, body = await call("GET", f"{daemon.public}{path}?timeout=0&token={token}")
                expect_json_error(status, body, 401, code)
        # A public center needs no uid, even next to... nothing private.
        status, body = await call("GET", f"{daemon.public}/sub/site/news?timeout=0")
        assert status == 200, body
        # 128 characters and a 1 KiB info are fine.
        info = {"bio": "x" * 1000}
        status, body = await call("GET", f"{daemon.public}{ROOM}?timeout=0&token={_token(auth, 'x' * 128, info)}")
        assert status == 200, body


@pytest_twisted.ensureDeferred
async def test_members_join_and_leave_once_per_uid_on_websocket():
    async with running(presence={"leave_grace": GRACE}) as daemon:
        auth = await _room(daemon)
        ann = await _member(daemon, auth, "ann", {"name": "Ann"})
        assert await _item(ann) == {"presence": "members", "center": "room.1",
                                    "members": [{"uid": "ann", "info": {"name": "Ann"}}]}
        bob = await _member(daemon, auth, "bob")
        assert await _item(bob) == {"presence": "members", "center": "room.1", "members": [
            {"uid": "ann", "info": {"name": "Ann"}}, {"uid": "bob", "info": None}]}
        assert await _item(ann) == {"presence": "join", "center": "room.1", "uid": "bob", "info": None}
        # Ann's second connection is no join; it gets the members too.
        ann2 = await _member(daemon, auth, "ann", {"name": "Ann"})
        assert [m["uid"] for m in (await _item(ann2))["members"]] == ["ann", "bob"]
        await _nothing(bob, 0.2)
        body = await _presence(daemon, auth)
        assert body == {"count": 2, "members": [{"uid": "ann", "info": {"name": "Ann"}},
                                                {"uid": "bob", "info": None}]}
        status, center = await call("GET", f"{daemon.api}/api/v1/centers/room.1", auth=auth)
        assert center["members"] == 2 and center["subscribers"] == 3, center
        # Messages still come, as envelopes, between presence items.
        message_id = await published(daemon, auth, "hello", "room.1")
        for ws in (ann, bob, ann2):
            assert (await _item(ws))["id"] == message_id

        # One of Ann's two connections goes: she is still there.
        ann2.close()
        await _nothing(bob)
        # Bob goes: after the grace, Ann is told, once.
        bob.close()
        assert await _item(ann, GRACE * 10) == {"presence": "leave", "center": "room.1", "uid": "bob"}
        assert (await _presence(daemon, auth))["count"] == 1
        # Ann reloads her page: gone for less than the grace, no leave, no join.
        watcher = await _member(daemon, auth, "carol")
        await _item(watcher)
        ann.close()
        await sleep(GRACE / 4)
        ann = await _member(daemon, auth, "ann", {"name": "Ann"})
        assert [m["uid"] for m in (await _item(ann))["members"]] == ["ann", "carol"]
        await _nothing(watcher)
        ann.close()
        watcher.close()


@pytest_twisted.ensureDeferred
async def test_sse_carries_presence_events_without_ids_and_raw_websockets_none():
    async with running(presence={"leave_grace": GRACE}) as daemon:
        auth = await _room(daemon)
        stream = await event_source(daemon.public_port, f"{ROOM}?token={_token(auth, 'ann')}")
        assert stream.status == 200
        assert "retry" in await stream.next()  # the opening
        members = await stream.next()
        assert members["event"] == "members" and "id" not in members
        assert json.loads(members["data"]) == {"presence": "members", "center": "room.1",
                                               "members": [{"uid": "ann", "info": None}]}
        raw = await websocket(f"{daemon.ws}{ROOM}?token={_token(auth, 'raw')}", daemon.public_port)
        joined = await stream.next()
        assert (joined["event"], json.loads(joined["data"])["uid"]) == ("join", "raw")
        message_id = await published(daemon, auth, "text", "room.1")
        assert await raw.next() == "text"  # a raw WebSocket carries messages only
        assert (await stream.next())["id"] == message_id
        raw.close()
        left = await stream.next(GRACE * 10)
        assert (left["event"], json.loads(left["data"])) == ("leave", {"presence": "leave", "center": "room.1",
                                                                      "uid": "raw"})
        stream.close()


@pytest_twisted.ensureDeferred
async def test_a_chain_of_long_polls_is_one_member_that_does_not_flap():
    async with running(presence={"leave_grace": GRACE}) as daemon:
        auth = await _room(daemon)
        ann = await _member(daemon, auth, "ann")
        await _item(ann)
        token = _token(auth, "poller")
        url = f"{daemon.public}{ROOM}?timeout=0.3&token={token}"
        polls = 0
        deadline = reactor.seconds() + GRACE * 4
        while reactor.seconds() < deadline:
            status, body = await call("GET", url)
            assert status == 200, body
            polls += 1
        assert polls >= 3
        assert await _item(ann) == {"presence": "join", "center": "room.1", "uid": "poller", "info": None}
        await _nothing(ann, 0.1)  # polling on: no leave, no second join
        assert [m["uid"] for m in (await _presence(daemon, auth))["members"]] == ["ann", "poller"]
        # It stops polling: it leaves, once.
        assert await _item(ann, GRACE * 10) == {"presence": "leave", "center": "room.1", "uid": "poller"}
        ann.close()


@pytest_twisted.ensureDeferred
async def test_a_multiplexed_subscription_is_a_member_of_its_presence_centers():
    async with running(presence={"leave_grace": GRACE}) as daemon:
        auth = await _room(daemon)
        await make_center(daemon, auth, "room.2", private=True, presence=True)
        ann = await _member(daemon, auth, "ann", path="/sub/site/news,room.1,room.2")  # its opening read
        items = [await _item(ann), await _item(ann)]
        assert sorted((i["presence"], i["center"]) for i in items) == [("members", "room.1"), ("members", "room.2")]
        bob = await _member(daemon, auth, "bob", path="/sub/site/room.2")
        await _item(bob)
        assert await _item(ann) == {"presence": "join", "center": "room.2", "uid": "bob", "info": None}
        assert [m["uid"] for m in (await _presence(daemon, auth, "room.1"))["members"]] == ["ann"]
        assert [m["uid"] for m in (await _presence(daemon, auth, "room.2"))["members"]] == ["ann", "bob"]
        ann.close()
        assert await _item(bob, GRACE * 10) == {"presence": "leave", "center": "room.2", "uid": "ann"}
        await until(lambda: True)
        body = await _presence(daemon, auth, "room.1")
        assert body == {"count": 0, "members": []}
        bob.close()


@pytest_twisted.ensureDeferred
async def test_a_member_s_stream_ends_with_its_token_and_then_it_leaves():
    async with running(presence={"leave_grace": GRACE}) as daemon:
        auth = await _room(daemon)
        ann = await _member(daemon, auth, "ann")
        await _item(ann)
        short = await websocket(f"{daemon.ws}{ROOM}?format=json&token={_token(auth, 'bob', lifetime=1.0)}",
                                daemon.public_port)
        await opened(short)
        await _item(short)
        assert (await _item(ann))["presence"] == "join"
        code, _ = await short.closed.addTimeout(10, reactor)
        assert code == 4401
        assert await _item(ann, GRACE * 10) == {"presence": "leave", "center": "room.1", "uid": "bob"}
        ann.close()


@pytest_twisted.ensureDeferred
async def test_many_members_arriving_at_once_each_see_a_consistent_room():
    async with running(presence={"leave_grace": GRACE}) as daemon:
        auth = await _room(daemon)
        connections = await defer.gatherResults([
            defer.Deferred.fromCoroutine(_member(daemon, auth, f"u{i:02d}")) for i in range(20)])
        # Each one's view: its members list, then joins and leaves, ends at all twenty.
        for ws in connections:
            present: set[str] = set()
            seen = 0
            while len(present) < 20 or ws.messages.pending:
                item = await _item(ws)
                seen += 1
                if item["presence"] == "members":
                    assert seen == 1  # the list first
                    present = {m["uid"] for m in item["members"]}
                elif item["presence"] == "join":
                    assert item["uid"] not in present, item
                    present.add(item["uid"])
            assert present == {f"u{i:02d}" for i in range(20)}
        assert (await _presence(daemon, auth))["count"] == 20
        for ws in connections:
            ws.close()
