"""Clients on raw TCP sockets, so that a listener sees exactly the bytes a
broken, slow or hostile peer would send: HTTP requests and answers, request
bodies fed as the socket takes them, WebSocket frames. Every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from notifier.http.connection import HttpConnection, HttpSite
from tests.support import sleep, until

# HTTP on raw sockets


class RawClient(Protocol):
    """Collects every byte until the server closes; ``closed`` fires then."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed: Deferred[None] = Deferred()
        self.done = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done = True
        self.closed.callback(None)

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    async def wait_closed(self, timeout: float) -> bool:
        """Whether the server closed the connection within *timeout*; if not, abort it."""
        for _ in range(int(timeout / 0.02) + 1):
            if self.done:
                return True
            await sleep(0.02)
        self.transport.abortConnection()
        return False

    async def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 5) -> None:
        await until(lambda: predicate(bytes(self.data)) or self.done, timeout, "an answer")

async def connect(port: int, rcvbuf: int | None = None) -> RawClient:
    """A raw client; with *rcvbuf*, its socket's receive buffer is that small
    from before it connects, so the window it offers never grows."""
    client = RawClient()
    if rcvbuf is None:
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
        await endpoints.connectProtocol(endpoint, client)
        return client
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, Factory.forProtocol(lambda: client))
    await until(lambda: client.transport is not None, 5, "the connection")
    return client

def parse_response(data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """The status, headers (lower-case names) and body of one HTTP response."""
    head, sep, rest = bytes(data).partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP head in {bytes(data[:300])!r}"
    status_line, *lines = head.split(b"\r\n")
    assert status_line.startswith(b"HTTP/1."), status_line
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2:]
    elif b"content-length" in headers:
        body = rest[:int(headers[b"content-length"])]
    else:
        body = rest
    return int(status_line.split()[1]), headers, body

def complete(data: bytes) -> bool:
    """Whether *data* holds one whole response (Content-Length or chunked)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            return len(rest) >= int(value)
        if name == b"transfer-encoding" and value == b"chunked":
            return rest.startswith(b"0\r\n\r\n") or b"\r\n0\r\n\r\n" in rest
    return False

async def exchange(port: int, request: bytes, timeout: float = 5) -> tuple[bytes, bool]:
    """Send *request* raw; every byte answered, and whether the server closed
    the connection (else it is cut after *timeout*)."""
    client = await connect(port)
    client.send(request)
    closed = await client.wait_closed(timeout)
    return bytes(client.data), closed

async def request(port: int, data: bytes, timeout: float = 5) -> tuple[int, dict[bytes, bytes], bytes]:
    """One raw request; its answer, once whole (Content-Length) or closed."""
    client = await connect(port)
    client.send(data)
    await client.wait_for(complete, timeout)
    client.transport.loseConnection()
    return parse_response(bytes(client.data))

def get_request(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()

def expect_raw_error(status: int, headers: dict[bytes, bytes], body: bytes, expected: int | None = None,
                  code: str | None = None) -> dict[str, Any]:
    """The documented error: JSON ``{"error", "message"}`` with the
    *expected* status, else a 4xx one."""
    if expected is not None:
        assert status == expected, (status, body)
    else:
        assert 400 <= status < 500, (status, body)
    assert headers.get(b"content-type", b"").startswith(b"application/json"), (status, headers, body)
    error = json.loads(body)
    assert set(error) == {"error", "message"} and all(isinstance(v, str) for v in error.values()), error
    if code is not None:
        assert error["error"] == code, error
    return error

# bodies sent as the socket takes them


@implementer(IPullProducer)
class _Body:
    """Writes *total* bytes of body as the socket takes them (chunked if told),
    so that the client never holds the whole body in memory."""

    def __init__(self, transport: Any, total: int, chunked: bool = False, piece: int = 256 * 1024) -> None:
        self.transport, self.left, self.chunked, self.piece = transport, total, chunked, piece
        transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.left <= 0:
            self.transport.unregisterProducer()
            if self.chunked:
                self.transport.write(b"0\r\n\r\n")
            return
        n = min(self.piece, self.left)
        self.left -= n
        data = b"x" * n
        self.transport.write(b"%x\r\n%s\r\n" % (n, data) if self.chunked else data)

    def stopProducing(self) -> None:
        self.left = 0

async def upload(port: int, head: str, total: int, chunked: bool = False,
                  timeout: float = 20) -> tuple[int, dict[bytes, bytes], bytes]:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    client = await connect(port)
    client.send(f"{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n{framing}\r\n\r\n".encode())
    _Body(client.transport, total, chunked)
    assert await client.wait_closed(timeout), bytes(client.data[:300])
    return parse_response(bytes(client.data))

@contextlib.contextmanager
def body_kept(site: HttpSite) -> Iterator[list[int]]:
    """The most body bytes any request on *site* held at once, as a one-item
    list (counted on the connections *site* makes meanwhile)."""
    kept = [0]

    class Recording(HttpConnection):
        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            if self.reading is not None:
                kept[0] = max(kept[0], self.reading.content.tell())

    site.buildProtocol = lambda addr: Recording(site, addr)  # type: ignore[method-assign]
    try:
        yield kept
    finally:
        del site.buildProtocol

# WebSocket on raw sockets


def ws_handshake(path: str, *, key: bool = True, version: bytes | None = b"13",
                 method: bytes = b"GET") -> bytes:
    lines = [method + b" " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1",
             b"Upgrade: websocket", b"Connection: Upgrade"]
    if key:
        lines.append(b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)))
    if version is not None:
        lines.append(b"Sec-WebSocket-Version: " + version)
    return b"\r\n".join(lines) + b"\r\n\r\n"

def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame; masked as RFC 6455 requires unless told otherwise."""
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    stream = (key * (n // 4 + 1))[:n]
    masked_payload = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
    return head + key + (masked_payload if n else b"")

def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The whole (unmasked) server frames at the start of *data*: (opcode, payload)."""
    frames = []
    i = 0
    while len(data) - i >= 2:
        opcode, second = data[i] & 0x0F, data[i + 1]
        assert not second & 0x80, "a server frame is masked"
        n, i2 = second & 0x7F, i + 2
        if n == 126:
            if len(data) - i2 < 2:
                break
            n, i2 = struct.unpack("!H", data[i2:i2 + 2])[0], i2 + 2
        elif n == 127:
            if len(data) - i2 < 8:
                break
            n, i2 = struct.unpack("!Q", data[i2:i2 + 8])[0], i2 + 8
        if len(data) - i2 < n:
            break
        frames.append((opcode, data[i2:i2 + n]))
        i = i2 + n
    return frames

def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    for opcode, payload in frames:
        if opcode == 8 and len(payload) >= 2:
            return struct.unpack("!H", payload[:2])[0]
    return None

class RawWebSocket:
    """A WebSocket client on a raw socket: it never answers pings by itself."""

    def __init__(self, client: RawClient, head_length: int) -> None:
        self.client = client
        self.head_length = head_length

    @property
    def frames(self) -> list[tuple[int, bytes]]:
        return server_frames(bytes(self.client.data[self.head_length:]))

    def texts(self) -> list[str]:
        return [payload.decode() for opcode, payload in self.frames if opcode == 1]

    def send(self, data: bytes) -> None:
        self.client.send(data)

    @property
    def local_port(self) -> int:
        return self.client.transport.getHost().port

async def raw_websocket(port: int, path: str, rcvbuf: int | None = None) -> RawWebSocket:
    client = await connect(port, rcvbuf)
    client.send(ws_handshake(path))
    await client.wait_for(lambda data: b"\r\n\r\n" in data)
    head = bytes(client.data).split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 101"), head
    return RawWebSocket(client, len(head) + 4)

# Server-Sent Events on a raw socket


async def stuck_event_stream(port: int) -> RawClient:
    """An event stream whose client reads nothing more, with a small receive window."""
    client = await connect(port, rcvbuf=4096)
    client.send(get_request("/sub/site/news", "Accept: text/event-stream").replace(b"HTTP/1.1", b"HTTP/1.0"))
    await client.wait_for(lambda data: b"\r\n\r\n" in data)
    assert client.data.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), bytes(client.data)
    client.transport.pauseProducing()
    return client
