"""A Pusher connection: one WebSocket, the channels it subscribed to.

The connection is the streaming producer of its socket, as every
notifier WebSocket is (notifier.transports.backpressure): what each of its
channels is sent waits behind the same buffer and the same limit. Each
channel it subscribes to is a ``ChannelSubscription`` of that channel's
hub, so that a center's fan-out writes the same prepared frame to every
Pusher subscriber as it writes its own to notifier's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autobahn.twisted.util import peer2str
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from notifier import compat
from notifier.domain.errors import NotifierError
from notifier.domain.hub import Batch, Hub, Opening
from notifier.domain.model import Message, Publisher
from notifier.domain.presence import Item
from notifier.pusher import wire
from notifier.transports.websocket import WebSocketSubscriber

if TYPE_CHECKING:
    from notifier.pusher.face import PusherFace

log = Logger()

#: Channels one connection may be subscribed to at once.
MAX_CHANNELS = 100
#: What a hub keeps its channel's ``subscription_succeeded`` frame under (``Hub.memo``).
_SUCCEEDED = object()
#: The close code of a text message that is not UTF-8 (RFC 6455).
INVALID_PAYLOAD = 1007
#: The close code of a message larger than a connection takes (RFC 6455).
MESSAGE_TOO_BIG = 1009


def _exclusions(batch: Batch) -> frozenset[str]:
    """The socket ids some message of *batch* must not reach."""
    return frozenset(prepared.message.exclude for prepared in batch.items if prepared.message.exclude)


def _frames(batch: Batch) -> tuple[bytes, frozenset[str]]:
    """The frames of *batch* for every Pusher subscriber of its center, and
    the socket ids some of them must not reach: made once per batch."""
    return batch.joined(wire.message_frame), _exclusions(batch)


def _user_id(value: object) -> str | None:
    """A user id as a site's library gives it: a string, or an integer
    (Laravel's ids), as text; ``None`` for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def item_frame(item: Item) -> bytes:
    """A presence item as the Pusher frame of the channel of the same name."""
    body = item.body
    channel = body["center"]
    if item.kind == "members":
        members = body["members"]
        ids = [member["uid"] for member in members]
        hash_ = {member["uid"]: member["info"] for member in members}
        return wire.event_frame("pusher_internal:subscription_succeeded",
                                {"presence": {"ids": ids, "hash": hash_, "count": len(ids)}}, channel)
    if item.kind == "join":
        return wire.event_frame("pusher_internal:member_added",
                                {"user_id": body["uid"], "user_info": body["info"]}, channel)
    return wire.event_frame("pusher_internal:member_removed", {"user_id": body["uid"]}, channel)


class ChannelSubscription:
    """One channel of a Pusher connection: a subscriber of its hub."""

    __slots__ = ("connection", "channel", "hub", "tells_presence", "held", "cached")

    transport_name = "pusher"

    def __init__(self, connection: PusherConnection, channel: str, hub: Hub | None, presence: bool) -> None:
        self.connection = connection
        self.channel = channel
        self.hub = hub
        #: Whether presence items reach it (a ``presence-`` channel).
        self.tells_presence = presence
        #: What waits for the subscription to succeed (a presence channel's
        #: members come a turn later): frames, in order; ``None`` once sent.
        self.held: list[bytes] | None = [] if presence else None
        #: A cache channel's last event when it was subscribed (``b""``: none).
        self.cached: bytes | None = None

    def deliver(self, batch: Batch) -> None:
        # The fan-out's path, once per subscriber: as short as notifier's own.
        frames, excluded = batch.form(_frames)
        if excluded:
            frames = self.connection.without_excluded(batch, frames, excluded)
            if not frames:
                return
        held = self.held
        if held is None:
            self.connection._pace(frames)
        else:
            held.append(frames)

    def present(self, item: Item) -> None:
        self.connection.present(self, item)

    def close(self, reason: str) -> None:
        self.connection.close(reason)

    def send(self, frames: bytes) -> None:
        """Send *frames* once the subscription has succeeded; before, keep them."""
        held = self.held
        if held is None:
            self.connection.send(frames)
        else:
            held.append(frames)


class PusherConnection(WebSocketSubscriber):
    """A WebSocket speaking Pusher's protocol 7.

    Its own state, and what Autobahn sets on a connection for each message
    it reads (notifier's own WebSockets read none), are slots: an instance's
    ``__dict__`` then holds no more names than a native connection's, within
    what CPython shares between the dicts of a class's instances, so that an
    idle Pusher connection costs about what a native one does.
    """

    __slots__ = ("publisher", "refusal", "number", "channels", "user_id", "_events", "_second",
                 *compat.MESSAGE_SLOTS)

    transport_name = "pusher"
    tells_presence = False
    #: The face of the node (a class attribute of each face's own class).
    face: PusherFace
    #: The app (publisher) it connected to; ``None`` when refused.
    publisher: Publisher | None
    #: What it is told and closed with at once, when refused: code and message.
    refusal: tuple[int, str] | None
    #: Its number on this node (0: none yet), the second part of its socket id.
    number: int
    #: Its channels (a list, made with the first: a connection has few,
    #: and an idle one holds one; looked up by name only on what the
    #: client sends).
    channels: list[ChannelSubscription] | None
    #: The user it signed in as.
    user_id: str | None
    #: Client events in the current second, and when that second began.
    _events: int
    _second: float

    def __init__(self) -> None:
        super().__init__()
        self.publisher = self.refusal = self.channels = self.user_id = None
        self.number = 0
        self._events, self._second = 0, 0.0
        self.message_data = None  # type: ignore[assignment]  # none being read: Autobahn types it a list

    @property
    def socket_id(self) -> str:
        """Its socket id: the node's number and its own (made when asked:
        a string kept for each connection would be memory held)."""
        return f"{self.face.node_number}.{self.number}"

    @property
    def peer(self) -> str:  # type: ignore[override]
        """The peer as Autobahn names it, made each time Autobahn asks (on
        what the client sends): not kept with every idle connection."""
        assert self.transport is not None
        return peer2str(self.transport)

    # opening

    def handshake_fields(self) -> bytes:
        return b""

    def onConnect(self, request: Any) -> tuple[None, dict[str, str]]:
        return None, {}

    def onOpen(self) -> None:
        self.registerProducer(self, True)
        if self.refusal is not None:
            code, message = self.refusal
            self._end(code, message)
            return
        face = self.face
        self.number = face.numbered()
        face.opened(self)
        self.send(wire.established_frame(self.socket_id, face.config.activity_timeout))

    def _end(self, code: int, message: str) -> None:
        """Tell the client why, and close with the same code."""
        self.send(wire.error_frame(code, message))
        self.sendCloseFrame(code=code, reasonUtf8=message.encode()[:120], isReply=False)

    # what the client sends

    # A message is gathered in Autobahn's ``message_data`` (set by its
    # ``onMessageBegin``), its frames' payloads as they come, up to the
    # largest a client sends (Autobahn counts each frame's length into
    # ``message_data_total_length`` as the frame begins).

    def onMessageFrameData(self, payload: bytes) -> None:
        incoming = self.message_data
        if incoming is None:
            return
        if self.message_data_total_length > self.face.max_frame_bytes:
            self.message_data = None  # type: ignore[assignment]  # given up
            self.sendCloseFrame(code=MESSAGE_TOO_BIG, reasonUtf8=b"message too large", isReply=False)
            return
        incoming.append(payload)

    def onMessageEnd(self) -> None:
        incoming, self.message_data = self.message_data, None  # type: ignore[assignment]
        if incoming is None or self.state != self.STATE_OPEN or self.publisher is None:
            return
        try:
            text = b"".join(incoming).decode("utf-8")
        except UnicodeDecodeError:
            # What Autobahn's validator would have said (RFC 6455 8.1):
            # checked here once, not with a validator kept per connection.
            self.sendCloseFrame(code=INVALID_PAYLOAD, reasonUtf8=b"invalid UTF-8", isReply=False)
            return
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            self.send(wire.error_frame(None, "the message is not JSON"))
            return
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            self.send(wire.error_frame(None, "a message is a JSON object with an event"))
            return
        try:
            self.received(message["event"], message)
        except Exception:
            log.failure("a Pusher message failed")
            self.send(wire.error_frame(None, "the server failed to handle the message"))

    def received(self, event: str, message: dict[str, Any]) -> None:
        data = message.get("data")
        if event == "pusher:ping":
            self.send(wire.event_frame("pusher:pong", {}))
        elif event == "pusher:pong":
            self._ping = None
        elif event == "pusher:subscribe":
            self._when_object(data, self.subscribe)
        elif event == "pusher:unsubscribe":
            self._when_object(data, self.unsubscribe)
        elif event == "pusher:signin":
            self._when_object(data, self.sign_in)
        elif event.startswith("client-"):
            self.client_event(event, message.get("channel"), data)
        else:
            self.send(wire.error_frame(None, f"unknown event {event[:200]!r}"))

    def _when_object(self, data: Any, then: Callable[[dict[str, Any]], Any]) -> None:
        if isinstance(data, str):  # some clients send it as JSON text
            try:
                data = json.loads(data)
            except (ValueError, RecursionError):
                data = None
        if not isinstance(data, dict):
            self.send(wire.error_frame(None, "the event's data must be an object"))
            return
        then(data)

    # subscribing

    def subscribe(self, data: dict[str, Any]) -> None:
        channel = data.get("channel")
        if not isinstance(channel, str):
            self.send(wire.error_frame(None, "subscribe names a channel"))
            return
        channels = self.channels
        if channels is None:
            channels = self.channels = []
        if self.channel(channel) is not None:
            return  # subscribed already (or on its way)
        if channel.startswith(wire.USER_CHANNEL):
            if self.user_id is None or channel != wire.USER_CHANNEL + self.user_id:
                self.send(wire.subscription_error(channel, "sign in as this user first", 403))
                return
            channels.append(ChannelSubscription(self, channel, None, False))
            self.send(wire.event_frame("pusher_internal:subscription_succeeded", {}, channel))
            return
        if wire.CHANNEL_NAME.match(channel) is None:
            self.send(wire.subscription_error(channel[:200], "invalid channel name", 400))
            return
        if len(channels) >= MAX_CHANNELS:
            self.send(wire.subscription_error(channel, f"at most {MAX_CHANNELS} channels on a connection", 400))
            return
        kind = wire.kind_of(channel)
        member = None
        if kind != wire.PUBLIC:
            text = f"{self.socket_id}:{channel}"
            channel_data = data.get("channel_data")
            if kind == wire.PRESENCE:
                member = self._member(channel, channel_data)
                if member is None:
                    return
                text += f":{channel_data}"
            assert self.publisher is not None
            if not wire.signed(self.publisher.secret, self.publisher.key, text, data.get("auth")):
                self.send(wire.subscription_error(channel, "invalid signature", 401))
                return
        placeholder = ChannelSubscription(self, channel, None, kind == wire.PRESENCE)
        channels.append(placeholder)
        Deferred.fromCoroutine(self._attach(placeholder, kind, member)).addErrback(self._failed, channel)

    def _member(self, channel: str, channel_data: object) -> tuple[str, Any] | None:
        """The user a presence subscription joins as, from its channel_data."""
        try:
            parsed = json.loads(channel_data) if isinstance(channel_data, str) else None
        except (ValueError, RecursionError):
            parsed = None
        user_id = _user_id(parsed.get("user_id") if isinstance(parsed, dict) else None)
        if user_id is None or len(user_id) > 200:
            self.send(wire.subscription_error(channel, "channel_data must be JSON with a user_id", 400))
            return None
        assert isinstance(parsed, dict)
        return user_id, parsed.get("user_info")

    async def _attach(self, subscription: ChannelSubscription, kind: str, member: tuple[str, Any] | None) -> None:
        assert self.publisher is not None
        channel = subscription.channel
        try:
            hub = await self.face.hub(self.publisher.name, channel, kind)
        except NotifierError as e:
            self._refused(subscription, e.message, e.status)
            return
        if self.channel(channel) is not subscription \
                or self.state != self.STATE_OPEN:
            return  # unsubscribed or gone meanwhile
        if kind == wire.PUBLIC and hub.center.private:
            # A private center made through notifier's API, under a name
            # no Pusher signature covers: it is not anyone's to read.
            self._refused(subscription, "a private center: its channel name starts with private-", 403)
            return
        if kind == wire.PRESENCE and not hub.center.presence:
            self._refused(subscription, "this center does not keep presence", 400)
            return
        limit = self.face.max_per_center
        if limit and len(hub.subscribers) >= limit:
            self._refused(subscription, "the channel is full", 503)
            return
        subscription.hub = hub
        opening = hub.attach(subscription, None, member)
        if wire.is_cache(channel):
            subscription.cached = self._last_sent(hub, opening)
        if kind != wire.PRESENCE:
            # The same frame for every subscriber of the channel, made once
            # until the next fan-out (a crowd subscribing at once).
            self.send(hub.memo(_SUCCEEDED, lambda: wire.event_frame("pusher_internal:subscription_succeeded", {},
                                                                   channel)))
            self._send_cached(subscription)

    @staticmethod
    def _last_sent(hub: Hub, opening: Opening) -> bytes:
        """The frame of the last message the channel's subscribers were
        sent (what comes next reaches the new one live), ``b""`` if none."""
        end = hub.resume_point(None)[1]
        if end == 0:
            return b""
        message: Message = hub.retained(end - 1, end)[0].message
        return wire.message_frame(message)

    def _send_cached(self, subscription: ChannelSubscription) -> None:
        cached, subscription.cached = subscription.cached, None
        if cached is None:
            return
        if cached:
            self.send(cached)
        else:
            self.send(wire.event_frame("pusher:cache_miss", None, subscription.channel))
            self.face.cache_miss(subscription)

    def _refused(self, subscription: ChannelSubscription, error: str, status: int) -> None:
        if self.channels is not None and subscription in self.channels:
            self.channels.remove(subscription)
        if self.state == self.STATE_OPEN:
            self.send(wire.subscription_error(subscription.channel, error, status))

    def _failed(self, failure: Any, channel: str) -> None:
        log.failure("subscribing to {channel} failed", failure, channel=channel)
        subscription = self.channel(channel)
        if subscription is not None and subscription.hub is None:
            self._refused(subscription, "the server failed to subscribe", 500)

    def channel(self, name: object) -> ChannelSubscription | None:
        """Its subscription to the channel *name*, if any (on its way included)."""
        for subscription in self.channels or ():
            if subscription.channel == name:
                return subscription
        return None

    def unsubscribe(self, data: dict[str, Any]) -> None:
        channel = data.get("channel")
        subscription = self.channel(channel)
        if subscription is not None and self.channels is not None:
            self.channels.remove(subscription)
        if subscription is not None and subscription.hub is not None:
            subscription.hub.unsubscribe(subscription)

    # what its channels are sent

    def without_excluded(self, batch: Batch, frames: bytes, excluded: frozenset[str]) -> bytes:
        """*frames* of *batch*, but for the messages this connection must not be sent."""
        socket_id = self.socket_id
        if socket_id not in excluded:
            return frames
        return b"".join(prepared.form(wire.message_frame) for prepared in batch.items
                        if prepared.message.exclude != socket_id)

    def present(self, subscription: ChannelSubscription, item: Item) -> None:  # type: ignore[override]
        frames = item.form(item_frame)
        if item.kind == "members":
            held, subscription.held = subscription.held, None
            self.send(frames)
            for waiting in held or ():
                self.send(waiting)
            self._send_cached(subscription)
        else:
            subscription.send(frames)

    def send(self, frames: bytes) -> None:
        self._pace(frames)

    # client events and users

    def client_event(self, event: str, channel: object, data: Any) -> None:
        subscription = self.channel(channel)
        if subscription is None or subscription.hub is None or subscription.held is not None:
            self.send(wire.error_frame(None, "client events go to a channel subscribed to"))
            return
        assert isinstance(channel, str) and self.publisher is not None
        kind = wire.kind_of(channel)
        if kind not in (wire.PRIVATE, wire.PRESENCE):
            self.send(wire.error_frame(None, "client events go to private and presence channels only"))
            return
        face = self.face
        if not face.client_events(self.publisher):
            self.send(wire.error_frame(None, "client events are not enabled for this app"))
            return
        now = face.clock.seconds()
        if now - self._second >= 1:
            self._second, self._events = now, 0
        self._events += 1
        if self._events > face.config.client_event_rate:
            self.send(wire.error_frame(wire.CLIENT_EVENT_RATE, "client event rejected: too many per second"))
            return
        if len(event) > face.config.max_event_name:
            self.send(wire.error_frame(None, "the event name is too long"))
            return
        encoded = data if isinstance(data, str) else wire.dumps(data)
        if len(encoded.encode()) > face.max_event_bytes:
            self.send(wire.error_frame(None, "the event's data is too large"))
            return
        user_id = subscription.hub.members.get(subscription) if kind == wire.PRESENCE else None
        face.client_event(self, subscription.hub, event, channel, encoded, user_id)

    def sign_in(self, data: dict[str, Any]) -> None:
        user_data = data.get("user_data")
        assert self.publisher is not None
        if not isinstance(user_data, str) or not wire.signed(
                self.publisher.secret, self.publisher.key, f"{self.socket_id}::user::{user_data}", data.get("auth")):
            self._end(wire.UNAUTHORIZED, "invalid sign-in signature")
            return
        try:
            user = json.loads(user_data)
        except (ValueError, RecursionError):
            user = None
        user_id = _user_id(user.get("id") if isinstance(user, dict) else None)
        if user_id is None or wire.USER_ID.match(user_id) is None:
            self._end(wire.UNAUTHORIZED, "user_data must be JSON with an id")
            return
        if self.user_id is not None:
            self.face.signed_out(self)
        self.user_id = user_id
        self.face.signed_in(self)
        self.send(wire.event_frame("pusher:signin_success", {"user_data": user_data}))

    # ending

    def close(self, reason: str, code: int = wire.RECONNECT) -> None:
        """End it: the server is shutting down, a channel was deleted, the
        app's secret changed (the client comes back at once, 4200), or the
        app was removed (4001)."""
        self._leave()
        if self.state == self.STATE_OPEN:
            self._end(code, reason)

    def terminate(self) -> None:
        """End it: the site terminated its user's connections."""
        self._leave()
        if self.state == self.STATE_OPEN:
            self._end(wire.UNAUTHORIZED, "terminated by the app")

    def _leave(self) -> None:
        channels, self.channels = self.channels, None
        for subscription in channels or ():
            if subscription.hub is not None:
                subscription.hub.unsubscribe(subscription)
        if self.number:
            self.face.closed(self)

    def _drop_slow(self) -> None:
        hubs = [subscription.hub for subscription in self.channels or () if subscription.hub]
        self._leave()
        if hubs:
            self.dropped(hubs[0])
        self._cut_slow()

    def _cut_slow(self) -> None:
        self.sendClose(code=wire.OVER_CAPACITY, reason="slow consumer: too many unsent messages")


compat.connecting_attributes(PusherConnection)
