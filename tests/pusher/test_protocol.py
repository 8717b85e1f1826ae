"""The Pusher WebSocket over real sockets, spoken by hand: what the stock
clients never send (malformed frames, unknown events, forged signatures,
floods) and the refusals, each answered as Pusher answers it."""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from tests.pusher.support import PusherSocket, auth, connected, pusher_app
from tests.raw import client_frame, close_code, raw_websocket, server_frames
from tests.support import call, running, sleep, small_send_buffer, until, websocket

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_connection_established_gives_a_socket_id_and_the_activity_timeout():
    async with running(pusher={"activity_timeout": 30}) as daemon:
        app = await pusher_app(daemon)
        first = await PusherSocket.open(daemon, app.key)
        second = await PusherSocket.open(daemon, app.key)
        one, two = await first.established(), await second.established()
        assert one["activity_timeout"] == 30
        assert one["socket_id"] != two["socket_id"]
        for data in (one, two):
            node, _, number = data["socket_id"].partition(".")
            assert node.isdigit() and number.isdigit(), data
        first.send("pusher:ping", {})
        assert (await first.next())["event"] == "pusher:pong"


@pytest.mark.parametrize(("query", "key", "code"), [
    ("protocol=7", "nosuchkey0000000000", 4001),
    ("", None, 4008),
    ("protocol=seven", None, 4006),
    ("protocol=4", None, 4007),
    ("protocol=8", None, 4007),
])
@pytest_twisted.ensureDeferred
async def test_refused_connections_get_the_error_and_its_close_code(query, key, code):
    async with running() as daemon:
        app = await pusher_app(daemon)
        sock = await PusherSocket.open(daemon, key or app.key, query)
        frame = await sock.next()
        assert frame["event"] == "pusher:error"
        assert json.loads(frame["data"])["code"] == code
        closed_code, _ = await sock.ws.closed
        assert closed_code == code


@pytest_twisted.ensureDeferred
async def test_a_path_with_no_key_is_4005():
    async with running() as daemon:
        sock = await PusherSocket.open(daemon, "a/b")
        assert json.loads((await sock.next())["data"])["code"] == 4005
        assert (await sock.ws.closed)[0] == 4005


@pytest_twisted.ensureDeferred
async def test_plain_get_and_a_foreign_origin_are_refused_before_upgrading():
    async with running(public={"allowed_origins": ["https://site.example"]}) as daemon:
        app = await pusher_app(daemon)
        status, body = await call("GET", f"{daemon.public}/app/{app.key}?protocol=7")
        assert status == 400 and body["error"] == "not_websocket", body
        with pytest.raises(ConnectionError):
            await PusherSocket.open(daemon, app.key, headers={"Origin": "https://evil.example"})
        sock = await PusherSocket.open(daemon, app.key, headers={"Origin": "https://site.example"})
        await sock.established()


@pytest_twisted.ensureDeferred
async def test_malformed_and_unknown_frames_are_answered_and_the_connection_goes_on():
    async with running() as daemon:
        app = await pusher_app(daemon)
        sock = await connected(daemon, app)
        for text in ("not json", "[1, 2]", '{"data": {}}', '{"event": 7}', "[" * 10_000):
            sock.send_text(text)
            frame = await sock.next()
            assert frame["event"] == "pusher:error", (text, frame)
        sock.send("pusher:nonsense", {})
        assert "unknown event" in json.loads((await sock.next())["data"])["message"]
        sock.send("pusher:subscribe", "not an object")
        assert (await sock.next())["event"] == "pusher:error"
        sock.send("pusher:subscribe", {"channel": "bad channel!"})
        frame = await sock.next()
        assert frame["event"] == "pusher:subscription_error" and json.loads(frame["data"])["status"] == 400
        frame = await sock.subscribe("news")
        assert frame == {"event": "pusher_internal:subscription_succeeded", "channel": "news", "data": "{}"}


@pytest_twisted.ensureDeferred
async def test_an_oversized_message_closes_with_1009():
    async with running(pusher={"max_event_bytes": 1000}) as daemon:
        app = await pusher_app(daemon)
        sock = await connected(daemon, app)
        sock.send_text(json.dumps({"event": "client-x", "channel": "private-a", "data": "x" * 20_000}))
        code, _ = await sock.ws.closed
        assert code == 1009


@pytest_twisted.ensureDeferred
async def test_private_channels_need_the_apps_signature():
    async with running() as daemon:
        app = await pusher_app(daemon)
        other = await pusher_app(daemon, "other")
        sock = await connected(daemon, app)
        for data in ({"channel": "private-room"},
                     {"channel": "private-room", "auth": "nonsense"},
                     {"channel": "private-room", "auth": auth(other, f"{sock.socket_id}:private-room")},
                     {"channel": "private-room", "auth": auth(app, "0.0:private-room")}):
            sock.send("pusher:subscribe", data)
            frame = await sock.next()
            assert frame["event"] == "pusher:subscription_error", frame
            assert json.loads(frame["data"])["status"] == 401
        frame = await sock.subscribe("private-room", app)
        assert frame["event"] == "pusher_internal:subscription_succeeded"
        status, center = await daemon.admin("GET", "/admin/v1/publishers/site/centers")
        assert status == 200
        assert [(c["name"], c["private"]) for c in center["centers"]] == [("private-room", True)], center


@pytest_twisted.ensureDeferred
async def test_presence_subscription_lists_members_and_tells_of_users_coming_and_going():
    async with running(presence={"leave_grace": 0.1}) as daemon:
        app = await pusher_app(daemon)
        ann, bob = await connected(daemon, app), await connected(daemon, app)
        frame = await ann.subscribe("presence-room", app, json.dumps({"user_id": "ann", "user_info": {"n": 1}}))
        assert frame["event"] == "pusher_internal:subscription_succeeded", frame
        assert json.loads(frame["data"]) == {"presence": {"ids": ["ann"], "hash": {"ann": {"n": 1}}, "count": 1}}
        frame = await bob.subscribe("presence-room", app, json.dumps({"user_id": 7}))
        presence = json.loads(frame["data"])["presence"]
        assert sorted(presence["ids"]) == ["7", "ann"] and presence["count"] == 2
        added = await ann.next()
        assert added["event"] == "pusher_internal:member_added"
        assert json.loads(added["data"]) == {"user_id": "7", "user_info": None}
        bob.close()
        removed = await ann.next()
        assert removed["event"] == "pusher_internal:member_removed"
        assert json.loads(removed["data"]) == {"user_id": "7"}
        sock = await connected(daemon, app)
        sock.send("pusher:subscribe", {"channel": "presence-x", "auth": "k:s", "channel_data": "{}"})
        assert json.loads((await sock.next())["data"])["status"] == 400


@pytest_twisted.ensureDeferred
async def test_client_events_reach_the_others_never_the_sender_and_are_rate_limited():
    async with running(pusher={"client_events": True, "client_event_rate": 3}) as daemon:
        app = await pusher_app(daemon)
        ann, bob = await connected(daemon, app), await connected(daemon, app)
        await ann.subscribe("presence-chat", app, json.dumps({"user_id": "ann"}))
        await bob.subscribe("presence-chat", app, json.dumps({"user_id": "bob"}))
        await ann.next_of("pusher_internal:member_added")
        ann.send("client-typing", {"on": True}, "presence-chat")
        frame = await bob.next()
        assert frame == {"event": "client-typing", "channel": "presence-chat", "data": '{"on":true}',
                         "user_id": "ann"}
        ann.send("client-typing", {}, "news")  # not subscribed
        assert (await ann.next())["event"] == "pusher:error"
        for _ in range(5):
            ann.send("client-x", {}, "presence-chat")
        # Three a second: the first, then two of these five; the other three refused.
        errors = [json.loads((await ann.next())["data"]) for _ in range(3)]
        assert [error["code"] for error in errors] == [4301, 4301, 4301]
        got = [await bob.next() for _ in range(2)]
        assert [frame["event"] for frame in got] == ["client-x", "client-x"]
        await sleep(0.2)
        assert not ann.ws.messages.pending and not bob.ws.messages.pending


@pytest_twisted.ensureDeferred
async def test_client_events_are_refused_on_public_channels_and_when_not_enabled():
    async with running() as daemon:
        app = await pusher_app(daemon)
        sock = await connected(daemon, app)
        await sock.subscribe("private-a", app)
        sock.send("client-x", {}, "private-a")
        assert "not enabled" in json.loads((await sock.next())["data"])["message"]
        status, _ = await daemon.admin("PATCH", "/admin/v1/publishers/site", {"pusher": {"client_events": True}})
        assert status == 200
        await sock.subscribe("public-a")
        sock.send("client-x", {}, "public-a")
        assert "private and presence" in json.loads((await sock.next())["data"])["message"]


@pytest_twisted.ensureDeferred
async def test_sign_in_with_a_forged_signature_is_4009():
    async with running() as daemon:
        app = await pusher_app(daemon)
        sock = await connected(daemon, app)
        user_data = json.dumps({"id": "u1"})
        sock.send("pusher:signin", {"user_data": user_data, "auth": auth(app, f"0.0::user::{user_data}")})
        assert json.loads((await sock.next())["data"])["code"] == 4009
        assert (await sock.ws.closed)[0] == 4009
        sock = await connected(daemon, app)
        sock.send("pusher:signin", {"user_data": user_data, "auth": auth(app, f"{sock.socket_id}::user::{user_data}")})
        frame = await sock.next()
        assert frame["event"] == "pusher:signin_success"
        assert json.loads(frame["data"]) == {"user_data": user_data}
        frame = await sock.subscribe("#server-to-user-u2")
        assert frame["event"] == "pusher:subscription_error"
        frame = await sock.subscribe("#server-to-user-u1")
        assert frame["event"] == "pusher_internal:subscription_succeeded"


@pytest_twisted.ensureDeferred
async def test_cache_channels_give_the_last_event_or_a_miss():
    async with running() as daemon:
        app = await pusher_app(daemon)
        sock = await connected(daemon, app)
        await sock.subscribe("cache-prices")
        assert await sock.next() == {"event": "pusher:cache_miss", "channel": "cache-prices"}
        status, _ = await call("POST", f"{daemon.api}/api/v1/centers/cache-prices/messages", raw=b"41",
                               auth=(app.name, app.secret),
                               headers={"Notifier-Event": "price", "Content-Type": "text/plain"})
        assert status == 201
        assert (await sock.next())["data"] == "41"
        late = await connected(daemon, app)
        await late.subscribe("cache-prices")
        assert await late.next() == {"event": "price", "channel": "cache-prices", "data": "41"}


@pytest_twisted.ensureDeferred
async def test_a_drain_tells_every_connection_to_reconnect():
    async with running() as daemon:
        app = await pusher_app(daemon)
        idle = await connected(daemon, app)
        busy = await connected(daemon, app)
        await busy.subscribe("news")
        await daemon.service.stopService()
        for sock in (idle, busy):
            assert json.loads((await sock.next())["data"])["code"] == 4200
            assert (await sock.ws.closed)[0] == 4200


@pytest_twisted.ensureDeferred
async def test_connections_and_their_channels_are_let_go():
    async with running() as daemon:
        app = await pusher_app(daemon)
        face = daemon.service.pusher
        socks = [await connected(daemon, app) for _ in range(5)]
        for sock in socks:
            await sock.subscribe("news")
        await socks[0].subscribe("other")
        hub = daemon.service.centers.loaded("site", "news")
        assert len(hub.subscribers) == 5 and len(face.connections) == 5
        idle = await connected(daemon, app)  # counted too, with no channel
        status, stats = await daemon.admin("GET", "/admin/v1/stats")
        assert status == 200 and stats["connections"]["pusher"] == 6, stats
        idle.close()
        for sock in socks:
            sock.close()
        await until(lambda: not hub.subscribers and not face.connections)


@pytest_twisted.ensureDeferred
async def test_a_pusher_client_too_slow_to_read_is_dropped_with_4100():
    async with running(subscribers={"send_buffer_bytes": 64 * 1024}) as daemon:
        app = await pusher_app(daemon)
        raw = await raw_websocket(daemon.public_port, f"/app/{app.key}?protocol=7", rcvbuf=4096)
        await raw.client.wait_for(lambda data: b"connection_established" in data)
        raw.send(client_frame(1, json.dumps({"event": "pusher:subscribe", "data": {"channel": "news"}}).encode()))
        await raw.client.wait_for(lambda data: b"subscription_succeeded" in data)
        raw.client.transport.pauseProducing()
        face = daemon.service.pusher
        (connection,) = face.connections
        small_send_buffer(connection)
        hub = daemon.service.centers.loaded("site", "news")
        sent = 0
        while connection in face.connections:
            assert sent < 2000, "never dropped"
            status, body = await call("POST", f"{daemon.api}/api/v1/centers/news/messages",
                                      raw=b"s" * 8000, auth=(app.name, app.secret),
                                      headers={"Content-Type": "text/plain"})
            assert status == 201, body
            sent += 1
        assert not hub.subscribers
        raw.client.transport.resumeProducing()
        await raw.client.wait_for(lambda data: close_code(server_frames(bytes(data[raw.head_length:]))) is not None,
                                  10)
        assert close_code(raw.frames) == 4100
        assert (await daemon.admin("GET", "/admin/v1/stats"))[1]["dropped_subscribers"] == 1


@pytest_twisted.ensureDeferred
async def test_open_connections_follow_their_apps_changes():
    async with running() as daemon:
        app = await pusher_app(daemon)
        sender, other = await connected(daemon, app), await connected(daemon, app)
        for sock in (sender, other):
            await sock.subscribe("private-a", app)
        status, _ = await daemon.admin("PATCH", "/admin/v1/publishers/site", {"pusher": {"client_events": True}})
        assert status == 200
        sender.send("client-x", {"n": 1}, "private-a")
        assert (await other.next())["event"] == "client-x"
        # A rotated secret ends the private subscriptions (the client comes back at once) ...
        status, rotated = await daemon.admin("POST", "/admin/v1/publishers/site/rotate")
        assert status == 200
        assert json.loads((await sender.next_of("pusher:error"))["data"])["code"] == 4200
        # ... and signs anew with the new one.
        public = await connected(daemon, app)
        await public.subscribe("news")
        renewed = type(app)(app.name, app.app_id, app.key, rotated["secret"])
        await until(lambda: all(c.publisher.secret == renewed.secret for c in daemon.service.pusher.connections))
        assert (await public.subscribe("private-b", renewed))["event"] == "pusher_internal:subscription_succeeded"
        # A removed app's connections end for good (4001: no reconnection).
        status, _ = await daemon.admin("DELETE", "/admin/v1/publishers/site")
        assert status == 204
        assert json.loads((await public.next_of("pusher:error"))["data"])["code"] == 4001
        assert (await public.ws.closed)[0] == 4001


@pytest_twisted.ensureDeferred
async def test_a_private_center_under_a_public_name_is_not_readable_through_pusher():
    async with running() as daemon:
        app = await pusher_app(daemon)
        status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/secrets", {"private": True},
                               auth=(app.name, app.secret))
        assert status == 201
        sock = await connected(daemon, app)
        frame = await sock.subscribe("secrets")
        assert frame["event"] == "pusher:subscription_error" and json.loads(frame["data"])["status"] == 403
        assert not daemon.service.centers.loaded("site", "secrets").subscribers


@pytest_twisted.ensureDeferred
async def test_a_message_too_large_in_many_small_frames_closes_with_1009():
    async with running(pusher={"max_event_bytes": 1000}) as daemon:
        app = await pusher_app(daemon)
        raw = await raw_websocket(daemon.public_port, f"/app/{app.key}?protocol=7")
        await raw.client.wait_for(lambda data: b"connection_established" in data)
        raw.send(client_frame(1, b'{"event": "client-x", "data": "', fin=False))
        for _ in range(20):  # 20 KB in all, 1 KB a frame: each under the frame cap
            raw.send(client_frame(0, b"x" * 1000, fin=False))
        await raw.client.wait_for(lambda data: close_code(server_frames(bytes(data[raw.head_length:]))) is not None)
        assert close_code(raw.frames) == 1009


@pytest_twisted.ensureDeferred
async def test_a_pusher_connection_holds_no_more_attributes_than_a_native_one():
    """What keeps an idle Pusher connection's memory near a native one's:
    its own state and Autobahn's per-message state are slots, and its
    ``__dict__`` stays within what CPython shares between instances (30)."""
    async with running() as daemon:
        app = await pusher_app(daemon)
        sock = await connected(daemon, app)
        await sock.subscribe("news")
        sock.send("pusher:ping", {})
        await sock.next()
        (connection,) = daemon.service.pusher.connections
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        hub = daemon.service.centers.loaded("site", "news")
        (native,) = [s for s in hub.subscribers if s.transport_name == "websocket"]
        ws.close()
        assert len(vars(connection)) <= len(vars(native)) + 1, (sorted(vars(connection)), sorted(vars(native)))


@pytest_twisted.ensureDeferred
async def test_a_text_message_that_is_not_utf8_closes_with_1007():
    async with running() as daemon:
        app = await pusher_app(daemon)
        raw = await raw_websocket(daemon.public_port, f"/app/{app.key}?protocol=7")
        await raw.client.wait_for(lambda data: b"connection_established" in data)
        raw.send(client_frame(1, b'{"event": "pusher:ping", "data": "\xff"}'))
        await raw.client.wait_for(lambda data: close_code(server_frames(bytes(data[raw.head_length:]))) is not None)
        assert close_code(raw.frames) == 1007


@pytest_twisted.ensureDeferred
async def test_a_client_that_answers_no_ping_is_dropped_and_one_that_does_is_kept():
    async with running(subscribers={"ping_interval": 0.1}) as daemon:
        app = await pusher_app(daemon)
        alive = await connected(daemon, app)  # Autobahn's client answers pings by itself
        await alive.subscribe("news")
        raw = await raw_websocket(daemon.public_port, f"/app/{app.key}?protocol=7")  # answers nothing
        await raw.client.wait_for(lambda data: b"connection_established" in data)
        face = daemon.service.pusher
        assert len(face.connections) == 2
        await raw.client.wait_for(lambda data: raw.client.done, 5)
        assert any(opcode == 9 for opcode, _ in raw.frames)  # it was pinged
        await sleep(0.5)
        assert len(face.connections) == 1
        alive.send("pusher:ping", {})
        assert (await alive.next())["event"] == "pusher:pong"
