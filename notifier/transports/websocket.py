"""WebSocket subscribers (Autobahn), server to client only.

The public app validates the request and resolves the hubs first; only then
is the connection handed to Autobahn, bound to them (``serve``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from types import FunctionType
from typing import Any

import txaio
from autobahn.twisted.util import peer2str
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from notifier import compat
from notifier.compat import NO_DELAY, FastWebSocket
from notifier.domain.errors import NotifierError
from notifier.domain.hub import Hub, Opening
from notifier.domain.model import Grant, Message
from notifier.domain.presence import Item
from notifier.domain.token_deadlines import TokenDeadlines
from notifier.http.request import Request, refusal
from notifier.sockets import unsent
from notifier.transports.backpressure import send_now
from notifier.transports.envelope import envelope_json
from notifier.transports.streaming import StreamingSubscriber

#: A Sec-WebSocket-Key as Autobahn takes it: 16 bytes in base64.
_KEY = re.compile(rb"[A-Za-z0-9+/]{22}==")
#: An Origin of a scheme, a host and maybe a port (RFC 6454).
_ORIGIN = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+")
_WS_MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Whether a handshake the public listener read is answered here (notifier.compat.FAST_WEBSOCKET).
FAST_OPEN = compat.FAST_WEBSOCKET

GOING_AWAY = 1001
SLOW_CONSUMER = 4408
#: The token ran out, or the publisher's secret changed: come back with a new one.
UNAUTHORIZED = 4401


def _frame(payload: bytes) -> bytes:
    """A whole unmasked text frame (Autobahn's framing, done once)."""
    return PreparedMessage(payload, False, False, True).payloadHybi


def raw_frame(message: Message) -> bytes:
    return _frame(message.data.encode())


def json_frame(message: Message) -> bytes:
    return _frame(envelope_json(message).encode())


#: Close reasons (Subscriber.close) that mean the subscriber's token no longer holds.
UNAUTHORIZED_REASONS = frozenset({"expired", "revoked"})


def send_at_once(port: object) -> None:
    """Have every connection *port* accepts send at once (TCP_NODELAY, which
    Autobahn sets on each WebSocket), set once on its listening socket."""
    sock = getattr(port, "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return  # each connection sets it, as Autobahn does
    setattr(port, NO_DELAY, True)


def opening_frame(positions: Sequence[str], lost: Sequence[str]) -> bytes:
    """What a ``json`` WebSocket opens with: where it starts (a position
    per center, joined with ``,``), whether it was resumed whole, and the
    centers it could not resume."""
    return _frame(json.dumps({"cursor": ",".join(positions), "recovered": not lost, "lost": list(lost)}).encode())


class NotifierFactory(WebSocketServerFactory):
    """Autobahn's factory, with what every subscriber shares."""

    send_buffer_bytes: int = 1_048_576
    #: Ends subscriptions whose tokens expire (set by the public app).
    deadlines: TokenDeadlines | None = None
    #: Called with the hub of each subscriber dropped as too slow.
    dropped: Callable[[Hub], None] = staticmethod(lambda hub: None)
    _classes: dict[type[WebSocketSubscriber], type[WebSocketSubscriber]] | None = None

    def setProtocolOptions(self, *args: Any, **kwargs: Any) -> None:
        self._classes = None
        super().setProtocolOptions(*args, **kwargs)  # type: ignore[no-untyped-call]  # unannotated in Autobahn

    def resetProtocolOptions(self) -> None:
        self._classes = None
        super().resetProtocolOptions()  # type: ignore[no-untyped-call]  # unannotated in Autobahn

    def subscriber_class(self, cls: type[WebSocketSubscriber]) -> type[WebSocketSubscriber]:
        """*cls* with this factory's options as class attributes.

        Autobahn copies each of its options (``CONFIG_ATTRS``) from the
        factory to every connection that does not have it, a ``getattr``
        and a ``setattr`` at a time: a class of the factory's own has them
        all, once. Options are set with ``setProtocolOptions`` (or
        ``resetProtocolOptions``), which makes the classes again, never as
        attributes of the factory."""
        if self._classes is None:
            self._classes = {}
        made = self._classes.get(cls)
        if made is None:
            options = {name: _as_attribute(getattr(self, name)) for name in cls.CONFIG_ATTRS}
            made = self._classes[cls] = type(cls.__name__, (cls,), {**options, "__module__": cls.__module__})
        return made


def _as_attribute(value: object) -> object:
    # A function as a class attribute would be a method of each instance.
    return staticmethod(value) if isinstance(value, FunctionType) else value


#: What a closed connection's ``is_closed`` is left as: fired, referring to nothing.
CLOSED: Deferred[None] = succeed(None)


class WebSocketSubscriber(  # type: ignore[misc]  # Autobahn types its transport details twice
        StreamingSubscriber, FastWebSocket, WebSocketServerProtocol):
    """A subscriber, and the streaming producer of its own connection
    (notifier.transports.backpressure); dropped with 4408 when too far behind."""

    transport_name = "websocket"
    factory: NotifierFactory
    encode = staticmethod(raw_frame)
    #: Whether a first ``{"cursor": ..., "recovered": ..., "lost": ...}`` frame fits the format.
    tells_recovery = False
    #: Where it goes once open: the hubs, a cursor for each, and what its token grants.
    start: tuple[Sequence[Hub], Sequence[str | None], Grant | None] | None = None
    #: The payload of the ping not answered yet; only its pong counts.
    _ping: bytes | None = None

    @property
    def dropped(self) -> Callable[[Hub], None]:  # type: ignore[override]
        return self.factory.dropped

    @cached_property
    def peer(self) -> str:  # type: ignore[override]  # Autobahn's attribute, made lazily
        """The peer as Autobahn names it (``tcp4:HOST:PORT``), made when asked."""
        assert self.transport is not None  # asked of a connection made
        return peer2str(self.transport)

    @cached_property
    def utf8validator(self) -> Utf8Validator:  # type: ignore[override]  # Autobahn's attribute, made lazily
        """Made when a text frame first comes, if one does (Autobahn makes
        one for every connection)."""
        return Utf8Validator()

    def open_at_once(self, headers: Mapping[bytes, bytes], rest: bytes) -> bool:
        """Answer the opening handshake of *headers* (a ``GET`` over HTTP/1.1
        that the public listener read and admitted, its header names
        lower-cased) and open, as Autobahn's ``processHandshake`` and
        ``succeedHandshake`` do, when it is the plain RFC 6455 one browsers
        send: version 13, a well-formed key, ``Connection: Upgrade``, a
        host, no origin or one of a scheme and a host (Autobahn refuses
        ``null``, and reads anything odder its own way). notifier accepts no
        subprotocol and no extension, so offers of them change nothing.
        Whether it did: anything else is left to Autobahn (``False``), which
        answers it as it does, refusals included. *rest* is what came after
        the head."""
        key = self.plain_key(headers) if FAST_OPEN else None
        if key is None:
            return False
        origin = headers.get(b"origin")
        accept = base64.b64encode(hashlib.sha1(key + _WS_MAGIC).digest())
        send_now(self.transport, b"HTTP/1.1 101 Switching Protocols\r\nServer: " + self.factory.server.encode()
                      + b"\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n" + self.handshake_fields()
                      + b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        # What Autobahn's handshake leaves set on a connection it opened.
        self.websocket_version = 13
        self.websocket_protocols = []
        self.websocket_extensions = []
        self.websocket_protocol_in_use = None
        self.websocket_extensions_in_use = []
        self.websocket_origin = origin.decode("latin-1") if origin is not None else ""
        self.state = self.STATE_OPEN
        self.inside_message = False
        self.current_frame = None  # type: ignore[assignment]  # Autobahn's own value while none is read
        self.open_websocket(key)
        txaio.resolve(self.is_open, None)  # type: ignore[attr-defined]  # set by txaio.use_twisted()
        if rest:
            self.dataReceived(rest)
        return True

    def plain_key(self, headers: Mapping[bytes, bytes]) -> bytes | None:
        """The key of the handshake of *headers*, if it is one
        ``open_at_once`` answers itself."""
        key = headers.get(b"sec-websocket-key")
        origin = headers.get(b"origin")
        connection = headers.get(b"connection", b"").lower()
        if (key is None or _KEY.fullmatch(key) is None
                or headers.get(b"sec-websocket-version") != b"13"
                or headers.get(b"upgrade", b"").lower() != b"websocket"
                or b"upgrade" not in [token.strip() for token in connection.split(b",")]
                or not headers.get(b"host")
                or (origin is not None and _ORIGIN.fullmatch(origin) is None)
                or self.state != self.STATE_CONNECTING or getattr(self, "maxConnections", None)):
            return None
        return key

    def sendHttpErrorResponse(self, code: int, reason: str, responseHeaders: Any = None) -> None:
        """A handshake Autobahn refuses (no key, an unknown version) is
        answered with the documented JSON error too, not a bare status line."""
        error = NotifierError(reason, code="bad_handshake", status=code)
        self.sendData(refusal(error, [(name.encode(), value.encode())
                                                 for name, value in responseHeaders or ()]))

    def onOpen(self) -> None:
        assert self.start is not None
        # From now on the connection pauses and resumes us.
        self.registerProducer(self, True)
        hubs, cursors, grant = self.start
        if len(hubs) == 1:
            self.attach(hubs[0], cursors[0], grant, self.factory.deadlines)
        else:
            self.attach_many(hubs, cursors, grant, self.factory.deadlines)

    def _announce(self, cursor: str | None, opening: Opening) -> None:
        if self.tells_recovery:
            lost = () if opening.recovered else (self.hubs[-1].center.name,)
            self._pace(opening_frame((opening.position,), lost))

    def _announce_many(self, positions: list[str], lost: list[str]) -> None:
        self._pace(opening_frame(positions, lost))

    def starting_cursor(self) -> bytes:
        """Where the subscription starts (what the opening frame says, one
        position per center): the ``Notifier-Cursor`` of the 101 answer,
        before it is attached (nothing is published in between)."""
        assert self.start is not None
        hubs, cursors, _ = self.start
        return ",".join(hub.start_position(*hub.resume_point(cursor)[:2])
                        for hub, cursor in zip(hubs, cursors, strict=True)).encode()

    def handshake_fields(self) -> bytes:
        """The fields of its own the 101 answer carries, each ending in CRLF."""
        return b"Notifier-Cursor: " + self.starting_cursor() + b"\r\n"

    def onConnect(self, request: Any) -> tuple[None, dict[str, str]]:
        # A handshake Autobahn answers (open_at_once answers the others).
        return None, {"Notifier-Cursor": self.starting_cursor().decode()}

    # Client frames carry nothing for us: their data is dropped as it comes,
    # never gathered into messages (their frames are capped in size).

    def onMessageFrameData(self, payload: bytes) -> None:
        pass

    def onMessageFrameEnd(self) -> None:
        self.frame_data = None  # type: ignore[assignment]  # nothing gathered: Autobahn types it a list

    def onMessageEnd(self) -> None:
        pass

    def onPing(self, payload: bytes) -> None:
        # A client that does not read gets no pongs queued for it: a ping
        # flood would grow the write buffer as much as it sends.
        if self._waiting is None and self.state == self.STATE_OPEN:
            self.sendPong(payload)  # type: ignore[no-untyped-call]  # unannotated in Autobahn

    def onPong(self, payload: bytes) -> None:
        # Only the answer to our own ping is a sign of life.
        if payload == self._ping:
            self._ping = None

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._leave()
        self._waiting = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        # Autobahn resolves is_closed with the connection itself: a cycle
        # that only the oldest generation's collection would free. Without
        # it, a closed connection is freed as soon as nothing refers to it.
        self.is_closed = CLOSED

    # Subscriber

    def _write(self, frames: bytes) -> None:
        # What sendPreparedMessage does with compression off, without its
        # per-frame bookkeeping, and straight to the socket.
        send_now(self.transport, frames)

    def _limit(self) -> int:
        return self.factory.send_buffer_bytes

    def _cut_slow(self) -> None:
        # The close frame waits behind what the peer has not read; Autobahn's
        # close handshake timeout cuts the connection if it never does.
        self.sendClose(code=SLOW_CONSUMER, reason="slow consumer: too many unsent messages")

    def close(self, reason: str) -> None:
        self._leave()
        if self.state == self.STATE_OPEN:
            code = UNAUTHORIZED if reason in UNAUTHORIZED_REASONS else GOING_AWAY
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode(), isReply=False)

    def dropConnection(self, abort: bool = False) -> None:
        # Autobahn aborts (resets) the TCP connection once the client has
        # answered the daemon's close frame: after a clean closing
        # handshake it ends as TCP does, everything sent, unless part of it
        # is still untaken (a slow consumer answering its close unread):
        # no timer is left to end a close that waits for a client that reads nothing.
        super().dropConnection(abort=abort and (not self.wasClean or unsent(self.transport)))

    def stopProducing(self) -> None:
        super().stopProducing()
        self._leave()

    def heartbeat(self) -> None:
        if self.state == self.STATE_OPEN:
            super().heartbeat()

    def _keep_alive(self) -> None:
        """Drop a peer that did not answer the last ping; ping it again."""
        if self._ping is not None:
            self.dropConnection(abort=True)
            return
        self._ping = os.urandom(8)
        self.sendPing(self._ping)


compat.connecting_attributes(WebSocketSubscriber)


def item_frame(item: Item) -> bytes:
    """A presence item as a text frame of JSON (made once per item)."""
    return _frame(item.json().encode())


class JsonSubscriber(WebSocketSubscriber):
    encode = staticmethod(json_frame)
    tells_recovery = True
    tells_presence = True
    encode_item = staticmethod(item_frame)


FORMATS: dict[str, type[WebSocketSubscriber]] = {"raw": WebSocketSubscriber, "json": JsonSubscriber}


def websocket_factory(send_buffer_bytes: int, dropped: Callable[[Hub], None],
                      max_frame_bytes: int = 4096) -> NotifierFactory:
    factory = NotifierFactory(server="notifier")  # type: ignore[no-untyped-call]  # unannotated in Autobahn
    factory.send_buffer_bytes = send_buffer_bytes
    factory.dropped = dropped
    factory.setProtocolOptions(
        maxFramePayloadSize=max_frame_bytes,
        maxMessagePayloadSize=0,  # never limit what we send; frames are capped above
        # A client frame too large, or not WebSocket, gets a closing
        # handshake (1009, 1002, 1007), not a reset: the peer learns why.
        failByDrop=False,
        echoCloseCodeReason=True,  # a client's close code comes back (RFC 6455 5.5.1)
        perMessageCompressionAccept=lambda offers: None,  # prepared frames need it off
        autoPingInterval=0,  # one sweeping heartbeat instead (notifier.transports.heartbeat)
        # No timer per connection for its opening handshake: a connection is
        # handed over with its whole request head (the listeners bound how
        # long a head may take), which Autobahn answers in the same call.
        openHandshakeTimeout=0,
        closeHandshakeTimeout=2,
    )
    return factory


class _BoundFactory:
    """Builds one protocol of *cls*, bound to *hubs*, for Autobahn's resource."""

    def __init__(self, factory: NotifierFactory, cls: type[WebSocketSubscriber],
                 hubs: Sequence[Hub], cursors: Sequence[str | None], grant: Grant | None) -> None:
        self.factory, self.cls = factory, cls
        self.start = (hubs, cursors, grant)

    def buildProtocol(self, addr: Any) -> WebSocketSubscriber:
        protocol = self.cls()
        protocol.factory = self.factory
        protocol.start = self.start
        return protocol


def bound(factory: NotifierFactory, hubs: Sequence[Hub], fmt: str, cursors: Sequence[str | None],
          grant: Grant | None = None) -> _BoundFactory:
    """What builds the subscriber a connection is handed to: subscribed to
    *hubs*, resuming each after its cursor (``None``: live messages only),
    until the *grant* of a private center's token expires, if given. Several
    hubs need the ``json`` format."""
    return _BoundFactory(factory, factory.subscriber_class(FORMATS[fmt]), hubs, cursors, grant)


def serve(factory: NotifierFactory, request: Request, hubs: Sequence[Hub], fmt: str,
          cursors: Sequence[str | None], grant: Grant | None) -> int:
    """Hand an admitted upgrade *request* to a subscriber of *factory*
    (``bound``): the connection is the subscriber's from its handshake on."""
    return request.take_over(bound(factory, hubs, fmt, cursors, grant))
