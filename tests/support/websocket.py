"""A WebSocket client over a real socket, and what a test expects of it."""

from __future__ import annotations

import base64
import itertools
import json
import os
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import endpoints, reactor, ssl
from twisted.internet.defer import Deferred, DeferredQueue

from tests.support.http import published
from tests.support.waiting import bounded


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


async def websocket(url: str, port: int, headers: dict[str, str] | None = None,
                    authority: ssl.Certificate | None = None) -> WebSocket:
    """A WebSocket open on 127.0.0.1:*port*; over TLS trusting *authority* when given."""
    factory = WebSocketClientFactory(url, headers=headers or {})
    factory.protocol = _Client
    factory.messages = DeferredQueue()
    factory.opened = Deferred()
    factory.closed = Deferred()
    endpoint: Any = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if authority is not None:
        endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS("127.0.0.1", trustRoot=authority), endpoint)
    await bounded(endpoint.connect(factory))
    opened = factory.opened
    opened.addTimeout(5, reactor)
    protocol = await opened
    return WebSocket(factory, protocol)


async def opened(ws: WebSocket) -> dict[str, Any]:
    """The first frame of a ``format=json`` WebSocket: where it starts."""
    frame = json.loads(await ws.next())
    assert set(frame) == {"cursor", "recovered", "lost"}, frame
    return frame


def handshake_headers() -> dict[str, str]:
    """The headers of a WebSocket opening handshake, for treq."""
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }


_markers = itertools.count(1)


async def nothing_more(ws: WebSocket, daemon: Any, auth: tuple[str, str], center: str = "news",
                       as_json: bool = False, marker: str | None = None) -> None:
    """No message is pending on *ws*: the next one is a *marker* published now
    (by default a new one each time, short enough for centers that take small
    messages only)."""
    marker = marker if marker is not None else f"marker {next(_markers)}"
    await published(daemon, auth, marker, center)
    received = await ws.next()
    assert (json.loads(received)["data"] if as_json else received) == marker
