"""The security rules of docs/security.rst, each checked where it lives: on the wire.

Request signing, private centers and their tokens on every transport,
origins, tokens kept out of logs, all-or-nothing batches, Idempotency-Key,
TLS listeners, and secrets kept out of answers and readable by their owner
only. Signatures and tokens are computed here, independently of
``notifier.domain.credentials``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.internet import defer, reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import eventAsJSON, eventAsText, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from notifier.domain.centers import Centers
from notifier.domain.idempotency import IdempotencyKeys
from tests.support import (
    ADMIN_TOKEN,
    SCHEME,
    Api,
    Recorder,
    basic,
    bounded,
    call,
    event_source,
    expect_json_error,
    handshake_headers,
    make_center,
    nothing_more,
    opened,
    publish,
    published,
    result_of,
    sign,
    signature_header,
    signed_headers,
    sleep,
    start_daemon,
    subscriber_token,
    websocket,
)
from tests.support.tls import self_signed

#: A whole second, where the in-memory clock starts, so that window edges are exact.
WHOLE_SECOND = 1_700_000_000


# helpers


async def _signed(daemon: Any, method: str, target: str, body: bytes = b"", *, publisher: str,
                  secret: str, **headers: str) -> tuple[int, Any]:
    """A request to the api listener signed over exactly what is sent."""
    sent = signed_headers(publisher, secret, method, target, body, **headers)
    return await call(method, daemon.api + target, raw=body or None, headers=sent)


def _unsigned_token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, None, algorithm="none")


async def _batch(daemon: Any, auth: tuple[str, str], document: Any, **headers: str) -> tuple[int, Any]:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return await call("POST", f"{daemon.api}/api/v1/messages", raw=raw, auth=auth,
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


# request signing


@pytest.mark.integration
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
    await bounded(ws.closed)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_signed_requests_that_do_not_match_what_is_sent_are_401(daemon):
    secret = await daemon.add_publisher("site")
    other = await daemon.add_publisher("other")
    auth = ("site", secret)
    await make_center(daemon, auth, "chat:room")
    target = "/api/v1/centers/chat%3Aroom/messages"
    text = b"the real text"

    def header(*, key: str = secret, method: str = "POST", signed_target: str = target,
               body: bytes = text, skew: int = 0, publisher: str = "site") -> dict[str, str]:
        # Taken as the request leaves, rounded away from the server's clock.
        timestamp = (math.ceil if skew > 0 else math.floor)(time.time()) + skew
        signature = sign(key, method, signed_target, timestamp, body)
        return {"Authorization": signature_header(publisher, timestamp, signature),
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
        status, body = await call(method, daemon.api + sent_target, raw=text, headers=headers())
        assert status == 401, (why, status, body)
        expect_json_error(status, body, 401)
    # Nothing was published, nor the center changed.
    status, body = await call("GET", f"{daemon.public}/sub/site/chat:room/last")
    assert status == 204, body
    # The same request, signed right, passes.
    status, body = await call("POST", daemon.api + target, raw=text, headers=header())
    assert status == 201, body


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_malformed_signature_headers_are_401(daemon):
    secret = await daemon.add_publisher("site")
    await make_center(daemon, ("site", secret), "news")
    target = "/api/v1/centers/news"
    now = int(time.time())
    good = sign(secret, "GET", target, now, b"")
    fractional = sign(secret, "GET", target, f"{now}.0", b"")
    malformed = [
        f"{SCHEME} publisher=site, timestamp={now}",
        f"{SCHEME} publisher=site, signature={good}",
        f"{SCHEME} timestamp={now}, signature={good}",
        signature_header("site", now, good.upper()),
        signature_header("site", f"{now}.0", fractional),  # signed as sent, yet not an integer
        signature_header("site", "soon", sign(secret, "GET", target, "soon", b"")),
        signature_header("site", now, good[:-1]),
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
        status, body = await call("GET", daemon.api + target, headers={"Authorization": authorization})
        assert status == 401, (authorization, body)
        expect_json_error(status, body, 401)
    # The well-formed one passes: the refusals above were for their form.
    status, body = await call("GET", daemon.api + target,
                              headers={"Authorization": signature_header("site", now, good)})
    assert status == 200, body


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_the_admin_token_is_no_publisher_credential_and_basic_still_works(daemon):
    secret = await daemon.add_publisher("site")
    await make_center(daemon, ("site", secret), "news")
    now = int(time.time())
    as_admin = (
        f"Bearer {ADMIN_TOKEN}",
        basic("site", ADMIN_TOKEN),
        basic(ADMIN_TOKEN, ADMIN_TOKEN),
        signature_header("site", now, sign(ADMIN_TOKEN, "GET", "/api/v1/centers", now, b"")),
    )
    for authorization in as_admin:
        for method, target in (("GET", "/api/v1/centers"), ("POST", "/api/v1/centers/news/messages")):
            status, body = await call(method, daemon.api + target, raw=b"x",
                                      headers={"Authorization": authorization, "Content-Type": "text/plain"})
            expect_json_error(status, body, 401)
    # Basic and signed requests side by side, for the same publisher.
    assert await published(daemon, ("site", secret), "by basic")
    status, body = await _signed(daemon, "POST", "/api/v1/centers/news/messages", b"signed",
                                 publisher="site", secret=secret)
    assert status == 201, body
    status, body = await call("GET", f"{daemon.public}/sub/site/news/last")
    assert (status, body) == (200, b"signed")


def test_signature_timestamps_are_accepted_within_300_seconds_exactly():
    now = WHOLE_SECOND
    api = Api(start=now)
    _, secret = api.add_publisher("site")

    nonces = iter(range(100))

    def get(timestamp: int) -> int:
        # Each request its own: a signature is accepted once.
        target = f"/api/v1/centers?nonce={next(nonces)}"
        headers = signed_headers("site", secret, "GET", target, timestamp=timestamp)
        status, body = api.request("GET", target, headers=headers).decoded()
        if status != 200:
            expect_json_error(status, body, 401)
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
        return await call("GET", daemon.public + path, headers=handshake_headers())
    if transport == "sse":
        return await call("GET", daemon.public + path, headers={"Accept": "text/event-stream"})
    if transport == "longpoll":
        return await call("GET", daemon.public + path + ("&" if "?" in path else "?") + "timeout=0")
    base, mark, query = path.partition("?")
    return await call("GET", daemon.public + base + "/last" + mark + query)


def _with_token(path: str, token: str | None) -> str:
    return path if token is None else f"{path}?token={token}"


async def _private_setup(daemon: Any) -> tuple[str, str]:
    secret = await daemon.add_publisher("site")
    other = await daemon.add_publisher("other")
    for name in ("user.17.inbox", "user.18.inbox"):
        await make_center(daemon, ("site", secret), name, private=True)
    await make_center(daemon, ("site", secret), "news")
    await make_center(daemon, ("other", other), "user.17.inbox", private=True)
    return secret, other


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_private_centers_refuse_missing_and_bad_tokens_on_every_transport(daemon):
    secret, other = await _private_setup(daemon)
    center = "user.17.inbox"
    await published(daemon, ("site", secret), "private text", center)
    refused = {
        "no token": None,
        "empty token": "",
        "expired": subscriber_token(secret, lifetime=-5, sub=center),
        "forged": subscriber_token(secret, key="k" * 43, sub=center),
        "alg none": _unsigned_token(sub=center),
        "alg none, centers": _unsigned_token(centers=[center]),
        "another center": subscriber_token(secret, sub="user.18.inbox"),
        "another user's glob": subscriber_token(secret, centers=["user.18.*"]),
        "a glob that is no prefix": subscriber_token(secret, centers=["*.inbox"]),
        "without exp": subscriber_token(secret, lifetime=None, sub=center),
        "another publisher's, same center name": subscriber_token(other, sub=center),
        "garbage": "not.a.jwt",
    }
    for why, token in refused.items():
        for transport in TRANSPORTS:
            status, body = await _read(daemon, transport, _with_token(f"/sub/site/{center}", token))
            assert status == 401, (why, transport, status, body)
            expect_json_error(status, body, 401)
            assert "private text" not in json.dumps(body)
    # A token for one user's centers never opens another's.
    glob = subscriber_token(secret, centers=["user.17.*"])
    for transport in TRANSPORTS:
        status, body = await _read(daemon, transport, _with_token("/sub/site/user.18.inbox", glob))
        expect_json_error(status, body, 401)
    # The other publisher's own token opens its own center, and only that.
    status, body = await _read(daemon, "last", _with_token(f"/sub/other/{center}", subscriber_token(other, sub=center)))
    assert status == 204, body
    status, body = await _read(daemon, "last", _with_token(f"/sub/site/{center}", subscriber_token(other, sub=center)))
    expect_json_error(status, body, 401)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_valid_token_opens_a_private_center_on_every_transport(daemon):
    secret, _ = await _private_setup(daemon)
    center = "user.17.inbox"
    by_sub = subscriber_token(secret, sub=center)
    by_glob = subscriber_token(secret, centers=["user.18.inbox", "user.17.*"])
    ws = await websocket(f"{daemon.ws}/sub/site/{center}?token={by_sub}", daemon.public_port)
    es = await event_source(daemon.public_port, f"/sub/site/{center}?token={by_glob}")
    assert es.status == 200
    assert "retry" in await es.next()
    poll = bounded(treq.get(f"{daemon.public}/sub/site/{center}?timeout=5&token={by_glob}",
                            persistent=False))
    await sleep(0.2)  # the long-poll is waiting
    message_id = await published(daemon, ("site", secret), "for user 17", center)
    assert await ws.next() == "for user 17"
    event = await es.next()
    assert (event["id"], event["data"]) == (message_id, "for user 17")
    response = await poll
    assert response.code == 200
    assert [m["data"] for m in json.loads(await response.content())["messages"]] == ["for user 17"]
    status, body = await call("GET", f"{daemon.public}/sub/site/{center}/last?token={by_sub}")
    assert (status, body) == (200, b"for user 17")
    status, body = await call("GET", f"{daemon.public}/sub/site/{center}/last?token={by_glob}&callback=cb")
    assert (status, body) == (200, b'/**/cb("for user 17");')
    es.close()
    ws.close()
    await bounded(ws.closed)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_public_centers_need_no_token(daemon):
    secret, _ = await _private_setup(daemon)
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    es = await event_source(daemon.public_port, "/sub/site/news")
    assert es.status == 200
    await es.next()  # retry
    await published(daemon, ("site", secret), "for everyone")
    assert await ws.next() == "for everyone"
    assert (await es.next())["data"] == "for everyone"
    status, body = await _read(daemon, "longpoll", "/sub/site/news")
    assert status == 200 and body["messages"] == [], body
    status, body = await _read(daemon, "last", "/sub/site/news")
    assert (status, body) == (200, b"for everyone")
    es.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_tokens_signed_with_a_rotated_secret_are_refused(daemon):
    secret, _ = await _private_setup(daemon)
    center = "user.17.inbox"
    old = subscriber_token(secret, sub=center)
    status, _ = await _read(daemon, "last", _with_token(f"/sub/site/{center}", old))
    assert status == 204
    status, body = await daemon.admin("POST", "/admin/v1/publishers/site/rotate")
    assert status == 200, body
    new_secret = body["secret"]
    assert new_secret != secret
    for transport in TRANSPORTS:
        status, body = await _read(daemon, transport, _with_token(f"/sub/site/{center}", old))
        assert status == 401, (transport, body)
        expect_json_error(status, body, 401)
    new = subscriber_token(new_secret, sub=center)
    status, _ = await _read(daemon, "last", _with_token(f"/sub/site/{center}", new))
    assert status == 204
    status, body = await _read(daemon, "longpoll", _with_token(f"/sub/site/{center}", new))
    assert status == 200, body
    ws = await websocket(f"{daemon.ws}/sub/site/{center}?token={new}", daemon.public_port)
    await published(daemon, ("site", new_secret), "after rotation", center)
    assert await ws.next() == "after rotation"


# origins


SITE = "https://site.test"
EVIL = "https://evil.test"


def _cors_headers(headers: Any) -> dict[bytes, list[bytes]]:
    return {name.lower(): values for name, values in headers.getAllRawHeaders()
            if name.lower().startswith(b"access-control-")}


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_websocket_handshakes_from_other_origins_are_403():
    daemon = await start_daemon(public={"allowed_origins": [SITE]})
    try:
        secret = await daemon.add_publisher("site")
        await make_center(daemon, ("site", secret), "news")
        for origin in (EVIL, "https://site.test.evil.test", "http://site.test", "null"):
            status, body = await call("GET", f"{daemon.public}/sub/site/news",
                                      headers={**handshake_headers(), "Origin": origin})
            assert status == 403, (origin, body)
            expect_json_error(status, body, 403)
        allowed = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port, {"Origin": SITE})
        no_origin = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        await published(daemon, ("site", secret), "hello")
        assert await allowed.next() == "hello"
        assert await no_origin.next() == "hello"
    finally:
        await daemon.service.stopService()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_http_answers_carry_cors_headers_for_allowed_origins_only():
    daemon = await start_daemon(public={"allowed_origins": [SITE]})
    try:
        secret = await daemon.add_publisher("site")
        await make_center(daemon, ("site", secret), "news")
        await published(daemon, ("site", secret), "latest")

        async def get(path: str, origin: str | None, **headers: str) -> Any:
            if origin is not None:
                headers["Origin"] = origin
            response = await bounded(treq.get(daemon.public + path, headers=headers, persistent=False))
            await bounded(response.content())
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

        response = await bounded(treq.request(
            "OPTIONS", f"{daemon.public}/sub/site/news", persistent=False,
            headers={"Origin": SITE, "Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "Last-Event-ID"}))
        await bounded(response.content())
        assert response.code == 204
        cors = _cors_headers(response.headers)
        assert cors[b"access-control-allow-origin"] == [SITE.encode()]
        assert b"GET" in cors[b"access-control-allow-methods"][0]
        assert b"last-event-id" in cors[b"access-control-allow-headers"][0].lower()
        response = await bounded(treq.request(
            "OPTIONS", f"{daemon.public}/sub/site/news", persistent=False,
            headers={"Origin": EVIL, "Access-Control-Request-Method": "GET"}))
        await bounded(response.content())
        assert b"access-control-allow-origin" not in _cors_headers(response.headers)
    finally:
        await daemon.service.stopService()


# tokens never logged


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_subscriber_tokens_never_reach_the_log(daemon, monkeypatch):
    secret, _ = await _private_setup(daemon)
    center = "user.17.inbox"
    path = f"/sub/site/{center}"
    valid = subscriber_token(secret, sub=center)
    wrong = subscriber_token(secret, sub="user.18.inbox")
    tokens = (valid, wrong)
    with _captured_log() as log:
        # valid, on every transport
        ws = await websocket(f"{daemon.ws}{path}?token={valid}", daemon.public_port)
        es = await event_source(daemon.public_port, f"{path}?token={valid}")
        assert es.status == 200
        await published(daemon, ("site", secret), "x", center)
        assert await ws.next() == "x"
        es.close()
        ws.close()
        await bounded(ws.closed)
        for transport in ("longpoll", "last"):
            status, _ = await _read(daemon, transport, f"{path}?token={valid}")
            assert status == 200
        # invalid, on every transport
        for transport in TRANSPORTS:
            status, _ = await _read(daemon, transport, f"{path}?token={wrong}")
            assert status == 401
        # refused for something else than the token
        status, _ = await call("GET", f"{daemon.public}{path}?token={valid}&callback=1bad")
        assert status == 400
        status, _ = await call("GET", f"{daemon.public}{path}?token={valid}",
                               headers={**handshake_headers(), "Sec-WebSocket-Version": "99"})
        assert status >= 400

        # and failing inside the server, which logs the failure
        async def failing(self: Any, publisher: str, name: str) -> Any:
            raise RuntimeError("the store is gone")

        monkeypatch.setattr(Centers, "hub", failing)
        for transport in TRANSPORTS:
            for token in tokens:
                status, body = await _read(daemon, transport, f"{path}?token={token}")
                expect_json_error(status, body, 500)
        monkeypatch.undo()
        await sleep(0.1)  # closing connections log what they log
    texts = list(log.texts())
    assert any("the store is gone" in text for text in texts), "no failure was logged"
    for token in tokens:
        log.assert_absent(token, token.rsplit(".", 1)[1])


# batch publish


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_batch_is_published_in_order_to_several_centers(daemon):
    secret = await daemon.add_publisher("site")
    auth = ("site", secret)
    for name in ("a", "b"):
        await make_center(daemon, auth, name)
    ws_a = await websocket(f"{daemon.ws}/sub/site/a?format=json", daemon.public_port)
    await opened(ws_a)
    ws_b = await websocket(f"{daemon.ws}/sub/site/b?format=json", daemon.public_port)
    await opened(ws_b)
    entries = [("a", "1"), ("b", "2"), ("a", "3"), ("b", "4"), ("a", "5")]
    status, body = await _batch(daemon, auth, {"messages": [{"center": c, "data": d} for c, d in entries]})
    assert status == 201, body
    assert set(body) == {"ids"} and len(body["ids"]) == len(entries)
    ids = dict(zip([d for _, d in entries], body["ids"], strict=False))
    got_a = [json.loads(await ws_a.next()) for _ in range(3)]
    got_b = [json.loads(await ws_b.next()) for _ in range(2)]
    assert [(m["data"], m["id"], m["center"]) for m in got_a] == [(d, ids[d], "a") for d in ("1", "3", "5")]
    assert [(m["data"], m["id"], m["center"]) for m in got_b] == [(d, ids[d], "b") for d in ("2", "4")]
    status, body = await call("GET", f"{daemon.public}/sub/site/a/last")
    assert body == b"5"


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_refused_batch_publishes_nothing(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}", centers={"max_message_bytes": 16})
    try:
        secret = await daemon.add_publisher("site")
        auth = ("site", secret)
        for name in ("a", "b"):
            await make_center(daemon, auth, name)
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
            (400, b'{"messages": [{"center": "a", "data": "ok"}, {"center": "a", "data": "\\ud800"}]}'),
            (400, {"messages": good + [{"center": "bad name", "data": "x"}, {"center": "bad name", "data": "y"}]}),
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
            expect_json_error(status, body, expected)
        for name in ("a", "b"):
            status, body = await call("GET", f"{daemon.public}/sub/site/{name}/last")
            assert status == 204, (name, body)
            status, body = await call("GET", f"{daemon.api}/api/v1/centers/{name}", auth=auth)
            assert body["last_id"] is None, body
        await nothing_more(ws_a, daemon, auth, "a", marker="marker")
        await nothing_more(ws_b, daemon, auth, "b", marker="marker")
        # exactly max_message_bytes is accepted
        status, body = await _batch(daemon, auth, {"messages": [{"center": "a", "data": "x" * 16}]})
        assert status == 201, body
        assert await ws_a.next() == "x" * 16
    finally:
        await daemon.service.stopService()


# Idempotency-Key


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_retried_publish_with_the_same_key_is_answered_and_not_delivered(daemon):
    secret = await daemon.add_publisher("site")
    other = await daemon.add_publisher("other")
    auth = ("site", secret)
    await make_center(daemon, auth, "news")
    await make_center(daemon, ("other", other), "news")
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    ws_other = await websocket(f"{daemon.ws}/sub/other/news", daemon.public_port)
    key = {"Idempotency-Key": "order-42"}

    status, first = await publish(daemon, auth, "once", "news", headers=key)
    assert status == 201, first
    for _ in range(2):
        status, again = await publish(daemon, auth, "once", "news", headers=key)
        assert status == 200, again
        assert again["id"] == first["id"]
    assert await ws.next() == "once"
    await nothing_more(ws, daemon, auth, "news", marker="marker")

    # another publisher's key space is its own
    status, body = await publish(daemon, ("other", other), "theirs", "news", headers=key)
    assert status == 201, body
    assert await ws_other.next() == "theirs"
    # another key publishes
    status, body = await publish(daemon, auth, "once", "news", headers={"Idempotency-Key": "order-43"})
    assert status == 201 and body["id"] != first["id"], body
    assert await ws.next() == "once"

    # batches alike
    batch = {"messages": [{"center": "news", "data": "b1"}, {"center": "news", "data": "b2"}]}
    status, first = await _batch(daemon, auth, batch, **{"Idempotency-Key": "batch-1"})
    assert status == 201, first
    status, again = await _batch(daemon, auth, batch, **{"Idempotency-Key": "batch-1"})
    assert status == 200 and again["ids"] == first["ids"], again
    assert [await ws.next(), await ws.next()] == ["b1", "b2"]
    await nothing_more(ws, daemon, auth, "news", marker="marker")
    status, body = await call("GET", f"{daemon.public}/sub/site/news?since={first['ids'][0]}&timeout=0")
    assert [m["data"] for m in body["messages"]] == ["b2", "marker"]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_concurrent_requests_with_the_same_key_deliver_once(daemon):
    secret = await daemon.add_publisher("site")
    auth = ("site", secret)
    await make_center(daemon, auth, "news")
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)

    key = {"Idempotency-Key": "same-time"}
    # All in flight at once, none waiting for another's answer.
    requests = [Deferred.fromCoroutine(publish(daemon, auth, "concurrent", "news", headers=key)) for _ in range(4)]
    answers = await bounded(defer.gatherResults(requests))
    assert sorted(status for status, _ in answers) == [200, 200, 200, 201], answers
    assert len({body["id"] for _, body in answers}) == 1, answers
    assert await ws.next() == "concurrent"
    await nothing_more(ws, daemon, auth, "news", marker="marker")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_failed_publish_is_not_remembered(daemon):
    secret = await daemon.add_publisher("site")
    auth = ("site", secret)
    key = {"Idempotency-Key": "early"}
    status, body = await publish(daemon, auth, "too soon", "later", headers=key)
    expect_json_error(status, body, 404)
    status, body = await _batch(daemon, auth, {"messages": [{"center": "later", "data": "x"}]},
                                **{"Idempotency-Key": "early-batch"})
    expect_json_error(status, body, 404)
    await make_center(daemon, auth, "later")
    ws = await websocket(f"{daemon.ws}/sub/site/later", daemon.public_port)
    status, body = await publish(daemon, auth, "in time", "later", headers=key)
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
    assert result_of(first) == ("the-id", True)
    assert result_of(second) == ("the-id", False)
    assert result_of(other) == ("the-id", True)
    assert runs == ["published", "published"]

    async def failing() -> str:
        raise RuntimeError("not published")

    failed = Deferred.fromCoroutine(keys.once("site", "failing", failing))
    assert isinstance(failed.result, Failure)
    failed.addErrback(lambda _: None)
    assert result_of(Deferred.fromCoroutine(keys.once("site", "failing", publish))) == ("the-id", True)


def test_an_idempotency_key_is_forgotten_after_ten_minutes():
    api = Api(start=WHOLE_SECOND)
    _, secret = api.add_publisher("site")
    auth = {"Authorization": basic("site", secret)}
    status, body = api.request("PUT", "/api/v1/centers/news", headers=auth).decoded()
    assert status == 201, body
    hub = result_of(Deferred.fromCoroutine(api.centers.hub("site", "news")))
    recorder = Recorder()
    hub.subscribe(recorder)

    def publish(key: str) -> tuple[int, Any]:
        return api.request("POST", "/api/v1/centers/news/messages", b"text",
                           headers={**auth, "Content-Type": "text/plain", "Idempotency-Key": key}).decoded()

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


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_both_listeners_serve_tls(tmp_path):
    key, cert, pem = self_signed(tmp_path)
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
            response = await bounded(https.request(method, url, data=body, headers=headers))
            return response.code, await bounded(response.content())

        status, body = await request("POST", api + "/admin/v1/publishers", b'{"name": "site"}',
                                     Authorization=f"Bearer {ADMIN_TOKEN}")
        assert status == 201, body
        secret = json.loads(body)["secret"]
        status, body = await request("PUT", api + "/api/v1/centers/news", Authorization=basic("site", secret))
        assert status == 201, body

        ws = await websocket(f"wss://127.0.0.1:{daemon.public_port}/sub/site/news", daemon.public_port,
                             authority=authority)
        poll = Deferred.fromCoroutine(request("GET", public + "/sub/site/news?timeout=5"))
        await sleep(0.2)  # the long-poll is waiting
        target = "/api/v1/centers/news/messages"
        signed = signed_headers("site", secret, "POST", target, b"over tls", **{"Content-Type": "text/html"})
        status, body = await request("POST", api + target, b"over tls", **signed)
        assert status == 201, body
        assert await ws.next() == "over tls"
        status, body = await poll
        assert status == 200
        assert [m["data"] for m in json.loads(body)["messages"]] == ["over tls"]
        ws.close()
        await bounded(ws.closed)
        # The listeners speak nothing but TLS.
        for port in (daemon.public_port, daemon.service.api_port.getHost().port):
            with pytest.raises(Exception):  # noqa: B017 - whatever a plain client fails with
                await bounded(Deferred.fromCoroutine(call("GET", f"http://127.0.0.1:{port}/healthz")), 5)
    finally:
        await daemon.service.stopService()


# secrets at rest and in answers


@pytest.mark.integration
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
            await make_center(daemon, auth, "news")
            await published(daemon, auth, "by basic")
            status, _ = await _signed(daemon, "POST", "/api/v1/centers/news/messages", b"signed",
                                      publisher="site", secret=secrets[0])
            assert status == 201
            status, _ = await publish(daemon, ("site", secrets[0] + "x"), "refused")
            assert status == 401
            seen = []
            for target in ("/admin/v1/publishers", "/admin/v1/stats", "/metrics"):
                status, body = await daemon.admin("GET", target)
                assert status == 200, (target, body)
                seen.append(body if isinstance(body, bytes) else json.dumps(body).encode())
            assert json.loads(seen[0])["publishers"][0].keys() == {"name", "created", "centers", "pusher"}
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
