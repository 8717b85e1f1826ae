"""Webhooks over real sockets: a site (a twisted.web resource in the test)
told of occupancy and members, in batches, signed, retried, in order, and
with bounded memory while it is down.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor
from twisted.web import resource, server

from tests.support import (
    Daemon,
    call,
    expect_json_error,
    make_center,
    opened,
    running,
    setup_site,
    sleep,
    subscriber_token,
    until,
    websocket,
)

pytestmark = pytest.mark.integration

GRACE = 0.3
FAST = {"presence": {"leave_grace": GRACE}, "webhooks": {"batch_seconds": 0.1, "timeout": 1}}
EVENTS = ["center_occupied", "center_vacated", "member_joined", "member_left"]


class Site(resource.Resource):
    """The site's webhook route: records each request; answers each status
    of ``statuses`` in turn (then 204)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []

    def render_POST(self, request: server.Request) -> bytes:
        body = request.content.read()
        status = self.statuses.pop(0) if self.statuses else 204
        self.requests.append({
            "id": request.getHeader(b"notifier-webhook-id").decode(),
            "signature": request.getHeader(b"notifier-signature").decode(),
            "type": request.getHeader(b"content-type").decode(),
            "body": body,
            "ok": 200 <= status < 300,
        })
        request.setResponseCode(status)
        return b""

    def accepted(self) -> list[dict[str, Any]]:
        """The events of the requests answered 2xx, in order (retries of one request once)."""
        seen, events = set(), []
        for entry in self.requests:
            if entry["id"] not in seen and entry["ok"]:
                seen.add(entry["id"])
                events.extend(json.loads(entry["body"])["events"])
        return events


@pytest_twisted.async_yield_fixture
async def site():
    receiver = Site()
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.Site(receiver))
    receiver.url = f"http://127.0.0.1:{port.getHost().port}/notifier/webhook"
    yield receiver
    await port.stopListening()


def verified(secret: str, entry: dict[str, Any], now: float) -> bool:
    """The documented check a site makes."""
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", entry["signature"])
    if match is None or abs(now - int(match[1])) > 300:
        return False
    expected = hmac.new(secret.encode(), match[1].encode() + b"." + entry["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match[2])


async def _hook(daemon: Daemon, auth: tuple[str, str], url: str, events: list[str] = EVENTS) -> None:
    status, body = await call("PUT", f"{daemon.api}/api/v1/webhook", {"url": url, "events": events}, auth=auth)
    assert (status, body) == (200, {"url": url, "events": events})


def _names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["name"], e["center"]) for e in events]


@pytest_twisted.ensureDeferred
async def test_a_webhook_is_set_read_replaced_and_removed_per_publisher():
    async with running() as daemon:
        auth = await setup_site(daemon)
        other = ("other", await daemon.add_publisher("other"))
        url = f"{daemon.api}/api/v1/webhook"
        status, body = await call("GET", url, auth=auth)
        expect_json_error(status, body, 404, "no_webhook")
        await _hook(daemon, auth, "https://site.example/notifier", ["center_vacated"])
        status, body = await call("GET", url, auth=auth)
        assert (status, body) == (200, {"url": "https://site.example/notifier", "events": ["center_vacated"]})
        expect_json_error(*await call("GET", url, auth=other), 404, "no_webhook")
        await _hook(daemon, auth, "http://127.0.0.1:8000/hook")
        assert (await call("GET", url, auth=auth))[1]["url"] == "http://127.0.0.1:8000/hook"
        for bad in ({"url": "ftp://site.example/", "events": EVENTS}, {"url": "site.example", "events": EVENTS},
                    {"url": "http://", "events": EVENTS}, {"url": "http://a b/", "events": EVENTS},
                    {"url": "https://site.example/", "events": ["center_exploded"]},
                    {"url": "https://site.example/", "events": []},
                    {"url": "https://site.example/", "events": "center_vacated"},
                    {"url": "https://site.example/"}, {"url": 7, "events": EVENTS},
                    {"url": "https://site.example/", "events": EVENTS, "extra": 1}, ["not", "an object"]):
            expect_json_error(*await call("PUT", url, bad, auth=auth), 400)
        status, body = await call("PUT", url, raw=b"{not json", auth=auth)
        expect_json_error(status, body, 400, "invalid_json")
        expect_json_error(*await call("PUT", url, {"url": "https://x.example/", "events": EVENTS}), 401)
        status, _ = await call("DELETE", url, auth=auth)
        assert status == 204
        expect_json_error(*await call("GET", url, auth=auth), 404, "no_webhook")
        status, _ = await call("DELETE", url, auth=auth)
        assert status == 204


@pytest_twisted.ensureDeferred
async def test_occupancy_and_members_reach_the_site_signed_and_in_order(site):
    async with running(**FAST) as daemon:
        auth = await setup_site(daemon, "news")
        await make_center(daemon, auth, "room.1", private=True, presence=True)
        await _hook(daemon, auth, site.url)
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        token = subscriber_token(auth[1], sub="room.1", uid="ann", info={"name": "Ann"})
        ann = await websocket(f"{daemon.ws}/sub/site/room.1?format=json&token={token}", daemon.public_port)
        await opened(ann)
        await until(lambda: len(site.accepted()) >= 3, timeout=10)
        ws.close()
        ann.close()
        await until(lambda: len(site.accepted()) >= 6, timeout=10)
        await sleep(GRACE * 2)
        events = site.accepted()
        assert sorted(_names(events[:3])) == [("center_occupied", "news"), ("center_occupied", "room.1"),
                                              ("member_joined", "room.1")]
        assert sorted(_names(events[3:])) == [("center_vacated", "news"), ("center_vacated", "room.1"),
                                              ("member_left", "room.1")]
        joined = next(e for e in events if e["name"] == "member_joined")
        assert joined["uid"] == "ann" and joined["info"] == {"name": "Ann"} and isinstance(joined["ts"], float)
        assert next(e for e in events if e["name"] == "member_left")["uid"] == "ann"
        # For one center: occupied before vacated; a join before its leave.
        names = [e["name"] for e in events if e["center"] == "room.1"]
        assert names.index("center_occupied") < names.index("center_vacated")
        assert names.index("member_joined") < names.index("member_left")
        # Gathered: fewer requests than events; each signed with the secret, a fresh id each.
        assert len(site.requests) < len(events)
        for entry in site.requests:
            assert entry["type"] == "application/json"
            assert verified(auth[1], entry, reactor.seconds())
            assert not verified("another secret" + auth[1], entry, reactor.seconds())
        assert len({entry["id"] for entry in site.requests}) == len(site.requests)


@pytest_twisted.ensureDeferred
async def test_only_the_events_asked_for_are_sent_and_occupancy_alternates(site):
    async with running(**FAST) as daemon:
        auth = await setup_site(daemon, "news")
        await _hook(daemon, auth, site.url, ["center_vacated"])
        for _ in range(3):
            ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
            # A long-poll chain and a reconnect within the grace: still one occupation.
            await call("GET", f"{daemon.public}/sub/site/news?timeout=0.1")
            ws.close()
            await sleep(GRACE / 3)
            ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
            ws.close()
            await sleep(GRACE * 3)
        await until(lambda: len(site.accepted()) >= 3, timeout=10)
        await sleep(0.3)
        assert _names(site.accepted()) == [("center_vacated", "news")] * 3


@pytest_twisted.ensureDeferred
async def test_a_failing_site_gets_the_same_request_again_until_it_takes_it(site):
    async with running(**FAST) as daemon:
        auth = await setup_site(daemon, "news")
        await _hook(daemon, auth, site.url)
        site.statuses = [500, 503]
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        await until(lambda: len(site.requests) >= 3, timeout=15)
        first, second, third = site.requests[:3]
        assert first["id"] == second["id"] == third["id"]
        assert first["body"] == second["body"] == third["body"]
        assert _names(json.loads(third["body"])["events"]) == [("center_occupied", "news")]
        ws.close()
        # What happened meanwhile comes after, in order.
        await until(lambda: len(site.requests) >= 4, timeout=10)
        assert _names(json.loads(site.requests[3]["body"])["events"]) == [("center_vacated", "news")]
        status, metrics = await daemon.admin("GET", "/metrics")
        assert b'notifier_webhook_retries_total{publisher="site"} 2.0' in metrics
        assert b'notifier_webhook_requests_sent_total{publisher="site"} 2.0' in metrics


@pytest_twisted.ensureDeferred
async def test_a_site_down_for_long_costs_bounded_memory_and_its_events_are_given_up(site):
    sections = {"presence": {"leave_grace": 0.05}, "webhooks": {"batch_seconds": 0.05, "timeout": 0.5,
                                                                "retry_for": 1.5, "max_queue": 5}}
    async with running(**sections) as daemon:
        auth = await setup_site(daemon, "news")
        await _hook(daemon, auth, site.url)
        site.statuses = [500] * 1000
        for _ in range(10):  # 20 events while the first request is being retried
            ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
            ws.close()
            await sleep(0.15)
        outboxes = daemon.service.webhooks.outboxes
        assert len(outboxes["site"].events) <= 5
        metrics_seen = b""

        async def failed() -> bool:
            nonlocal metrics_seen
            _, metrics_seen = await daemon.admin("GET", "/metrics")
            return re.search(rb'notifier_webhook_requests_failed_total\{publisher="site"\} [1-9]', metrics_seen) \
                is not None

        deadline = reactor.seconds() + 10
        while not await failed():
            assert reactor.seconds() < deadline, (len(site.requests), daemon.service.webhooks.stats)
            await sleep(0.2)
        dropped = re.search(rb'notifier_webhook_events_dropped_total\{publisher="site"\} (\d+)', metrics_seen)
        assert dropped is not None and int(dropped[1]) >= 10, metrics_seen
        # The site is back: what is still queued reaches it.
        site.statuses = []
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        await until(lambda: any(("center_occupied", "news") in _names(json.loads(r["body"])["events"])
                                for r in site.requests[-3:]), timeout=15)
        ws.close()


@pytest_twisted.ensureDeferred
async def test_a_removed_webhook_is_sent_nothing_more(site):
    async with running(**FAST) as daemon:
        auth = await setup_site(daemon, "news")
        await _hook(daemon, auth, site.url)
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        await until(lambda: len(site.requests) == 1, timeout=10)
        status, _ = await call("DELETE", f"{daemon.api}/api/v1/webhook", auth=auth)
        assert status == 204
        ws.close()
        await sleep(GRACE * 4)
        assert len(site.requests) == 1
