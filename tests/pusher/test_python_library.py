"""The official ``pusher`` library (PyPI) as the site: its HTTP API calls
and its signatures, against a daemon over real sockets. The library is
synchronous: each call runs on a thread, the daemon on the reactor."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import nacl.secret
import pusher
import pytest
import pytest_twisted

from tests.pusher.support import App, connected, on_thread, pusher_app, site_library, subscribed
from tests.support import call, running, until

pytestmark = pytest.mark.integration






@pytest_twisted.ensureDeferred
async def test_trigger_reaches_pusher_and_notifier_subscribers_as_one_numbered_message():
    async with running() as daemon:
        app = await pusher_app(daemon)
        client = site_library(daemon, app)
        sock = await connected(daemon, app)
        await subscribed(sock, client, "news")
        assert await on_thread(client, "trigger", "news", "breaking", {"title": "hello"}) == {}
        frame = await sock.next()
        assert frame == {"event": "breaking", "channel": "news", "data": '{"title": "hello"}'}
        # The same event, retained as a message of the center, for notifier's own clients.
        status, messages = await call("GET", f"{daemon.public}/sub/site/news?since=0-0&timeout=0")
        assert status == 200, messages
        (message,) = messages["messages"]
        assert message["data"] == '{"title": "hello"}' and message["event"] == "breaking", message


@pytest_twisted.ensureDeferred
async def test_trigger_to_many_channels_excludes_the_socket_and_answers_info():
    async with running() as daemon:
        app = await pusher_app(daemon)
        client = site_library(daemon, app)
        sender, other = await connected(daemon, app), await connected(daemon, app)
        for sock in (sender, other):
            await subscribed(sock, client, "a")
            await subscribed(sock, client, "private-b")
        await on_thread(client, "trigger", ["a", "private-b"], "e", "x", socket_id=sender.socket_id)
        got = [await other.next(), await other.next()]
        assert sorted(frame["channel"] for frame in got) == ["a", "private-b"]
        await on_thread(client, "trigger", "a", "after", "y")
        assert (await sender.next())["event"] == "after"  # nothing before it: excluded
        with pytest.raises(ValueError):
            await on_thread(client, "trigger", [f"c{i}" for i in range(101)], "e", "x")


@pytest_twisted.ensureDeferred
async def test_trigger_batch():
    async with running() as daemon:
        app = await pusher_app(daemon)
        client = site_library(daemon, app)
        sock = await connected(daemon, app)
        await subscribed(sock, client, "one")
        await subscribed(sock, client, "two")
        batch = [{"channel": "one", "name": "e1", "data": "1"}, {"channel": "two", "name": "e2", "data": {"n": 2}}]
        assert await on_thread(client, "trigger_batch", batch) == {}
        assert [(f["channel"], f["event"], f["data"]) for f in [await sock.next(), await sock.next()]] == [
            ("one", "e1", "1"), ("two", "e2", '{"n": 2}')]
        too_many = [{"channel": "one", "name": "e", "data": "x"}] * 11
        with pytest.raises(pusher.errors.PusherBadRequest):
            await on_thread(client, "trigger_batch", too_many)


@pytest_twisted.ensureDeferred
async def test_channel_queries():
    async with running(presence={"leave_grace": 0.1}) as daemon:
        app = await pusher_app(daemon)
        client = site_library(daemon, app)
        socks = [await connected(daemon, app) for _ in range(3)]
        await subscribed(socks[0], client, "news")
        await subscribed(socks[1], client, "presence-room", {"user_id": "ann", "user_info": {"name": "Ann"}})
        await subscribed(socks[2], client, "presence-room", {"user_id": "bob"})
        channels = await on_thread(client, "channels_info")
        assert channels == {"channels": {"news": {}, "presence-room": {}}}
        channels = await on_thread(client, "channels_info", "presence-", ["user_count"])
        assert channels == {"channels": {"presence-room": {"user_count": 2}}}
        info = await on_thread(client, "channel_info", "presence-room", ["user_count", "subscription_count"])
        assert info == {"occupied": True, "user_count": 2, "subscription_count": 2}
        assert await on_thread(client, "channel_info", "empty") == {"occupied": False}
        users = await on_thread(client, "users_info", "presence-room")
        assert sorted(user["id"] for user in users["users"]) == ["ann", "bob"]
        with pytest.raises(pusher.errors.PusherBadRequest):
            await on_thread(client, "users_info", "news")


@pytest_twisted.ensureDeferred
async def test_users_sign_in_get_their_events_and_are_terminated():
    async with running() as daemon:
        app = await pusher_app(daemon)
        client = site_library(daemon, app)
        first, second, stranger = [await connected(daemon, app) for _ in range(3)]
        for sock in (first, second):
            sock.send("pusher:signin", client.authenticate_user(sock.socket_id, {"id": "u1", "name": "U"}))
            assert (await sock.next())["event"] == "pusher:signin_success"
            await subscribed(sock, client, "#server-to-user-u1")
        await on_thread(client, "send_to_user", "u1", "hello", {"x": 1})
        for sock in (first, second):
            assert await sock.next() == {"event": "hello", "channel": "#server-to-user-u1", "data": '{"x": 1}'}
        assert await on_thread(client, "terminate_user_connections", "u1") == {}
        for sock in (first, second):
            assert json.loads((await sock.next_of("pusher:error"))["data"])["code"] == 4009
            assert (await sock.ws.closed)[0] == 4009
        face = daemon.service.pusher
        await until(lambda: not face.users)
        stranger.send("pusher:ping", {})
        assert (await stranger.next())["event"] == "pusher:pong"  # not terminated


@pytest_twisted.ensureDeferred
async def test_bad_signatures_keys_and_apps_are_401():
    async with running() as daemon:
        app = await pusher_app(daemon)
        other = await pusher_app(daemon, "other")
        wrong_secret = App(app.name, app.app_id, app.key, other.secret)
        wrong_key = App(app.name, app.app_id, "nosuchkey", app.secret)
        wrong_app = App(app.name, other.app_id, app.key, app.secret)
        for bad in (wrong_secret, wrong_key, wrong_app):
            with pytest.raises(pusher.errors.PusherBadAuth):
                await on_thread(site_library(daemon, bad), "trigger", "news", "e", "x")
        status, body = await call("POST", f"{daemon.api}/apps/{app.app_id}/events", {"name": "e"})
        assert status == 401 and body.startswith(b"a request is signed"), body
        # The library's own request, signed an hour ago.
        request = pusher.http.Request(site_library(daemon, app)._pusher_client, "POST", f"/apps/{app.app_id}/events",
                                      {"name": "e", "channels": ["news"], "data": "x"})
        request.query_params.pop("auth_signature")
        request.query_params["auth_timestamp"] = str(int(time.time()) - 3600)
        text = "\n".join(["POST", request.path, pusher.http.make_query_string(request.query_params)])
        request.query_params["auth_signature"] = pusher.signature.sign(app.secret, text)
        status, body = await call("POST", f"{daemon.api}{request.signed_path}", raw=request.body,
                                  headers={"Content-Type": "application/json"})
        assert status == 401 and body.startswith(b"Timestamp expired"), body
        request.query_params["auth_timestamp"] = str(int(time.time()))
        request.query_params.pop("auth_signature")
        text = "\n".join(["POST", request.path, pusher.http.make_query_string(request.query_params)])
        request.query_params["auth_signature"] = pusher.signature.sign(app.secret, text)
        status, body = await call("POST", f"{daemon.api}{request.signed_path}", raw=request.body,
                                  headers={"Content-Type": "application/json"})
        assert status == 200 and body == {}, body


async def _signed(daemon: Any, app: App, method: str, path: str, params: dict[str, Any]) -> tuple[int, Any]:
    """A request the library signs, whatever its body: what the library
    itself would refuse to send."""
    request = pusher.http.Request(site_library(daemon, app)._pusher_client, method, path, params)
    return await call(method, f"{daemon.api}{request.signed_path}", raw=request.body or None,
                      headers={"Content-Type": "application/json"})


@pytest_twisted.ensureDeferred
async def test_limits_and_malformed_bodies_are_refused_as_pusher_refuses_them():
    async with running(pusher={"max_event_bytes": 100}) as daemon:
        app = await pusher_app(daemon)
        client = site_library(daemon, app)
        with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
            await on_thread(client, "trigger", "news", "e", "x" * 101)
        events = f"/apps/{app.app_id}/events"
        cases = [
            ({"name": "e" * 201, "channels": ["a"], "data": "x"}, 413),
            ({"name": "e\n", "channels": ["a"], "data": "x"}, 400),
            ({"name": "e", "channels": ["bad channel"], "data": "x"}, 400),
            ({"name": "e", "channels": ["a", "a"], "data": "x"}, 400),
            ({"name": "e", "channels": [], "data": "x"}, 400),
            ({"name": "e", "channels": ["a"], "data": {"not": "a string"}}, 400),
            ({"name": "e", "channels": ["a"], "data": "x", "socket_id": "nope"}, 400),
            ({"name": "e", "channel": "presence-a", "data": "x", "info": "user_count,subscription_count"}, 200),
            ({"name": "e", "channels": ["a"], "data": "x", "info": "user_count"}, 400),
        ]
        for body, status in cases:
            got, answer = await _signed(daemon, app, "POST", events, body)
            assert got == status, (body, got, answer)
        got, answer = await _signed(daemon, app, "POST", f"/apps/{app.app_id}/batch_events", {"batch": "nope"})
        assert got == 400, answer
        got, answer = await _signed(daemon, app, "POST", f"/apps/{app.app_id}/nothing", {})
        assert got == 404, answer
        got, answer = await _signed(daemon, app, "GET", f"/apps/{app.app_id}/channels", {"info": "user_count"})
        assert got == 400, answer
        # Nothing refused was published.
        status, messages = await call("GET", f"{daemon.public}/sub/site/a?since=0-0&timeout=0")
        assert status == 404, messages


@pytest_twisted.ensureDeferred
async def test_encrypted_channels_carry_the_libraries_ciphertext_untouched():
    async with running() as daemon:
        app = await pusher_app(daemon)
        master = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
        port = int(daemon.api.rsplit(":", 1)[1])
        client = pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret, host="127.0.0.1", port=port,
                               ssl=False, encryption_master_key_base64=master)
        sock = await connected(daemon, app)
        subscribed = client.authenticate("private-encrypted-vault", sock.socket_id)
        assert "shared_secret" in subscribed
        sock.send("pusher:subscribe", {"channel": "private-encrypted-vault", "auth": subscribed["auth"]})
        await sock.next_of("pusher_internal:subscription_succeeded")
        await on_thread(client, "trigger", "private-encrypted-vault", "secret", {"pin": 1234})
        frame = await sock.next()
        sealed = json.loads(frame["data"])
        assert set(sealed) == {"nonce", "ciphertext"} and "1234" not in frame["data"]
        shared = base64.b64decode(subscribed["shared_secret"])
        plain = nacl.secret.SecretBox(shared).decrypt(base64.b64decode(sealed["ciphertext"]),
                                                      base64.b64decode(sealed["nonce"]))
        assert json.loads(plain) == {"pin": 1234}


@pytest_twisted.ensureDeferred
async def test_a_channel_name_with_a_comma_is_one_center_on_notifiers_own_transports():
    async with running() as daemon:
        app = await pusher_app(daemon)
        client = site_library(daemon, app)
        await on_thread(client, "trigger", "a,b;c=d", "e", "x")
        status, body = await call("GET", f"{daemon.public}/sub/site/a%252Cb;c=d?since=0-0&timeout=0")
        assert status == 200 and body["messages"][0]["data"] == "x", body
        assert body["messages"][0]["center"] == "a,b;c=d", body
        status, body = await call("GET", f"{daemon.public}/sub/site/a%252Cb;c=d,other?since=,&timeout=0")
        assert status == 404 and body["error"] == "no_such_center" and "other" in body["message"], body
        # One decoding: %2C (and ,) still separate centers.
        status, body = await call("GET", f"{daemon.public}/sub/site/a%2Cb;c=d?timeout=0")
        assert status == 404 and body["error"] == "no_such_center", body
