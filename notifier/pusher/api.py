"""Pusher's HTTP API (``/apps/{app_id}/…`` on the api listener).

Requests are signed as Pusher signs them: ``auth_key``, ``auth_timestamp``
(within ``WINDOW`` seconds), ``auth_version=1.0``, ``body_md5`` of a body,
and ``auth_signature``, the HMAC-SHA256 in hex, under the app's secret, of
``METHOD\\nPATH\\nQUERY`` (the query's other parameters sorted by name,
``name=value`` joined with ``&``, as the official libraries make it).
Pusher's signature has no nonce: two identical requests in one second sign
alike, so a signed request is not refused as a replay.

Answers are Pusher's: JSON on success, a line of text on a refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from notifier.config import Config
from notifier.domain.centers import Centers
from notifier.domain.errors import NotifierError
from notifier.domain.hub import Hub
from notifier.domain.model import Publisher
from notifier.domain.names import check_event_name
from notifier.domain.presence import Presence
from notifier.domain.publishers import Publishers
from notifier.domain.publishing import Publishing
from notifier.http.answers import now_or_later
from notifier.http.api import json_object
from notifier.http.request import Request
from notifier.pusher import wire
from notifier.pusher.face import PusherFace

log = Logger()

#: Seconds a request's ``auth_timestamp`` may be off the server's clock.
WINDOW = 600
#: Channels one event is triggered on at most.
MAX_CHANNELS = 100
#: The bytes of a request body other than events.
SMALL_BODY = 64 * 1024


class Refused(Exception):
    """A refusal, answered as Pusher answers: the status and a line of text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _bad(text: str) -> Refused:
    return Refused(400, text)


class PusherApi:
    """Serves ``/apps/{app_id}/…``: events, batches, channel queries,
    presence users, a user's connections terminated."""

    def __init__(self, face: PusherFace, publishers: Publishers, centers: Centers, publishing: Publishing,
                 config: Config, clock: IReactorTime, presence: Presence | None = None) -> None:
        self.face = face
        self.publishers = publishers
        self.centers = centers
        self.publishing = publishing
        self.config = config.pusher
        self.clock = clock
        self.presence = presence
        self.max_event_bytes = face.max_event_bytes

    def body_limit(self) -> int:
        """The largest body a request may have: a full batch of the largest
        events, their text escaped in JSON."""
        return SMALL_BODY + 2 * self.config.max_batch * (self.max_event_bytes + self.config.max_event_name + 256)

    def serve(self, request: Request) -> Any:
        return now_or_later(self._answer(request))

    async def _answer(self, request: Request) -> bytes:
        try:
            body = await self._route(request)
        except Refused as e:
            return self._text(request, e.status, e.text)
        except NotifierError as e:
            return self._text(request, e.status, e.message)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode()

    @staticmethod
    def _text(request: Request, status: int, text: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return text.encode() + b"\n"

    async def _route(self, request: Request) -> Any:
        segments = request.segments
        try:
            parts = [segment.decode("utf-8") for segment in segments[1:]]
        except UnicodeDecodeError:
            raise _bad("the path is not UTF-8") from None
        if segments[0] == b"users":
            # ``/users/{id}/terminate_connections``, as the Python library
            # sends it: the app is the one whose key signed it.
            app_id, route = None, parts
        elif len(parts) >= 2:
            app_id, route = parts[0], parts[1:]
        else:
            raise Refused(404, "no such path")
        publisher = await self._authenticated(request, app_id)
        method = request.method
        if app_id is None:
            route = ["users", *route]
        if method == b"POST" and route == ["events"]:
            return await self._events(publisher, self._json(request))
        if method == b"POST" and route == ["batch_events"]:
            return await self._batch(publisher, self._json(request))
        if method == b"GET" and route == ["channels"]:
            return self._channels(publisher, request)
        if method == b"GET" and len(route) == 2 and route[0] == "channels":
            return await self._channel(publisher, route[1], request)
        if method == b"GET" and len(route) == 3 and route[0] == "channels" and route[2] == "users":
            return await self._users(publisher, route[1])
        if method == b"POST" and len(route) == 3 and route[0] == "users" and route[2] == "terminate_connections":
            self._user_id(route[1])
            self.face.terminate(publisher.name, route[1])
            return {}
        if method == b"POST" and len(route) == 3 and route[0] == "users" and route[2] == "events":
            return self._user_events(publisher, route[1], self._json(request))
        raise Refused(404, "no such path")

    # authentication

    async def _authenticated(self, request: Request, app_id: str | None) -> Publisher:
        query: dict[str, str] = {}
        for name, values in request.args.items():
            try:
                query[name.decode("utf-8")] = values[0].decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(401, "the query is not UTF-8") from None
        signature = query.pop("auth_signature", None)
        key = query.get("auth_key")
        if signature is None or key is None:
            raise Refused(401, "a request is signed: auth_key and auth_signature are missing")
        if query.get("auth_version") != "1.0":
            raise Refused(401, "auth_version must be 1.0")
        try:
            timestamp = int(query.get("auth_timestamp", ""))
        except ValueError:
            raise Refused(401, "auth_timestamp must be a number of seconds") from None
        if abs(self.clock.seconds() - timestamp) > WINDOW:
            raise Refused(401, f"Timestamp expired: given {timestamp}, more than {WINDOW} s from the server's clock")
        publisher = await self.publishers.by_key(key)
        if publisher is None or app_id is not None and publisher.app_id != app_id:
            raise Refused(401, "Unknown auth_key")
        body = request.body() if not request.body_too_large else None
        if body is None:
            raise Refused(413, "the request body is too large")
        if body or "body_md5" in query:
            if query.get("body_md5") != hashlib.md5(body).hexdigest():
                raise Refused(401, "body_md5 does not match the body")
        signed = "\n".join([request.method.decode("latin-1"), request.path.decode("latin-1"),
                            "&".join(f"{name}={query[name]}" for name in sorted(query))])
        if not hmac.compare_digest(signature.encode("utf-8"), wire.sign(publisher.secret, signed).encode()):
            raise Refused(401, "Invalid signature: expected HMAC-SHA256 hex of METHOD\\nPATH\\nQUERY")
        return publisher

    # reading

    @staticmethod
    def _json(request: Request) -> dict[str, Any]:
        body = request.body()
        return json_object(body, required=True, limit=len(body))  # refused as text by _answer

    def _event(self, entry: dict[str, Any], where: str = "") -> tuple[str, str, str | None]:
        """An event's name, data and socket id to exclude, checked."""
        name, data, socket_id = entry.get("name"), entry.get("data"), entry.get("socket_id")
        if not isinstance(name, str) or not name:
            raise _bad(f"{where}name is a string")
        if len(name) > self.config.max_event_name:
            raise Refused(413, f"{where}the event name is longer than {self.config.max_event_name} characters")
        try:
            check_event_name(name)  # a message's event, as any publish's
        except NotifierError as e:
            raise _bad(f"{where}{e.message}") from None
        if not isinstance(data, str):
            raise _bad(f"{where}data is a string")
        if len(data.encode("utf-8", "surrogatepass")) > self.max_event_bytes:
            raise Refused(413, f"{where}the event's data is larger than {self.max_event_bytes} bytes")
        if socket_id is not None and (not isinstance(socket_id, str) or wire.SOCKET_ID.match(socket_id) is None):
            raise _bad(f"{where}socket_id is not a socket id")
        return name, data, socket_id

    @staticmethod
    def _channel_name(channel: object, where: str = "") -> str:
        if not isinstance(channel, str) or (wire.CHANNEL_NAME.match(channel) is None
                                            and not channel.startswith(wire.USER_CHANNEL)):
            raise _bad(f"{where}invalid channel name {str(channel)[:200]!r}")
        return channel

    @staticmethod
    def _user_id(user_id: str) -> str:
        if wire.USER_ID.match(user_id) is None:
            raise _bad("invalid user id")
        return user_id

    @staticmethod
    def _info(value: object) -> set[str]:
        if value is None:
            return set()
        if not isinstance(value, str):
            raise _bad("info is a comma-separated string")
        return {attribute for attribute in value.split(",") if attribute}

    @staticmethod
    def _askable(channel: str, info: set[str], where: str = "") -> None:
        """Refuse what *info* asks of *channel* that it cannot say, before anything is triggered."""
        if "user_count" in info and not channel.startswith("presence-"):
            raise _bad(f"{where}user_count is asked of presence channels only")

    # events

    async def _events(self, publisher: Publisher, document: dict[str, Any]) -> Any:
        name, data, socket_id = self._event(document)
        channels = document.get("channels")
        if channels is None and "channel" in document:
            channels = [document["channel"]]
        if not isinstance(channels, list) or not channels:
            raise _bad("channels is a list of channel names")
        if len(channels) > MAX_CHANNELS:
            raise _bad(f"an event goes to {MAX_CHANNELS} channels at most")
        names = [self._channel_name(channel) for channel in channels]
        if len(set(names)) != len(names):
            raise _bad("a channel named twice")
        info = self._info(document.get("info"))
        for channel in names:
            self._askable(channel, info)
        for channel in names:
            await self._trigger(publisher, channel, name, data, socket_id)
        if not info:
            return {}
        return {"channels": {channel: await self._channel_info(publisher, channel, info) for channel in names
                             if not channel.startswith(wire.USER_CHANNEL)}}

    async def _batch(self, publisher: Publisher, document: dict[str, Any]) -> Any:
        batch = document.get("batch")
        if not isinstance(batch, list) or not batch:
            raise _bad('the body must be {"batch": [{"channel", "name", "data"}, ...]}')
        if len(batch) > self.config.max_batch:
            raise _bad(f"a batch holds {self.config.max_batch} events at most")
        events = []
        for index, entry in enumerate(batch):
            where = f"batch[{index}]: "
            if not isinstance(entry, dict):
                raise _bad(f"{where}an event is an object")
            channel, info = self._channel_name(entry.get("channel"), where), self._info(entry.get("info"))
            self._askable(channel, info, where)
            events.append((channel, *self._event(entry, where), info))
        answers = []
        for channel, name, data, socket_id, _ in events:
            await self._trigger(publisher, channel, name, data, socket_id)
        if not any(info for *_, info in events):
            return {}
        for channel, *_, info in events:
            answers.append(await self._channel_info(publisher, channel, info) if info else {})
        return {"batch": answers}

    async def _trigger(self, publisher: Publisher, channel: str, name: str, data: str, socket_id: str | None) -> None:
        if channel.startswith(wire.USER_CHANNEL):
            self.face.to_user(publisher.name, self._user_id(channel[len(wire.USER_CHANNEL):]), name, data)
            return
        await self.face.hub(publisher.name, channel, wire.kind_of(channel))
        await self.publishing.publish(publisher.name, channel, data, event=name, exclude=socket_id)

    def _user_events(self, publisher: Publisher, user_id: str, document: dict[str, Any]) -> Any:
        name, data, _ = self._event(document)
        self.face.to_user(publisher.name, self._user_id(user_id), name, data)
        return {}

    # channel queries

    @staticmethod
    def _query(request: Request, name: bytes) -> str:
        """The query parameter *name* ("" when not given)."""
        return (request.args.get(name) or [b""])[0].decode("utf-8", "replace")

    def _channels(self, publisher: Publisher, request: Request) -> Any:
        prefix = self._query(request, b"filter_by_prefix")
        info = self._info(self._query(request, b"info"))
        if "user_count" in info and not prefix.startswith("presence-"):
            raise _bad("info=user_count needs filter_by_prefix=presence-")
        channels: dict[str, Any] = {}
        for hub in self.centers.hubs():
            center = hub.center
            if center.publisher == publisher.name and hub.subscribers and center.name.startswith(prefix):
                described: dict[str, Any] = {}
                if "user_count" in info:
                    described["user_count"] = len(set(hub.members.values()))
                channels[center.name] = described
        return {"channels": channels}

    async def _channel(self, publisher: Publisher, channel: str, request: Request) -> Any:
        self._channel_name(channel)
        info = self._info(self._query(request, b"info"))
        return await self._channel_info(publisher, channel, info, everything=True)

    async def _channel_info(self, publisher: Publisher, channel: str, info: set[str],
                            everything: bool = False) -> dict[str, Any]:
        hub = self.centers.loaded(publisher.name, channel)
        described: dict[str, Any] = {}
        if everything:
            described["occupied"] = bool(hub is not None and hub.subscribers)
        if "user_count" in info:
            self._askable(channel, info)
            described["user_count"] = len(await self._members(publisher, channel))
        if "subscription_count" in info:
            described["subscription_count"] = len(hub.subscribers) if hub is not None else 0
        if "cache" in info and everything and wire.is_cache(channel):
            cached = self._cached(hub)
            if cached is not None:
                described["cache"] = cached
        return described

    @staticmethod
    def _cached(hub: Hub | None) -> dict[str, Any] | None:
        latest = hub.latest if hub is not None else None
        if latest is None:
            return None
        return {"data": latest.data, "ttl": 0, "event": latest.event}

    async def _members(self, publisher: Publisher, channel: str) -> list[tuple[str, Any]]:
        if self.presence is None:
            return []
        return await self.presence.members(f"{publisher.name}/{channel}")

    async def _users(self, publisher: Publisher, channel: str) -> Any:
        self._channel_name(channel)
        if not channel.startswith("presence-"):
            raise _bad("users are asked of presence channels only")
        return {"users": [{"id": uid} for uid, _ in await self._members(publisher, channel)]}
