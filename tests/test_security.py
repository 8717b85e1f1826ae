"""The security rules of README.rst, each checked where it lives: on the wire.

Request signing, private centers and their tokens on every transport,
origins, tokens kept out of logs, all-or-nothing batches, Idempotency-Key,
TLS listeners, and secrets kept out of answers and readable by their owner
only. Signatures and tokens are computed here, independently of
``notifier.auth``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import json
import math
import os
import stat
import time
from typing import Any, Iterator

import jwt
import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import defer, endpoints, reactor, ssl
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.task import Clock
from twisted.logger import eventAsJSON, eventAsText, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from notifier.api import ApiApp
from notifier.broker import LocalBroker
from notifier.config import parse_config
from notifier.idempotency import IdempotencyKeys
from notifier.metrics import Metrics
from notifier.registry import HubRegistry
from tests.memory_store import MemoryStore
from tests.support import (
    ADMIN_TOKEN, WebSocket, _Client, basic, call, config_text, event_source, handshake_headers, sleep,
    start_daemon, websocket,
)

#: Every wait on the network is bounded by this many seconds.
WAIT = 10

SCHEME = "Notifier-HMAC-SHA256"


# helpers


def _bounded(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    d.addTimeout(seconds, reactor)
    return d


async def _call(method: str, url: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    """``tests.support.call``, bounded in time."""
    return await _bounded(Deferred.fromCoroutine(call(method, url, body, **kwargs)))


def _error(status: int, body: Any, expected: int) -> dict[str, str]:
    """Assert the documented JSON error of status *expected*; the decoded body."""
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and body["error"], body
    return body


def _sign(secret: str, method: str, target: str, timestamp: int | str, body: bytes) -> str:
    """The documented request signature, computed from its text."""
    signed = f"{method}\n{target}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode("utf-8"), signed.encode("utf-8"), hashlib.sha256).hexdigest()


def _signature_header(publisher: str, timestamp: int | str, signature: str) -> str:
    return f"{SCHEME} publisher={publisher}, timestamp={timestamp}, signature={signature}"


def _signed_headers(publisher: str, secret: str, method: str, target: str, body: bytes = b"",
                    timestamp: int | None = None, **headers: str) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = _sign(secret, method, target, timestamp, body)
    return {"Authorization": _signature_header(publisher, timestamp, signature), **headers}


async def _signed(daemon: Any, method: str, target: str, body: bytes = b"", *, publisher: str,
                  secret: str, **headers: str) -> tuple[int, Any]:
    """A request to the api listener signed over exactly what is sent."""
    sent = _signed_headers(publisher, secret, method, target, body, **headers)
    return await _call(method, daemon.api + target, raw=body or None, headers=sent)


def _token(secret: str, *, lifetime: float | None = 60, key: str | None = None, **claims: Any) -> str:
    """A subscriber token: HS256 with *secret* (or another *key*), expiring in *lifetime* s."""
    if lifetime is not None:
        claims["exp"] = int(time.time() + lifetime)
    return jwt.encode(claims, (key if key is not None else secret).encode("utf-8"), algorithm="HS256")


def _unsigned_token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, None, algorithm="none")


async def _center(daemon: Any, auth: tuple[str, str], name: str, **options: Any) -> None:
    status, body = await _call("PUT", f"{daemon.api}/api/v1/centers/{name}", options or None, auth=auth)
    assert status == 201, body


async def _publish(daemon: Any, auth: tuple[str, str], center: str, text: str,
                   **headers: str) -> tuple[int, Any]:
    return await _call("POST", f"{daemon.api}/api/v1/centers/{center}/messages", raw=text.encode(),
                       auth=auth, headers={"Content-Type": "text/plain; charset=utf-8", **headers})


async def _published(daemon: Any, auth: tuple[str, str], center: str, text: str) -> str:
    status, body = await _publish(daemon, auth, center, text)
    assert status == 201, body
    return body["id"]


async def _batch(daemon: Any, auth: tuple[str, str], document: Any, **headers: str) -> tuple[int, Any]:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return await _call("POST", f"{daemon.api}/api/v1/messages", raw=raw, auth=auth,
                       headers={"Content-Type": "application/json", **headers})


class _Log:
    """Every event Twisted's global log publisher emits while installed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def texts(self) -> Iterator[str]:
        """Each event as a text log, a JSON log and its traceback would hold it."""
        for event in self.events:
            yield formatEvent(event)
            yield eventAsText(event, includeTraceback=True, includeTimestamp=False, includeSystem=True)
            yield eventAsJSON(event)
            failure = event.get("log_failure")
            if isinstance(failure, Failure):
                yield failure.getTraceback()

    def assert_absent(self, *secrets: str) -> None:
        for text in self.texts():
            for secret in secrets:
                assert secret not in text, text


@contextlib.contextmanager
def _captured_log() -> Iterator[_Log]:
    log = _Log()
    globalLogPublisher.addObserver(log)
    try:
        yield log
    finally:
        globalLogPublisher.removeObserver(log)


def _now(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class _InMemoryApi:
    """The api listener's app over a MemoryStore and a Clock, through StubTreq."""

    #: A whole second, so that window edges are exact.
    START = 1_700_000_000

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(self.START)
        config = parse_config(config_text("sqlite::memory:"))
        self.registry = HubRegistry(MemoryStore(), LocalBroker(), config.centers, self.clock)
        self.app = ApiApp(self.registry, config, self.clock, Metrics(self.registry, self.clock))
        self.http = StubTreq(self.app.resource())

    def request(self, method: str, target: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        d = self.http.request(method, "http://127.0.0.1:8081" + target, data=body or None,
                              headers=headers or {})
        self.http.flush()
        response = _now(d)
        content = self.http.content(response)
        self.http.flush()
        data = _now(content)
        self.clock.advance(0)  # the fan-out of what the request published
        kind = response.headers.getRawHeaders(b"content-type", [b""])[0]
        return response.code, json.loads(data) if kind.startswith(b"application/json") else data

    def add_publisher(self, name: str) -> str:
        status, body = self.request("POST", "/admin/v1/publishers", json.dumps({"name": name}).encode(),
                                    {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 201, body
        return body["secret"]


class _Recorder:
    """A subscriber as a hub sees it: what was delivered."""

    transport_name = "websocket"

    def __init__(self) -> None:
        self.delivered: list[str] = []

    def deliver(self, batch: Any) -> None:
        self.delivered.extend(message.data for message in batch.messages)

    def close(self, reason: str) -> None:
        pass


async def _no_more(ws: WebSocket, daemon: Any, auth: tuple[str, str], center: str) -> None:
    """Assert *ws* received nothing else: the next thing it gets is a fresh marker."""
    await _published(daemon, auth, center, "marker")
    assert await ws.next() == "marker"


# request signing


@pytest_twisted.ensureDeferred
async def test_signed_requests_are_accepted_on_every_publisher_route(daemon):
    secret = await daemon.add_publisher("site")
    sign = {"publisher": "site", "secret": secret}
    # A center name percent-encoded on the wire, and a query: signed as sent.
    status, body = await _signed(daemon, "PUT", "/api/v1/centers/chat%3Aroom?x=1",
                                 b'{"history": 10}', **sign, **{"Content-Type": "application/json"})
    assert status == 201, body
    assert body["name"] == "chat:room"
    status, body = await _signed(daemon, "GET", "/api/v1/centers/chat%3Aroom", **sign)
    assert status == 200 and body["path"] == "site/chat:room", body
    status, body = await _signed(daemon, "GET", "/api/v1/centers?x=1&y=%41", **sign)
    assert status == 200 and [c["name"] for c in body["centers"]] == ["chat:room"], body

    ws = await websocket(f"{daemon.ws}/sub/site/chat:room", daemon.public_port)
    status, body = await _signed(daemon, "POST", "/api/v1/centers/chat%3Aroom/messages",
                                 "héllo".encode(), **sign, **{"Content-Type": "text/plain; charset=utf-8"})
    assert status == 201, body
    assert await ws.next() == "héllo"
    # An empty message: its body hashes as SHA-256 of nothing.
    status, body = await _signed(daemon, "POST", "/api/v1/centers/chat%3Aroom/messages?y=2", b"", **sign)
    assert status == 201, body
    assert await ws.next() == ""
    batch = json.dumps({"messages": [{"center": "chat:room", "data": "one"},
                                     {"center": "chat:room", "data": "two"}]}).encode()
    status, body = await _signed(daemon, "POST", "/api/v1/messages", batch, **sign,
                                 **{"Content-Type": "application/json"})
    assert status == 201 and len(body["ids"]) == 2, body
    assert [await ws.next(), await ws.next()] == ["one", "two"]
    status, body = await _signed(daemon, "DELETE", "/api/v1/centers/chat%3Aroom", **sign)
    assert status == 204, body
    await _bounded(ws.closed)


@pytest_twisted.ensureDeferred
async def test_signed_requests_that_do_not_match_what_is_sent_are_401(daemon):
    secret = await daemon.add_publisher("site")
    other = await daemon.add_publisher("other")
    auth = ("site", secret)
    await _center(daemon, auth, "chat:room")
    target = "/api/v1/centers/chat%3Aroom/messages"
    text = b"the real text"

    def header(*, key: str = secret, method: str = "POST", signed_target: str = target,
               body: bytes = text, skew: int = 0, publisher: str = "site") -> dict[str, str]:
        # Taken as the request leaves, rounded away from the server's clock.
        timestamp = (math.ceil if skew > 0 else math.floor)(time.time()) + skew
        signature = _sign(key, method, signed_target, timestamp, body)
        return {"Authorization": _signature_header(publisher, timestamp, signature),
                "Content-Type": "text/plain"}

    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    refused = {
        "wrong secret": ("POST", target, lambda: header(key=wrong)),
        "another publisher's secret": ("POST", target, lambda: header(key=other)),
        "body changed after signing": ("POST", target, lambda: header(body=b"the real text!")),
        "body signed as empty": ("POST", target, lambda: header(body=b"")),
        "path decoded": ("POST", "/api/v1/centers/chat:room/messages", header),
        "query added": ("POST", target + "?x=1", header),
        "query changed": ("POST", target + "?x=2", lambda: header(signed_target=target + "?x=1")),
        "method changed": ("PUT", "/api/v1/centers/chat%3Aroom",
                           lambda: header(signed_target="/api/v1/centers/chat%3Aroom")),
        "method lowercase": ("POST", target, lambda: header(method="post")),
        "301 s in the past": ("POST", target, lambda: header(skew=-301)),
        "301 s in the future": ("POST", target, lambda: header(skew=301)),
        "unknown publisher": ("POST", target, lambda: header(publisher="nobody")),
    }
    for why, (method, sent_target, headers) in refused.items():
        status, body = await _call(method, daemon.api + sent_target, raw=text, headers=headers())
        assert status == 401, (why, status, body)
        _error(status, body, 401)
    # Nothing was published, nor the center changed.
    status, body = await _call("GET", f"{daemon.public}/sub/site/chat:room/last")
    assert status == 204, body
    # The same request, signed right, passes.
    status, body = await _call("POST", daemon.api + target, raw=text, headers=header())
    assert status == 201, body


@pytest_twisted.ensureDeferred
async def test_malformed_signature_headers_are_401(daemon):
    secret = await daemon.add_publisher("site")
    await _center(daemon, ("site", secret), "news")
    target = "/api/v1/centers/news"
    now = int(time.time())
    good = _sign(secret, "GET", target, now, b"")
    fractional = _sign(secret, "GET", target, f"{now}.0", b"")
    malformed = [
        f"{SCHEME} publisher=site, timestamp={now}",
        f"{SCHEME} publisher=site, signature={good}",
        f"{SCHEME} timestamp={now}, signature={good}",
        _signature_header("site", now, good.upper()),
        _signature_header("site", f"{now}.0", fractional),  # signed as sent, yet not an integer
        _signature_header("site", "soon", _sign(secret, "GET", target, "soon", b"")),
        _signature_header("site", now, good[:-1]),
        f"{SCHEME} publisher=nobody, publisher=site, timestamp={now}, signature={good}",
        f"{SCHEME} publisher=site, timestamp={now}, timestamp={now}, signature={good}",
        f"{SCHEME} publisher=site, timestamp={now}, signature={good}, signature={good}",
        f"{SCHEME} publisher=site, timestamp={now}, signature={good}, extra=1",
        f"{SCHEME} garbage",
        f"{SCHEME}",
        f"{SCHEME} ,,,",
        f"{SCHEME} publisher site timestamp {now} signature {good}",
        f"Notifier-HMAC-SHA1 publisher=site, timestamp={now}, signature={good}",
    ]
    for authorization in malformed:
        status, body = await _call("GET", daemon.api + target, headers={"Authorization": authorization})
        assert status == 401, (authorization, body)
        _error(status, body, 401)
    # The well-formed one passes: the refusals above were for their form.
    status, body = await _call("GET", daemon.api + target,
                               headers={"Authorization": _signature_header("site", now, good)})
    assert status == 200, body


@pytest_twisted.ensureDeferred
async def test_the_admin_token_is_no_publisher_credential_and_basic_still_works(daemon):
    secret = await daemon.add_publisher("site")
    await _center(daemon, ("site", secret), "news")
    now = int(time.time())
    as_admin = (
        f"Bearer {ADMIN_TOKEN}",
        basic("site", ADMIN_TOKEN),
        basic(ADMIN_TOKEN, ADMIN_TOKEN),
        _signature_header("site", now, _sign(ADMIN_TOKEN, "GET", "/api/v1/centers", now, b"")),
    )
    for authorization in as_admin:
        for method, target in (("GET", "/api/v1/centers"), ("POST", "/api/v1/centers/news/messages")):
            status, body = await _call(method, daemon.api + target, raw=b"x",
                                       headers={"Authorization": authorization, "Content-Type": "text/plain"})
            _error(status, body, 401)
    # Basic and signed requests side by side, for the same publisher.
    assert await _published(daemon, ("site", secret), "news", "by basic")
    status, body = await _signed(daemon, "POST", "/api/v1/centers/news/messages", b"signed",
                                 publisher="site", secret=secret)
    assert status == 201, body
    status, body = await _call("GET", f"{daemon.public}/sub/site/news/last")
    assert (status, body) == (200, b"signed")


def test_signature_timestamps_are_accepted_within_300_seconds_exactly():
    api = _InMemoryApi()
    secret = api.add_publisher("site")
    now = _InMemoryApi.START

    nonces = iter(range(100))

    def get(timestamp: int) -> int:
        # Each request its own: a signature is accepted once.
        target = f"/api/v1/centers?nonce={next(nonces)}"
        headers = _signed_headers("site", secret, "GET", target, timestamp=timestamp)
        status, body = api.request("GET", target, headers=headers)
        if status != 200:
            _error(status, body, 401)
        return status

    assert get(now) == 200
    assert get(now - 300) == 200
    assert get(now + 300) == 200
    assert get(now - 301) == 401
    assert get(now + 301) == 401
    # The window moves with the server's clock, not with the client's.
    signed_at = now
    api.clock.advance(300)
    assert get(signed_at) == 200
    api.clock.advance(1)
    assert get(signed_at) == 401


# private centers


TRANSPORTS = ("websocket", "sse", "longpoll", "last")


async def _read(daemon: Any, transport: str, path: str) -> tuple[int, Any]:
    """One request on *transport* that must be refused (or, for long-poll and
    ``/last``, answered at once)."""
    if transport == "websocket":
        return await _call("GET", daemon.public + path, headers=handshake_headers())
    if transport == "sse":
        return await _call("GET", daemon.public + path, headers={"Accept": "text/event-stream"})
    if transport == "longpoll":
        return await _call("GET", daemon.public + path + ("&" if "?" in path else "?") + "timeout=0")
    base, mark, query = path.partition("?")
    return await _call("GET", daemon.public + base + "/last" + mark + query)


def _with_token(path: str, token: str | None) -> str:
    return path if token is None else f"{path}?token={token}"


async def _private_setup(daemon: Any) -> tuple[str, str]:
    secret = await daemon.add_publisher("site")
    other = await daemon.add_publisher("other")
    for name in ("user.17.inbox", "user.18.inbox"):
        await _center(daemon, ("site", secret), name, private=True)
    await _center(daemon, ("site", secret), "news")
    await _center(daemon, ("other", other), "user.17.inbox", private=True)
    return secret, other


@pytest_twisted.ensureDeferred
async def test_private_centers_refuse_missing_and_bad_tokens_on_every_transport(daemon):
    secret, other = await _private_setup(daemon)
    center = "user.17.inbox"
    await _published(daemon, ("site", secret), center, "private text")
    refused = {
        "no token": None,
        "empty token": "",
        "expired": _token(secret, lifetime=-5, sub=center),
        "forged": _token(secret, key="k" * 43, sub=center),
        "alg none": _unsigned_token(sub=center),
        "alg none, centers": _unsigned_token(centers=[center]),
        "another center": _token(secret, sub="user.18.inbox"),
        "another user's glob": _token(secret, centers=["user.18.*"]),
        "a glob that is no prefix": _token(secret, centers=["*.inbox"]),
        "without exp": _token(secret, lifetime=None, sub=center),
        "another publisher's, same center name": _token(other, sub=center),
        "garbage": "not.a.jwt",
    }
    for why, token in refused.items():
        for transport in TRANSPORTS:
            status, body = await _read(daemon, transport, _with_token(f"/sub/site/{center}", token))
            assert status == 401, (why, transport, status, body)
            _error(status, body, 401)
            assert "private text" not in json.dumps(body)
    # A token for one user's centers never opens another's.
    glob = _token(secret, centers=["user.17.*"])
    for transport in TRANSPORTS:
        status, body = await _read(daemon, transport, _with_token("/sub/site/user.18.inbox", glob))
        _error(status, body, 401)
    # The other publisher's own token opens its own center, and only that.
    status, body = await _read(daemon, "last", _with_token(f"/sub/other/{center}", _token(other, sub=center)))
    assert status == 204, body
    status, body = await _read(daemon, "last", _with_token(f"/sub/site/{center}", _token(other, sub=center)))
    _error(status, body, 401)


@pytest_twisted.ensureDeferred
async def test_a_valid_token_opens_a_private_center_on_every_transport(daemon):
    secret, _ = await _private_setup(daemon)
    center = "user.17.inbox"
    by_sub = _token(secret, sub=center)
    by_glob = _token(secret, centers=["user.18.inbox", "user.17.*"])
    ws = await websocket(f"{daemon.ws}/sub/site/{center}?token={by_sub}", daemon.public_port)
    es = await event_source(daemon.public_port, f"/sub/site/{center}?token={by_glob}")
    assert es.status == 200
    assert "retry" in await es.next()
    poll = _bounded(treq.get(f"{daemon.public}/sub/site/{center}?timeout=5&token={by_glob}",
                             persistent=False))
    await sleep(0.2)  # the long-poll is waiting
    message_id = await _published(daemon, ("site", secret), center, "for user 17")
    assert await ws.next() == "for user 17"
    event = await es.next()
    assert (event["id"], event["data"]) == (message_id, "for user 17")
    response = await poll
    assert response.code == 200
    assert [m["data"] for m in json.loads(await response.content())["messages"]] == ["for user 17"]
    status, body = await _call("GET", f"{daemon.public}/sub/site/{center}/last?token={by_sub}")
    assert (status, body) == (200, b"for user 17")
    status, body = await _call("GET", f"{daemon.public}/sub/site/{center}/last?token={by_glob}&callback=cb")
    assert (status, body) == (200, b'/**/cb("for user 17");')
    es.close()
    ws.close()
    await _bounded(ws.closed)


@pytest_twisted.ensureDeferred
async def test_public_centers_need_no_token(daemon):
    secret, _ = await _private_setup(daemon)
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    es = await event_source(daemon.public_port, "/sub/site/news")
    assert es.status == 200
    await es.next()  # retry
    await _published(daemon, ("site", secret), "news", "for everyone")
    assert await ws.next() == "for everyone"
    assert (await es.next())["data"] == "for everyone"
    status, body = await _read(daemon, "longpoll", "/sub/site/news")
    assert status == 200 and body["messages"] == [], body
    status, body = await _read(daemon, "last", "/sub/site/news")
    assert (status, body) == (200, b"for everyone")
    es.close()


@pytest_twisted.ensureDeferred
async def test_tokens_signed_with_a_rotated_secret_are_refused(daemon):
    secret, _ = await _private_setup(daemon)
    center = "user.17.inbox"
    old = _token(secret, sub=center)
    status, _ = await _read(daemon, "last", _with_token(f"/sub/site/{center}", old))
    assert status == 204
    status, body = await daemon.admin("POST", "/admin/v1/publishers/site/rotate")
    assert status == 200, body
    new_secret = body["secret"]
    assert new_secret != secret
    for transport in TRANSPORTS:
        status, body = await _read(daemon, transport, _with_token(f"/sub/site/{center}", old))
        assert status == 401, (transport, body)
        _error(status, body, 401)
    new = _token(new_secret, sub=center)
    status, _ = await _read(daemon, "last", _with_token(f"/sub/site/{center}", new))
    assert status == 204
    status, body = await _read(daemon, "longpoll", _with_token(f"/sub/site/{center}", new))
    assert status == 200, body
    ws = await websocket(f"{daemon.ws}/sub/site/{center}?token={new}", daemon.public_port)
    await _published(daemon, ("site", new_secret), center, "after rotation")
    assert await ws.next() == "after rotation"


# origins


SITE = "https://site.test"
EVIL = "https://evil.test"


def _cors_headers(headers: Any) -> dict[bytes, list[bytes]]:
    return {name.lower(): values for name, values in headers.getAllRawHeaders()
            if name.lower().startswith(b"access-control-")}


@pytest_twisted.ensureDeferred
async def test_websocket_handshakes_from_other_origins_are_403():
    daemon = await start_daemon(public={"allowed_origins": [SITE]})
    try:
        secret = await daemon.add_publisher("site")
        await _center(daemon, ("site", secret), "news")
        for origin in (EVIL, "https://site.test.evil.test", "http://site.test", "null"):
            status, body = await _call("GET", f"{daemon.public}/sub/site/news",
                                       headers={**handshake_headers(), "Origin": origin})
            assert status == 403, (origin, body)
            _error(status, body, 403)
        allowed = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port, {"Origin": SITE})
        no_origin = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        await _published(daemon, ("site", secret), "news", "hello")
        assert await allowed.next() == "hello"
        assert await no_origin.next() == "hello"
    finally:
        await daemon.service.stopService()


@pytest_twisted.ensureDeferred
async def test_http_answers_carry_cors_headers_for_allowed_origins_only():
    daemon = await start_daemon(public={"allowed_origins": [SITE]})
    try:
        secret = await daemon.add_publisher("site")
        await _center(daemon, ("site", secret), "news")
        await _published(daemon, ("site", secret), "news", "latest")

        async def get(path: str, origin: str | None, **headers: str) -> Any:
            if origin is not None:
                headers["Origin"] = origin
            response = await _bounded(treq.get(daemon.public + path, headers=headers, persistent=False))
            await _bounded(response.content())
            return response

        for path in ("/sub/site/news?timeout=0", "/sub/site/news/last"):
            response = await get(path, EVIL)
            assert response.code in (200, 204), path  # answered...
            assert _cors_headers(response.headers) == {}, path  # ...but not for a page of that origin
            response = await get(path, SITE)
            assert response.code in (200, 204), path
            assert response.headers.getRawHeaders(b"access-control-allow-origin") == [SITE.encode()], path
            response = await get(path, None)
            assert response.code in (200, 204), path

        es = await event_source(daemon.public_port, "/sub/site/news", {"Origin": EVIL})
        assert es.status == 200
        assert not [name for name in es.headers if name.startswith(b"access-control-")]
        es.close()
        es = await event_source(daemon.public_port, "/sub/site/news", {"Origin": SITE})
        assert es.status == 200
        assert es.headers[b"access-control-allow-origin"] == SITE.encode()
        es.close()

        response = await _bounded(treq.request(
            "OPTIONS", f"{daemon.public}/sub/site/news", persistent=False,
            headers={"Origin": SITE, "Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "Last-Event-ID"}))
        await _bounded(response.content())
        assert response.code == 204
        cors = _cors_headers(response.headers)
        assert cors[b"access-control-allow-origin"] == [SITE.encode()]
        assert b"GET" in cors[b"access-control-allow-methods"][0]
        assert b"last-event-id" in cors[b"access-control-allow-headers"][0].lower()
        response = await _bounded(treq.request(
            "OPTIONS", f"{daemon.public}/sub/site/news", persistent=False,
            headers={"Origin": EVIL, "Access-Control-Request-Method": "GET"}))
        await _bounded(response.content())
        assert b"access-control-allow-origin" not in _cors_headers(response.headers)
    finally:
        await daemon.service.stopService()


# tokens never logged


@pytest_twisted.ensureDeferred
async def test_subscriber_tokens_never_reach_the_log(daemon, monkeypatch):
    secret, _ = await _private_setup(daemon)
    center = "user.17.inbox"
    path = f"/sub/site/{center}"
    valid = _token(secret, sub=center)
    wrong = _token(secret, sub="user.18.inbox")
    tokens = (valid, wrong)
    with _captured_log() as log:
        # valid, on every transport
        ws = await websocket(f"{daemon.ws}{path}?token={valid}", daemon.public_port)
        es = await event_source(daemon.public_port, f"{path}?token={valid}")
        assert es.status == 200
        await _published(daemon, ("site", secret), center, "x")
        assert await ws.next() == "x"
        es.close()
        ws.close()
        await _bounded(ws.closed)
        for transport in ("longpoll", "last"):
            status, _ = await _read(daemon, transport, f"{path}?token={valid}")
            assert status == 200
        # invalid, on every transport
        for transport in TRANSPORTS:
            status, _ = await _read(daemon, transport, f"{path}?token={wrong}")
            assert status == 401
        # refused for something else than the token
        status, _ = await _call("GET", f"{daemon.public}{path}?token={valid}&callback=1bad")
        assert status == 400
        status, _ = await _call("GET", f"{daemon.public}{path}?token={valid}",
                                headers={**handshake_headers(), "Sec-WebSocket-Version": "99"})
        assert status >= 400

        # and failing inside the server, which logs the failure
        async def failing(self: Any, publisher: str, name: str) -> Any:
            raise RuntimeError("the store is gone")

        monkeypatch.setattr(HubRegistry, "hub", failing)
        for transport in TRANSPORTS:
            for token in tokens:
                status, body = await _read(daemon, transport, f"{path}?token={token}")
                _error(status, body, 500)
        monkeypatch.undo()
        await sleep(0.1)  # closing connections log what they log
    texts = list(log.texts())
    assert any("the store is gone" in text for text in texts), "no failure was logged"
    for token in tokens:
        log.assert_absent(token, token.rsplit(".", 1)[1])


# batch publish


@pytest_twisted.ensureDeferred
async def test_a_batch_is_published_in_order_to_several_centers(daemon):
    secret = await daemon.add_publisher("site")
    auth = ("site", secret)
    for name in ("a", "b"):
        await _center(daemon, auth, name)
    ws_a = await websocket(f"{daemon.ws}/sub/site/a?format=json", daemon.public_port)
    ws_b = await websocket(f"{daemon.ws}/sub/site/b?format=json", daemon.public_port)
    entries = [("a", "1"), ("b", "2"), ("a", "3"), ("b", "4"), ("a", "5")]
    status, body = await _batch(daemon, auth, {"messages": [{"center": c, "data": d} for c, d in entries]})
    assert status == 201, body
    assert set(body) == {"ids"} and len(body["ids"]) == len(entries)
    ids = dict(zip([d for _, d in entries], body["ids"]))
    got_a = [json.loads(await ws_a.next()) for _ in range(3)]
    got_b = [json.loads(await ws_b.next()) for _ in range(2)]
    assert [(m["data"], m["id"], m["center"]) for m in got_a] == [(d, ids[d], "a") for d in ("1", "3", "5")]
    assert [(m["data"], m["id"], m["center"]) for m in got_b] == [(d, ids[d], "b") for d in ("2", "4")]
    status, body = await _call("GET", f"{daemon.public}/sub/site/a/last")
    assert body == b"5"


@pytest_twisted.ensureDeferred
async def test_a_refused_batch_publishes_nothing(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}", centers={"max_message_bytes": 16})
    try:
        secret = await daemon.add_publisher("site")
        auth = ("site", secret)
        for name in ("a", "b"):
            await _center(daemon, auth, name)
        ws_a = await websocket(f"{daemon.ws}/sub/site/a", daemon.public_port)
        ws_b = await websocket(f"{daemon.ws}/sub/site/b", daemon.public_port)
        good = [{"center": "a", "data": "ok a"}, {"center": "b", "data": "ok b"}]
        refused: list[tuple[int, Any]] = [
            (400, {"messages": good + [{"center": "a"}]}),
            (400, {"messages": good + [{"data": "no center"}]}),
            (400, {"messages": good + [{"center": "a", "data": 5}]}),
            (400, {"messages": good + [{"center": "a", "data": None}]}),
            (400, {"messages": good + [{"center": 7, "data": "x"}]}),
            (400, {"messages": good + [{"center": "a", "data": "x", "extra": 1}]}),
            (400, {"messages": good + [{"center": "bad name", "data": "x"}]}),
            (400, {"messages": good + [{"center": "", "data": "x"}]}),
            (400, {"messages": good + ["just text"]}),
            (400, {"messages": good + [["a", "x"]]}),
            (404, {"messages": good + [{"center": "nowhere", "data": "x"}]}),
            (404, {"messages": [{"center": "nowhere", "data": "x"}] + good}),
            (413, {"messages": good + [{"center": "b", "data": "x" * 17}]}),
            (413, {"messages": good + [{"center": "b", "data": "é" * 9}]}),  # 18 bytes
            (400, {"messages": []}),
            (400, {"messages": {"center": "a", "data": "x"}}),
            (400, {"messages": "x"}),
            (400, {"messages": good, "extra": True}),
            (400, {}),
            (400, []),
            (400, good),
            (400, "messages"),
            (400, None),
            (400, b"{not json"),
            (400, b""),
        ]
        for expected, document in refused:
            status, body = await _batch(daemon, auth, document)
            assert status == expected, (document, status, body)
            _error(status, body, expected)
        for name in ("a", "b"):
            status, body = await _call("GET", f"{daemon.public}/sub/site/{name}/last")
            assert status == 204, (name, body)
            status, body = await _call("GET", f"{daemon.api}/api/v1/centers/{name}", auth=auth)
            assert body["last_id"] is None, body
        await _no_more(ws_a, daemon, auth, "a")
        await _no_more(ws_b, daemon, auth, "b")
        # exactly max_message_bytes is accepted
        status, body = await _batch(daemon, auth, {"messages": [{"center": "a", "data": "x" * 16}]})
        assert status == 201, body
        assert await ws_a.next() == "x" * 16
    finally:
        await daemon.service.stopService()


# Idempotency-Key


@pytest_twisted.ensureDeferred
async def test_a_retried_publish_with_the_same_key_is_answered_and_not_delivered(daemon):
    secret = await daemon.add_publisher("site")
    other = await daemon.add_publisher("other")
    auth = ("site", secret)
    await _center(daemon, auth, "news")
    await _center(daemon, ("other", other), "news")
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    ws_other = await websocket(f"{daemon.ws}/sub/other/news", daemon.public_port)
    key = {"Idempotency-Key": "order-42"}

    status, first = await _publish(daemon, auth, "news", "once", **key)
    assert status == 201, first
    for _ in range(2):
        status, again = await _publish(daemon, auth, "news", "once", **key)
        assert status == 200, again
        assert again["id"] == first["id"]
    assert await ws.next() == "once"
    await _no_more(ws, daemon, auth, "news")

    # another publisher's key space is its own
    status, body = await _publish(daemon, ("other", other), "news", "theirs", **key)
    assert status == 201, body
    assert await ws_other.next() == "theirs"
    # another key publishes
    status, body = await _publish(daemon, auth, "news", "once", **{"Idempotency-Key": "order-43"})
    assert status == 201 and body["id"] != first["id"], body
    assert await ws.next() == "once"

    # batches alike
    batch = {"messages": [{"center": "news", "data": "b1"}, {"center": "news", "data": "b2"}]}
    status, first = await _batch(daemon, auth, batch, **{"Idempotency-Key": "batch-1"})
    assert status == 201, first
    status, again = await _batch(daemon, auth, batch, **{"Idempotency-Key": "batch-1"})
    assert status == 200 and again["ids"] == first["ids"], again
    assert [await ws.next(), await ws.next()] == ["b1", "b2"]
    await _no_more(ws, daemon, auth, "news")
    status, body = await _call("GET", f"{daemon.public}/sub/site/news?since={first['ids'][0]}&timeout=0")
    assert [m["data"] for m in body["messages"]] == ["b2", "marker"]


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_with_the_same_key_deliver_once(daemon):
    secret = await daemon.add_publisher("site")
    auth = ("site", secret)
    await _center(daemon, auth, "news")
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)

    key = {"Idempotency-Key": "same-time"}
    # All in flight at once, none waiting for another's answer.
    requests = [Deferred.fromCoroutine(_publish(daemon, auth, "news", "concurrent", **key)) for _ in range(4)]
    answers = await _bounded(defer.gatherResults(requests))
    assert sorted(status for status, _ in answers) == [200, 200, 200, 201], answers
    assert len({body["id"] for _, body in answers}) == 1, answers
    assert await ws.next() == "concurrent"
    await _no_more(ws, daemon, auth, "news")


@pytest_twisted.ensureDeferred
async def test_a_failed_publish_is_not_remembered(daemon):
    secret = await daemon.add_publisher("site")
    auth = ("site", secret)
    key = {"Idempotency-Key": "early"}
    status, body = await _publish(daemon, auth, "later", "too soon", **key)
    _error(status, body, 404)
    status, body = await _batch(daemon, auth, {"messages": [{"center": "later", "data": "x"}]},
                                **{"Idempotency-Key": "early-batch"})
    _error(status, body, 404)
    await _center(daemon, auth, "later")
    ws = await websocket(f"{daemon.ws}/sub/site/later", daemon.public_port)
    status, body = await _publish(daemon, auth, "later", "in time", **key)
    assert status == 201, body
    assert await ws.next() == "in time"
    status, body = await _batch(daemon, auth, {"messages": [{"center": "later", "data": "x"}]},
                                **{"Idempotency-Key": "early-batch"})
    assert status == 201, body
    assert await ws.next() == "x"


def test_a_retry_while_the_first_publish_is_in_flight_waits_and_failures_are_forgotten():
    keys = IdempotencyKeys(Clock())
    gate: Deferred[None] = Deferred()
    runs: list[str] = []

    async def publish() -> str:
        runs.append("published")
        await gate
        return "the-id"

    first = Deferred.fromCoroutine(keys.once("site", "k", publish))
    second = Deferred.fromCoroutine(keys.once("site", "k", publish))
    other = Deferred.fromCoroutine(keys.once("shop", "k", publish))
    assert not first.called and not second.called
    gate.callback(None)
    assert _now(first) == ("the-id", True)
    assert _now(second) == ("the-id", False)
    assert _now(other) == ("the-id", True)
    assert runs == ["published", "published"]

    async def failing() -> str:
        raise RuntimeError("not published")

    failed = Deferred.fromCoroutine(keys.once("site", "failing", failing))
    assert isinstance(failed.result, Failure)
    failed.addErrback(lambda _: None)
    assert _now(Deferred.fromCoroutine(keys.once("site", "failing", publish))) == ("the-id", True)


def test_an_idempotency_key_is_forgotten_after_ten_minutes():
    api = _InMemoryApi()
    secret = api.add_publisher("site")
    auth = {"Authorization": basic("site", secret)}
    status, body = api.request("PUT", "/api/v1/centers/news", headers=auth)
    assert status == 201, body
    hub = _now(Deferred.fromCoroutine(api.registry.hub("site", "news")))
    recorder = _Recorder()
    hub.subscribe(recorder)

    def publish(key: str) -> tuple[int, Any]:
        return api.request("POST", "/api/v1/centers/news/messages", b"text",
                           {**auth, "Content-Type": "text/plain", "Idempotency-Key": key})

    status, first = publish("k")
    assert status == 201, first
    api.clock.advance(599)
    status, again = publish("k")
    assert (status, again["id"]) == (200, first["id"])
    assert recorder.delivered == ["text"]
    api.clock.advance(2)  # 601 s after the first publish
    status, later = publish("k")
    assert status == 201, later
    assert later["id"] != first["id"]
    assert recorder.delivered == ["text", "text"]


# TLS


def _self_signed(folder: Any) -> tuple[str, str, bytes]:
    """A certificate for 127.0.0.1 and localhost: key path, certificate path, certificate PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(pem)
    return str(key_path), str(cert_path), pem


async def _wss(url: str, port: int, authority: ssl.Certificate) -> WebSocket:
    factory = WebSocketClientFactory(url)
    factory.protocol = _Client
    factory.messages = DeferredQueue()
    factory.opened = Deferred()
    factory.closed = Deferred()
    endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS("127.0.0.1", trustRoot=authority),
                                       endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    await _bounded(endpoint.connect(factory))
    protocol = await _bounded(factory.opened)
    return WebSocket(factory, protocol)


@pytest_twisted.ensureDeferred
async def test_both_listeners_serve_tls(tmp_path):
    key, cert, pem = _self_signed(tmp_path)
    tls = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}",
                                public={"endpoint": tls}, api={"endpoint": tls})
    try:
        authority = ssl.Certificate.loadPEM(pem)
        https = HTTPClient(Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=authority)))
        api = f"https://127.0.0.1:{daemon.service.api_port.getHost().port}"
        public = f"https://127.0.0.1:{daemon.public_port}"

        async def request(method: str, url: str, body: bytes | None = None,
                          **headers: str) -> tuple[int, bytes]:
            response = await _bounded(https.request(method, url, data=body, headers=headers))
            return response.code, await _bounded(response.content())

        status, body = await request("POST", api + "/admin/v1/publishers", b'{"name": "site"}',
                                     Authorization=f"Bearer {ADMIN_TOKEN}")
        assert status == 201, body
        secret = json.loads(body)["secret"]
        status, body = await request("PUT", api + "/api/v1/centers/news", Authorization=basic("site", secret))
        assert status == 201, body

        ws = await _wss(f"wss://127.0.0.1:{daemon.public_port}/sub/site/news", daemon.public_port, authority)
        poll = Deferred.fromCoroutine(request("GET", public + "/sub/site/news?timeout=5"))
        await sleep(0.2)  # the long-poll is waiting
        target = "/api/v1/centers/news/messages"
        signed = _signed_headers("site", secret, "POST", target, b"over tls", **{"Content-Type": "text/html"})
        status, body = await request("POST", api + target, b"over tls", **signed)
        assert status == 201, body
        assert await ws.next() == "over tls"
        status, body = await poll
        assert status == 200
        assert [m["data"] for m in json.loads(body)["messages"]] == ["over tls"]
        ws.close()
        await _bounded(ws.closed)
        # The listeners speak nothing but TLS.
        for port in (daemon.public_port, daemon.service.api_port.getHost().port):
            with pytest.raises(Exception):
                await _bounded(Deferred.fromCoroutine(call("GET", f"http://127.0.0.1:{port}/healthz")), 5)
    finally:
        await daemon.service.stopService()


# secrets at rest and in answers


@pytest_twisted.ensureDeferred
async def test_secrets_stay_out_of_answers_and_logs_and_the_store_is_private(tmp_path):
    path = tmp_path / "notifier.db"
    path.touch(mode=0o644)  # as another tool might have left it
    os.chmod(path, 0o644)
    with _captured_log() as log:
        daemon = await start_daemon(f"sqlite:{path}")
        try:
            secrets = [await daemon.add_publisher(name) for name in ("site", "shop")]
            status, body = await daemon.admin("POST", "/admin/v1/publishers/shop/rotate")
            assert status == 200
            secrets.append(body["secret"])
            auth = ("site", secrets[0])
            await _center(daemon, auth, "news")
            await _published(daemon, auth, "news", "by basic")
            status, _ = await _signed(daemon, "POST", "/api/v1/centers/news/messages", b"signed",
                                      publisher="site", secret=secrets[0])
            assert status == 201
            status, _ = await _publish(daemon, ("site", secrets[0] + "x"), "news", "refused")
            assert status == 401
            seen = []
            for target in ("/admin/v1/publishers", "/admin/v1/stats", "/metrics"):
                status, body = await daemon.admin("GET", target)
                assert status == 200, (target, body)
                seen.append(body if isinstance(body, bytes) else json.dumps(body).encode())
            assert json.loads(seen[0])["publishers"][0].keys() == {"name", "created", "centers"}
            for answer in seen:
                for secret in secrets:
                    assert secret.encode() not in answer
            for file in sorted(tmp_path.glob("notifier.db*")):
                assert stat.S_IMODE(os.stat(file).st_mode) == 0o600, file
        finally:
            await daemon.service.stopService()
    for file in sorted(tmp_path.glob("notifier.db*")):
        assert stat.S_IMODE(os.stat(file).st_mode) == 0o600, file
    log.assert_absent(*secrets, ADMIN_TOKEN)
