"""The public listener: subscribing on every transport, ``/last``, health.

Plain handlers of the listener's requests (notifier.http.request): a
long-poll or an SSE stream is a request per delivery, and routing it
through a general-purpose framework cost more than everything else it
does. A request for a center already live on this node
is answered without a Deferred where it can be; anything that needs the
store goes the asynchronous way. Every refusal is the documented JSON error.

What is here is admission: the route, the centers, the cursors, tokens and
origins. Each transport answers what was admitted (``websocket.serve``,
``sse.EventStreams``, ``longpoll.LongPolls``), headers and all.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from notifier.config import Config
from notifier.domain.centers import Centers
from notifier.domain.credentials import grants, member, subscriber_claims
from notifier.domain.errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    NotifierError,
    Unauthorized,
    Unavailable,
)
from notifier.domain.hub import CURSOR, Hub
from notifier.domain.model import Grant
from notifier.domain.names import CENTER_NAME, PUBLISHER_NAME
from notifier.domain.publishers import Publishers
from notifier.domain.token_deadlines import TokenDeadlines
from notifier.http.answers import error_answer, json_answer, jsonp_answer
from notifier.http.request import Request, query_arg
from notifier.transports import longpoll, sse, websocket

if TYPE_CHECKING:
    from notifier.pusher.face import PusherFace

log = Logger()

CALLBACK = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*\Z", re.ASCII)
MAX_LONGPOLL_TIMEOUT = 120


def _cursor(value: str | None) -> str | None:
    """A ``since`` (or ``Last-Event-ID``) as given, once it is a position."""
    if value is None or CURSOR.match(value):
        return value
    raise BadRequest("a cursor is {epoch}-{seq}, seq being 1 to 18 ASCII digits", code="bad_cursor")


def _cursors(value: str | None, count: int) -> tuple[str | None, ...]:
    """A cursor for each of *count* centers: one position for one center;
    for several, a compound cursor, its entries joined with ``,`` in the
    order of the URL, an empty one meaning "live only"."""
    if value is None:
        return (None,) * count
    if count == 1:
        return (_cursor(value),)
    entries = value.split(",")
    if len(entries) != count:
        raise BadRequest(f"a cursor for {count} centers has {count} entries, joined with ','", code="bad_cursor")
    return tuple(_cursor(entry) if entry else None for entry in entries)


def _own_comma(name: str) -> str:
    """A center name as the URL gave it, decoded once: ``%2C`` in it is a
    ``,`` of the name (a Pusher channel's), sent encoded twice (``%252C``)
    since ``,`` and ``%2C`` separate centers. ``%`` is in no center name."""
    return name.replace("%2C", ",").replace("%2c", ",") if "%" in name else name


def _centers(segment: str) -> tuple[str, ...]:
    """The centers a subscription names: one, or 2 to ``MAX_CENTERS``
    distinct ones joined with ``,``."""
    if "," not in segment:
        return (_own_comma(segment),)
    names = tuple(_own_comma(name) for name in segment.split(","))
    if len(names) > MAX_CENTERS:
        raise BadRequest(f"at most {MAX_CENTERS} centers on one connection", code="bad_center_list")
    if "" in names:
        raise BadRequest("an empty center name in the list", code="bad_center_list")
    if len(set(names)) != len(names):
        raise BadRequest("a center named twice in the list", code="bad_center_list")
    return names


def _callback(request: Request) -> str | None:
    callback = query_arg(request, b"callback")
    if callback is not None and not CALLBACK.match(callback):
        raise BadRequest("callback must be a JavaScript identifier path", code="invalid_callback")
    return callback


#: Serves an admitted request for its hubs (one per center of the URL): the
#: request, the hubs, and what the token it was admitted with grants
#: (``None``: public centers only).
Serve = Callable[[Request, Sequence[Hub], "Grant | None"], Any]

#: At most this many centers on one connection (docs/protocol.rst: Many centers on one connection).
MAX_CENTERS = 32
#: Lookups of a subscription's hubs before giving up on centers that keep
#: being dropped while the others are looked up.
LOOKUPS = 3


def _no_center(center: str) -> NotFound:
    return NotFound(f"no center {center!r}", code="no_such_center")


class _Leaf(ABC):
    """A path answering only the methods it names, with JSON refusals."""

    methods: tuple[bytes, ...] = (b"GET", b"HEAD")
    #: Whether it answers paths below its own.
    has_paths = False

    def serve(self, request: Request, parts: list[bytes]) -> Any:
        """The answer to *request*, whose path's segments after this leaf's
        own are *parts*."""
        if request.method not in self.methods:
            request.setHeader(b"allow", b", ".join(self.methods))
            method = request.method.decode("latin-1")
            return error_answer(request, MethodNotAllowed(f"{method} is not allowed here"))
        try:
            return self.answer(request, parts)
        except NotifierError as e:
            return error_answer(request, e)

    @abstractmethod
    def answer(self, request: Request, parts: list[bytes]) -> Any:
        """The answer to a request of one of ``methods``."""


class _Health(_Leaf):
    def answer(self, request: Request, parts: list[bytes]) -> bytes:
        return json_answer(request, {"status": "ok"})


class _Script(_Leaf):
    """The browser client (docs/protocol.rst: The browser client), read once at start."""

    def __init__(self) -> None:
        super().__init__()
        self.script = files("notifier").joinpath("static/notifier.js").read_bytes()
        self.etag = b'"' + hashlib.sha256(self.script).hexdigest()[:32].encode() + b'"'

    def answer(self, request: Request, parts: list[bytes]) -> bytes:
        request.setHeader(b"content-type", b"application/javascript; charset=utf-8")
        request.setHeader(b"cache-control", b"public, max-age=3600")
        request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(b"etag", self.etag)
        if request.getHeader(b"if-none-match") == self.etag:
            request.setResponseCode(304)
            return b""
        return self.script


class _PusherConnections(_Leaf):
    """``/app/{key}``: a Pusher client's WebSocket (notifier.pusher.face)."""

    methods = (b"GET",)
    has_paths = True

    def __init__(self, face: PusherFace) -> None:
        self.face = face

    def answer(self, request: Request, parts: list[bytes]) -> Any:
        return self.face.serve(request, parts)


class _NoSuchPath(_Leaf):
    methods = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS")

    def answer(self, request: Request, parts: list[bytes]) -> bytes:
        raise NotFound("no such path", code="no_such_path")


class PublicApp:
    """The public listener's app: its paths, by their first segment."""

    def __init__(self, publishers: Publishers, centers: Centers, config: Config, clock: IReactorTime,
                 websockets: websocket.NotifierFactory) -> None:
        self.closing = False
        #: Ends private subscriptions when their tokens expire.
        self.deadlines = TokenDeadlines(clock)
        websockets.deadlines = self.deadlines
        self.subscriptions = Subscriptions(self, publishers, centers, config, clock, websockets)
        self.paths: dict[bytes, _Leaf] = {
            b"sub": self.subscriptions, b"healthz": _Health(), b"notifier.js": _Script(),
        }
        self.elsewhere = _NoSuchPath()

    def serve_pusher(self, face: PusherFace) -> None:
        """Open Pusher connections on ``/app/{key}`` (notifier.pusher)."""
        self.paths[b"app"] = _PusherConnections(face)

    def serve(self, request: Request) -> Any:
        segments = request.segments
        leaf = self.paths.get(segments[0])
        if leaf is None or len(segments) > 1 and not leaf.has_paths:
            return self.elsewhere.serve(request, segments)
        return leaf.serve(request, segments[1:])


class Subscriptions(_Leaf):
    """``/sub/{publisher}/{center}`` and ``/sub/{publisher}/{c1},{c2},…``
    (every transport), and ``.../last``."""

    methods = (b"GET", b"HEAD", b"OPTIONS")
    has_paths = True

    def __init__(self, root: PublicApp, publishers: Publishers, centers: Centers, config: Config,
                 clock: IReactorTime, websockets: websocket.NotifierFactory) -> None:
        self.root = root
        self.publishers = publishers
        self.centers = centers
        self.config = config
        self.clock = clock
        self.websockets = websockets
        send_buffer_bytes = config.subscribers.send_buffer_bytes
        #: Answers the long-polls (their answers of history at most a send buffer).
        self.longpolls = longpoll.LongPolls(clock, root.deadlines, min(longpoll.ANSWER_BYTES, send_buffer_bytes))
        #: Opens the event streams.
        self.event_streams = sse.EventStreams(send_buffer_bytes, centers.dropped, root.deadlines)
        origins = config.public.allowed_origins
        self._any_origin = "*" in origins
        self._origins = frozenset(o.encode() for o in origins)

    # CORS

    def _origin_allowed(self, origin: bytes | None) -> bool:
        """Requests without ``Origin`` come from no browser: they are allowed."""
        return origin is None or self._any_origin or origin in self._origins

    def _cors(self, request: Request) -> None:
        origin = request.getHeader(b"origin")
        if origin is None:
            return
        request.setHeader(b"vary", b"Origin")
        if self._origin_allowed(origin):
            request.setHeader(b"access-control-allow-origin", origin)
            request.setHeader(b"access-control-allow-headers", b"Last-Event-ID, Cache-Control")
            request.setHeader(b"access-control-expose-headers", b"Notifier-Cursor")
            request.setHeader(b"access-control-max-age", b"600")

    # dispatch

    def answer(self, request: Request, parts: list[bytes]) -> Any:
        last = len(parts) == 3 and parts[2] == b"last"
        if len(parts) != 2 and not last:
            raise NotFound("no such path", code="no_such_path")
        try:
            publisher, segment = parts[0].decode("utf-8"), parts[1].decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the URL path is not UTF-8 text", code="invalid_url") from None
        self._cors(request)
        if request.method == b"OPTIONS":
            request.setHeader(b"access-control-allow-methods", b"GET, HEAD, OPTIONS")
            request.setResponseCode(204)
            return b""
        names = _centers(segment)
        count = len(names)
        cursors: tuple[str | None, ...] = (None,) * count
        if last:
            if count > 1:
                raise BadRequest("/last is the latest message of one center", code="bad_center_list")
            serve: Serve = self._last
        elif (request.getHeader(b"upgrade") or b"").lower() == b"websocket":
            serve, cursors = self._websocket_checked(request, count)
        elif b"text/event-stream" in (request.getHeader(b"accept") or b""):
            serve, cursors = self._event_stream_checked(request, count)
        else:
            serve, cursors = self._longpoll_checked(request, count)
        if self.root.closing:
            raise Unavailable("the server is shutting down", code="shutting_down")
        if count == 1:
            hub = self.centers.loaded(publisher, segment)
            if hub is not None and not hub.center.private and (cursors[0] is None or not hub.ahead(cursors[0])):
                return self._admitted(request, (hub,), serve, last, None)
        else:
            found = [self.centers.loaded(publisher, name) for name in names]
            hubs = [hub for hub in found if hub is not None and not hub.center.private]
            if len(hubs) == count and not any(
                    cursor is not None and hub.ahead(cursor) for hub, cursor in zip(hubs, cursors, strict=True)):
                return self._admitted(request, hubs, serve, last, None)
        return Deferred.fromCoroutine(self._find(request, publisher, names, serve, last, cursors))

    async def _find(self, request: Request, publisher: str, names: tuple[str, ...], serve: Serve,
                    last: bool, cursors: tuple[str | None, ...]) -> Any:
        """The asynchronous way: a center not live here yet, or a private one."""
        if not PUBLISHER_NAME.match(publisher):
            raise _no_center(names[0])
        for name in names:
            if not CENTER_NAME.match(name):
                raise _no_center(name)
        for _ in range(LOOKUPS):
            hubs = [await self.centers.hub(publisher, name) for name in names]
            private = [hub.center.name for hub in hubs if hub.center.private]
            grant = None
            if private:
                owner = await self.publishers.publisher(publisher)
                if owner is None:
                    raise _no_center(private[0])
                claims = subscriber_claims(query_arg(request, b"token"), owner, self.clock.seconds())
                for name in private:
                    if not grants(claims, name):
                        raise Unauthorized(f"the subscriber token does not grant center {name!r}",
                                           code="invalid_token")
                presence = any(hub.center.presence for hub in hubs)
                grant = Grant(float(claims["exp"]), member(claims) if presence else None)
            # A position this node has not reached (another node published
            # after it, and the message is on its way here, or this node
            # was cut off from the broker): catch up first, so that the
            # resume is what it would be on that node, not "from the future".
            for hub, cursor in zip(hubs, cursors, strict=True):
                if cursor is not None and hub.ahead(cursor):
                    await self.centers.caught_up(hub, cursor)
            # A hub dropped while others were looked up (a center deleted, a
            # node catching up) is looked up again: never attach to one gone.
            if all(self.centers.loaded(publisher, hub.center.name) is hub for hub in hubs):
                break
        else:
            raise Unavailable("the centers keep changing; try again", code="store_unavailable")
        result = self._admitted(request, hubs, serve, last, grant)
        if isinstance(result, Deferred):
            return await result
        return result

    def _admitted(self, request: Request, hubs: Sequence[Hub], serve: Serve, last: bool,
                  grant: Grant | None) -> Any:
        limit = self.config.subscribers.max_per_center
        if not last and limit:
            for hub in hubs:
                if len(hub.subscribers) >= limit:
                    request.setHeader(b"retry-after", b"10")
                    raise Unavailable(f"center {hub.center.name!r} has its {limit} subscribers already",
                                      code="center_full")
        return serve(request, hubs, grant)

    # transports

    def _websocket_checked(self, request: Request, count: int) -> tuple[Serve, tuple[str | None, ...]]:
        fmt = query_arg(request, b"format")
        if fmt is not None and fmt not in websocket.FORMATS:
            raise BadRequest("format must be raw or json", code="invalid_format")
        if count > 1:
            if fmt == "raw":
                raise BadRequest("several centers are told apart by the envelope: format=json",
                                 code="raw_needs_one_center")
            fmt = "json"
        fmt = fmt or "raw"
        if not self._origin_allowed(request.getHeader(b"origin")):
            raise Forbidden("this origin may not subscribe", code="origin_not_allowed")
        cursors = _cursors(query_arg(request, b"since"), count)
        websockets = self.websockets

        def serve(request: Request, hubs: Sequence[Hub], grant: Grant | None) -> Any:
            return websocket.serve(websockets, request, hubs, fmt, cursors, grant)

        return serve, cursors

    def _event_stream_checked(self, request: Request, count: int) -> tuple[Serve, tuple[str | None, ...]]:
        # A browser reconnecting by itself sends the last id it saw in
        # Last-Event-ID, on the same URL: that is newer than any since= in it.
        last_event_id = request.getHeader(b"last-event-id")
        cursors = _cursors(last_event_id.decode("latin-1") if last_event_id else query_arg(request, b"since"), count)
        # format=json: every message a "message" event of its envelope, for
        # a client that cannot listen for every event name (notifier.js).
        fmt = query_arg(request, b"format")
        if fmt is not None and fmt not in websocket.FORMATS:
            raise BadRequest("format must be raw or json", code="invalid_format")
        as_json = fmt == "json"
        serve_streams = self.event_streams.serve

        def serve(request: Request, hubs: Sequence[Hub], grant: Grant | None) -> Deferred[bytes]:
            return serve_streams(request, hubs, cursors, grant, as_json)

        return serve, cursors

    def _longpoll_checked(self, request: Request, count: int) -> tuple[Serve, tuple[str | None, ...]]:
        callback = _callback(request)
        cursors = _cursors(query_arg(request, b"since"), count)
        timeout = self._timeout(request)
        serve_polls = self.longpolls.serve

        def serve(request: Request, hubs: Sequence[Hub], grant: Grant | None) -> Any:
            return serve_polls(request, hubs, cursors, timeout, callback, grant)

        return serve, cursors

    def _timeout(self, request: Request) -> float:
        value = query_arg(request, b"timeout")
        if value is None:
            return self.config.subscribers.longpoll_timeout
        try:
            timeout = float(value)
        except ValueError:
            timeout = -1.0
        if not 0 <= timeout <= MAX_LONGPOLL_TIMEOUT:  # also refuses nan
            raise BadRequest(f"timeout must be 0 to {MAX_LONGPOLL_TIMEOUT} seconds", code="invalid_timeout")
        return timeout

    def _last(self, request: Request, hubs: Sequence[Hub], grant: Grant | None) -> bytes:
        hub = hubs[0]
        callback = _callback(request)
        request.setHeader(b"cache-control", b"no-store")
        text = hub.latest.data if hub.latest is not None else None
        if callback is not None:
            return jsonp_answer(request, callback, json.dumps(text).encode())
        if text is None:
            request.setResponseCode(204)
            return b""
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return text.encode()
