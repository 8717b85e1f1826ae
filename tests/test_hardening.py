"""The hardening rules (docs/security.rst), each from outside first.

Bounded per-request memory whatever the cursor, strict cursors, backlogs
under backpressure, liveness that only the server's own pings prove,
signed requests accepted once, private streams ending with their tokens,
refusals that tell nothing, per-publisher bounds, cut drip-fed heads.
"""

from __future__ import annotations

import base64
import gc
import json
import time
import weakref
from typing import Any, cast

import jwt
import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.task import Clock, LoopingCall

from notifier.config import ConfigError, parse_config
from notifier.domain.errors import BadRequest
from notifier.domain.idempotency import IdempotencyKeys
from notifier.domain.names import check_center_name
from notifier.domain.signatures import SignatureMemory
from notifier.domain.token_deadlines import TokenDeadlines
from notifier.http.api import ApiApp
from notifier.http.connection import HttpConnection
from notifier.http.request import Request
from notifier.transports.backpressure import STALLED_BEATS
from notifier.transports.websocket import JsonSubscriber
from tests.raw import (
    body_kept,
    connect,
    expect_raw_error,
    get_request,
    parse_response,
    raw_websocket,
    stuck_event_stream,
    upload,
    ws_handshake,
)
from tests.support import (
    Daemon,
    admin_stats,
    call,
    event_source,
    expect_json_error,
    opened,
    publish,
    published,
    rss,
    running,
    server_side,
    setup_site,
    sign,
    signature_header,
    signed_headers,
    sleep,
    small_send_buffer,
    subscriber_count,
    subscriber_token,
    until,
    websocket,
)
from tests.support import _Client as _AutobahnClient

# Memory per request is bounded whatever the cursor


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_flood_of_longpolls_with_distinct_cursors_keeps_memory_flat():
    async with running(centers={"history": 100}) as daemon:
        auth = await setup_site(daemon)
        big = "x" * 60_000
        ids = [await published(daemon, auth, f"{i:03d}{big}") for i in range(100)]
        epoch = ids[0].rsplit("-", 1)[0]
        hub = daemon.service.centers.loaded("site", "news")
        gc.collect()
        before = rss()
        # Made-up epochs (all "lost") and every real position, several ways.
        cursors = [f"made{i}-{i}" for i in range(300)]
        cursors += [f"{epoch}-{seq}" for seq in range(0, 101)]
        cursors += [f"{epoch}-{seq:018d}" for seq in range(0, 101)]  # the same positions, spelt long
        for cursor in cursors:
            status, body = await call("GET", f"{daemon.public}/sub/site/news?timeout=0&since={cursor}")
            assert status == 200, body
        gc.collect()
        grown = rss() - before
        # At most one answer per retained position, plus the one for "lost",
        # and only small ones: 300 "lost" answers kept apart would be 300 x
        # 6 MB, and one per position about 300 MB.
        assert len(hub._memo) <= 100 + 1, len(hub._memo)
        assert sum(len(v) for v in hub._memo.values()) <= 101 * 64 * 1024
        assert grown < 64 * 1024 * 1024, f"grew by {grown} bytes"


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_longpoll_answer_is_bounded_and_the_rest_follows():
    async with running(subscribers={"send_buffer_bytes": 200_000}, centers={"history": 100}) as daemon:
        auth = await setup_site(daemon)
        texts = [f"{i:03d}" + "l" * 60_000 for i in range(20)]
        ids = [await published(daemon, auth, text) for text in texts]
        cursor = ids[0].rsplit("-", 1)[0] + "-0"
        received: list[str] = []
        answers = 0
        while len(received) < len(texts):
            status, body = await call("GET", f"{daemon.public}/sub/site/news?timeout=0&since={cursor}")
            assert status == 200 and body["recovered"], body
            assert 1 <= len(body["messages"]) <= 3, len(body["messages"])  # 200 kB of 60 kB messages
            received += [m["data"] for m in body["messages"]]
            cursor = body["last_id"]
            answers += 1
        assert received == texts and answers >= 7


# Cursors are {epoch}-{1..18 ASCII digits}: anything else is 400 bad_cursor


BAD_CURSORS = ["a-%C2%B2", "a-%D9%A3", "e1-" + "9" * 19, "e1-", "-1", "abc", "e1-1.5", "e1-%201", "e1-%2B1"]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("cursor", BAD_CURSORS)
async def test_a_malformed_cursor_is_400_bad_cursor_on_every_transport(daemon, cursor):
    secret = await daemon.add_publisher("site")
    status, body = await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=("site", secret))
    assert status == 201, body
    path = f"/sub/site/news?since={cursor}"
    status, body = await call("GET", f"{daemon.public}{path}&timeout=0")
    expect_json_error(status, body, 400, "bad_cursor")
    stream = await event_source(daemon.public_port, path)
    assert stream.status == 400
    await stream.ended
    client = await connect(daemon.public_port)
    client.send(ws_handshake(path))
    await client.wait_for(lambda data: b"\r\n\r\n" in data and data.endswith(b"}"))
    client.transport.loseConnection()
    status, headers, answer = parse_response(bytes(client.data))
    assert json.loads(answer)["error"] == "bad_cursor" and status == 400


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_malformed_last_event_id_is_400_bad_cursor(daemon):
    secret = await daemon.add_publisher("site")
    await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=("site", secret))
    for value in ("a-\u00b2", "x" * 70 + "-1"):
        stream = await event_source(daemon.public_port, "/sub/site/news",
                                    {"Last-Event-ID": value.encode("utf-8").decode("latin-1")})
        assert stream.status == 400
        await stream.ended
    status, body = await call("GET", daemon.public + "/healthz")
    assert status == 200


# Backlogs count against send_buffer_bytes


@pytest.mark.integration
@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_backlog_to_a_client_that_never_reads_is_dropped(transport):
    async with running(subscribers={"send_buffer_bytes": 65536}, centers={"history": 100}) as daemon:
        auth = await setup_site(daemon)
        ids = [await published(daemon, auth, f"{i:03d}" + "b" * 60_000) for i in range(100)]
        since = ids[0].rsplit("-", 1)[0] + "-0"
        hub = daemon.service.centers.loaded("site", "news")
        if transport == "websocket":
            client = (await raw_websocket(daemon.public_port, f"/sub/site/news?since={since}", rcvbuf=4096)).client
        else:
            client = await connect(daemon.public_port, rcvbuf=4096)
            client.send(get_request(f"/sub/site/news?since={since}", "Accept: text/event-stream")
                        .replace(b"HTTP/1.1", b"HTTP/1.0"))
        client.transport.pauseProducing()
        # Six megabytes of backlog, 64 KiB of budget: dropped at once, not
        # held in the connection's buffer until a live message comes.
        await until(lambda: not hub.subscribers, 5, "the stuck subscriber dropped")
        stats = await admin_stats(daemon)
        assert stats["dropped_subscribers"] == 1, stats
        client.transport.abortConnection()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_backlog_within_budget_arrives_whole_and_in_order():
    async with running(subscribers={"send_buffer_bytes": 16 * 1024 * 1024}, centers={"history": 100}) as daemon:
        auth = await setup_site(daemon)
        texts = [f"{i:03d}" + "c" * 30_000 for i in range(100)]
        ids = [await published(daemon, auth, text) for text in texts]
        since = ids[0].rsplit("-", 1)[0] + "-0"
        ws = await websocket(f"{daemon.ws}/sub/site/news?format=json&since={since}", daemon.public_port)
        assert (await opened(ws))["recovered"] is True
        received = [json.loads(await ws.next())["data"] for _ in texts]
        assert received == texts
        stream = await event_source(daemon.public_port, f"/sub/site/news?since={since}")
        first = await stream.next()
        if "event" not in first:  # the stream's opening retry: line
            first = await stream.next()
        assert first["event"] == "recovery"
        assert [(await stream.next())["data"] for _ in texts] == texts
        stream.close()
        ws.close()
        await ws.closed


# Pings and pongs


def _open_subscriber() -> JsonSubscriber:
    subscriber = JsonSubscriber()
    subscriber.state = subscriber.STATE_OPEN
    return subscriber


def test_client_pings_are_not_answered_while_the_connection_is_paused():
    subscriber = _open_subscriber()
    pongs: list[bytes] = []
    subscriber.sendPong = pongs.append  # type: ignore[method-assign]
    subscriber.onPing(b"first")
    subscriber.pauseProducing()
    for _ in range(1000):
        subscriber.onPing(b"flood")
    assert pongs == [b"first"]
    subscriber.resumeProducing()
    subscriber.onPing(b"again")
    assert pongs == [b"first", b"again"]


def test_only_the_pong_to_the_servers_own_ping_counts():
    subscriber = _open_subscriber()
    pings: list[bytes] = []
    dropped: list[bool] = []
    subscriber.sendPing = pings.append  # type: ignore[method-assign]
    subscriber.dropConnection = lambda abort=False: dropped.append(abort)  # type: ignore[method-assign]
    subscriber.heartbeat()
    subscriber.onPong(pings[0])  # the answer
    subscriber.heartbeat()
    assert len(pings) == 2 and pings[0] != pings[1] and not dropped
    subscriber.onPong(b"")  # unsolicited, or stale
    subscriber.onPong(pings[0])
    subscriber.heartbeat()
    assert dropped == [True]


class _ForgingClient(_AutobahnClient):
    """Never answers the server's pings; sends pongs of its own instead."""

    def onOpen(self) -> None:
        super().onOpen()
        self.forging = LoopingCall(lambda: self.sendPong(b"alive, honestly"))
        self.forging.start(0.05)

    def onPing(self, payload: bytes) -> None:
        pass

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if getattr(self, "forging", None) is not None and self.forging.running:
            self.forging.stop()
        super().onClose(wasClean, code, reason)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_peer_sending_unsolicited_pongs_is_dropped():
    async with running(subscribers={"ping_interval": 0.2}) as daemon:
        await setup_site(daemon)
        factory = WebSocketClientFactory(f"{daemon.ws}/sub/site/news")
        factory.protocol = _ForgingClient
        factory.messages, factory.opened, factory.closed = DeferredQueue(), Deferred(), Deferred()
        await endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.public_port).connect(factory)
        await factory.opened
        closed = factory.closed
        closed.addTimeout(5, reactor)
        await closed
        hub = daemon.service.centers.loaded("site", "news")
        assert not hub.subscribers


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_an_event_stream_that_stays_stuck_is_dropped():
    # A budget too large to be reached: only the stall rule can drop it.
    async with running(subscribers={"send_buffer_bytes": 64 * 1024 * 1024, "ping_interval": 0.2}) as daemon:
        auth = await setup_site(daemon)
        client = await stuck_event_stream(daemon.public_port)
        server = server_side(daemon, client.transport.getHost().port)
        small_send_buffer(server)
        hub = daemon.service.centers.loaded("site", "news")
        sent = 0
        while server._waiting is None:
            assert sent < 2000, "the stream never filled up"
            status, body = await publish(daemon, auth, f"{sent:05d}" + "s" * 8000)
            assert status == 201, body
            sent += 1
        assert server in hub.subscribers
        await until(lambda: server not in hub.subscribers, STALLED_BEATS * 0.2 + 3, "the stuck stream dropped")
        client.transport.resumeProducing()
        assert await client.wait_closed(5)
        assert (await admin_stats(daemon))["dropped_subscribers"] == 1


# Signed requests are accepted once


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_captured_signed_request_cannot_be_replayed(daemon):
    secret = await daemon.add_publisher("site")
    await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=("site", secret))
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    target = "/api/v1/centers/news/messages"
    captured = signed_headers("site", secret, "POST", target, b"transfer 100", **{"Content-Type": "text/plain"})
    status, body = await call("POST", daemon.api + target, raw=b"transfer 100", headers=captured)
    assert status == 201, body
    for _ in range(3):
        status, body = await call("POST", daemon.api + target, raw=b"transfer 100", headers=captured)
        expect_json_error(status, body, 401, "replayed_signature")
    # Signed anew (another query, so another signature in the same second): accepted.
    again = target + "?nonce=2"
    status, body = await call("POST", daemon.api + again, raw=b"transfer 100",
                              headers=signed_headers("site", secret, "POST", again, b"transfer 100",
                                                     **{"Content-Type": "text/plain"}))
    assert status == 201, body
    assert [await ws.next(), await ws.next()] == ["transfer 100", "transfer 100"]
    status, body = await publish(daemon, ("site", secret), "basic is not affected")
    assert status == 201
    assert await ws.next() == "basic is not affected"
    ws.close()


def test_signature_memory_forgets_what_left_the_window():
    clock = Clock()
    clock.advance(1_000_000)
    memory = SignatureMemory(clock, 300)
    signature = "ab" * 32
    assert memory.first_use("site", signature, 1_000_000)
    assert not memory.first_use("site", signature, 1_000_000)
    assert memory.first_use("other", signature, 1_000_000)
    clock.advance(301)
    memory.first_use("site", "cd" * 32, 1_000_301)
    assert list(memory._buckets) == [1_000_301]


# Private streams end with their tokens


async def _private(daemon: Daemon) -> str:
    secret = await daemon.add_publisher("site")
    status, body = await call("PUT", f"{daemon.api}/api/v1/centers/secret", {"private": True}, auth=("site", secret))
    assert status == 201, body
    status, body = await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=("site", secret))
    assert status == 201, body
    return secret


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_private_streams_end_when_their_token_expires(daemon):
    secret = await _private(daemon)
    token = jwt.encode({"sub": "secret", "exp": time.time() + 1.5}, secret.encode(), algorithm="HS256")
    started = time.monotonic()
    ws = await websocket(f"{daemon.ws}/sub/site/secret?format=json&token={token}", daemon.public_port)
    await opened(ws)
    stream = await event_source(daemon.public_port, f"/sub/site/secret?token={token}")
    assert stream.status == 200
    public = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    ws.closed.addTimeout(6, reactor)
    code, _ = await ws.closed
    assert code == 4401
    stream.ended.addTimeout(6, reactor)
    await stream.ended
    assert time.monotonic() - started >= 1.0  # not before it expired
    # The public one goes on.
    status, body = await publish(daemon, ("site", secret), "still here")
    assert status == 201 and body["subscribers"] == 1, body
    assert await public.next() == "still here"
    public.close()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_private_streams_end_when_the_secret_is_rotated_or_the_publisher_removed(daemon):
    secret = await _private(daemon)
    token = subscriber_token(secret, sub="secret", lifetime=600)
    ws = await websocket(f"{daemon.ws}/sub/site/secret?token={token}", daemon.public_port)
    stream = await event_source(daemon.public_port, f"/sub/site/secret?token={token}")
    public = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    status, body = await daemon.admin("POST", "/admin/v1/publishers/site/rotate")
    assert status == 200, body
    ws.closed.addTimeout(5, reactor)
    assert (await ws.closed)[0] == 4401
    stream.ended.addTimeout(5, reactor)
    await stream.ended
    # The old token opens nothing any more; a new one does, until removal.
    status, answer = await call("GET", f"{daemon.public}/sub/site/secret?timeout=0&token={token}")
    expect_json_error(status, answer, 401)
    # The public center's subscriber stays; removing the publisher ends it.
    assert await subscriber_count(daemon, ("site", body["secret"])) == 1
    status, body = await daemon.admin("DELETE", "/admin/v1/publishers/site")
    assert status == 204
    public.closed.addTimeout(5, reactor)
    assert (await public.closed)[0] == 1001


# Refusals that tell nothing


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_an_unknown_publisher_and_a_wrong_secret_get_the_same_401(daemon):
    secret = await daemon.add_publisher("site")
    target = "/api/v1/centers"
    now = int(time.time())
    answers = []
    for name, key in (("site", "wrong" * 10), ("nobody", secret), ("nobody", "wrong" * 10)):
        status, body = await call("GET", daemon.api + target, auth=(name, key))
        answers.append((status, body))
        header = signature_header(name, now, sign(key, "GET", target, now, b""))
        status, body = await call("GET", daemon.api + target, headers={"Authorization": header})
        answers.append((status, body))
    assert all(answer == answers[0] for answer in answers), answers
    expect_json_error(*answers[0], 401, "bad_credentials")
    # A stale timestamp is refused the same way whoever it names.
    stale = []
    for name in ("site", "nobody"):
        header = signature_header(name, now - 1000, sign(secret, "GET", target, now - 1000, b""))
        stale.append(await call("GET", daemon.api + target, headers={"Authorization": header}))
    assert stale[0] == stale[1]
    expect_json_error(*stale[0], 401, "stale_signature")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_token_sub_is_never_a_glob(daemon):
    secret = await _private(daemon)
    for claims, expected in (({"sub": "*"}, 401), ({"sub": "sec*"}, 401), ({"sub": "secret"}, 200),
                             ({"centers": ["*"]}, 200), ({"centers": ["sec*"]}, 200)):
        token = subscriber_token(secret, **claims)
        status, body = await call("GET", f"{daemon.public}/sub/site/secret?timeout=0&token={token}")
        assert status == expected, (claims, body)


# Per-publisher bounds


def test_idempotency_keys_are_bounded_per_publisher():
    keys = IdempotencyKeys(Clock(), max_keys=3)
    runs: list[str] = []

    def once(publisher: str, key: str) -> bool:
        async def action() -> str:
            runs.append(f"{publisher}:{key}")
            return key

        d = Deferred.fromCoroutine(keys.once(publisher, key, action))
        results: list[Any] = []
        d.addCallback(results.append)
        return results[0][1]

    for key in "abc":
        assert once("quiet", key)
    for n in range(100):  # another publisher, busy
        assert once("busy", f"k{n}")
    for key in "abc":
        assert not once("quiet", key), "a busy publisher evicted another's keys"
    assert once("busy", "k0")  # its own oldest went


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_centers_per_publisher_are_bounded_auto_created_ones_too():
    async with running(centers={"max_per_publisher": 3, "auto_create": True}) as daemon:
        secret = await daemon.add_publisher("site")
        other = await daemon.add_publisher("other")
        for name in ("a", "b"):
            status, body = await call("PUT", f"{daemon.api}/api/v1/centers/{name}", auth=("site", secret))
            assert status == 201, body
        status, body = await call("POST", f"{daemon.api}/api/v1/centers/c/messages", raw=b"auto", auth=("site", secret))
        assert status == 201, body
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/d", auth=("site", secret))
        expect_json_error(status, body, 403, "too_many_centers")
        status, body = await call("POST", f"{daemon.api}/api/v1/centers/e/messages", raw=b"auto", auth=("site", secret))
        expect_json_error(status, body, 403, "too_many_centers")
        # What exists is still reached, and another publisher has its own bound.
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/a", auth=("site", secret))
        assert status == 200, body
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/a", auth=("other", other))
        assert status == 201, body
        status, body = await call("DELETE", f"{daemon.api}/api/v1/centers/b", auth=("site", secret))
        assert status == 204
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/d", auth=("site", secret))
        assert status == 201, body


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_auto_created_centers_take_their_options_from_the_configuration():
    async with running(centers={"auto_create": True, "auto_create_private": ["user.*", "staff"]}) as daemon:
        secret = await daemon.add_publisher("site")
        for name, private in (("user.17", True), ("staff", True), ("staffroom", False), ("news", False)):
            status, body = await call("POST", f"{daemon.api}/api/v1/centers/{name}/messages", raw=b"hello",
                                      auth=("site", secret))
            assert status == 201, body
            status, body = await call("GET", f"{daemon.api}/api/v1/centers/{name}", auth=("site", secret))
            assert body["private"] is private, (name, body)
        status, body = await call("GET", f"{daemon.public}/sub/site/user.17?timeout=0")
        expect_json_error(status, body, 401)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_bodies_are_not_read_before_credentials_hold(daemon):
    secret = await daemon.add_publisher("site")
    port = daemon.service.api_port.getHost().port

    heads = {
        "no credentials": "POST /api/v1/messages HTTP/1.1",
        "an unknown publisher": "POST /api/v1/messages HTTP/1.1\r\nAuthorization: Basic bm9ib2R5Ong=",
        "a wrong secret": "POST /api/v1/messages HTTP/1.1\r\nAuthorization: Basic "
                          + base64.b64encode(b"site:wrong").decode(),
        "a wrong admin token": "POST /admin/v1/publishers HTTP/1.1\r\nAuthorization: Bearer nope",
    }
    with body_kept(daemon.service.api_port.factory) as kept:
        for what, head in heads.items():
            kept[0] = 0
            status, headers, body = await upload(port, head, 4 * 1024 * 1024, chunked=True)
            expect_raw_error(status, headers, body, 401)
            # Nothing, or what came in one read with the head while the
            # publisher was looked up: never the 4 MB sent.
            assert kept[0] <= 128 * 1024, (what, kept)
        # The real publisher's body is read.
        kept[0] = 0
        good = "POST /api/v1/messages HTTP/1.1\r\nAuthorization: Basic " + \
            base64.b64encode(f"site:{secret}".encode()).decode()
        status, headers, body = await upload(port, good, 100_000, chunked=True)
        assert kept[0] == 100_000
        expect_raw_error(status, headers, body, 400)  # not JSON, but read


# Heads, names, configuration


@pytest.mark.integration
@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("listener", ["public", "api"])
async def test_a_drip_fed_request_head_is_cut(listener):
    async with running(public={"header_timeout": 1}, api={"header_timeout": 1}) as daemon:
        port = daemon.public_port if listener == "public" else daemon.service.api_port.getHost().port
        client = await connect(port)
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        started = time.monotonic()
        for byte in head:
            if client.done:
                break
            client.send(bytes([byte]))
            await sleep(0.1)  # well within the 60 s idle timeout, every time
        assert client.done, "the drip-fed head was never cut"
        assert time.monotonic() - started < 4
        status, headers, body = parse_response(bytes(client.data))
        assert status == 408 and json.loads(body)["error"] == "header_timeout"
        # A head in time, then a long wait for the answer, is not cut.
        status, body = await call("GET", daemon.public + "/sub/site/none?timeout=0")
        assert status == 404


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_request_that_takes_long_after_its_head_is_not_cut_by_the_head_timeout():
    async with running(public={"header_timeout": 0.5}) as daemon:
        await setup_site(daemon)
        started = time.monotonic()
        status, body = await call("GET", daemon.public + "/sub/site/news?timeout=1.5")
        assert status == 200 and body["messages"] == [], body
        assert time.monotonic() - started >= 1.4


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_dot_and_dot_dot_are_not_center_names(daemon):
    secret = await daemon.add_publisher("site")
    port = daemon.service.api_port.getHost().port
    for name in (".", ".."):
        with pytest.raises(BadRequest):
            check_center_name(name)
        client = await connect(port)
        auth = base64.b64encode(f"site:{secret}".encode()).decode()
        client.send(f"PUT /api/v1/centers/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                    f"Connection: close\r\nContent-Length: 0\r\n\r\n".encode())
        assert await client.wait_closed(5)
        status, headers, body = parse_response(bytes(client.data))
        assert status == 400 and json.loads(body)["error"] == "invalid_center_name", body
    assert check_center_name("...") == "..."


@pytest.mark.parametrize("url", ["redis://:hunter2@localhost:notaport/0", "redis://user:hunter2@localhost/zero",
                                 "redis//:hunter2@localhost"])
def test_configuration_errors_never_show_a_password(url):
    with pytest.raises(ConfigError) as caught:
        parse_config(f'[store]\nurl = "{url}"\n')
    assert "hunter2" not in str(caught.value)
    assert "URL" in str(caught.value) or "scheme" in str(caught.value)


def _head(method: bytes, target: bytes, authorization: bytes | None = None) -> Request:
    """A request as the api listener's connection has it once its head is read."""
    fields = [(b"Authorization", authorization)] if authorization is not None else []
    return Request(cast(HttpConnection, None), method, target, {k.lower(): v for k, v in fields}, fields)


def test_the_api_gate_bounds_each_route():
    config = parse_config('[centers]\nmax_message_bytes = 1000\n[api]\nadmin_token = "t"\n')
    api = ApiApp.__new__(ApiApp)
    api.config = config
    assert api.body_gate(_head(b"POST", b"/admin/v1/publishers", b"Bearer t"))[0] == 65536
    assert api.body_gate(_head(b"POST", b"/admin/v1/publishers", b"Bearer x"))[0] == 0
    assert api.body_gate(_head(b"GET", b"/metrics"))[0] == 0
    assert api.body_gate(_head(b"POST", b"/api/v1/centers/news/messages"))[0] == 0
    assert api.body_gate(_head(b"POST", b"/api/v1/messages", b"Basic eA=="), 10, True)[0] == 16 * 1024 * 1024
    # A body that came whole with its head is read: the handler refuses it if need be.
    assert api.body_gate(_head(b"POST", b"/api/v1/centers/news/messages"), 10, True) == (1000, None)


def test_token_deadlines_share_one_timer_and_skip_who_left():
    clock = Clock()
    deadlines = TokenDeadlines(clock)

    class Hub:  # the deadlines refer to it weakly
        subscribers: set[Any] = set()

    hub = Hub()
    closed: list[tuple[int, str]] = []

    class Subscriber:
        def __init__(self, number: int) -> None:
            self.number = number

        def close(self, reason: str) -> None:
            closed.append((self.number, reason))
            hub.subscribers.discard(self)

    subscribers = [Subscriber(n) for n in range(5)]
    hub.subscribers.update(subscribers)
    for n, subscriber in enumerate(subscribers):
        deadlines.add(10.0 - n, hub, subscriber)  # type: ignore[arg-type]
    assert len(clock.getDelayedCalls()) == 1
    hub.subscribers.discard(subscribers[0])  # gone before its token expires
    clock.advance(7)
    assert closed == [(4, "expired"), (3, "expired")]
    clock.advance(10)
    assert closed == [(4, "expired"), (3, "expired"), (2, "expired"), (1, "expired")]
    assert clock.getDelayedCalls() == [] and len(deadlines) == 0


def test_a_subscriber_that_left_is_freed_before_its_token_expires():
    """The deadlines refer to a subscriber weakly: one that left (and its
    connection) is freed at once, with no collection of cycles, not kept
    until its token's time or the next sweep."""
    clock = Clock()
    deadlines = TokenDeadlines(clock)

    class Hub:
        def __init__(self) -> None:
            self.subscribers: set[object] = set()

    class Subscriber:
        def close(self, reason: str) -> None:
            raise AssertionError("a subscriber that left is not closed again")

    hub, subscriber = Hub(), Subscriber()
    hub.subscribers.add(subscriber)
    deadlines.add(3600.0, hub, subscriber)  # type: ignore[arg-type]
    gone = weakref.ref(subscriber)
    hub.subscribers.discard(subscriber)
    collecting = gc.isenabled()
    gc.disable()
    try:
        del subscriber
        assert gone() is None
    finally:
        if collecting:
            gc.enable()
    clock.advance(3600)
    assert clock.getDelayedCalls() == []


def test_connections_per_address_count_an_ipv6_client_by_its_64_network() -> None:
    from twisted.internet.address import IPv4Address, IPv6Address
    from twisted.internet.protocol import Factory, Protocol

    from notifier.sockets import PerPeerLimit, peer_of

    assert peer_of("192.0.2.7") == "192.0.2.7"
    assert peer_of("2001:db8:1:2:aaaa::1") == peer_of("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert peer_of("2001:db8:1:3::1") != peer_of("2001:db8:1:2::1")
    assert peer_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert peer_of(None) is None
    limit = PerPeerLimit(Factory.forProtocol(Protocol), 2)
    built = [limit.buildProtocol(IPv6Address("TCP", f"2001:db8:1:2::{n}", 5000)) for n in range(1, 4)]
    assert [type(protocol).__name__ for protocol in built] == ["_Counted", "_Counted", "_Refused"]
    assert type(limit.buildProtocol(IPv6Address("TCP", "2001:db8:1:3::1", 5000))).__name__ == "_Counted"
    assert type(limit.buildProtocol(IPv4Address("TCP", "192.0.2.7", 5000))).__name__ == "_Counted"
