"""The site's end of the webhooks: a receiver that sometimes fails, and
what is checked of what it was sent.

``Receiver`` is an HTTP server of the harness's own on loopback (a
``twisted.web`` site): each request is checked (its signature, under the
publisher's secret), answered 200 most of the time, 500 sometimes, or
left hanging until the daemon gives up on it (``[webhooks] timeout``);
``down()`` stops listening (refused connections) until ``up()``.

``WebhookLedger`` keeps what was handled, once per ``Notifier-Webhook-Id``
(as a site should: the id is the same on every retry), and judges it
(``judge``): every request eventually handled, no id handled twice after it
was answered 200 (reported), occupied/vacated alternating per center and
joined/left per member, and, for the centers whose occupancy the harness
drives itself (``occupancy``), each occupied and vacated reported at least
once. A departure from these within a fault window is reported as
excused where the documentation says the fault may cause it (a failover
may repeat an event; a daemon stopping loses the events it held).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections import defaultdict
from typing import Any

import attrs
from twisted.internet import defer, endpoints, reactor
from twisted.internet.interfaces import IListeningPort
from twisted.web import resource, server

#: What a request is answered, by chance: 200, 500, or no answer at all.
FAIL_SHARE = 0.04
HANG_SHARE = 0.03
#: Seconds by which the events of an occupancy may miss its bounds.
SLACK = 1.5

#: Faults after which the documentation lets events be lost (those a stopped
#: daemon held), or reported again (what a failed-over master had not passed on).
LOSING = {"daemon-kill9", "daemon-sigterm", "sqlite-kill-mid-batch"}
MISSING = LOSING | {"redis-master-kill", "redis-net-cut"}
REPEATING = {"redis-master-kill", "redis-replica-kill", "daemon-kill9", "daemon-sigterm", "redis-net-cut",
             "sqlite-kill-mid-batch"}


@attrs.define(slots=True)
class Request:
    t: float
    site: str
    webhook_id: str
    answer: str          # "200", "500", "hang"
    signed: bool
    events: list[dict[str, Any]]


class WebhookLedger:
    def __init__(self, leave_grace: float) -> None:
        self.leave_grace = leave_grace
        self.requests: list[Request] = []
        #: webhook id -> when it was first answered 200.
        self.handled: dict[str, float] = {}
        self.first_seen: dict[str, float] = {}
        self.repeats_after_handled = 0
        self.bad_signatures = 0
        #: Events handled (once per webhook id), with the site they were for.
        self.events: list[dict[str, Any]] = []
        #: center -> [[start, end]]: when the harness had a subscriber on it.
        self.occupancy: dict[str, list[list[float]]] = defaultdict(list)

    def request(self, t: float, site: str, webhook_id: str, answer: str, signed: bool,
                events: list[dict[str, Any]]) -> None:
        self.requests.append(Request(t, site, webhook_id, answer, signed, []))
        self.first_seen.setdefault(webhook_id, t)
        if not signed:
            self.bad_signatures += 1
        if answer != "200":
            return
        if webhook_id in self.handled:
            self.repeats_after_handled += 1
            return
        self.handled[webhook_id] = t
        for event in events:
            self.events.append({**event, "site": site, "received": t})

    def occupied(self, center: str, start: float, end: float) -> None:
        self.occupancy[center].append([start, end])

    def judge(self, faults: list[tuple[float, float, str]], end: float,
              sites: dict[str, set[str]] | None = None, t0: float = 0.0) -> dict[str, Any]:
        """*faults*: ``(start, end, kind)`` of each fault; *end*: when the
        run stopped (events still owed later are not judged); *sites*: the
        fault kinds that can touch each site (default: all); times in the
        verdict are from *t0*."""

        def near(site: str, t0_: float, t1_: float, kinds: set[str]) -> bool:
            touching = kinds if sites is None or site not in sites else kinds & sites[site]
            return _near(faults, t0_, t1_, touching)

        def stopped_holding(site: str, at: float) -> bool:
            """Whether a daemon of *site* stopped while an event of time
            *at* could still be waiting in it: after *at*, and before any
            later event of the site was handled (a site's requests go one
            at a time, in order, so a later one handled first means it was
            sent, or dropped, already)."""
            touching = LOSING if sites is None or site not in sites else LOSING & sites[site]
            later = [e["received"] for e in self.events if e["site"] == site and e["ts"] > at + SLACK]
            until = min(later) if later else float("inf")
            return any(kind in touching and at - 2 <= start <= until for start, _, kind in faults)

        verdict: dict[str, Any] = {
            "requests": len(self.requests),
            "answered": {answer: sum(1 for r in self.requests if r.answer == answer)
                         for answer in ("200", "500", "hang")},
            "ids": len(self.first_seen), "handled": len(self.handled),
            "repeats_after_handled": self.repeats_after_handled,
            "bad_signatures": self.bad_signatures, "events": len(self.events),
            "never_handled": [], "alternation": [], "missing": [], "excused": [],
        }
        site_of = {r.webhook_id: r.site for r in self.requests}
        for webhook_id, t in sorted(self.first_seen.items(), key=lambda item: item[1]):
            if webhook_id not in self.handled:
                entry = {"webhook_id": webhook_id, "site": site_of.get(webhook_id), "first_seen": round(t - t0, 2)}
                # Tried again until handled, unless its daemon stopped first.
                (verdict["excused"] if near(site_of.get(webhook_id, ""), t - 2, end + 600, LOSING)
                 else verdict["never_handled"]).append(entry)
        # Alternation, by center (occupied/vacated) and by member (joined/left).
        series: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for event in self.events:
            name = event.get("name", "")
            if name in ("center_occupied", "center_vacated"):
                series[(event["site"], event["center"], "", "center")].append(event)
            elif name in ("member_joined", "member_left"):
                series[(event["site"], event["center"], str(event.get("uid")), "member")].append(event)
        for (site, center, uid, _), events in series.items():
            events.sort(key=lambda e: e["ts"])
            previous = None
            for event in events:
                name = event["name"]
                if previous is not None and previous["name"] == name:
                    entry = {"site": site, "center": center, "uid": uid or None, "event": name,
                             "ts": round(event["ts"] - t0, 2)}
                    # A failover may repeat an event; a daemon stopping
                    # while the one between was waiting in it loses it.
                    excused = near(site, previous["ts"] - 2, event["ts"] + 2, REPEATING) \
                        or stopped_holding(site, previous["ts"])
                    (verdict["excused"] if excused else verdict["alternation"]).append(entry)
                previous = event
        # At least once, on the centers the harness occupied itself.
        for center, spans in self.occupancy.items():
            site, name = center.split("/", 1)
            merged = _merge(sorted(spans), self.leave_grace + SLACK)
            events = sorted((e for e in self.events if e["site"] == site and e["center"] == name
                             and e["name"] in ("center_occupied", "center_vacated")), key=lambda e: e["ts"])
            for i, (start, stop, clear) in enumerate(merged):
                if not clear:
                    continue
                following = merged[i + 1][0] if i + 1 < len(merged) else end
                checks = [("center_occupied", start - SLACK, stop + SLACK)]
                if stop + self.leave_grace + 2 * SLACK < min(following, end):
                    checks.append(("center_vacated", stop, following + SLACK))
                for event_name, lo, hi in checks:
                    if not any(e["name"] == event_name and lo <= e["ts"] <= hi for e in events):
                        entry = {"site": site, "center": name, "event": event_name, "from": round(start - t0, 2),
                                 "to": round(stop - t0, 2)}
                        at = start if event_name == "center_occupied" else stop + self.leave_grace
                        excused = near(site, start - 2, stop + self.leave_grace + 10, MISSING) \
                            or stopped_holding(site, at)
                        (verdict["excused"] if excused else verdict["missing"]).append(entry)
        return verdict


def failures(verdict: dict[str, Any]) -> list[str]:
    failed = []
    for field, what in (("never_handled", "webhook requests never handled"), ("alternation", "events out of turn"),
                        ("missing", "occupancy events missing"), ("bad_signatures", "bad signatures")):
        value = verdict[field]
        count = value if isinstance(value, int) else len(value)
        if count:
            failed.append(f"{count} {what}")
    return failed


def _near(faults: list[tuple[float, float, str]], t0: float, t1: float, kinds: set[str]) -> bool:
    """Whether a fault of *kinds* overlapped [t0, t1] (with its aftermath)."""
    return any(kind in kinds and start <= t1 and stop + 15 >= t0 for start, stop, kind in faults)


def _merge(spans: list[list[float]], gap: float) -> list[tuple[float, float, bool]]:
    """Spans joined where the center was left empty for less than *gap*;
    each with whether the gaps around it are clearly longer than that
    (and so owed an occupied and a vacated of its own)."""
    merged: list[list[float]] = []
    for start, stop in spans:
        if merged and start - merged[-1][1] <= gap:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    result = []
    for i, (start, stop) in enumerate(merged):
        before = start - merged[i - 1][1] if i else float("inf")
        after = merged[i + 1][0] - stop if i + 1 < len(merged) else float("inf")
        result.append((start, stop, before > gap + 2 * SLACK and after > gap + 2 * SLACK))
    return result


class _Hook(resource.Resource):
    isLeaf = True

    def __init__(self, receiver: Receiver) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.receiver = receiver

    def render_POST(self, request: Any) -> Any:
        return self.receiver.received(request)


class Receiver:
    """The sites' webhook endpoint: ``/hook/{site}`` for each site."""

    def __init__(self, ledger: WebhookLedger, rng: random.Random, port: int) -> None:
        self.ledger = ledger
        self.rng = rng
        self.port_number = port
        self.secrets: dict[str, str] = {}
        self.port: IListeningPort | None = None
        self.hanging: set[Any] = set()
        root = resource.Resource()
        root.putChild(b"hook", _Hook(self))
        self.site = server.Site(root)
        self.site.noisy = False
        self.site.log = lambda request: None  # type: ignore[method-assign]

    def url(self, site: str) -> str:
        return f"http://127.0.0.1:{self.port_number}/hook/{site}"

    async def up(self) -> None:
        if self.port is None:
            self.port = await endpoints.TCP4ServerEndpoint(reactor, self.port_number, interface="127.0.0.1") \
                .listen(self.site)

    async def down(self) -> None:
        """Refuse connections (the site is down), dropping those open."""
        if self.port is not None:
            port, self.port = self.port, None
            await defer.maybeDeferred(port.stopListening)
        for request in list(self.hanging):
            request.channel.transport.abortConnection()
        self.hanging.clear()

    def received(self, request: Any) -> Any:
        site = request.postpath[0].decode() if request.postpath else ""
        body = request.content.read()
        webhook_id = (request.getHeader("notifier-webhook-id") or "")
        signature = request.getHeader("notifier-signature") or ""
        signed = _genuine(signature, body, self.secrets.get(site, ""))
        try:
            events = json.loads(body)["events"]
        except (ValueError, KeyError, TypeError):
            events = []
        draw = self.rng.random()
        answer = "500" if draw < FAIL_SHARE else "hang" if draw < FAIL_SHARE + HANG_SHARE else "200"
        self.ledger.request(reactor.seconds(), site, webhook_id, answer, signed, events)
        if answer == "hang":
            self.hanging.add(request)
            request.notifyFinish().addBoth(lambda _: self.hanging.discard(request))
            return server.NOT_DONE_YET
        request.setResponseCode(int(answer))
        request.setHeader(b"content-type", b"text/plain")
        return b"ok\n" if answer == "200" else b"failed on purpose\n"


def _genuine(header: str, body: bytes, secret: str) -> bool:
    """The documented check of ``Notifier-Signature`` (docs/protocol.rst, Webhooks)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields["v1"])
    except (ValueError, KeyError):
        return False

