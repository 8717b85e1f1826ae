"""The Pusher face across two daemons on one real redis-server: the
client on one node, the site (the official ``pusher`` library) and other
clients on the other."""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from tests.pusher.support import App, connected, on_thread, site_library, subscribed
from tests.support import Daemon, start_daemon, until

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest_twisted.async_yield_fixture
async def two(redis):
    """Two daemons on one Redis, with client events on."""
    daemons: list[Daemon] = []
    try:
        for _ in range(2):
            daemons.append(await start_daemon(redis.url, pusher={"client_events": True},
                                              presence={"leave_grace": 0.1}))
        yield daemons
    finally:
        for daemon in daemons:
            if daemon.service.running:
                await daemon.service.stopService()


async def _app(a: Daemon, b: Daemon) -> App:
    status, body = await a.admin("POST", "/admin/v1/publishers", {"name": "site"})
    assert status == 201, body
    publisher = await b.service.publishers.publisher("site")
    assert publisher is not None
    return App("site", publisher.app_id, publisher.key, body["secret"])






@pytest_twisted.ensureDeferred
async def test_triggers_client_events_and_presence_cross_nodes(two):
    a, b = two
    app = await _app(a, b)
    site = site_library(b, app)
    here, there = await connected(a, app), await connected(b, app)
    await subscribed(here, site, "private-room")
    await subscribed(there, site, "private-room")
    # A trigger on node b, excluding the socket on node b, reaches node a only.
    await on_thread(site, "trigger", "private-room", "e", "x", socket_id=there.socket_id)
    assert await here.next() == {"event": "e", "channel": "private-room", "data": "x"}
    await on_thread(site, "trigger", "private-room", "f", "y")
    assert (await there.next())["event"] == "f"
    assert (await here.next())["event"] == "f"
    # A client event on node a reaches node b, never back to a.
    here.send("client-typing", {"n": 1}, "private-room")
    assert await there.next() == {"event": "client-typing", "channel": "private-room", "data": '{"n":1}'}
    # Presence: members of both nodes, joins and leaves across.
    frame = await subscribed(here, site, "presence-lobby", {"user_id": "ann"})
    assert json.loads(frame["data"])["presence"]["ids"] == ["ann"]
    frame = await subscribed(there, site, "presence-lobby", {"user_id": "bob", "user_info": {"x": 1}})
    assert sorted(json.loads(frame["data"])["presence"]["ids"]) == ["ann", "bob"]
    added = await here.next_of("pusher_internal:member_added")
    assert json.loads(added["data"]) == {"user_id": "bob", "user_info": {"x": 1}}
    users = await on_thread(site_library(a, app), "users_info", "presence-lobby")
    assert sorted(user["id"] for user in users["users"]) == ["ann", "bob"]
    there.close()
    removed = await here.next_of("pusher_internal:member_removed")
    assert json.loads(removed["data"]) == {"user_id": "bob"}


@pytest_twisted.ensureDeferred
async def test_user_events_and_termination_cross_nodes(two):
    a, b = two
    app = await _app(a, b)
    site = site_library(b, app)
    sock = await connected(a, app)
    sock.send("pusher:signin", site.authenticate_user(sock.socket_id, {"id": "u7"}))
    assert (await sock.next())["event"] == "pusher:signin_success"
    await subscribed(sock, site, "#server-to-user-u7")
    await on_thread(site, "send_to_user", "u7", "note", "hi")
    assert await sock.next() == {"event": "note", "channel": "#server-to-user-u7", "data": "hi"}
    await on_thread(site, "terminate_user_connections", "u7")
    assert json.loads((await sock.next())["data"])["code"] == 4009
    await until(lambda: not a.service.pusher.users)


@pytest_twisted.ensureDeferred
async def test_cache_channel_last_event_from_another_node(two):
    a, b = two
    app = await _app(a, b)
    await on_thread(site_library(b, app), "trigger", "cache-score", "goal", "1-0")
    sock = await connected(a, app)
    await subscribed(sock, site_library(a, app), "cache-score")
    assert await sock.next() == {"event": "goal", "channel": "cache-score", "data": "1-0"}
