"""Webhooks: telling a publisher's site what happens (README.rst: Webhooks).

Each publisher has an ``Outbox``: its events wait in order, are gathered for
``batch_seconds`` into one POST (at most ``BATCH`` events), signed with the
publisher's secret, and sent with treq. One request per publisher is in
flight at a time, so events reach the site in the order they happened; a
request that fails (no 2xx within ``timeout``) is tried again, with the same
``Notifier-Webhook-Id``, after an exponential backoff with jitter, for
``retry_for`` seconds, then given up. At most ``max_queue`` events wait per
publisher: past that the oldest are dropped, counted and logged, so a site
down for an hour costs bounded memory.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import treq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from notifier.config import WebhooksConfig
from notifier.errors import BadRequest, NotifierError
from notifier.model import WEBHOOK_EVENTS, Publisher, Webhook
from notifier.stats import Stats

log = Logger()

#: Events in one request at most.
BATCH = 500
#: Backoff between attempts: the first, and the most, in seconds.
RETRY_FIRST, RETRY_MAX = 1.0, 60.0
#: Seconds a publisher's webhook, as read from the store, is trusted.
WEBHOOK_TTL = 2.0
#: The longest webhook URL.
MAX_URL = 2048
#: Seconds between two log lines about a publisher's full queue.
LOG_EVERY = 60.0


def webhook_of(body: Any) -> Webhook:
    """The webhook a ``PUT /api/v1/webhook`` body describes (400 if it describes none)."""
    if not isinstance(body, dict) or set(body) - {"url", "events"}:
        raise BadRequest('expected {"url": "http(s)://...", "events": [...]}', code="invalid_webhook")
    url, events = body.get("url"), body.get("events")
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise BadRequest("url must be an http or https URL", code="invalid_webhook")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # a port out of range raises here
    except ValueError:
        raise BadRequest("url must be an http or https URL", code="invalid_webhook") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise BadRequest("url must be an http or https URL", code="invalid_webhook")
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise BadRequest(f"events must be a list of: {', '.join(WEBHOOK_EVENTS)}", code="invalid_webhook")
    unknown = sorted(set(events) - set(WEBHOOK_EVENTS))
    if unknown:
        raise BadRequest(f"unknown events {unknown}; known: {', '.join(WEBHOOK_EVENTS)}", code="invalid_webhook")
    return Webhook(url, tuple(dict.fromkeys(events)))


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    return {"url": webhook.url, "events": list(webhook.events)}


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``Notifier-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


#: Sends one request: ``(url, body, headers, timeout)`` → the status.
Post = Callable[[str, bytes, dict[str, str], float], Awaitable[int]]


async def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    sent: dict[bytes | str, bytes | str] = {name: value for name, value in headers.items()}
    response = await treq.post(url, data=body, headers=sent, timeout=timeout, persistent=False)
    await treq.collect(response, lambda _: None)  # read and dropped: only the status counts
    return int(response.code)


class Outbox:
    """One publisher's events on their way to its site."""

    def __init__(self, webhooks: Webhooks, publisher: str) -> None:
        self.webhooks = webhooks
        self.publisher = publisher
        self.events: deque[dict[str, Any]] = deque()
        self._call: IDelayedCall | None = None
        self._sending = False
        #: Whether the store could not be read at the last try.
        self._stalled = False

    def add(self, event: dict[str, Any]) -> None:
        events = self.events
        if len(events) >= self.webhooks.config.max_queue:
            events.popleft()
            self.webhooks.dropped(self.publisher, 1)
        events.append(event)
        if self._call is None and not self._sending:
            self._later(self.webhooks.config.batch_seconds)

    def _later(self, delay: float) -> None:
        self._call = self.webhooks.clock.callLater(delay, self._send)

    def _send(self) -> None:
        self._call = None
        self._sending = True
        Deferred.fromCoroutine(self._deliver()).addErrback(
            lambda f: log.failure("webhook of {publisher}", f, publisher=self.publisher)
        ).addBoth(self._sent)

    def _sent(self, _: object) -> None:
        self._sending = False
        if self.events and self._call is None:
            self._later(self.webhooks.config.batch_seconds)
        elif not self.events:
            self.webhooks.idle(self)

    async def _deliver(self) -> None:
        """Send what waits, one batch after the other, each until it is
        accepted or given up."""
        webhooks = self.webhooks
        while self.events:
            try:
                webhook, owner = await webhooks.destination(self.publisher)
            except NotifierError as e:  # the store is away: the events wait (bounded) for it
                if not self._stalled:
                    log.warn("webhook of {publisher} waits for the store: {error}",
                             publisher=self.publisher, error=e.message)
                self._stalled = True
                return
            self._stalled = False
            if webhook is None or owner is None:
                webhooks.dropped(self.publisher, len(self.events), quietly=True)
                self.events.clear()
                return
            wanted = set(webhook.events)
            taken = [event for _, event in zip(range(BATCH), self.events, strict=False)]
            batch = [event for event in taken if event["name"] in wanted]
            if batch:
                await self._attempt(webhook.url, owner, batch)
            # What was taken is at the head still, but for what a full queue dropped meanwhile.
            done = {id(event) for event in taken}
            while self.events and id(self.events[0]) in done:
                self.events.popleft()

    async def _attempt(self, url: str, owner: Publisher, batch: list[dict[str, Any]]) -> None:
        webhooks = self.webhooks
        clock = webhooks.clock
        body = json.dumps({"events": batch}, ensure_ascii=False).encode()
        request_id = uuid.uuid4().hex
        first = clock.seconds()
        attempt = 0
        while True:
            headers = {"Content-Type": "application/json", "User-Agent": "notifier-webhook",
                       "Notifier-Webhook-Id": request_id,
                       "Notifier-Signature": signature(owner.secret, int(clock.seconds()), body)}
            try:
                status = await webhooks.post(url, body, headers, webhooks.config.timeout)
                failure = None if 200 <= status < 300 else f"HTTP {status}"
            except Exception as e:  # a refused connection, a timeout, a bad certificate...
                failure = f"{type(e).__name__}: {e}"
            if failure is None:
                webhooks.stats.webhooks_sent[self.publisher] += 1
                return
            delay = min(RETRY_MAX, RETRY_FIRST * 2 ** attempt) * random.uniform(0.5, 1.0)
            if clock.seconds() + delay - first > webhooks.config.retry_for:
                webhooks.stats.webhooks_failed[self.publisher] += 1
                log.warn("webhook of {publisher} given up after {attempts} attempts ({failure}); "
                         "{count} events lost", publisher=self.publisher, attempts=attempt + 1,
                         failure=failure, count=len(batch))
                return
            webhooks.stats.webhooks_retried[self.publisher] += 1
            attempt += 1
            waited: Deferred[None] = Deferred()
            clock.callLater(delay, waited.callback, None)
            await waited
            # The secret may have been rotated meanwhile: sign with the one in force.
            try:
                _, current = await webhooks.destination(self.publisher)
            except NotifierError:
                current = None  # the store is away: the one known
            if current is not None:
                owner = current


class Webhooks:
    """Every publisher's outbox, on this node."""

    def __init__(self, config: WebhooksConfig, clock: IReactorTime, stats: Stats,
                 find: Callable[[str], Awaitable[tuple[Webhook | None, Publisher | None]]],
                 send: Post = post) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats
        self.find = find
        self.post = send
        self.outboxes: dict[str, Outbox] = {}
        #: When a full queue was last logged, by publisher.
        self._logged: dict[str, float] = {}
        #: Publishers' webhooks (``None``: none) as last read, and when.
        self._known: dict[str, tuple[Webhook | None, Publisher | None, float]] = {}

    def event(self, publisher: str, name: str, center: str, fields: dict[str, Any]) -> None:
        """Queue an event for *publisher*'s site (if it wants it)."""
        known = self._known.get(publisher)
        if known is not None and self.clock.seconds() - known[2] < WEBHOOK_TTL and (
                known[0] is None or name not in known[0].events):
            return  # no webhook, or not for this event
        outbox = self.outboxes.get(publisher)
        if outbox is None:
            outbox = self.outboxes[publisher] = Outbox(self, publisher)
        outbox.add({"name": name, "center": center, "ts": self.clock.seconds(), **fields})

    async def destination(self, publisher: str) -> tuple[Webhook | None, Publisher | None]:
        """Where the publisher's events go and its secret, read again once ``WEBHOOK_TTL`` old."""
        now = self.clock.seconds()
        known = self._known.get(publisher)
        if known is None or now - known[2] >= WEBHOOK_TTL:
            webhook, owner = await self.find(publisher)
            known = self._known[publisher] = (webhook, owner, now)
        return known[0], known[1]

    def changed(self, publisher: str) -> None:
        """The publisher's webhook (or secret) changed: read it again."""
        self._known.pop(publisher, None)

    def dropped(self, publisher: str, count: int, quietly: bool = False) -> None:
        """*count* events dropped: from a full queue (counted, logged once a
        minute at most), or *quietly* (the publisher has no webhook now)."""
        if quietly:
            return
        self.stats.webhooks_dropped[publisher] += count
        now = self.clock.seconds()
        if now - self._logged.get(publisher, -LOG_EVERY) >= LOG_EVERY:
            self._logged[publisher] = now
            log.warn("webhook queue of {publisher} is full ({limit} events): the oldest are dropped "
                     "({total} so far)", publisher=publisher, limit=self.config.max_queue,
                     total=self.stats.webhooks_dropped[publisher])

    def idle(self, outbox: Outbox) -> None:
        if self.outboxes.get(outbox.publisher) is outbox:
            del self.outboxes[outbox.publisher]

    def waiting(self) -> dict[str, int]:
        """Events waiting, by publisher."""
        return {publisher: len(outbox.events) for publisher, outbox in self.outboxes.items()}
