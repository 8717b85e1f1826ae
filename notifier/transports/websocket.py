"""WebSocket subscribers (Autobahn), server to client only.

The public app validates the request and resolves the hub first; only then
is the connection handed to Autobahn, bound to that hub.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage

from notifier.envelope import envelope_json
from notifier.hub import Hub, Prepared
from notifier.model import Message

GOING_AWAY = 1001


def raw_frame(message: Message) -> PreparedMessage:
    return PreparedMessage(message.data.encode(), False, False, True)


def json_frame(message: Message) -> PreparedMessage:
    return PreparedMessage(envelope_json(message).encode(), False, False, True)


RECOVERY = {
    recovered: PreparedMessage(json.dumps({"recovered": recovered}).encode(), False, False, True)
    for recovered in (True, False)
}


class WebSocketSubscriber(WebSocketServerProtocol):
    transport_name = "websocket"
    encode: Callable[[Message], PreparedMessage] = staticmethod(raw_frame)
    #: Whether a first ``{"recovered": ...}`` frame fits the format.
    tells_recovery = False
    hub: Hub | None = None
    cursor: str | None = None
    _awaiting_pong = False

    def onOpen(self) -> None:
        assert self.hub is not None
        backlog, recovered = self.hub.attach(self, self.cursor)
        if self.cursor is not None and self.tells_recovery:
            self.sendPreparedMessage(RECOVERY[recovered])
        encode = self.encode
        for prepared in backlog:
            self.sendPreparedMessage(prepared.form(encode))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Client frames carry nothing for us."""

    def onPong(self, payload: bytes) -> None:
        self._awaiting_pong = False

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.hub is not None:
            self.hub.unsubscribe(self)
            self.hub = None

    # Subscriber

    def deliver(self, prepared: Prepared) -> None:
        self.sendPreparedMessage(prepared.form(self.encode))

    def close(self, reason: str) -> None:
        if self.hub is not None:
            self.hub.unsubscribe(self)
            self.hub = None
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=GOING_AWAY, reasonUtf8=reason.encode(), isReply=False)

    def heartbeat(self) -> None:
        """Called every ping interval: drop a peer that did not answer the last ping."""
        if self.state != self.STATE_OPEN:
            return
        if self._awaiting_pong:
            self.dropConnection(abort=True)
            return
        self._awaiting_pong = True
        self.sendPing()


class JsonSubscriber(WebSocketSubscriber):
    encode = staticmethod(json_frame)
    tells_recovery = True


FORMATS: dict[str, type[WebSocketSubscriber]] = {"raw": WebSocketSubscriber, "json": JsonSubscriber}


def websocket_factory(max_frame_bytes: int = 4096) -> WebSocketServerFactory:
    factory = WebSocketServerFactory(server="notifier")
    factory.setProtocolOptions(
        maxFramePayloadSize=max_frame_bytes,
        maxMessagePayloadSize=0,  # never limit what we send; frames are capped above
        perMessageCompressionAccept=lambda offers: None,  # prepared frames need it off
        autoPingInterval=0,  # one sweeping heartbeat instead (notifier.heartbeat)
        openHandshakeTimeout=10,
        closeHandshakeTimeout=2,
    )
    return factory


class _BoundFactory:
    """Builds one protocol of *cls*, bound to *hub*, for Autobahn's resource."""

    def __init__(self, factory: WebSocketServerFactory, cls: type[WebSocketSubscriber],
                 hub: Hub, cursor: str | None) -> None:
        self.factory, self.cls, self.hub, self.cursor = factory, cls, hub, cursor

    def buildProtocol(self, addr: Any) -> WebSocketSubscriber:
        protocol = self.cls()
        protocol.factory = self.factory
        protocol.hub = self.hub
        protocol.cursor = self.cursor
        return protocol


def upgrade(factory: WebSocketServerFactory, hub: Hub, fmt: str, cursor: str | None) -> WebSocketResource:
    """The resource that hands the request's connection to a subscriber of *hub*,
    resuming after *cursor* (``None``: live messages only)."""
    return WebSocketResource(_BoundFactory(factory, FORMATS[fmt], hub, cursor))
