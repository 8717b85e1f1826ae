"""Webhooks in Pusher's format, each request checked with the official
``pusher`` library's ``validate_webhook``, as a site would."""

from __future__ import annotations

from typing import Any

import pusher
import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor
from twisted.web import resource, server

from tests.pusher.support import PusherSocket, pusher_app
from tests.support import call, running, until

pytestmark = pytest.mark.integration

EVENTS = ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event", "cache_miss"]


class PusherSite(resource.Resource):
    """A site's webhook route: every request, with its Pusher headers."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []

    def render_POST(self, request: server.Request) -> bytes:
        self.requests.append({"key": request.getHeader(b"x-pusher-key"),
                              "signature": request.getHeader(b"x-pusher-signature"),
                              "body": request.content.read()})
        return b"{}"


@pytest_twisted.async_yield_fixture
async def site():
    receiver = PusherSite()
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.Site(receiver))
    receiver.url = f"http://127.0.0.1:{port.getHost().port}/pusher/webhook"
    yield receiver
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_pusher_webhooks_validate_with_the_library_and_tell_both_faces(site):
    sections = {"presence": {"leave_grace": 0.1}, "webhooks": {"batch_seconds": 0.05},
                "pusher": {"client_events": True}}
    async with running(**sections) as daemon:
        app = await pusher_app(daemon)
        auth = (app.name, app.secret)
        hook = {"url": site.url, "events": EVENTS, "format": "pusher"}
        status, body = await call("PUT", f"{daemon.api}/api/v1/webhook", hook, auth=auth)
        assert (status, body) == (200, hook)
        status, body = await call("GET", f"{daemon.api}/api/v1/webhook", auth=auth)
        assert (status, body) == (200, hook)
        client = pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret)

        ann, bob = [await PusherSocket.open(daemon, app.key) for _ in range(2)]
        for sock in (ann, bob):
            await sock.established()
        for sock, user in ((ann, "ann"), (bob, "bob")):
            sock.send("pusher:subscribe", {"channel": "presence-room",
                                           **client.authenticate("presence-room", sock.socket_id, {"user_id": user})})
            await sock.next_of("pusher_internal:subscription_succeeded")
        ann.send("client-wave", {"hi": 1}, "presence-room")
        await bob.next_of("client-wave")
        ann.send("pusher:subscribe", {"channel": "cache-x"})
        await ann.next_of("pusher:cache_miss")
        bob.close()
        ann.close()

        def told() -> list[dict[str, Any]]:
            events = []
            for request in site.requests:
                checked = client.validate_webhook(request["key"].decode(), request["signature"].decode(),
                                                  request["body"].decode())
                assert checked is not None, request
                events.extend(checked["events"])
            return events

        await until(lambda: sum(e["name"] == "channel_vacated" for e in told()) == 2)
        events = told()
        room = [(e["name"], e.get("user_id")) for e in events if e["channel"] == "presence-room"]
        assert room[0] == ("channel_occupied", None)
        assert room[-1] == ("channel_vacated", None)
        assert sorted(room[1:-1]) == sorted([("member_added", "ann"), ("member_added", "bob"),
                                             ("client_event", "ann"), ("member_removed", "ann"),
                                             ("member_removed", "bob")])
        (wave,) = [e for e in events if e["name"] == "client_event"]
        assert wave == {"name": "client_event", "channel": "presence-room", "event": "client-wave",
                        "data": '{"hi":1}', "socket_id": ann.socket_id, "user_id": "ann"}
        assert [(e["name"]) for e in events if e["channel"] == "cache-x"] == [
            "channel_occupied", "cache_miss", "channel_vacated"]
        # A forged one is refused by the same check.
        request = site.requests[0]
        assert client.validate_webhook(request["key"].decode(), "0" * 64, request["body"].decode()) is None


@pytest_twisted.ensureDeferred
async def test_a_webhook_format_is_checked():
    async with running() as daemon:
        app = await pusher_app(daemon)
        auth = (app.name, app.secret)
        for hook in ({"url": "http://127.0.0.1:1/h", "events": ["channel_occupied"], "format": "xml"},
                     {"url": "http://127.0.0.1:1/h", "events": ["center_occupied"], "format": "pusher"},
                     {"url": "http://127.0.0.1:1/h", "events": ["channel_occupied"]}):
            status, body = await call("PUT", f"{daemon.api}/api/v1/webhook", hook, auth=auth)
            assert status == 400 and body["error"] == "invalid_webhook", (hook, body)
