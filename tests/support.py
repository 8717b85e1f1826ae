"""Helpers for tests over real sockets: a running service, HTTP and WebSocket clients."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import attrs
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Protocol

from notifier.config import parse_config
from notifier.service import NotifierService

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def config_text(store_url: str, **sections: dict[str, Any]) -> str:
    """A configuration on free loopback ports, with *sections* merged in."""
    base: dict[str, dict[str, Any]] = {
        "public": {"endpoint": "tcp:0:interface=127.0.0.1"},
        "api": {"endpoint": "tcp:0:interface=127.0.0.1", "admin_token": ADMIN_TOKEN},
        "store": {"url": store_url},
        "subscribers": {"drain_seconds": 0.2},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


@attrs.define
class Daemon:
    """A NotifierService running in this process on free loopback ports."""

    service: NotifierService

    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.service.public_port.getHost().port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.service.public_port.getHost().port}"

    @property
    def public_port(self) -> int:
        return self.service.public_port.getHost().port

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.service.api_port.getHost().port}"

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await call(method, self.api + path, body, admin=ADMIN_TOKEN)

    async def add_publisher(self, name: str) -> str:
        status, body = await self.admin("POST", "/admin/v1/publishers", {"name": name})
        assert status == 201, body
        return body["secret"]


async def start_daemon(store_url: str = "sqlite::memory:", **sections: dict[str, Any]) -> Daemon:
    service = NotifierService(parse_config(config_text(store_url, **sections)), reactor)
    service.startService()
    await service.ready
    return Daemon(service)


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def call(
    method: str, url: str, body: Any = None, *, auth: tuple[str, str] | None = None,
    admin: str | None = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
) -> tuple[int, Any]:
    """One HTTP request; the status and the decoded JSON body (or bytes)."""
    sent = dict(headers or {})
    if auth is not None:
        sent["Authorization"] = basic(*auth)
    if admin is not None:
        sent["Authorization"] = f"Bearer {admin}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    response = await treq.request(method, url, data=data, headers=sent, persistent=False)
    content = await response.content()
    kind = response.headers.getRawHeaders(b"content-type", [b""])[0]
    if kind.startswith(b"application/json"):
        return response.code, json.loads(content)
    return response.code, content


class _Client(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.put(payload.decode())

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"handshake failed: {reason}"))
        self.factory.closed.callback((code, reason))


class WebSocket:
    """A WebSocket client: ``messages`` queue, ``closed`` fires with (code, reason)."""

    def __init__(self, factory: WebSocketClientFactory, protocol: _Client) -> None:
        self.messages: DeferredQueue[str] = factory.messages
        self.closed: Deferred[tuple[int | None, str | None]] = factory.closed
        self.protocol = protocol

    async def next(self, timeout: float = 5) -> str:
        d = self.messages.get()
        d.addTimeout(timeout, reactor)
        return await d

    def close(self) -> None:
        self.protocol.sendClose()


async def websocket(url: str, port: int, headers: dict[str, str] | None = None) -> WebSocket:
    factory = WebSocketClientFactory(url, headers=headers or {})
    factory.protocol = _Client
    factory.messages = DeferredQueue()
    factory.opened = Deferred()
    factory.closed = Deferred()
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    await endpoint.connect(factory)
    opened = factory.opened
    opened.addTimeout(5, reactor)
    protocol = await opened
    return WebSocket(factory, protocol)


def handshake_headers() -> dict[str, str]:
    """The headers of a WebSocket opening handshake, for treq."""
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }


def sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d




class _EventStreamProtocol(Protocol):
    """HTTP/1.0 (so the stream is not chunked) and the SSE parser of the spec."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.head: Deferred[tuple[int, dict[bytes, bytes]]] = Deferred()
        self.events: DeferredQueue[dict[str, str]] = DeferredQueue()
        self.comments = 0
        self.ended: Deferred[None] = Deferred()
        self._buffer = b""
        self._in_body = False
        self._event: dict[str, str] = {}

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if not self._in_body:
            if b"\r\n\r\n" not in self._buffer:
                return
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head.split(b"\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            self._in_body = True
            self.head.callback((int(status_line.split()[1]), headers))
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._line(line.decode())

    def _line(self, line: str) -> None:
        if line == "":
            if self._event:
                event = self._event
                if "data" in event:
                    event["data"] = event["data"][:-1]
                self.events.put(event)
            self._event = {}
        elif line.startswith(":"):
            self.comments += 1
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._event["data"] = self._event.get("data", "") + value + "\n"
            else:
                self._event[name] = value

    def connectionLost(self, reason: Any = None) -> None:
        if not self.head.called:
            self.head.errback(ConnectionError("closed before the answer"))
        self.ended.callback(None)


class EventSource:
    """A Server-Sent Events client over a raw socket."""

    def __init__(self, protocol: _EventStreamProtocol, status: int, headers: dict[bytes, bytes]) -> None:
        self.protocol = protocol
        self.status = status
        self.headers = headers
        self.ended = protocol.ended

    @property
    def comments(self) -> int:
        return self.protocol.comments

    async def next(self, timeout: float = 5) -> dict[str, str]:
        d = self.protocol.events.get()
        d.addTimeout(timeout, reactor)
        return await d

    def close(self) -> None:
        self.protocol.transport.loseConnection()


async def event_source(port: int, path: str, headers: dict[str, str] | None = None) -> EventSource:
    lines = [f"GET {path} HTTP/1.0", "Host: 127.0.0.1", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    protocol = _EventStreamProtocol(("\r\n".join(lines) + "\r\n\r\n").encode())
    await endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    head = protocol.head
    head.addTimeout(5, reactor)
    status, received = await head
    return EventSource(protocol, status, received)
