"""What docs/protocol.rst promises a WebSocket client written from it alone:
closing handshakes (docs/protocol.rst: WebSocket), where a subscription
starts and resumes, and the order of a batch across centers
(docs/protocol.rst: Many centers on one connection)."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, error

from tests.raw import RawClient, RawWebSocket, client_frame, close_code, connect, parse_response, ws_handshake
from tests.support import (
    Daemon,
    call,
    event_source,
    make_center,
    nothing_more,
    opened,
    published,
    running,
    setup_site,
    subscriber_count,
    until,
    websocket,
)

pytestmark = pytest.mark.integration


class _Client(RawClient):
    """A raw client that keeps why its connection ended."""

    reason: Any = None

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        super().connectionLost(reason)


async def _raw(port: int, path: str) -> tuple[RawWebSocket, _Client]:
    """A WebSocket on a raw socket (which answers nothing by itself)."""
    from twisted.internet import endpoints, reactor

    client = _Client()
    await endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), client)
    client.send(ws_handshake(path))
    await client.wait_for(lambda data: b"\r\n\r\n" in data)
    head = bytes(client.data).split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 101"), head
    return RawWebSocket(client, len(head) + 4), client


# closing


@pytest_twisted.ensureDeferred
async def test_a_client_frame_over_4_kib_gets_a_closing_handshake_with_1009() -> None:
    async with running() as daemon:
        await setup_site(daemon)
        # Over raw TCP: a close frame 1009, and once answered, the end of
        # the connection, never a reset (the rest of the frame is read).
        ws, client = await _raw(daemon.public_port, "/sub/site/news")
        ws.send(client_frame(0x1, b"x" * 65536))
        await until(lambda: close_code(ws.frames) is not None or client.done, 5, "a close frame")
        assert close_code(ws.frames) == 1009, ws.frames
        assert not client.done
        ws.send(client_frame(0x8, struct.pack("!H", 1009)))
        assert await client.wait_closed(5)
        assert client.reason.check(error.ConnectionDone), client.reason
        # A frame of exactly 4 KiB is taken (and ignored).
        ws, client = await _raw(daemon.public_port, "/sub/site/news")
        ws.send(client_frame(0x1, b"x" * 4096) + client_frame(0x9, b"still there?"))
        await until(lambda: (0xA, b"still there?") in ws.frames, 5, "the pong")
        assert close_code(ws.frames) is None and not client.done
        client.transport.loseConnection()
        # Autobahn's own client is told the same.
        ws_client = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        ws_client.protocol.sendMessage(b"y" * 4097)
        code, _ = await ws_client.closed
        assert code == 1009


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("code", [1000, 1001, 4001, 3000])
async def test_a_client_closing_gets_its_own_close_code_echoed(code: int) -> None:
    async with running() as daemon:
        await setup_site(daemon)
        ws_client = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        ws_client.protocol.sendCloseFrame(code=code, reasonUtf8=b"bye", isReply=False)
        got, _ = await ws_client.closed
        assert got == code
        # Over raw TCP, the echo is a close frame, then the connection ends.
        ws, client = await _raw(daemon.public_port, "/sub/site/news")
        ws.send(client_frame(0x8, struct.pack("!H", code)))
        assert await client.wait_closed(5)
        assert close_code(ws.frames) == code


# where a subscription starts


def _cursor_of(client: RawClient) -> str:
    """The ``Notifier-Cursor`` of a WebSocket's ``101`` answer."""
    status, headers, _ = parse_response(bytes(client.data).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    assert status == 101
    return headers[b"notifier-cursor"].decode()


def _plus(position: str, count: int) -> str:
    epoch, seq = position.rsplit("-", 1)
    return f"{epoch}-{int(seq) + count}"


@pytest_twisted.ensureDeferred
async def test_a_raw_websocket_learns_where_it_starts_and_resumes_with_exactly_what_it_missed() -> None:
    async with running() as daemon:
        auth = await setup_site(daemon)
        await published(daemon, auth, "before")
        ws, client = await _raw(daemon.public_port, "/sub/site/news")
        start = _cursor_of(client)
        await published(daemon, auth, "seen")
        await until(lambda: ws.texts() == ["seen"], 5, "the live message")
        client.transport.loseConnection()
        await client.closed
        missed = [await published(daemon, auth, text) for text in ("missed 1", "missed 2")]
        # One frame since it started: the position after it is one more.
        again, client = await _raw(daemon.public_port, f"/sub/site/news?since={_plus(start, 1)}")
        assert _cursor_of(client) == _plus(start, 1)
        await until(lambda: len(again.texts()) >= 2, 5, "the missed messages")
        assert again.texts() == ["missed 1", "missed 2"]
        assert _plus(start, 3) == missed[-1]
        await published(daemon, auth, "live")
        await until(lambda: len(again.texts()) >= 3, 5, "the live message")
        assert again.texts() == ["missed 1", "missed 2", "live"]
        # A WebSocket library's client reads it as well.
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        assert ws.protocol.http_headers["notifier-cursor"] == _plus(start, 4)
        ws.close()


@pytest_twisted.ensureDeferred
async def test_a_json_websocket_without_since_is_told_where_it_starts_and_resumes_from_there() -> None:
    async with running() as daemon:
        auth = await setup_site(daemon)
        await published(daemon, auth, "before")
        ws = await websocket(f"{daemon.ws}/sub/site/news?format=json", daemon.public_port)
        opening = await opened(ws)
        assert opening["recovered"] is True and opening["lost"] == []
        start = opening["cursor"]
        ws.close()
        await ws.closed
        missed = [await published(daemon, auth, text) for text in ("missed 1", "missed 2")]
        ws = await websocket(f"{daemon.ws}/sub/site/news?format=json&since={start}", daemon.public_port)
        assert await opened(ws) == {"cursor": start, "recovered": True, "lost": []}
        assert [json.loads(await ws.next())["id"] for _ in missed] == missed
        await nothing_more(ws, daemon, auth, as_json=True)


# publish order across centers


ORDER = ("a", "b", "a", "c", "b")
#: The URL's order is not the publish order.
SUB = "/sub/site/c,a,b"


async def _batch(daemon: Daemon, auth: tuple[str, str]) -> list[str]:
    status, body = await call("POST", f"{daemon.api}/api/v1/messages", {"messages": [
        {"center": center, "data": f"{center}{i}"} for i, center in enumerate(ORDER)]}, auth=auth)
    assert status == 201, body
    return body["ids"]


async def _polled(daemon: Daemon, since: str, count: int) -> list[str]:
    """The ids *count* messages come in, long-polling from *since*."""
    got: list[str] = []
    while len(got) < count:
        status, body = await call("GET", f"{daemon.public}{SUB}?since={since}&timeout=5")
        assert status == 200 and body["recovered"] is True, body
        got += [m["id"] for m in body["messages"]]
        since = body["last_id"]
    return got


@pytest_twisted.ensureDeferred
async def test_a_batch_across_centers_comes_in_publish_order_live_and_replayed_on_every_transport() -> None:
    async with running() as daemon:
        auth = await setup_site(daemon, "a")
        for center in ("b", "c"):
            await make_center(daemon, auth, center)
        await _batch(daemon, auth)  # some history
        ws = await websocket(f"{daemon.ws}{SUB}", daemon.public_port)
        start = (await opened(ws))["cursor"]
        stream = await event_source(daemon.public_port, SUB)
        assert (await stream.next())["id"] == start
        await stream.next()  # recovery
        status, body = await call("GET", f"{daemon.public}{SUB}?timeout=0")
        assert body["last_id"] == start
        poll = defer.ensureDeferred(_polled(daemon, start, len(ORDER)))
        await until(lambda: len(daemon.service.centers.loaded("site", "c").subscribers) == 3, 5, "the long-poll")

        ids = await _batch(daemon, auth)
        live = {
            "websocket": [json.loads(await ws.next())["id"] for _ in ORDER],
            "sse": [json.loads((await stream.next())["data"])["id"] for _ in ORDER],
            "longpoll": await poll,
        }
        assert live == {transport: ids for transport in live}
        stream.close()
        ws.close()
        # Replayed from where they started: the same order.
        ws = await websocket(f"{daemon.ws}{SUB}?since={start}", daemon.public_port)
        await opened(ws)
        stream = await event_source(daemon.public_port, f"{SUB}?since={start}")
        await stream.next()
        await stream.next()
        replayed = {
            "websocket": [json.loads(await ws.next())["id"] for _ in ORDER],
            "sse": [json.loads((await stream.next())["data"])["id"] for _ in ORDER],
            "longpoll": await _polled(daemon, start, len(ORDER)),
        }
        assert replayed == {transport: ids for transport in replayed}
        stream.close()
        ws.close()


def _server_sockets(port: int) -> list[str]:
    """The state (hex, as ``/proc/net/tcp`` has it) of every socket on local
    *port* but the listening one."""
    with open("/proc/net/tcp") as table:
        next(table)
        return [fields[3] for fields in (line.split() for line in table)
                if int(fields[1].split(":")[1], 16) == port and fields[3] != "0A"]


@pytest_twisted.ensureDeferred
async def test_a_slow_consumer_that_answers_the_close_unread_is_cut_not_held() -> None:
    async with running(subscribers={"send_buffer_bytes": 65536}) as daemon:
        auth = await setup_site(daemon)
        client = await connect(daemon.public_port, rcvbuf=4096)
        client.send(ws_handshake("/sub/site/news"))
        await client.wait_for(lambda data: b"\r\n\r\n" in data)
        client.transport.pauseProducing()  # reads nothing from now on
        # Dropped as a slow consumer: its close frame waits behind what it has not read.
        for _ in range(100):
            if await subscriber_count(daemon, auth) == 0:
                break
            await published(daemon, auth, "x" * 30000)
        assert await subscriber_count(daemon, auth) == 0
        assert _server_sockets(daemon.public_port)
        # Its client answers the close without reading a byte: the closing
        # handshake is over, and nothing it was sent will ever be taken.
        client.transport.write(client_frame(0x8, struct.pack("!H", 1000)))
        await until(lambda: not _server_sockets(daemon.public_port), 10, "the connection to be cut")
        client.transport.abortConnection()
