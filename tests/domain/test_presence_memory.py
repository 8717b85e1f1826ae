"""Presence and webhooks in memory, on a Clock: the grace, the alternation
of events whatever the order of comings and goings, and the outbox's
batching, retries, give-up and bound."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from notifier.config import WebhooksConfig
from notifier.domain.hub import Hub
from notifier.domain.model import Center, Publisher, Webhook
from notifier.domain.presence import LocalDirectory, Presence
from notifier.domain.stats import Stats
from notifier.webhooks import BATCH, Webhooks, signature
from tests.support import Told

GRACE = 5.0


def _world(clock: Clock) -> tuple[Hub, Presence, list[tuple[str, str, dict[str, Any]]]]:
    events: list[tuple[str, str, dict[str, Any]]] = []
    hubs: dict[tuple[str, str], Hub] = {}
    presence = Presence(LocalDirectory(), clock, GRACE, lambda p, c: hubs.get((p, c)), lambda event: None,
                        lambda publisher, name, center, fields: events.append((name, center, fields)), "n1")
    hub = Hub(Center("site", "room", True, None, None, 0.0, "e", True), "e", 10, clock.seconds, watcher=presence)
    hubs["site", "room"] = hub
    return hub, presence, events


def _settle(clock: Clock, presence: Presence, seconds: float = GRACE + 1) -> None:
    for _ in range(int(seconds * 4)):
        clock.advance(0.25)
        presence.sweep()


def test_a_member_is_welcomed_with_the_room_then_told_of_others():
    clock = Clock()
    hub, presence, events = _world(clock)
    ann = Told()
    hub.subscribe(ann, ("ann", {"name": "Ann"}))
    assert ann.items == []  # not before it has sent where it starts: next turn
    clock.advance(0)
    assert ann.items == [{"presence": "members", "center": "room",
                          "members": [{"uid": "ann", "info": {"name": "Ann"}}]}]
    bob = Told()
    hub.subscribe(bob, ("bob", None))
    clock.advance(0)
    assert ann.items[-1] == {"presence": "join", "center": "room", "uid": "bob", "info": None}
    assert [i["presence"] for i in bob.items] == ["members"]  # its own join is in the list already
    hub.unsubscribe(bob)
    _settle(clock, presence, GRACE - 1)
    assert ann.items[-1]["presence"] == "join"  # within the grace: not gone yet
    _settle(clock, presence, 2)
    assert ann.items[-1] == {"presence": "leave", "center": "room", "uid": "bob"}
    assert [(name, fields.get("uid")) for name, _, fields in events] == [
        ("center_occupied", None), ("member_joined", "ann"), ("member_joined", "bob"), ("member_left", "bob")]
    hub.unsubscribe(ann)
    _settle(clock, presence)
    assert [name for name, _, _ in events][-2:] == ["member_left", "center_vacated"]
    assert presence.rosters == {}  # nothing kept of a center nobody is in


operations = st.lists(st.one_of(
    st.tuples(st.just("come"), st.integers(0, 5), st.sampled_from(["ann", "bob", "cid"])),
    st.tuples(st.just("go"), st.integers(0, 5), st.just("")),
    st.tuples(st.just("wait"), st.sampled_from([0.5, 2.0, GRACE + 0.5]), st.just("")),
), max_size=40)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_events_alternate_and_end_where_the_subscribers_are(ops):
    clock = Clock()
    hub, presence, events = _world(clock)
    connections: dict[int, Told] = {}
    for op, n, uid in ops:
        if op == "come" and n not in connections:
            connections[n] = Told()
            hub.subscribe(connections[n], (uid, None))
        elif op == "go" and n in connections:
            hub.unsubscribe(connections.pop(n))
        elif op == "wait":
            _settle(clock, presence, n)
        clock.advance(0)
    _settle(clock, presence)
    # Per center: occupied, vacated, occupied... never two of a kind in a row.
    occupancy = [name for name, _, _ in events if name.startswith("center_")]
    assert occupancy == ["center_occupied", "center_vacated"] * (len(occupancy) // 2) + \
        (["center_occupied"] if len(occupancy) % 2 else [])
    assert (len(occupancy) % 2 == 1) == bool(connections)
    # Per uid: joined, left, joined...
    present = {s for s in (hub.members.get(c) for c in connections.values()) if s}
    for uid in ("ann", "bob", "cid"):
        mine = [name for name, _, fields in events if fields.get("uid") == uid]
        assert mine == ["member_joined", "member_left"] * (len(mine) // 2) + \
            (["member_joined"] if len(mine) % 2 else [])
        assert (len(mine) % 2 == 1) == (uid in present)
    # Every connection's view of the room ends where the room is.
    for told in connections.values():
        seen: set[str] = set()
        for item in told.items:
            if item["presence"] == "members":
                seen = {m["uid"] for m in item["members"]}
            elif item["presence"] == "join":
                seen.add(item["uid"])
            else:
                seen.discard(item["uid"])
        assert seen == present


# the outbox


class Site:
    """A fake site: answers each status of ``statuses`` (then 204), or
    never (a Deferred left waiting) when given ``None``."""

    def __init__(self, statuses: list[int | None] | None = None) -> None:
        self.statuses = statuses or []
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Deferred[int]:
        self.requests.append((url, json.loads(body), headers))
        status = self.statuses.pop(0) if self.statuses else 204
        if status is None:
            return Deferred()
        return succeed(status)


def _webhooks(clock: Clock, site: Site, **config: Any) -> Webhooks:
    hook = Webhook("https://site.example/hook", ("center_occupied", "center_vacated", "member_left"))
    owner = Publisher("site", "s" * 43, 0.0, "1", "k" * 20)

    async def find(publisher: str) -> tuple[Webhook | None, Publisher | None]:
        return (hook, owner) if publisher == "site" else (None, None)

    async def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        return await site.post(url, body, headers, timeout)

    settings_ = {"batch_seconds": 1, "timeout": 5, "retry_for": 600, **config}
    return Webhooks(WebhooksConfig(**settings_), clock, Stats(started=0.0), find, post)


def test_events_are_gathered_signed_and_only_those_asked_for_are_sent():
    clock, site = Clock(), Site()
    webhooks = _webhooks(clock, site)
    webhooks.event("site", "center_occupied", "a", {})
    webhooks.event("site", "member_joined", "a", {"uid": "ann", "info": None})  # not asked for
    webhooks.event("site", "center_vacated", "a", {})
    webhooks.event("nobody", "center_vacated", "a", {})  # no webhook
    assert site.requests == []
    clock.advance(1)
    [(url, body, headers)] = site.requests
    assert url == "https://site.example/hook"
    assert [(e["name"], e["center"]) for e in body["events"]] == [("center_occupied", "a"), ("center_vacated", "a")]
    timestamp = int(headers["Notifier-Signature"].split(",")[0][2:])
    assert headers["Notifier-Signature"] == signature("s" * 43, timestamp, json.dumps(body).encode())
    assert webhooks.outboxes == {}
    assert webhooks.stats.webhooks_sent["site"] == 1


def test_a_failing_request_is_retried_with_backoff_then_given_up_and_the_rest_goes_on():
    clock, site = Clock(), Site([500] * 7)
    webhooks = _webhooks(clock, site, retry_for=60)
    webhooks.event("site", "center_occupied", "a", {})
    clock.advance(1)
    times = [clock.seconds()]
    for _ in range(20):
        clock.advance(0.25)
        if len(site.requests) > len(times):
            times.append(clock.seconds())
    while len(site.requests) < 7 and clock.seconds() < 200:
        clock.advance(0.25)
        if len(site.requests) > len(times):
            times.append(clock.seconds())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # Exponential with jitter: each gap within [base/2, base], base doubling from one second.
    for attempt, gap in enumerate(gaps):
        base = min(60.0, 2.0 ** attempt)
        assert base / 2 - 0.25 <= gap <= base + 0.25, (attempt, gaps)
    assert len({headers["Notifier-Webhook-Id"] for _, _, headers in site.requests}) == 1
    # Past retry_for, given up: counted, and what follows is sent.
    clock.advance(120)
    assert webhooks.stats.webhooks_failed["site"] == 1
    webhooks.event("site", "center_vacated", "a", {})
    clock.advance(2)
    assert site.requests[-1][1]["events"][0]["name"] == "center_vacated"
    assert site.requests[-1][2]["Notifier-Webhook-Id"] != site.requests[0][2]["Notifier-Webhook-Id"]


def test_a_full_queue_drops_its_oldest_events_and_order_holds():
    clock, site = Clock(), Site([None])  # the first request hangs
    webhooks = _webhooks(clock, site, max_queue=3)
    webhooks.event("site", "center_occupied", "a", {})
    clock.advance(1)
    for center in "bcdef":
        webhooks.event("site", "center_occupied", center, {})
    assert [e["center"] for e in webhooks.outboxes["site"].events] == ["d", "e", "f"]
    assert webhooks.stats.webhooks_dropped["site"] == 3  # a (in flight) and b, c


def test_a_long_queue_goes_in_batches_in_order():
    clock, site = Clock(), Site()
    webhooks = _webhooks(clock, site)
    for n in range(BATCH * 2 + 10):
        webhooks.event("site", "center_vacated", f"c{n}", {})
    clock.advance(1)
    clock.advance(1)
    clock.advance(1)
    sent = [e["center"] for _, body, _ in site.requests for e in body["events"]]
    assert sent == [f"c{n}" for n in range(BATCH * 2 + 10)]
    assert [len(body["events"]) for _, body, _ in site.requests] == [BATCH, BATCH, 10]
