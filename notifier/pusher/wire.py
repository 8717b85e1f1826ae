"""Pusher Channels protocol 7 as it goes over the wire (docs/pusher.rst).

Every frame is a JSON object ``{"event", "channel"?, "data"?}``. A frame
the server makes carries its ``data`` as a string (JSON text of an object
for the protocol's own events, the site's text for its events), as the
official clients expect it; a client event's ``data`` is relayed as the
client sent it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

from autobahn.websocket.protocol import PreparedMessage

from notifier.domain.model import Message

#: A channel name as Pusher allows it.
CHANNEL_NAME = re.compile(r"[-A-Za-z0-9_=@,.;]{1,164}\Z", re.ASCII)
#: The channel of the events sent to a signed-in user, by user id.
USER_CHANNEL = "#server-to-user-"
#: A user id: what Pusher allows in the name of a user's channel.
USER_ID = re.compile(r"[-A-Za-z0-9_=@,.;]{1,164}\Z", re.ASCII)
#: A socket id: two numbers (node, connection), unique in the cluster.
SOCKET_ID = re.compile(r"[0-9]{1,20}\.[0-9]{1,20}\Z", re.ASCII)

PUBLIC, PRIVATE, PRESENCE, ENCRYPTED = "public", "private", "presence", "private-encrypted"

# Error codes (``pusher:error`` and close codes): 4000-4099 the client
# must not reconnect as it is, 4100-4199 it reconnects after a while,
# 4200-4299 it reconnects at once.
UNKNOWN_APP = 4001
PATH_NOT_FOUND = 4005
BAD_PROTOCOL = 4006
UNSUPPORTED_PROTOCOL = 4007
NO_PROTOCOL = 4008
UNAUTHORIZED = 4009
OVER_CAPACITY = 4100
RECONNECT = 4200
PONG_NOT_RECEIVED = 4201
CLIENT_EVENT_RATE = 4301

#: The protocol versions served: 7 is the one pusher-js 8 speaks; 5 and 6
#: differ only in what this server never sends.
PROTOCOLS = frozenset({"5", "6", "7"})


def kind_of(channel: str) -> str:
    """A channel's kind, by its prefix."""
    if channel.startswith("private-encrypted-"):
        return ENCRYPTED
    if channel.startswith("private-"):
        return PRIVATE
    if channel.startswith("presence-"):
        return PRESENCE
    return PUBLIC


def is_cache(channel: str) -> bool:
    """Whether a new subscriber of *channel* is sent its last event at once."""
    return channel.startswith(("cache-", "private-cache-", "presence-cache-", "private-encrypted-cache-"))


def sign(secret: str, text: str) -> str:
    """HMAC-SHA256 of *text* under *secret*, in hex: every Pusher signature."""
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def signed(secret: str, key: str, text: str, auth: object) -> bool:
    """Whether *auth* is ``key:signature`` of *text* by this app."""
    if not isinstance(auth, str):
        return False
    given_key, _, signature = auth.partition(":")
    return hmac.compare_digest(given_key.encode(), key.encode()) \
        & hmac.compare_digest(signature.encode("utf-8", "replace"), sign(secret, text).encode())


def frame(payload: bytes) -> bytes:
    """A whole unmasked text frame."""
    return PreparedMessage(payload, False, False, True).payloadHybi


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def event_frame(event: str, data: Any = None, channel: str | None = None, **extra: Any) -> bytes:
    """A frame of *event*; *data* not a string is sent as JSON text."""
    body: dict[str, Any] = {"event": event}
    if channel is not None:
        body["channel"] = channel
    if data is not None:
        body["data"] = data if isinstance(data, str) else dumps(data)
    body.update(extra)
    return frame(dumps(body).encode())


def established_frame(socket_id: str, activity_timeout: int) -> bytes:
    """``pusher:connection_established``, made for every connection: its
    JSON written out (a socket id is digits and a dot, nothing to escape)."""
    return frame(b'{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"%s\\",'
                 b'\\"activity_timeout\\":%d}"}' % (socket_id.encode(), activity_timeout))


def message_frame(message: Message) -> bytes:
    """A center's message as the event of the channel of the same name
    (made once per message for every Pusher subscriber)."""
    return frame(dumps({"event": message.event, "channel": message.center, "data": message.data}).encode())


def error_frame(code: int | None, message: str) -> bytes:
    return event_frame("pusher:error", {"code": code, "message": message})


def subscription_error(channel: str, error: str, status: int) -> bytes:
    """What a refused subscription is told (Laravel Echo's ``error()`` hears it)."""
    return event_frame("pusher:subscription_error", {"type": "AuthError", "error": error, "status": status},
                       channel)
