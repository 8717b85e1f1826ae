"""Webhooks: telling a publisher's site what happens (docs/protocol.rst: Webhooks).

Each publisher has an ``Outbox``: its events wait in order, are gathered for
``batch_seconds`` into one POST (at most ``BATCH`` events), signed with the
publisher's secret, and sent with Twisted's ``Agent``. One request per
publisher is in flight at a time, so events reach the site in the order they
happened; a request that fails (no 2xx within ``timeout``) is tried again,
with the same ``Notifier-Webhook-Id``, after an exponential backoff with
jitter, for ``retry_for`` seconds, then given up. Each attempt reads the
webhook and the secret from the store again. At most ``max_queue`` events
wait per publisher: past that the oldest are dropped, counted and logged, so
a site down for an hour costs bounded memory.

A site cannot cost the daemon more than ``ANSWER_BYTES`` of memory or
``timeout`` seconds per request: at most that much of its answer is read
(nothing asks for compression, no redirect is followed), and one deadline
covers the whole exchange, from the name's resolution to the body's end.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

from attrs import define, field
from hyperlink import URL
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from notifier.config import WebhooksConfig
from notifier.domain.errors import BadRequest, NotifierError
from notifier.domain.model import PUSHER_WEBHOOK_EVENTS, WEBHOOK_EVENTS, WEBHOOK_FORMATS, Publisher, Webhook
from notifier.domain.stats import Stats

log = Logger()

#: Events in one request at most.
BATCH = 500
#: Backoff between attempts: the first, and the most, in seconds.
RETRY_FIRST, RETRY_MAX = 1.0, 60.0
#: Seconds a publisher's webhook, as read from the store, decides which events are queued.
WEBHOOK_TTL = 2.0
#: The longest webhook URL.
MAX_URL = 2048
#: Seconds between two log lines about a publisher's full queue.
LOG_EVERY = 60.0


def webhook_of(body: Any) -> Webhook:
    """The webhook a ``PUT /api/v1/webhook`` body describes (400 if it describes none)."""
    if not isinstance(body, dict) or set(body) - {"url", "events", "format"}:
        raise BadRequest('expected {"url": "http(s)://...", "events": [...], "format"?: "notifier" | "pusher"}',
                         code="invalid_webhook")
    url, events, kind = body.get("url"), body.get("events"), body.get("format", "notifier")
    if kind not in WEBHOOK_FORMATS:
        raise BadRequest(f"format is one of: {', '.join(WEBHOOK_FORMATS)}", code="invalid_webhook")
    known = tuple(PUSHER_WEBHOOK_EVENTS) if kind == "pusher" else WEBHOOK_EVENTS
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise BadRequest("url must be an http or https URL", code="invalid_webhook")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # a port out of range raises here
    except ValueError:
        raise BadRequest("url must be an http or https URL", code="invalid_webhook") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise BadRequest("url must be an http or https URL", code="invalid_webhook")
    if "@" in parts.netloc:  # never sent, and a password would end up in log lines
        raise BadRequest("url must not hold a user or password: the signature authenticates",
                         code="invalid_webhook")
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise BadRequest(f"events must be a list of: {', '.join(known)}", code="invalid_webhook")
    unknown = sorted(set(events) - set(known))
    if unknown:
        raise BadRequest(f"unknown events {unknown}; known: {', '.join(known)}", code="invalid_webhook")
    return Webhook(url, tuple(dict.fromkeys(events)), kind)


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    described: dict[str, Any] = {"url": webhook.url, "events": list(webhook.events)}
    if webhook.format != "notifier":  # notifier's own format is what a webhook always was
        described["format"] = webhook.format
    return described


#: The node's event names as Pusher names them.
PUSHER_NAMES = {ours: theirs for theirs, ours in PUSHER_WEBHOOK_EVENTS.items()}


def pusher_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event as a Pusher webhook tells it."""
    told: dict[str, Any] = {"name": PUSHER_NAMES[event["name"]], "channel": event["center"]}
    if "uid" in event:
        told["user_id"] = event["uid"]
    for key in ("event", "data", "socket_id", "user_id"):
        if key in event:
            told[key] = event[key]
    return told


def request_of(webhook: Webhook, owner: Publisher, batch: list[dict[str, Any]], request_id: str,
               now: float) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a request telling *batch*, in the webhook's
    format, signed with the publisher's secret as that format signs."""
    headers = {"Content-Type": "application/json", "User-Agent": "notifier-webhook",
               "Notifier-Webhook-Id": request_id}
    if webhook.format == "pusher":
        body = json.dumps({"time_ms": int(now * 1000), "events": [pusher_event(event) for event in batch]},
                          ensure_ascii=False).encode()
        headers["X-Pusher-Key"] = owner.key
        headers["X-Pusher-Signature"] = hmac.new(owner.secret.encode(), body, hashlib.sha256).hexdigest()
        return body, headers
    body = json.dumps({"events": batch}, ensure_ascii=False).encode()
    headers["Notifier-Signature"] = signature(owner.secret, int(now), body)
    return body, headers


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``Notifier-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


#: Sends one request: ``(url, body, headers, timeout)`` → the status.
Post = Callable[[str, bytes, dict[str, str], float], Awaitable[int]]

#: Bytes of an answer read at most, its head included: only the status counts.
ANSWER_BYTES = 16 * 1024

#: IPv6 addresses that carry an IPv4 one, reached through a NAT64 gateway.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Refused(Exception):
    """The destination is an address ``allow_private = false`` refuses."""


class TimedOut(Exception):
    """The exchange did not end within ``timeout`` seconds."""


class TooLarge(Exception):
    """The answer's head alone is over ``ANSWER_BYTES``."""


def refusal(host: str) -> str | None:
    """Why ``allow_private = false`` refuses the IP address *host*, or
    ``None`` if it is a public unicast address."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal(str(embedded))
    checks = (("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("private", address.is_private), ("reserved", address.is_reserved),
              ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
              ("not global", not address.is_global))
    return next((reason for reason, refused in checks if refused), None)


@implementer(IBodyProducer)
class BytesBody:
    """A request body held in memory, written at once."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Bounded(ProtocolWrapper):
    """A connection that passes on ``ANSWER_BYTES`` of what it receives, then is aborted."""

    factory: _Connections

    def __init__(self, factory: _Connections, wrapped: IProtocol) -> None:
        super().__init__(factory, wrapped)
        self.left = ANSWER_BYTES
        self.full = self.lost = False

    def makeConnection(self, transport: Any) -> None:
        self.factory.made.append(self)
        super().makeConnection(transport)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def dataReceived(self, data: bytes) -> None:
        if self.full:
            return
        if len(data) >= self.left:
            data, self.full = data[:self.left], True
        self.left -= len(data)
        super().dataReceived(data)  # type: ignore[no-untyped-call]
        if self.full:
            self.abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    @property
    def closing(self) -> bool:
        """Whether it is closed, or closing by itself."""
        return self.lost or bool(cast(Any, self.transport).disconnecting)

    def abort(self) -> None:
        if not self.lost:
            cast(Any, self.transport).abortConnection()


class _Connections(WrappingFactory["_Bounded"]):
    """Wraps each connection of one exchange in ``_Bounded``, and keeps them."""

    protocol = _Bounded

    def __init__(self, wrapped: IProtocolFactory, made: list[_Bounded]) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.made = made


@implementer(IStreamClientEndpoint)
@define
class _BoundedEndpoint:
    """*endpoint*, its connections bounded and kept in *made*."""

    endpoint: IStreamClientEndpoint
    made: list[_Bounded]

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        def unwrapped(wrapper: Any) -> IProtocol:  # Agent wants its own protocol back
            protocol: IProtocol = wrapper.wrappedProtocol
            return protocol

        return self.endpoint.connect(_Connections(factory, self.made)).addCallback(unwrapped)


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects a name's addresses; ``done`` fires with them."""

    def __init__(self) -> None:
        #: IPv4Address and IPv6Address of twisted.internet.address.
        self.addresses: list[Any] = []
        self.done: Deferred[list[Any]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        if not self.done.called:  # else cancelled by the deadline
            self.done.callback(self.addresses)


@implementer(IStreamClientEndpoint)
@define
class _PublicEndpoint:
    """Connects to *host* only at a public address: the name is resolved
    (off the reactor thread, by the reactor's resolver), each address checked,
    and the connection made to the address checked, so that a name that
    changes its answer in between cannot slip through."""

    reactor: Any
    resolver: IHostnameResolver
    host: str
    port: int

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        addresses: list[Any]
        try:
            literal = ipaddress.ip_address(self.host)
        except ValueError:
            receiver = _Addresses()
            self.resolver.resolveHostName(receiver, self.host, self.port)
            addresses = await receiver.done
        else:
            address_kind = IPv6Address if literal.version == 6 else IPv4Address
            addresses = [address_kind("TCP", self.host, self.port)]
        if not addresses:
            raise DNSLookupError(self.host)
        allowed = [a for a in addresses if refusal(a.host) is None]
        if not allowed:
            first = addresses[0].host
            where = f"{self.host} is" if first == self.host else f"{self.host} is at {first}, which is"
            raise Refused(f"{where} {refusal(first)} (allow_private = false)")
        error: Exception = DNSLookupError(self.host)
        for address in allowed:
            kind = TCP6ClientEndpoint if isinstance(address, IPv6Address) else TCP4ClientEndpoint
            try:
                protocol: IProtocol = await kind(self.reactor, address.host, self.port).connect(factory)
                return protocol
            except ConnectError as e:  # refused, unreachable: the next address
                error = e
        raise error


@define
class _Endpoints:
    """Agent's endpoints for one exchange: TCP (and TLS for https) to the
    URL's host, as Agent makes them, or to its public addresses only."""

    sender: Sender
    made: list[_Bounded]

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii").removeprefix("[").removesuffix("]")
        reactor = self.sender.reactor
        endpoint: IStreamClientEndpoint
        if self.sender.allow_private:
            endpoint = HostnameEndpoint(reactor, host, uri.port)
        else:
            resolver = self.sender.resolver or reactor.nameResolver
            endpoint = _PublicEndpoint(reactor, resolver, host, uri.port)
        if uri.scheme == b"https":  # the name's certificate and SNI, whatever address is connected to
            endpoint = wrapClientTLS(self.sender.tls.creatorForNetloc(host.encode("ascii"), uri.port), endpoint)
        return _BoundedEndpoint(endpoint, self.made)


class _Reader(Protocol):
    """Reads an answer's body (``_Bounded`` bounds it) until it ends."""

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(None)


@define
class Sender:
    """The ``Post`` of a running daemon: one connection per request, no
    redirect followed, no compression asked for, at most ``ANSWER_BYTES``
    of the answer read, and one deadline over the whole exchange. Unless
    *allow_private*, only public addresses are connected to."""

    reactor: Any
    allow_private: bool = True
    #: Resolves names for the check of addresses (the reactor's by default).
    resolver: IHostnameResolver | None = None
    #: Which certificates are trusted: the system's, as a browser's.
    tls: IPolicyForHTTPS = field(factory=BrowserLikePolicyForHTTPS)
    _pool: HTTPConnectionPool = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._pool = HTTPConnectionPool(self.reactor, persistent=False)

    async def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        made: list[_Bounded] = []
        exchange = Deferred.fromCoroutine(self._exchange(url, body, headers, made))
        deadline = self.reactor.callLater(timeout, self._expire, exchange, made)
        try:
            return await exchange
        except Exception:
            if not deadline.active():  # it has passed: whatever the cancellation raised
                raise TimedOut(f"no complete answer within {timeout:g} s") from None
            raise
        finally:
            # A connection closing by itself has until the deadline; any other is aborted now.
            for connection in made:
                if not connection.closing:
                    connection.abort()
            if deadline.active() and all(connection.lost for connection in made):
                deadline.cancel()

    @staticmethod
    def _expire(exchange: Deferred[int], made: list[_Bounded]) -> None:
        exchange.cancel()
        for connection in made:
            connection.abort()

    async def _exchange(self, url: str, body: bytes, headers: dict[str, str], made: list[_Bounded]) -> int:
        agent = Agent.usingEndpointFactory(self.reactor, _Endpoints(self, made), self._pool)
        # A name or path beyond ASCII as IDNA and percent-escapes.
        uri = url.encode("ascii") if url.isascii() else URL.from_text(url).to_uri().to_text().encode("ascii")
        sent = Headers({name: [value] for name, value in headers.items()})
        try:
            response: IResponse = await agent.request(b"POST", uri, sent, BytesBody(body))
        except Exception:
            if any(connection.full for connection in made):
                raise TooLarge(f"the answer's head is over {ANSWER_BYTES} bytes") from None
            raise
        reader = _Reader()
        response.deliverBody(reader)
        await reader.done
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
            taken = [event for _, event in zip(range(BATCH), self.events, strict=False)]
            if webhook is None or owner is None or not await self._attempt(webhook, owner, taken):
                # No webhook now, or no publisher: nothing waits for them.
                webhooks.dropped(self.publisher, len(self.events), quietly=True)
                self.events.clear()
                return
            # What was taken is at the head still, but for what a full queue dropped meanwhile.
            done = {id(event) for event in taken}
            while self.events and id(self.events[0]) in done:
                self.events.popleft()

    async def _attempt(self, webhook: Webhook, owner: Publisher, taken: list[dict[str, Any]]) -> bool:
        """Send the events of *taken* the webhook wants until the site takes
        them or they are given up; ``False`` if the webhook or its publisher
        is removed meanwhile. Each retry goes where the webhook is then, with
        the events it wants then, signed with the secret in force then."""
        webhooks = self.webhooks
        clock = webhooks.clock
        request_id = uuid.uuid4().hex
        first = clock.seconds()
        attempt = 0
        while True:
            batch = [event for event in taken if webhook.wants(event["name"])]
            if not batch:
                return True
            body, headers = request_of(webhook, owner, batch, request_id, clock.seconds())
            try:
                status = await webhooks.post(webhook.url, body, headers, webhooks.config.timeout)
                failure = None if 200 <= status < 300 else f"HTTP {status}"
            except Refused as e:  # allow_private = false
                failure = str(e)
                log.warn("webhook of {publisher} not sent: {failure}", publisher=self.publisher, failure=failure)
            except Exception as e:  # a refused connection, a timeout, a bad certificate...
                failure = f"{type(e).__name__}: {e}"
            if failure is None:
                webhooks.stats.webhooks_sent[self.publisher] += 1
                return True
            delay = min(RETRY_MAX, RETRY_FIRST * 2 ** attempt) * random.uniform(0.5, 1.0)
            if clock.seconds() + delay - first > webhooks.config.retry_for:
                webhooks.stats.webhooks_failed[self.publisher] += 1
                log.warn("webhook of {publisher} given up after {attempts} attempts ({failure}); "
                         "{count} events lost", publisher=self.publisher, attempts=attempt + 1,
                         failure=failure, count=len(batch))
                return True
            webhooks.stats.webhooks_retried[self.publisher] += 1
            attempt += 1
            waited: Deferred[None] = Deferred()
            clock.callLater(delay, waited.callback, None)
            await waited
            try:
                current = await webhooks.destination(self.publisher)
            except NotifierError:
                continue  # the store is away: where it was, with the secret known
            if current[0] is None or current[1] is None:
                return False
            webhook, owner = current[0], current[1]


class Webhooks:
    """Every publisher's outbox, on this node."""

    def __init__(self, config: WebhooksConfig, clock: IReactorTime, stats: Stats,
                 find: Callable[[str], Awaitable[tuple[Webhook | None, Publisher | None]]],
                 send: Post | None = None) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats
        self.find = find
        #: The reactor sends, unless a test gives its own.
        self.post: Post = send if send is not None else Sender(clock, config.allow_private)
        self.outboxes: dict[str, Outbox] = {}
        #: When a full queue was last logged, by publisher.
        self._logged: dict[str, float] = {}
        #: Publishers' webhooks (``None``: none) as last read, and when: which
        #: events are queued at all (a delivery reads them again).
        self._known: dict[str, tuple[Webhook | None, Publisher | None, float]] = {}

    def event(self, publisher: str, name: str, center: str, fields: dict[str, Any]) -> None:
        """Queue an event for *publisher*'s site (if it wants it)."""
        known = self._known.get(publisher)
        if known is not None and self.clock.seconds() - known[2] < WEBHOOK_TTL and (
                known[0] is None or not known[0].wants(name)):
            return  # no webhook, or not for this event
        outbox = self.outboxes.get(publisher)
        if outbox is None:
            outbox = self.outboxes[publisher] = Outbox(self, publisher)
        outbox.add({"name": name, "center": center, "ts": self.clock.seconds(), **fields})

    async def destination(self, publisher: str) -> tuple[Webhook | None, Publisher | None]:
        """Where the publisher's events go and its secret, read from the
        store for each attempt: a retry never goes where the webhook no
        longer points, nor is signed with a secret no longer in force."""
        webhook, owner = await self.find(publisher)
        self._known[publisher] = (webhook, owner, self.clock.seconds())
        return webhook, owner

    def changed(self, publisher: str) -> None:
        """The publisher's webhook (or secret) changed: read it again."""
        self._known.pop(publisher, None)

    def removed(self, publisher: str) -> None:
        """The publisher is gone: its events waiting for its site are not sent."""
        self.changed(publisher)
        self._logged.pop(publisher, None)
        outbox = self.outboxes.pop(publisher, None)
        if outbox is not None:
            outbox.events.clear()

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
