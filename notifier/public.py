"""The public listener: subscribing on every transport, ``/last``, health."""

from __future__ import annotations

import hashlib
import json
import re
from importlib.resources import files
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from notifier.config import Config
from notifier.auth import check_subscriber_token
from notifier.errors import BadRequest, Forbidden, NotFound, Unavailable
from notifier.hub import Hub
from notifier.names import CENTER_NAME, PUBLISHER_NAME
from notifier.registry import HubRegistry
from notifier.transports import longpoll, sse, websocket
from notifier.web import install_error_handlers, json_answer

CALLBACK = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*\Z", re.ASCII)
MAX_LONGPOLL_TIMEOUT = 120


def _arg(request: IRequest, name: bytes) -> str | None:
    values = request.args.get(name)
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"query parameter {name.decode()!r} is not UTF-8") from None


def _callback(request: IRequest) -> str | None:
    callback = _arg(request, b"callback")
    if callback is not None and not CALLBACK.match(callback):
        raise BadRequest("callback must be a JavaScript identifier path", code="invalid_callback")
    return callback


def _jsonp(request: IRequest, callback: str, payload: bytes) -> bytes:
    request.setHeader(b"content-type", b"application/javascript; charset=utf-8")
    return b"/**/" + callback.encode() + b"(" + payload + b");"


class PublicApp:
    app = Klein()
    install_error_handlers(app)

    def __init__(self, registry: HubRegistry, config: Config, clock: IReactorTime,
                 websockets: websocket.NotifierFactory) -> None:
        self.registry = registry
        self.config = config
        self.clock = clock
        self.websockets = websockets
        self.closing = False
        origins = config.public.allowed_origins
        self._any_origin = "*" in origins
        self._origins = frozenset(o.encode() for o in origins)
        # Read once, while the service is made, never on a request.
        self._script = files("notifier").joinpath("static/notifier.js").read_bytes()
        self._script_etag = b'"' + hashlib.sha256(self._script).hexdigest()[:32].encode() + b'"'

    def resource(self) -> Any:
        return self.app.resource()

    # CORS

    def _origin_allowed(self, origin: bytes | None) -> bool:
        """Requests without ``Origin`` come from no browser: they are allowed."""
        return origin is None or self._any_origin or origin in self._origins

    def _cors(self, request: IRequest) -> None:
        origin = request.getHeader(b"origin")
        if origin is None:
            return
        request.setHeader(b"vary", b"Origin")
        if self._origin_allowed(origin):
            request.setHeader(b"access-control-allow-origin", origin)
            request.setHeader(b"access-control-allow-headers", b"Last-Event-ID, Cache-Control")
            request.setHeader(b"access-control-expose-headers", b"Notifier-Cursor")
            request.setHeader(b"access-control-max-age", b"600")

    async def _hub(self, request: IRequest, publisher: str, center: str, *, subscribing: bool = True) -> Hub:
        """The hub to read from, once the request may read it."""
        if self.closing:
            raise Unavailable("the server is shutting down", code="shutting_down")
        if not PUBLISHER_NAME.match(publisher) or not CENTER_NAME.match(center):
            raise NotFound(f"no center {center!r}", code="no_such_center")
        hub = await self.registry.hub(publisher, center)
        if hub.center.private:
            owner = await self.registry.publisher(publisher)
            if owner is None:
                raise NotFound(f"no center {center!r}", code="no_such_center")
            check_subscriber_token(_arg(request, b"token"), owner, center, self.clock.seconds())
        limit = self.config.subscribers.max_per_center
        if subscribing and limit and len(hub.subscribers) >= limit:
            request.setHeader(b"retry-after", b"10")
            raise Unavailable(f"this center has its {limit} subscribers already", code="center_full")
        return hub

    # routes

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return json_answer(request, {"status": "ok"})

    @app.route("/notifier.js", methods=["GET"])
    def script(self, request: IRequest) -> bytes:
        """The browser client (README.rst: In the browser)."""
        request.setHeader(b"content-type", b"application/javascript; charset=utf-8")
        request.setHeader(b"cache-control", b"public, max-age=3600")
        request.setHeader(b"access-control-allow-origin", b"*")
        request.setHeader(b"etag", self._script_etag)
        if request.getHeader(b"if-none-match") == self._script_etag:
            request.setResponseCode(304)
            return b""
        return self._script

    @app.route("/sub/<publisher>/<center>", methods=["OPTIONS"])
    def preflight(self, request: IRequest, publisher: str, center: str) -> bytes:
        self._cors(request)
        request.setHeader(b"access-control-allow-methods", b"GET, HEAD, OPTIONS")
        request.setResponseCode(204)
        return b""

    @app.route("/sub/<publisher>/<center>", methods=["GET"])
    async def subscribe(self, request: IRequest, publisher: str, center: str) -> Any:
        self._cors(request)
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if upgrade == b"websocket":
            fmt = _arg(request, b"format") or "raw"
            if fmt not in websocket.FORMATS:
                raise BadRequest("format must be raw or json", code="invalid_format")
            if not self._origin_allowed(request.getHeader(b"origin")):
                raise Forbidden("this origin may not subscribe", code="origin_not_allowed")
            since = _arg(request, b"since")
            hub = await self._hub(request, publisher, center)
            request.channel.setTimeout(None)  # the connection is the subscriber's now
            return websocket.upgrade(self.websockets, hub, fmt, since)
        if b"text/event-stream" in (request.getHeader(b"accept") or b""):
            return await self._event_stream(request, publisher, center)
        return await self._longpoll(request, publisher, center)

    async def _event_stream(self, request: IRequest, publisher: str, center: str) -> bytes:
        # A browser reconnecting by itself sends the last id it saw in
        # Last-Event-ID, on the same URL: that is newer than any since= in it.
        last_event_id = request.getHeader(b"last-event-id")
        since = last_event_id.decode("utf-8", "replace") if last_event_id else _arg(request, b"since")
        hub = await self._hub(request, publisher, center)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        request.channel.setTimeout(None)
        stream = sse.EventStream(hub, request, self.config.subscribers.send_buffer_bytes, self.registry.dropped)
        return await stream.start(since)

    async def _longpoll(self, request: IRequest, publisher: str, center: str) -> bytes:
        callback = _callback(request)
        since = _arg(request, b"since")
        timeout = self._timeout(request)
        hub = await self._hub(request, publisher, center)
        request.setHeader(b"cache-control", b"no-store")
        # Clients polling again after the same message ask the same: answered once.
        payload = hub.memo(("longpoll", since), lambda: self._backlog_body(hub, since))
        if payload is not None:
            pass
        elif timeout == 0:
            payload = longpoll.body([], since, True)
        else:
            payload = await longpoll.LongPoll(hub, since, timeout, self.clock).answer
        # Where to go on from, even when the body's last_id is null (a
        # timeout without since): nothing published after this answer is lost.
        request.setHeader(b"notifier-cursor", hub.position.encode())
        if callback is not None:
            return _jsonp(request, callback, payload)
        request.setHeader(b"content-type", b"application/json")
        return payload

    @staticmethod
    def _backlog_body(hub: Hub, since: str | None) -> bytes | None:
        """The answer to a long-poll with retained messages after *since*
        (or a lost cursor); ``None`` if it has to wait."""
        backlog, recovered = hub.retained_after(since)
        if not backlog and recovered:
            return None
        messages = [prepared.message for prepared in backlog]
        return longpoll.body(messages, messages[-1].id if messages else hub.position, recovered)

    def _timeout(self, request: IRequest) -> float:
        value = _arg(request, b"timeout")
        if value is None:
            return self.config.subscribers.longpoll_timeout
        try:
            timeout = float(value)
        except ValueError:
            timeout = -1.0
        if not 0 <= timeout <= MAX_LONGPOLL_TIMEOUT:  # also refuses nan
            raise BadRequest(f"timeout must be 0 to {MAX_LONGPOLL_TIMEOUT} seconds", code="invalid_timeout")
        return timeout

    @app.route("/sub/<publisher>/<center>/last", methods=["GET"])
    async def last(self, request: IRequest, publisher: str, center: str) -> bytes:
        self._cors(request)
        callback = _callback(request)
        hub = await self._hub(request, publisher, center, subscribing=False)
        request.setHeader(b"cache-control", b"no-store")
        text = hub.latest.data if hub.latest is not None else None
        if callback is not None:
            return _jsonp(request, callback, json.dumps(text).encode())
        if text is None:
            request.setResponseCode(204)
            return b""
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return text.encode()
