"""The Pusher face of one node: its connections, their users, and what
goes between nodes for them.

A channel is the center of the same name of the app's publisher, made
when first subscribed to with the privacy its prefix gives. Messages reach
Pusher subscribers through the centers' own fan-out; what is not a message
(client events, events to a user, a user's connections terminated) goes
to every node through the broker's announcements, and each node hands it
to the connections it holds.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from itertools import count
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from notifier.config import Config
from notifier.domain.centers import Centers
from notifier.domain.errors import BadRequest, Forbidden, NotFound, Unavailable
from notifier.domain.hub import Hub
from notifier.domain.model import Publisher
from notifier.domain.publishers import Publishers
from notifier.http.answers import now_or_later
from notifier.http.request import Request
from notifier.pusher import wire
from notifier.pusher.connection import ChannelSubscription, PusherConnection
from notifier.transports.websocket import NotifierFactory, websocket_factory

log = Logger()

#: What a client message may add to its event's data, at most.
FRAME_OVERHEAD = 8192

#: Reports an event for the app's webhook: ``(publisher, name, channel, fields)``.
WebhookEvent = Callable[[str, str, str, dict[str, Any]], None]


def pusher_factory(config: Config, dropped: Callable[[Hub], None]) -> NotifierFactory:
    """The WebSocket options of Pusher connections: notifier's own, with
    client frames as large as a client event may be."""
    max_event = min(config.pusher.max_event_bytes, config.centers.max_message_bytes)
    factory = websocket_factory(config.subscribers.send_buffer_bytes, dropped, max_event + FRAME_OVERHEAD)
    # A connection checks the UTF-8 of each whole message itself
    # (PusherConnection.onMessageEnd), with no validator kept per connection.
    factory.setProtocolOptions(utf8validateIncoming=False)
    return factory


class _Opening:
    """Builds the Pusher connection a request is handed to."""

    def __init__(self, face: PusherFace, cls: type[PusherConnection], publisher: Publisher | None,
                 refusal: tuple[int, str] | None) -> None:
        self.face, self.cls, self.publisher, self.refusal = face, cls, publisher, refusal

    def buildProtocol(self, addr: Any) -> PusherConnection:
        connection = self.cls()
        connection.factory = self.face.websockets
        # Set only when not the class's default: every attribute of an
        # idle connection is memory held as long as it is open.
        if self.publisher is not None:
            connection.publisher = self.publisher
        if self.refusal is not None:
            connection.refusal = self.refusal
        return connection


class PusherFace:
    """The node's Pusher connections: opened through ``serve``; their
    channels' hubs found (or made) by ``hub``; client events, user events
    and terminations carried to every node."""

    def __init__(self, publishers: Publishers, centers: Centers, config: Config, clock: IReactorTime,
                 websockets: NotifierFactory, announce: Callable[[dict[str, str]], object], node: str,
                 *, closing: Callable[[], bool] = lambda: False,
                 webhook_event: WebhookEvent | None = None) -> None:
        self.publishers = publishers
        self.centers = centers
        self.config = config.pusher
        self.clock = clock
        self.websockets = websockets
        self.announce = announce
        self.node = node
        self.closing = closing
        self.webhook_event = webhook_event
        self.max_event_bytes = min(config.pusher.max_event_bytes, config.centers.max_message_bytes)
        self.max_frame_bytes = self.max_event_bytes + FRAME_OVERHEAD
        self.max_per_center = config.subscribers.max_per_center
        origins = config.public.allowed_origins
        self._any_origin = "*" in origins
        self._origins = frozenset(origin.encode() for origin in origins)
        #: Every open connection of this node.
        self.connections: set[PusherConnection] = set()
        #: The connections signed in, by ``(publisher, user id)``.
        self.users: dict[tuple[str, str], set[PusherConnection]] = {}
        #: This node's part of every socket id: a number of its own.
        self.node_number = secrets.randbelow(2**31 - 1) + 1
        self._numbers = count(1)
        self._connection_class = cast(type[PusherConnection], websockets.subscriber_class(PusherConnection))
        self._connection_class.face = self

    # the connections of this node

    def numbered(self) -> int:
        """A connection's number on this node: with the node's own
        (``node_number``), its socket id, which no other connection in the
        cluster has."""
        return next(self._numbers)

    def opened(self, connection: PusherConnection) -> None:
        self.connections.add(connection)

    def closed(self, connection: PusherConnection) -> None:
        self.connections.discard(connection)
        if connection.user_id is not None:
            self.signed_out(connection)

    def signed_in(self, connection: PusherConnection) -> None:
        assert connection.publisher is not None and connection.user_id is not None
        self.users.setdefault((connection.publisher.name, connection.user_id), set()).add(connection)

    def signed_out(self, connection: PusherConnection) -> None:
        assert connection.publisher is not None and connection.user_id is not None
        key = (connection.publisher.name, connection.user_id)
        held = self.users.get(key)
        if held is not None:
            held.discard(connection)
            if not held:
                del self.users[key]

    def heartbeat(self) -> None:
        """Every ping interval: keep each connection alive, or drop it."""
        for connection in tuple(self.connections):
            connection.heartbeat()

    def every_connection(self) -> Iterator[PusherConnection]:
        return iter(tuple(self.connections))

    def client_events(self, publisher: Publisher) -> bool:
        """Whether *publisher*'s clients may send client events."""
        return publisher.relays_client_events(self.config.client_events)

    # the apps (notifier.domain.publishers.AppChanges)

    def publisher_changed(self, name: str, removed: bool) -> None:
        """An app changed: its connections end if it was removed, else go
        on with what it is now (its secret, its settings)."""
        connections = [connection for connection in self.connections
                       if connection.publisher is not None and connection.publisher.name == name]
        if not connections:
            return
        if removed:
            for connection in connections:
                connection.close("the app was removed", wire.UNKNOWN_APP)
            return
        Deferred.fromCoroutine(self._refreshed(name, connections)).addErrback(
            lambda failure: log.failure("refreshing app {name}", failure, name=name))

    async def _refreshed(self, name: str, connections: list[PusherConnection]) -> None:
        publisher = await self.publishers.publisher(name)
        for connection in connections:
            if publisher is None:
                connection.close("the app was removed", wire.UNKNOWN_APP)
            else:
                connection.publisher = publisher

    # opening (GET /app/{key} on the public listener)

    def serve(self, request: Request, parts: list[bytes]) -> Any:
        """Open a Pusher connection for an upgrade to ``/app/{key}``."""
        if (request.getHeader(b"upgrade") or b"").lower() != b"websocket":
            raise BadRequest("a Pusher client connects with a WebSocket", code="not_websocket")
        origin = request.getHeader(b"origin")
        if origin is not None and not self._any_origin and origin not in self._origins:
            raise Forbidden("this origin may not subscribe", code="origin_not_allowed")
        if self.closing():
            raise Unavailable("the server is shutting down", code="shutting_down")
        refusal = self._refusal(request, parts)
        if refusal is not None:
            return self._open(request, None, refusal)
        return now_or_later(self._find(request, parts[0].decode("latin-1")))

    @staticmethod
    def _refusal(request: Request, parts: list[bytes]) -> tuple[int, str] | None:
        if len(parts) != 1 or not parts[0]:
            return wire.PATH_NOT_FOUND, "no such path: connect to /app/{key}"
        protocol = request.args.get(b"protocol")
        if not protocol:
            return wire.NO_PROTOCOL, "no protocol version given"
        version = protocol[0].decode("latin-1")
        if not version.isdigit():
            return wire.BAD_PROTOCOL, "the protocol version is a number"
        if version not in wire.PROTOCOLS:
            return wire.UNSUPPORTED_PROTOCOL, f"protocol {version} is not supported: 7 is"
        return None

    async def _find(self, request: Request, key: str) -> Any:
        publisher = await self.publishers.by_key(key)
        if publisher is None:
            return self._open(request, None, (wire.UNKNOWN_APP, f"no app with key {key[:64]!r}"))
        return self._open(request, publisher, None)

    def _open(self, request: Request, publisher: Publisher | None, refusal: tuple[int, str] | None) -> Any:
        return request.take_over(_Opening(self, self._connection_class, publisher, refusal))

    # channels

    async def hub(self, publisher: str, channel: str, kind: str) -> Hub:
        """The hub of *channel*, its center made if there is none yet."""
        try:
            return await self.centers.hub(publisher, channel)
        except NotFound:
            pass
        private = kind != wire.PUBLIC
        await self.centers.create_center(publisher, channel, private=private, presence=kind == wire.PRESENCE)
        return await self.centers.hub(publisher, channel)

    def cache_miss(self, subscription: ChannelSubscription) -> None:
        connection = subscription.connection
        if self.webhook_event is not None and connection.publisher is not None:
            self.webhook_event(connection.publisher.name, "cache_miss", subscription.channel, {})

    # what goes to every node

    def client_event(self, sender: PusherConnection, hub: Hub, event: str, channel: str, data: str,
                     user_id: str | None) -> None:
        """A client event to the channel's other subscribers, on every node."""
        body: dict[str, Any] = {"event": event, "channel": channel, "data": data}
        if user_id is not None:
            body["user_id"] = user_id
        text = wire.dumps(body)
        self._relay(hub.center.publisher, channel, wire.frame(text.encode()), sender)
        self._announce({"kind": "client_event", "publisher": hub.center.publisher, "channel": channel,
                        "frame": text})
        if self.webhook_event is not None:
            fields: dict[str, Any] = {"event": event, "data": data, "socket_id": sender.socket_id}
            if user_id is not None:
                fields["user_id"] = user_id
            self.webhook_event(hub.center.publisher, "client_event", channel, fields)

    def _relay(self, publisher: str, channel: str, frames: bytes, sender: PusherConnection | None) -> None:
        hub = self.centers.loaded(publisher, channel)
        if hub is None:
            return
        for subscriber in tuple(hub.subscribers):
            if isinstance(subscriber, ChannelSubscription) and subscriber.connection is not sender:
                subscriber.send(frames)

    def to_user(self, publisher: str, user_id: str, event: str, data: str) -> None:
        """An event to every connection signed in as the user, on every node."""
        text = wire.dumps({"event": event, "channel": wire.USER_CHANNEL + user_id, "data": data})
        self._to_user(publisher, user_id, text)
        self._announce({"kind": "user_event", "publisher": publisher, "user": user_id, "frame": text})

    def _to_user(self, publisher: str, user_id: str, text: str) -> None:
        connections = self.users.get((publisher, user_id))
        if connections:
            frames = wire.frame(text.encode())
            for connection in tuple(connections):
                connection.send(frames)

    def terminate(self, publisher: str, user_id: str) -> None:
        """End every connection signed in as the user, on every node."""
        self._terminate(publisher, user_id)
        self._announce({"kind": "terminate", "publisher": publisher, "user": user_id})

    def _terminate(self, publisher: str, user_id: str) -> None:
        for connection in tuple(self.users.get((publisher, user_id), ())):
            connection.terminate()

    def _announce(self, event: dict[str, str]) -> None:
        self.announce({"type": "pusher", "node": self.node, **event})

    def remote(self, event: dict[str, str]) -> None:
        """What another node announced (``_announce``)."""
        if event.get("node") == self.node:
            return
        kind, publisher = event.get("kind"), event.get("publisher", "")
        try:
            if kind == "client_event":
                self._relay(publisher, event["channel"], wire.frame(event["frame"].encode()), None)
            elif kind == "user_event":
                self._to_user(publisher, event["user"], event["frame"])
            elif kind == "terminate":
                self._terminate(publisher, event["user"])
        except (KeyError, TypeError, AttributeError):
            log.warn("ignoring a malformed Pusher announcement")

