"""Limits and abuse over real sockets: sizes, names, caps, timeouts, slow and
dead peers, malformed HTTP and WebSocket traffic, and a fuzzer.

Most clients here are raw TCP sockets (``tests.raw``) so that the server sees
exactly the bytes a broken or hostile peer would send. Every wait is bounded.
"""

from __future__ import annotations

import base64
import gc
import json
import os
from typing import Any
from urllib.parse import quote

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred

from notifier.http.api import max_body_bytes
from notifier.http.connection import HttpSite
from notifier.http.listeners import api_site, public_site
from notifier.transports.websocket import SLOW_CONSUMER
from tests.raw import (
    RawWebSocket,
    body_kept,
    client_frame,
    close_code,
    connect,
    exchange,
    expect_raw_error,
    get_request,
    parse_response,
    raw_websocket,
    request,
    stuck_event_stream,
    upload,
    ws_handshake,
)
from tests.support import (
    ADMIN_TOKEN,
    Daemon,
    admin_stats,
    basic,
    call,
    event_source,
    expect_json_error,
    healthy,
    publish,
    rss,
    running,
    server_side,
    setup_site,
    sleep,
    small_send_buffer,
    start_daemon,
    subscriber_count,
    until,
    websocket,
)

pytestmark = pytest.mark.integration


# 1. message size and names


@pytest_twisted.ensureDeferred
async def test_exactly_max_message_bytes_is_accepted_and_one_more_is_413():
    async with running(centers={"max_message_bytes": 1000}) as daemon:
        auth = await setup_site(daemon)
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        exact = "é" * 499 + "xy"  # 1000 bytes, 501 characters: bytes are counted
        status, body = await publish(daemon, auth, exact)
        assert status == 201, body
        assert await ws.next() == exact
        for over in (exact + "z", "é" * 500 + "z"):
            status, body = await publish(daemon, auth, over)
            expect_json_error(status, body, 413)
        # The batch endpoint counts the same way, and refuses the whole batch.
        batch = {"messages": [{"center": "news", "data": "first"}, {"center": "news", "data": exact + "z"}]}
        status, body = await call("POST", f"{daemon.api}/api/v1/messages", batch, auth=auth)
        expect_json_error(status, body, 413)
        batch["messages"][1]["data"] = exact
        status, body = await call("POST", f"{daemon.api}/api/v1/messages", batch, auth=auth)
        assert status == 201 and len(body["ids"]) == 2, body
        assert [await ws.next(), await ws.next()] == ["first", exact]
        ws.close()


@pytest_twisted.ensureDeferred
async def test_the_default_limit_is_64_kib(daemon):
    auth = await setup_site(daemon)
    status, body = await publish(daemon, auth, "x" * 65536)
    assert status == 201, body
    status, body = await publish(daemon, auth, "x" * 65537)
    expect_json_error(status, body, 413)


@pytest_twisted.ensureDeferred
async def test_invalid_center_and_publisher_names_are_json_400s(daemon):
    auth = await setup_site(daemon)
    for name in ("bad%20name", "a" * 201, "caf%C3%A9", "quote%22", "%00", "hash%23"):
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/{name}", auth=auth)
        expect_json_error(status, body, 400, "invalid_center_name")
    status, body = await call("PUT", f"{daemon.api}/api/v1/centers/{'a' * 200}", auth=auth)
    assert status == 201, body
    batch = {"messages": [{"center": "bad name", "data": "x"}]}
    status, body = await call("POST", f"{daemon.api}/api/v1/messages", batch, auth=auth)
    expect_json_error(status, body, 400, "invalid_center_name")
    for name in ("Upper", "-dash", "_under", "a" * 65, "", "sp ace", "dot.ted", "ü", 17, None):
        status, body = await daemon.admin("POST", "/admin/v1/publishers", {"name": name})
        expect_json_error(status, body, 400)
        assert body["error"] in ("invalid_publisher_name", "invalid_publisher"), (name, body)
    status, body = await daemon.admin("POST", "/admin/v1/publishers", {"name": "a" * 64})
    assert status == 201, body


# 2. subscribers per center


def _assert_full(answer: tuple[int, dict[bytes, bytes], bytes]) -> None:
    status, headers, body = answer
    assert status == 503, answer
    assert headers.get(b"retry-after", b"").isdigit(), headers
    error = json.loads(body)
    assert headers[b"content-type"].startswith(b"application/json")
    assert error["error"] == "center_full" and isinstance(error["message"], str), error


@pytest_twisted.ensureDeferred
async def test_max_per_center_refuses_the_third_subscriber_on_every_transport():
    async with running(subscribers={"max_per_center": 2}) as daemon:
        auth = await setup_site(daemon)
        port = daemon.public_port
        first = await websocket(f"{daemon.ws}/sub/site/news", port)
        second = await websocket(f"{daemon.ws}/sub/site/news", port)
        assert await subscriber_count(daemon, auth) == 2
        _assert_full(await request(port, ws_handshake("/sub/site/news")))
        _assert_full(await request(port, get_request("/sub/site/news", "Accept: text/event-stream")))
        _assert_full(await request(port, get_request("/sub/site/news?timeout=0")))
        status, _, _ = await request(port, get_request("/sub/site/news/last"))
        assert status == 204  # reading the latest message subscribes to nothing
        with pytest.raises(ConnectionError):
            await websocket(f"{daemon.ws}/sub/site/news", port)
        # One leaves: a new one gets in, and the center is full again.
        first.close()
        await first.closed
        await until(lambda: len(daemon.service.centers.loaded("site", "news").subscribers) == 1, 5,
                    "the first subscriber leaving")
        third = await websocket(f"{daemon.ws}/sub/site/news", port)
        _assert_full(await request(port, get_request("/sub/site/news", "Accept: text/event-stream")))
        third.close()
        await third.closed
        await until(lambda: len(daemon.service.centers.loaded("site", "news").subscribers) == 1, 5,
                    "the third subscriber leaving")
        stream = await event_source(port, "/sub/site/news")
        assert stream.status == 200
        _assert_full(await request(port, get_request("/sub/site/news?timeout=0")))
        stream.close()
        await stream.ended
        await until(lambda: len(daemon.service.centers.loaded("site", "news").subscribers) == 1, 5,
                    "the event stream leaving")
        status, _, body = await request(port, get_request("/sub/site/news?timeout=0"))
        assert status == 200 and json.loads(body)["messages"] == [], body
        status, body = await publish(daemon, auth, "still there")
        assert status == 201 and body["subscribers"] == 1, body
        assert await second.next() == "still there"
        second.close()
        await second.closed


# 3. request caps on both listeners


@pytest_twisted.ensureDeferred
async def test_an_api_body_over_the_cap_is_413_and_never_kept(daemon):
    auth = await setup_site(daemon)
    cap = max_body_bytes(daemon.service.config)
    port = daemon.service.api_port.getHost().port
    credentials = basic(*auth)
    head = f"POST /api/v1/centers/news/messages HTTP/1.1\r\nAuthorization: {credentials}\r\nContent-Type: text/plain"
    with body_kept(daemon.service.api_port.factory) as kept:
        # A message is kept up to its own bound, not the batch's.
        message_cap = daemon.service.config.centers.max_message_bytes
        for chunked in (False, True):
            expect_raw_error(*await upload(port, head, cap + 1, chunked), 413)
            assert kept[0] <= message_cap, kept
        kept[0] = 0
        expect_raw_error(*await upload(port, head, message_cap + 1), 413)
        assert kept[0] == 0  # its length said so: nothing read
        # A batch too, up to the batch cap.
        kept[0] = 0
        expect_raw_error(*await upload(port, head.replace("centers/news/messages", "messages"), cap + 1, True), 413)
        assert message_cap < kept[0] <= cap, kept
        # The admin API's small JSON bodies.
        admin = f"POST /admin/v1/publishers HTTP/1.1\r\nAuthorization: Bearer {ADMIN_TOKEN}"
        kept[0] = 0
        expect_raw_error(*await upload(port, admin, 2 * 1024 * 1024), 413)
        assert kept[0] == 0
        expect_raw_error(*await upload(port, admin, 2 * 1024 * 1024, True), 413)
        assert 0 < kept[0] <= 64 * 1024, kept
    await healthy(daemon)
    assert await subscriber_count(daemon, auth) == 0


@pytest_twisted.ensureDeferred
async def test_a_public_body_is_never_kept_past_4096_bytes(daemon):
    await setup_site(daemon)
    port = daemon.public_port
    with body_kept(daemon.service.public_port.factory) as kept:
        for path in ("/sub/site/news?timeout=0", "/sub/site/news/last", "/healthz"):
            for chunked in (False, True):
                status, headers, body = await upload(port, f"GET {path} HTTP/1.1", 1024 * 1024, chunked)
                # Refused at once, the body unread.
                expect_raw_error(status, headers, body, 400, "body_not_allowed")
                assert kept[0] == 0, kept
    await healthy(daemon)


#: Heads over the bounds: 16 KiB of target and fields, 500 fields (431).
TOO_LARGE = {
    "a 20 KB header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
    "a 20 KB request line": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "600 headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                   + b"".join(b"X-H%d: v\r\n" % i for i in range(600)) + b"\r\n",
    "20 KB of headers": b"GET /healthz HTTP/1.1\r\n"
                        + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(20)) + b"\r\n",
}
MALFORMED = {
    "a Host given twice": b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    "an Authorization given twice": b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\n"
                                    b"Authorization: b\r\n\r\n",
    "garbage": b"GARBAGE\r\n\r\n",
    "binary": b"\x00\x01\x02\xff\xfe\r\n\r\n",
    "HTTP/9.9": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "no version": b"GET /healthz\r\nHost: x\r\n\r\n",
    "a bad version": b"GET /healthz HTTP/x.y\r\nHost: x\r\n\r\n",
    "a space in the target": b"GET /heal thz HTTP/1.1\r\nHost: x\r\n\r\n",
    "a non-ASCII target": "GET /sub/é/ü HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "Content-Length: abc": b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "Content-Length: -5": b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "two Content-Lengths": b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                           b"Content-Length: 2\r\n\r\nab",
    "Content-Length and chunked": b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "a bad chunk": b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "a NUL in a header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    "a header without a colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    "a bad header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
}


@pytest_twisted.ensureDeferred
async def test_malformed_requests_are_json_400s_on_both_listeners(daemon):
    for port in (daemon.public_port, daemon.service.api_port.getHost().port):
        for name, data in MALFORMED.items():
            answer, closed = await exchange(port, data)
            assert closed, f"{name}: the server kept the connection open"
            assert answer.startswith(b"HTTP/1.1 400 "), (name, answer[:300])
            expect_raw_error(*parse_response(answer), 400, "bad_request")
            await healthy(daemon)
        for name, data in TOO_LARGE.items():
            answer, closed = await exchange(port, data)
            assert closed, f"{name}: the server kept the connection open"
            expect_raw_error(*parse_response(answer), 431, "head_too_large")
        for coding in (b"gzip", b"gzip, chunked", b"identity"):
            answer, closed = await exchange(port, b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                                            + coding + b"\r\n\r\n")
            assert closed, coding
            expect_raw_error(*parse_response(answer), 501, "not_implemented")
        await healthy(daemon)


@pytest_twisted.ensureDeferred
async def test_a_path_that_is_not_utf8_is_a_json_400(daemon):
    for port in (daemon.public_port, daemon.service.api_port.getHost().port):
        for path in (b"/sub/%ff%fe/x", b"/api/v1/centers/%c3%28", b"/%80"):
            answer, closed = await exchange(port, get_request(path.decode()))
            assert closed
            expect_raw_error(*parse_response(answer), 400, "invalid_url")
            await healthy(daemon)


@pytest_twisted.ensureDeferred
async def test_odd_request_targets_are_json_errors(daemon):
    await setup_site(daemon)
    for port in (daemon.public_port, daemon.service.api_port.getHost().port):
        for target, status in ((b"/sub/site//last", 404), (b"/api/v1//centers", 404), (b"*", 405)):
            answer, closed = await exchange(port, get_request(target.decode()))
            assert closed
            expect_raw_error(*parse_response(answer), status)
        answer, closed = await exchange(port, get_request("*").replace(b"GET", b"OPTIONS"))
        assert parse_response(answer)[0] == 200 and closed
        await healthy(daemon)


async def _listen(site: HttpSite) -> Any:
    return await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)


@pytest_twisted.ensureDeferred
async def test_a_slow_request_is_cut_after_the_idle_timeout(daemon):
    for port in (daemon.service.public_port, daemon.service.api_port):
        assert 0 < port.factory.timeOut <= 300  # both listeners cut idle peers
    listening = await _listen(api_site(daemon.service.api, daemon.service.config, reactor,
                                       turn=daemon.service.api_port.factory.turn, timeout=1))
    try:
        port = listening.getHost().port
        partials = (
            b"", b"GET /heal", b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
            b"POST /admin/v1/publishers HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"na",
            # A body announced far past the cap and never sent: discarded as
            # it would come, and the silence cuts it like any other.
            b"POST /api/v1/messages HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\nabc",
        )
        clients = [await connect(port) for _ in partials]
        for client, partial in zip(clients, partials, strict=False):
            client.send(partial)
        for client, partial in zip(clients, partials, strict=False):
            assert await client.wait_closed(6), f"{partial!r} was not cut"
        status, _, body = await request(port, get_request("/healthz"))
        assert status == 200 and json.loads(body) == {"status": "ok"}
    finally:
        await listening.stopListening()
    await healthy(daemon)


# 4. WebSocket abuse


@pytest_twisted.ensureDeferred
async def test_bad_websocket_handshakes_are_refused_with_a_json_http_error(daemon):
    auth = await setup_site(daemon)
    watcher = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    for name, data in {
        "no key": ws_handshake("/sub/site/news", key=False),
        "a short key": ws_handshake("/sub/site/news", key=False).replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Key: abc\r\n\r\n"),
        "version 99": ws_handshake("/sub/site/news", version=b"99"),
        "version x": ws_handshake("/sub/site/news", version=b"x"),
        "no version": ws_handshake("/sub/site/news", version=None),
        "no Connection: Upgrade": ws_handshake("/sub/site/news").replace(b"Connection: Upgrade\r\n", b""),
        "POST": ws_handshake("/sub/site/news", method=b"POST"),
        "PUT": ws_handshake("/sub/site/news", method=b"PUT"),
        "DELETE": ws_handshake("/sub/site/news", method=b"DELETE"),
    }.items():
        status, headers, body = await request(daemon.public_port, data)
        expect_raw_error(status, headers, body)
        assert status in (400, 405, 426), (name, status)
    await healthy(daemon)
    status, body = await publish(daemon, auth, "after")
    assert status == 201 and body["subscribers"] == 1, body
    assert await watcher.next() == "after"
    watcher.close()
    await watcher.closed


async def _pong(ws: RawWebSocket, payload: bytes, timeout: float = 5) -> None:
    """Ping and wait for the pong: every frame sent before has been read."""
    ws.send(client_frame(0x9, payload))
    await until(lambda: (0xA, payload) in ws.frames or ws.client.done, timeout, "the pong")
    assert not ws.client.done, "the server closed the connection"


@pytest_twisted.ensureDeferred
async def test_abusive_frames_close_the_abuser_and_nobody_else(daemon):
    auth = await setup_site(daemon)
    watcher = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    abuses = {
        "a 4097-byte frame": (client_frame(0x1, b"a" * 4097), {1009}),
        "a 64 KiB binary frame": (client_frame(0x2, os.urandom(65536)), {1009}),
        "an unmasked frame": (client_frame(0x1, b"hello", masked=False), {1002}),
        "garbage": (b"\xff" * 64, {1002}),
        "a reserved opcode": (client_frame(0x3, b"x"), {1002}),
        "invalid UTF-8 text": (client_frame(0x1, b"\xc3\x28"), {1007}),
        "a 200-byte ping": (client_frame(0x9, b"p" * 200), {1002}),
        "a fragmented ping": (client_frame(0x9, b"p", fin=False), {1002}),
        "a continuation out of nowhere": (client_frame(0x0, b"x"), {1002}),
    }
    for i, (name, (data, codes)) in enumerate(abuses.items()):
        abuser = await raw_websocket(daemon.public_port, "/sub/site/news")
        await _pong(abuser, b"ok")
        abuser.send(data)
        assert await abuser.client.wait_closed(5), f"{name}: the connection stayed open"
        code = close_code(abuser.frames)
        assert code is None or code in codes, (name, code)
        await until(lambda: len(daemon.service.centers.loaded("site", "news").subscribers) == 1, 5,
                    f"{name}: the abuser leaving the center")
        status, body = await publish(daemon, auth, f"after {i}")
        assert status == 201 and body["subscribers"] == 1, body
        assert await watcher.next() == f"after {i}", name
    await healthy(daemon)
    watcher.close()
    await watcher.closed


@pytest_twisted.ensureDeferred
async def test_fragmented_client_messages_over_1_mb_are_discarded_as_they_come(daemon):
    auth = await setup_site(daemon)
    watcher = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    ws = await raw_websocket(daemon.public_port, "/sub/site/news")
    await _pong(ws, b"open")
    server = server_side(daemon, ws.local_port)
    piece = b"f" * 4000
    ws.send(client_frame(0x1, piece, fin=False))
    for _ in range(300):  # 1.2 MB in one message, never finished yet
        ws.send(client_frame(0x0, piece, fin=False))
    await _pong(ws, b"mid-message")
    held = sum(map(len, server.message_data or [])) + sum(map(len, server.frame_data or []))
    assert held <= 4096, f"the server holds {held} bytes of the client's message"
    ws.send(client_frame(0x0, piece, fin=True))
    ws.send(client_frame(0x1, b"and a small one"))
    await _pong(ws, b"end")
    assert not server.message_data
    status, body = await publish(daemon, auth, "still subscribed")
    assert status == 201 and body["subscribers"] == 2, body
    await until(lambda: "still subscribed" in ws.texts(), 5, "the publish reaching the raw client")
    assert await watcher.next() == "still subscribed"
    assert not ws.client.done
    ws.client.transport.loseConnection()
    watcher.close()
    await watcher.closed


# 5. dead peers


@pytest_twisted.ensureDeferred
async def test_a_peer_that_never_answers_pings_is_dropped_and_a_live_one_stays():
    async with running(subscribers={"ping_interval": 0.2}) as daemon:
        auth = await setup_site(daemon)
        dead = await raw_websocket(daemon.public_port, "/sub/site/news")
        hub = daemon.service.centers.loaded("site", "news")
        await until(lambda: len(hub.subscribers) == 1, 5, "the raw client subscribing")
        assert await dead.client.wait_closed(3), "a peer that never answers pings was kept"
        assert any(opcode == 0x9 for opcode, _ in dead.frames), "it was never pinged"
        await until(lambda: not hub.subscribers, 2, "the dead peer leaving the center")
        assert await subscriber_count(daemon, auth) == 0
        # Autobahn answers pings by itself: it stays for many intervals.
        live = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        await sleep(1.5)
        assert not live.closed.called
        assert await subscriber_count(daemon, auth) == 1
        status, body = await publish(daemon, auth, "alive")
        assert status == 201 and body["subscribers"] == 1, body
        assert await live.next() == "alive"
        live.close()
        await live.closed


# 6. the opening handshake is bounded in time


@pytest_twisted.ensureDeferred
async def test_a_silent_or_half_handshake_is_disconnected_within_the_timeout(daemon):
    auth = await setup_site(daemon)
    listening = await _listen(public_site(daemon.service.public, daemon.service.config, reactor,
                                       turn=daemon.service.api_port.factory.turn, timeout=1))
    try:
        port = listening.getHost().port
        handshake = ws_handshake("/sub/site/news")
        partials = (b"", handshake[:10], handshake[:len(handshake) // 2], handshake[:-2])
        clients = [await connect(port) for _ in partials]
        for client, partial in zip(clients, partials, strict=False):
            client.send(partial)
        for client, partial in zip(clients, partials, strict=False):
            assert await client.wait_closed(6), f"{partial!r} was not cut"
            assert not client.data or client.data.startswith(b"HTTP/1.1 4"), bytes(client.data)
        # The whole handshake still opens, and an open WebSocket is not idle-timed out.
        ws = await raw_websocket(port, "/sub/site/news")
        await sleep(2)
        assert not ws.client.done
        status, body = await publish(daemon, auth, "through the short-timeout site")
        assert status == 201, body
        await until(lambda: "through the short-timeout site" in ws.texts(), 5, "the message")
        ws.client.transport.loseConnection()
        await ws.client.closed
    finally:
        await listening.stopListening()
    await healthy(daemon)


# 7. slow consumers


async def _publish_many(daemon: Daemon, auth: tuple[str, str], texts: list[str], per_request: int = 10) -> None:
    """Publish *texts* in order, a few per request, as a busy site would."""
    for start in range(0, len(texts), per_request):
        batch = {"messages": [{"center": "news", "data": text} for text in texts[start:start + per_request]]}
        status, body = await call("POST", f"{daemon.api}/api/v1/messages", batch, auth=auth)
        assert status == 201, body


class _Follower:
    """Reads an Autobahn subscriber as messages come, checking their order
    without holding them."""

    def __init__(self, ws: Any, expected: list[str]) -> None:
        self.count = 0
        self.done = Deferred.fromCoroutine(self._follow(ws, expected))

    async def _follow(self, ws: Any, expected: list[str]) -> None:
        for text in expected:
            received = await ws.next(timeout=30)
            assert received == text, (self.count, received[:10], text[:10])
            self.count += 1


MESSAGES = [f"{i:05d}" + "m" * 2043 for i in range(2000)]  # 2000 messages of 2 KiB
PUBLISHED = sum(map(len, MESSAGES))


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_subscriber_that_never_reads_is_dropped_and_memory_stays_bounded(transport):
    async with running(subscribers={"send_buffer_bytes": 65536}) as daemon:
        auth = await setup_site(daemon)
        normal = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        if transport == "websocket":
            stuck = await raw_websocket(daemon.public_port, "/sub/site/news", rcvbuf=4096)
            stuck.client.transport.pauseProducing()  # reads nothing more
            client = stuck.client
            port = stuck.local_port
        else:
            client = await stuck_event_stream(daemon.public_port)
            port = client.transport.getHost().port
        server = server_side(daemon, port)
        small_send_buffer(server)
        hub = daemon.service.centers.loaded("site", "news")
        assert len(hub.subscribers) == 2
        gc.collect()
        before = rss()
        follower = _Follower(normal, MESSAGES)
        await _publish_many(daemon, auth, MESSAGES)
        await follower.done  # every message, in order
        gc.collect()
        grown = rss() - before
        # Had the stuck subscriber kept what it could not send, the process
        # would hold nearly all of it (the history keeps only 100 messages).
        assert grown < PUBLISHED / 2, f"the process grew by {grown} bytes for {PUBLISHED} published"
        assert server not in hub.subscribers
        if transport == "websocket":
            assert server.localCloseCode == SLOW_CONSUMER
            # The close frame waits behind what the peer never read: the close
            # handshake timeout cuts the connection.
            await until(lambda: server.state == server.STATE_CLOSED, 2 + 3, "the stuck connection closing")
        stats = await admin_stats(daemon)
        assert stats["dropped_subscribers"] >= 1, stats
        assert await subscriber_count(daemon, auth) == 1
        # The stuck client, reading again, finds its connection gone.
        client.transport.resumeProducing()
        assert await client.wait_closed(5), "the stuck connection was not closed"
        status, body = await publish(daemon, auth, "after the drop")
        assert status == 201 and body["subscribers"] == 1, body
        assert await normal.next() == "after the drop"
        normal.close()
        await normal.closed


@pytest_twisted.ensureDeferred
async def test_a_slow_consumer_within_its_budget_is_not_dropped():
    async with running(subscribers={"send_buffer_bytes": 65536}) as daemon:
        auth = await setup_site(daemon)
        slow = await raw_websocket(daemon.public_port, "/sub/site/news", rcvbuf=4096)
        slow.client.transport.pauseProducing()
        server = server_side(daemon, slow.local_port)
        small_send_buffer(server)
        hub = daemon.service.centers.loaded("site", "news")
        sent: list[str] = []
        # Publish until the connection is full and messages queue for it,
        # well within its 64 KiB budget.
        while server._waiting is None or server._waiting_bytes < 16384:
            assert len(sent) < 2000, "the connection never filled up"
            sent.append(f"{len(sent):05d}" + "s" * 4091)
            status, body = await publish(daemon, auth, sent[-1])
            assert status == 201 and body["subscribers"] == 1, body
        assert server in hub.subscribers
        await sleep(0.5)  # slow, not dead
        slow.client.transport.resumeProducing()
        await until(lambda: len(slow.texts()) >= len(sent), 10, "the slow consumer catching up")
        assert slow.texts() == sent
        assert server in hub.subscribers and server._waiting is None
        status, body = await publish(daemon, auth, "one more")
        assert status == 201 and body["subscribers"] == 1, body
        await until(lambda: slow.texts()[-1:] == ["one more"], 5, "the next message")
        assert (await admin_stats(daemon))["dropped_subscribers"] == 0
        assert not slow.client.done
        slow.client.transport.loseConnection()


# 8. fuzzing both listeners


ROUTES = [
    "/sub/{p}/{c}", "/sub/{p}/{c}/last", "/sub/{p}", "/sub/{p}/{c}/{x}", "/healthz", "/notifier.js",
    "/api/v1/centers", "/api/v1/centers/{c}", "/api/v1/centers/{c}/messages", "/api/v1/messages",
    "/admin/v1/publishers", "/admin/v1/publishers/{p}", "/admin/v1/publishers/{p}/rotate",
    "/admin/v1/stats", "/metrics", "/{x}", "/{x}/{c}", "{x}", "*", "/",
]

_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
                       max_size=80).map(lambda t: t.encode("utf-8"))
_segments = st.one_of(
    st.sampled_from(["site", "news", "other", "", ".", "..", "%2F", "%00", "%ZZ", "%", "a%2Fb", "%C3%A9",
                     "%ff"]),
    st.from_regex(r"[A-Za-z0-9._:@~-]{1,40}", fullmatch=True),
    st.text(max_size=30).map(lambda t: quote(t, safe="")),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#"), max_size=20),
    st.integers(200, 20_000).map(lambda n: "a" * n),
)
_query_values = st.one_of(
    st.text(max_size=20).map(lambda t: quote(t, safe="")),
    st.sampled_from(["raw", "json", "xml", "cb", "a.b", "1x", "stale-3", "0-0", "%ff", "", "site",
                     "x" * 3000]),
)
_queries = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["since", "token", "format", "callback", "x", "", "timeout[]"]),
                  _query_values),
        # A long-poll may wait no longer than this configuration's 0 s.
        st.tuples(st.just("timeout"),
                  st.sampled_from(["0", "0.0", "-1", "nan", "inf", "121", "1e9", "soon", ""])),
    ),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))


@st.composite
def _paths(draw: Any) -> bytes:
    route = draw(st.sampled_from(ROUTES))
    path = route.format(p=draw(_segments), c=draw(_segments), x=draw(_segments))
    query = draw(_queries)
    return (path + ("?" + query if query else "")).encode("utf-8")


def _hmac_header(draw: Any) -> bytes:
    publisher = draw(st.sampled_from(["site", "nobody", "", "x" * 100]))
    timestamp = draw(st.one_of(st.integers(-10, 10**14).map(str), st.sampled_from(["", "now", "1.5"])))
    signature = draw(st.one_of(st.text("0123456789abcdef", min_size=64, max_size=64), st.text(max_size=70)))
    joiner = draw(st.sampled_from([", ", ",", " , ", ";"]))
    parameters = [f"publisher={publisher}", f"timestamp={timestamp}", f"signature={signature}"]
    return ("Notifier-HMAC-SHA256 " + joiner.join(parameters)).encode("utf-8")


#: Stands for the publisher's real Basic credentials, known only once it runs.
VALID_BASIC = b"<valid basic credentials>"


@st.composite
def _authorizations(draw: Any) -> bytes | None:
    kind = draw(st.sampled_from(
        ["none", "basic", "basic-valid", "basic-garbage", "bearer", "admin", "hmac", "junk"]))
    if kind == "none":
        return None
    if kind == "basic-valid":
        return VALID_BASIC
    if kind == "basic":
        user, password = draw(st.text(max_size=20)), draw(st.text(max_size=60))
        return b"Basic " + base64.b64encode(f"{user}:{password}".encode())
    if kind == "basic-garbage":
        return b"Basic " + draw(_header_text)
    if kind == "bearer":
        return b"Bearer " + draw(_header_text)
    if kind == "admin":
        return f"Bearer {ADMIN_TOKEN}".encode()
    if kind == "hmac":
        return _hmac_header(draw)
    return draw(_header_text)


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=20,
)
_bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=3000),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda name: json.dumps({"name": name}).encode(), _json_values),
    st.builds(lambda messages: json.dumps({"messages": messages}).encode(),
              st.lists(st.fixed_dictionaries({"center": _json_values, "data": _json_values}), max_size=4)),
    st.builds(lambda body: json.dumps(body).encode(),
              st.fixed_dictionaries({}, optional={"private": _json_values, "history": _json_values,
                                                  "ttl": _json_values})),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 100_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)
_methods = st.one_of(
    st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"]),
    st.from_regex(rb"[A-Za-z!#$%&'*+.^_`|~0-9-]{1,12}", fullmatch=True),
    st.binary(min_size=1, max_size=12).filter(lambda m: b"\r" not in m and b"\n" not in m),
)
_content_types = st.one_of(
    st.none(),
    st.sampled_from([b"text/plain", b"text/plain; charset=utf-8", b"application/json", b"application/xml",
                     b"application/ld+json", b"image/png", b"multipart/form-data; boundary=x",
                     b"application/x-www-form-urlencoded", b"", b";", b"text/"]),
    _header_text,
)


@st.composite
def _requests(draw: Any) -> tuple[str, bytes, bytes]:
    method, path, body = draw(_methods), draw(_paths()), draw(_bodies)
    headers = [b"Host: 127.0.0.1", b"Connection: close"]
    authorization = draw(_authorizations())
    if authorization is not None:
        headers.append(b"Authorization: " + authorization)
    content_type = draw(_content_types)
    if content_type is not None:
        headers.append(b"Content-Type: " + content_type)
    for name, values in ((b"Accept", st.sampled_from([b"text/event-stream", b"*/*", b"application/json"])),
                         (b"Origin", st.sampled_from([b"http://example.com", b"null", b""])),
                         (b"Idempotency-Key", st.one_of(_header_text, st.just(b"k" * 300))),
                         (b"Last-Event-ID", _header_text),
                         (b"X-Anything", _header_text)):
        if draw(st.integers(0, 4)) == 0:
            headers.append(name + b": " + draw(values))
    if draw(st.integers(0, 5)) == 0:
        headers += [b"Upgrade: websocket", b"Connection: Upgrade"]
        if draw(st.booleans()):
            key = draw(st.binary(min_size=16, max_size=16))
            headers += [b"Sec-WebSocket-Key: " + base64.b64encode(key), b"Sec-WebSocket-Version: 13"]
    framing = draw(st.sampled_from(["length", "length", "none", "chunked"]))
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    listener = draw(st.sampled_from(["public", "api"]))
    return listener, method + b" " + path + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n", body


SUCCESS_TYPES = (b"application/json", b"text/plain", b"application/javascript", b"text/event-stream")


async def _fuzz_once(daemon: Daemon, listener: str, head: bytes, body: bytes) -> None:
    port = daemon.public_port if listener == "public" else daemon.service.api_port.getHost().port
    client = await connect(port)
    client.send(head + body)

    def streaming(data: bytes) -> bool:
        return data.startswith(b"HTTP/1.1 101 ") or (
            data.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\n" in data
            and b"content-type: text/event-stream" in data.split(b"\r\n\r\n")[0].lower())

    for _ in range(250):  # 5 s
        if client.done or streaming(bytes(client.data)):
            break
        await sleep(0.02)
    else:
        client.transport.abortConnection()
        raise AssertionError(f"no answer within 5 s to {head[:300]!r}")
    data = bytes(client.data)
    if not client.done:
        client.transport.abortConnection()
        await client.closed
    assert data, f"closed without an answer to {head[:300]!r}"
    status, headers, answer = parse_response(data)
    kind = headers.get(b"content-type", b"").lower()
    what = (head[:300], status, headers, answer[:300])
    if status == 101:
        assert b"upgrade: websocket" in head.lower(), what
        return
    assert status < 500, what
    if 200 <= status < 300:
        # "OPTIONS *", CORS preflights and the like answer with no body.
        assert kind.startswith(SUCCESS_TYPES) or headers.get(b"content-length") == b"0" or status == 204, what
        return
    assert 400 <= status < 500, what
    assert kind.startswith(b"application/json"), what
    if not head.startswith(b"HEAD "):  # a HEAD answer has the headers only
        error = json.loads(answer)
        assert set(error) == {"error", "message"}, what


@pytest_twisted.async_yield_fixture(scope="module")
async def fuzzed():
    """One daemon for every fuzzed request, its long-polls answering at once."""
    daemon = await start_daemon(subscribers={"longpoll_timeout": 0})
    auth = await setup_site(daemon)
    yield daemon, auth
    await healthy(daemon)  # still answering after all of it
    await daemon.service.stopService()


@given(sent=_requests())
@settings(max_examples=int(os.environ.get("NOTIFIER_FUZZ_EXAMPLES", 200)), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@pytest_twisted.ensureDeferred
async def test_fuzzing_both_listeners_gives_successes_or_json_4xx_only(fuzzed, sent):
    daemon, auth = fuzzed
    listener, head, body = sent
    await _fuzz_once(daemon, listener, head.replace(VALID_BASIC, basic(*auth).encode()), body)
    await healthy(daemon)
