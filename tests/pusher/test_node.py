"""The stock JavaScript clients in Node.js against a daemon over real
sockets: pusher-js 8 (its node build) and Laravel Echo 2 as subscribers,
the ``pusher`` Node library as the site (its HTTP API calls, and the auth
endpoints it signs). Versions pinned in tests/js/package-lock.json.

Each client and the site run as Node processes (tests/js/client.mjs,
tests/js/site.mjs) driven by JSON lines; the daemon runs on the reactor.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import pytest_twisted

from tests.pusher.stock import Driver, node, node_modules
from tests.pusher.support import App, pusher_app
from tests.support import Daemon, running, start_daemon, until

pytestmark = pytest.mark.node


@pytest.fixture(autouse=True)
def stock_clients():
    """Node.js and the pinned clients, or an error that says to run `make test`."""
    node()
    return node_modules()


@attrs.define
class Scene:
    """A daemon with an app, the site (the pusher Node library) and the clients started."""

    daemon: Daemon
    app: App
    site: Driver
    auth: str = ""
    clients: list[Driver] = attrs.Factory(list)

    async def client(self, user: str, lib: str = "pusher-js") -> Driver:
        """A client connected as *user* (what the site's auth endpoints sign it as)."""
        driver = Driver.start("client.mjs", lib=lib, key=self.app.key, host="127.0.0.1",
                              port=self.daemon.public_port, auth=self.auth, user=user)
        self.clients.append(driver)
        connected = await driver.of("state", current="connected")
        driver.socket_id = connected["socket_id"]
        return driver

    async def trigger(self, *args: Any) -> Any:
        answer = await self.site.call("trigger", *args)
        assert answer.get("status") == 200, answer
        return answer["body"]


@contextlib.asynccontextmanager
async def scene(**sections: dict[str, Any]) -> AsyncIterator[Scene]:
    async with running(**sections) as daemon:
        app = await pusher_app(daemon)
        site = Driver.start("site.mjs", appId=app.app_id, key=app.key, secret=app.secret, host="127.0.0.1",
                            port=int(daemon.api.rsplit(":", 1)[1]))
        made = Scene(daemon, app, site)
        ended = []
        try:
            made.auth = f"http://127.0.0.1:{(await site.of('ready'))['port']}"
            yield made
        finally:
            for driver in (*made.clients, site):
                ended.append((driver, await driver.stop()))
        crashed = [(driver.script, code, driver.stderr.decode()[-2000:]) for driver, code in ended if code != 0]
        assert not crashed, crashed


async def _subscribed(client: Driver, *channels: str, events: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    for channel in channels:
        client.send(op="subscribe", channel=channel, events=list(events))
    return [await client.of("subscribed", channel=channel) for channel in channels]


@pytest_twisted.ensureDeferred
async def test_pusher_js_receives_public_private_and_presence_events():
    async with scene(presence={"leave_grace": 0.1}) as s:
        ann = await s.client("ann")
        *_, presence = await _subscribed(ann, "news", "private-orders", "presence-room")
        assert presence["members"] == [{"id": "ann", "info": {"name": "ann"}}] and presence["me"] == "ann"
        signed = {(line["channel"], line["socket_id"]) for line in s.site.seen("auth")}
        assert signed == {("private-orders", ann.socket_id), ("presence-room", ann.socket_id)}

        assert await s.trigger("news", "breaking", {"title": "hello"}) == {}
        assert await s.trigger("private-orders", "shipped", {"order": 7}) == {}
        assert await s.trigger("presence-room", "said", "plain text") == {}
        got = [await ann.of("event", channel=channel) for channel in ("news", "private-orders", "presence-room")]
        assert [(e["event"], e["data"]) for e in got] == [
            ("breaking", {"title": "hello"}), ("shipped", {"order": 7}), ("said", "plain text")]

        # A user whose id the site signs as a number, as Laravel does.
        seven = await s.client("7")
        (seen_by_seven,) = await _subscribed(seven, "presence-room")
        assert seen_by_seven["members"] == [{"id": "7", "info": {"name": "7"}},
                                            {"id": "ann", "info": {"name": "ann"}}]
        assert seen_by_seven["me"] == 7  # pusher-js keeps the id of its channel_data
        joined = await ann.of("joining", channel="presence-room")
        assert (joined["id"], joined["info"]) == ("7", {"name": "7"})
        await seven.stop()
        left = await ann.of("leaving", channel="presence-room")
        assert (left["id"], left["info"]) == ("7", {"name": "7"})


@pytest_twisted.ensureDeferred
async def test_laravel_echo_receives_public_private_and_presence_events():
    async with scene(presence={"leave_grace": 0.1}) as s:
        ann = await s.client("ann", lib="echo")
        events = ("breaking", "shipped", "said")
        *_, here = await _subscribed(ann, "news", "private-orders", "presence-room", events=events)
        assert here["members"] == [{"info": {"name": "ann"}}]

        await s.trigger("news", "breaking", {"title": "hello"})
        await s.trigger("private-orders", "shipped", {"order": 7})
        await s.trigger("presence-room", "said", {"text": "hi"})
        got = [await ann.of("event", channel=channel) for channel in ("news", "private-orders", "presence-room")]
        assert [(e["event"], e["data"]) for e in got] == [
            ("breaking", {"title": "hello"}), ("shipped", {"order": 7}), ("said", {"text": "hi"})]

        bob = await s.client("bob", lib="echo")
        (here,) = await _subscribed(bob, "presence-room")
        assert sorted(member["info"]["name"] for member in here["members"]) == ["ann", "bob"]
        assert (await ann.of("joining", channel="presence-room"))["info"] == {"name": "bob"}
        await bob.stop()
        assert (await ann.of("leaving", channel="presence-room"))["info"] == {"name": "bob"}


@pytest_twisted.ensureDeferred
async def test_trigger_to_many_channels_excludes_the_socket_and_trigger_batch():
    async with scene() as s:
        sender, other = await s.client("ann"), await s.client("bob")
        for client in (sender, other):
            await _subscribed(client, "one", "private-two")
        answer = await s.trigger(["one", "private-two"], "e", "x",
                                 {"socket_id": sender.socket_id, "info": "subscription_count"})
        assert answer == {"channels": {"one": {"subscription_count": 2}, "private-two": {"subscription_count": 2}}}
        got = [await other.of("event", channel=channel) for channel in ("one", "private-two")]
        assert [(e["event"], e["data"]) for e in got] == [("e", "x"), ("e", "x")]
        await s.trigger("one", "after", "y")
        await sender.of("event", channel="one", event="after")
        assert [e["event"] for e in sender.seen("event")] == ["after"]  # nothing before it: excluded

        batch = [{"channel": "one", "name": "b1", "data": "first"},
                 {"channel": "private-two", "name": "b2", "data": {"n": 2}}]
        answer = await s.site.call("triggerBatch", batch)
        assert (answer["status"], answer["body"]) == (200, {}), answer
        for client in (sender, other):
            assert (await client.of("event", event="b1"))["data"] == "first"
            assert (await client.of("event", event="b2"))["data"] == {"n": 2}

        # What info asks of a channel that cannot say it is refused before anything is triggered.
        answer = await s.site.call("trigger", ["one", "private-two"], "refused", "z", {"info": "user_count"})
        assert answer["status"] == 400, answer
        await s.trigger("one", "last", "w")
        for client in (sender, other):
            await client.of("event", channel="one", event="last")
            assert not client.seen("event", event="refused")  # it would have come before "last"

        answer = await s.site.call("trigger", [f"c{i}" for i in range(101)], "e", "x")
        assert "more than 100 channels" in answer["error"], answer


@pytest_twisted.ensureDeferred
async def test_channel_queries_and_presence_users():
    async with scene(presence={"leave_grace": 0.1}) as s:
        ann, bob = await s.client("ann"), await s.client("bob")
        await _subscribed(ann, "news", "presence-room")
        await _subscribed(bob, "presence-room")

        async def get(path: str, **params: str) -> Any:
            answer = await s.site.call("get", {"path": path, "params": params})
            assert answer.get("status") == 200, answer
            return answer["body"]

        assert await get("/channels") == {"channels": {"news": {}, "presence-room": {}}}
        assert await get("/channels", filter_by_prefix="presence-", info="user_count") == {
            "channels": {"presence-room": {"user_count": 2}}}
        assert await get("/channels", filter_by_prefix="new") == {"channels": {"news": {}}}
        assert await get("/channels/presence-room", info="user_count,subscription_count") == {
            "occupied": True, "user_count": 2, "subscription_count": 2}
        assert await get("/channels/news", info="subscription_count") == {"occupied": True, "subscription_count": 1}
        assert await get("/channels/empty") == {"occupied": False}
        users = await get("/channels/presence-room/users")
        assert sorted(user["id"] for user in users["users"]) == ["ann", "bob"]

        answer = await s.site.call("get", {"path": "/channels/news/users"})
        assert answer["status"] == 400, answer
        answer = await s.site.call("get", {"path": "/channels"}, forged=True)
        assert answer["status"] == 401, answer
        answer = await s.site.call("trigger", "news", "e", "x", forged=True)
        assert answer["status"] == 401, answer


@pytest_twisted.ensureDeferred
async def test_users_sign_in_get_their_events_and_are_terminated():
    async with scene() as s:
        first, second, bob = await s.client("ann"), await s.client("ann"), await s.client("bob")
        for client in (first, second, bob):
            client.send(op="signin")
        for client, user in ((first, "ann"), (second, "ann"), (bob, "bob")):
            await client.of("frame", event="pusher:signin_success")
            await client.of("frame", event="pusher_internal:subscription_succeeded", channel=f"#server-to-user-{user}")
        assert sorted((line["user"], line["socket_id"]) for line in s.site.seen("user-auth")) == sorted(
            [("ann", first.socket_id), ("ann", second.socket_id), ("bob", bob.socket_id)])

        answer = await s.site.call("sendToUser", "bob", "note", {"to": "bob"})
        assert (answer["status"], answer["body"]) == (200, {}), answer
        answer = await s.site.call("sendToUser", "ann", "hello", {"x": 1})
        assert answer["status"] == 200, answer
        for client in (first, second):
            assert await client.of("user_event") == {"type": "user_event", "event": "hello", "data": {"x": 1}}
            assert len(client.seen("user_event")) == 1  # not bob's, sent before
        assert (await bob.of("user_event"))["data"] == {"to": "bob"}

        answer = await s.site.call("terminateUserConnections", "ann")
        assert (answer["status"], answer["body"]) == (200, {}), answer
        for client in (first, second):
            assert (await client.of("error"))["code"] == 4009
            await client.of("state", current="disconnected")
        face = s.daemon.service.pusher
        await until(lambda: set(face.users) == {(s.app.name, "bob")}, what="ann's connections let go")
        await s.site.call("sendToUser", "bob", "still", "here")
        assert (await bob.of("user_event", event="still"))["data"] == "here"  # not terminated


@pytest.mark.redis
@pytest_twisted.ensureDeferred
async def test_across_two_daemons_on_redis(redis):
    """Laravel Echo on one daemon, pusher-js on the other, the site's Node
    library calling a third: events, presence, whispers and a user's
    termination cross them all."""
    sections = {"pusher": {"client_events": True}, "presence": {"leave_grace": 0.1}}
    nodes = [await start_daemon(redis.url, **sections) for _ in range(3)]
    drivers: list[Driver] = []
    try:
        app = await pusher_app(nodes[0])
        site = Driver.start("site.mjs", appId=app.app_id, key=app.key, secret=app.secret, host="127.0.0.1",
                            port=int(nodes[2].api.rsplit(":", 1)[1]))
        drivers.append(site)
        auth = f"http://127.0.0.1:{(await site.of('ready'))['port']}"

        async def client(daemon: Daemon, user: str, lib: str) -> Driver:
            driver = Driver.start("client.mjs", lib=lib, key=app.key, host="127.0.0.1",
                                  port=daemon.public_port, auth=auth, user=user)
            drivers.append(driver)
            await driver.of("state", current="connected")
            return driver

        ann = await client(nodes[0], "ann", "echo")
        bob = await client(nodes[1], "bob", "pusher-js")
        (here,) = await _subscribed(ann, "presence-room", events=("said",))
        assert here["members"] == [{"info": {"name": "ann"}}]
        (seen,) = await _subscribed(bob, "presence-room")
        assert sorted(member["id"] for member in seen["members"]) == ["ann", "bob"]
        assert (await ann.of("joining", channel="presence-room"))["info"] == {"name": "bob"}

        answer = await site.call("trigger", "presence-room", "said", {"text": "hi"})
        assert answer.get("status") == 200, answer
        assert (await ann.of("event", channel="presence-room", event="said"))["data"] == {"text": "hi"}
        assert (await bob.of("event", channel="presence-room", event="said"))["data"] == {"text": "hi"}

        bob.send(op="whisper", channel="presence-room", event="typing", data={"who": "bob"})
        frame = await ann.of("frame", event="client-typing")
        assert frame["channel"] == "presence-room"
        assert not bob.seen("frame", event="client-typing")

        bob.send(op="signin")
        await until(lambda: any(c.user_id == "bob" for c in nodes[1].service.pusher.connections))
        answer = await site.call("terminateUserConnections", "bob")
        assert answer.get("status") == 200, answer
        assert (await bob.of("error", code=4009))["code"] == 4009
        assert (await ann.of("leaving", channel="presence-room"))["info"] == {"name": "bob"}
    finally:
        for driver in drivers:
            await driver.stop()
        for daemon in nodes:
            if daemon.service.running:
                await daemon.service.stopService()
