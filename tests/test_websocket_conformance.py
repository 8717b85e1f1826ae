"""What docs/protocol.rst promises a WebSocket client written from it alone:
closing handshakes (docs/protocol.rst: WebSocket), where a subscription
starts and resumes, and the order of a batch across centers
(docs/protocol.rst: Many centers on one connection)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import error

from tests.raw import RawClient, RawWebSocket, client_frame, close_code, ws_handshake
from tests.support import running, setup_site, until, websocket

pytestmark = pytest.mark.integration


class _Client(RawClient):
    """A raw client that keeps why its connection ended."""

    reason: Any = None

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        super().connectionLost(reason)


async def _raw(port: int, path: str) -> tuple[RawWebSocket, _Client]:
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
