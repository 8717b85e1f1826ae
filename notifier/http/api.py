"""The api listener: the publisher API, the operator API, metrics, health."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from klein import Klein
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from notifier.config import Config
from notifier.domain.centers import Centers
from notifier.domain.credentials import (
    SignedRequest,
    admin_granted,
    bad_credentials,
    check_admin,
    publisher_credentials_from,
)
from notifier.domain.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    NotifierError,
    TooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from notifier.domain.history import history_query
from notifier.domain.hub import parse_id
from notifier.domain.listing import MAX_LIMIT, check_listing, page_centers
from notifier.domain.model import MESSAGE_EVENT, Center, Publisher
from notifier.domain.names import check_center_name, check_event_name
from notifier.domain.presence import Presence
from notifier.domain.publishers import Publishers
from notifier.domain.publishing import BatchItem, Publishing
from notifier.domain.signatures import IDEMPOTENT
from notifier.http.answers import install_error_handlers, json_answer, now_or_later, published_answer
from notifier.http.console import Console
from notifier.http.console_tail import Tail
from notifier.http.metrics import TRANSPORTS, Metrics
from notifier.http.request import Answering, Reading, Request, query_arg
from notifier.http.web import KleinSeam, WebRequest
from notifier.transports.envelope import envelope
from notifier.webhooks import webhook_json, webhook_of

if TYPE_CHECKING:
    from notifier.pusher.api import PusherApi

TEXT_TYPES = (b"application/json", b"application/xml")
MAX_JSON_BODY = 64 * 1024  # request bodies other than messages
MAX_BATCH = 10_000  # messages in one batch
MAX_IDEMPOTENCY_KEY = 255
#: Retained messages in a page of a center's history, when not told.
MESSAGES_PAGE = 50
#: Members of a presence center listed with it, at most.
MAX_MEMBER_LIST = 1000
#: The first segments of Pusher's HTTP API (notifier.pusher.api).
PUSHER_PATHS = frozenset({b"apps", b"users"})


def max_body_bytes(config: Config) -> int:
    """The largest body the api listener keeps: a batch of large messages."""
    return max(16 * 1024 * 1024, 4 * config.centers.max_message_bytes + MAX_JSON_BODY)


def is_publish(path: list[bytes]) -> bool:
    """Whether the segments of *path* are those of ``/api/v1/centers/{center}/messages``."""
    return len(path) == 5 and path[0] == b"api" and path[1] == b"v1" and path[2] == b"centers" \
        and path[4] == b"messages"


def _is_text(content_type: bytes | None) -> bool:
    if content_type is None:
        return True
    kind = content_type.split(b";", 1)[0].strip().lower()
    return (
        kind.startswith(b"text/") or kind in TEXT_TYPES
        or kind.endswith(b"+json") or kind.endswith(b"+xml")
    )


def _read(request: Reading) -> bytes:
    """The whole request body; 413 if the connection discarded it as too large."""
    if request.body_too_large:
        raise TooLarge("the request body is too large")
    return request.body()


def _event(request: Reading) -> str:
    """The event a single publish names in its ``Notifier-Event`` header
    (``"message"`` without one): 400 ``invalid_event`` unless it is one
    (``notifier.domain.names.EVENT_NAME``)."""
    given = request.getHeader(b"notifier-event")
    if given is None:
        return MESSAGE_EVENT
    try:
        return check_event_name(given.decode("utf-8"))
    except UnicodeDecodeError:
        return check_event_name(None)  # refused, as any name that is not one


def json_object(data: bytes, *, required: bool, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    if len(data) > limit:
        raise TooLarge(f"the body is larger than {limit} bytes")
    if not data.strip():
        if required:
            raise BadRequest("a JSON object is required", code="invalid_json")
        return {}
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    return value


def _center_options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in body.items():
        if key in ("private", "presence"):
            if not isinstance(value, bool):
                raise BadRequest(f"{key} must be true or false", code="invalid_center_options")
        elif key in ("history", "ttl"):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100_000_000:
                raise BadRequest(f"{key} must be a non-negative integer", code="invalid_center_options")
            if key == "history" and value > 100_000:
                raise BadRequest("history must be at most 100000", code="invalid_center_options")
        else:
            raise BadRequest(f"unknown center option {key!r}", code="invalid_center_options")
        options[key] = value
    return options


class ApiApp:
    app = Klein()
    install_error_handlers(app)

    def __init__(self, publishers: Publishers, centers: Centers, publishing: Publishing, config: Config,
                 clock: IReactorTime, metrics: Metrics, *,
                 first_use: Callable[[str, str, int], Awaitable[bool]],
                 presence: Presence | None = None) -> None:
        self.publishers = publishers
        self.centers = centers
        self.publishing = publishing
        #: Whether a verified signature is used for the first time (``Broker.first_use``).
        self.first_use = first_use
        self.node_presence = presence
        #: Pusher's HTTP API on ``/apps/``, when served (notifier.pusher.api).
        self.pusher: PusherApi | None = None
        self.config = config
        self.clock = clock
        self.metrics = metrics

    async def _publisher(self, request: Reading) -> tuple[str, bytes]:
        """The authenticated publisher's name, and the request body it signed.

        Every refusal of credentials naming no publisher, a wrong secret or
        a wrong signature is the same (docs/security.rst).
        """
        credentials = publisher_credentials_from([request.getHeader(b"authorization") or b""])
        now = self.clock.seconds()
        credentials.check_time(now)
        publisher = await self.publishers.publisher(credentials.publisher)
        if request.body_refused:
            raise bad_credentials()  # looked up as the head came in (body_gate)
        body = _read(request)
        credentials.verify(publisher, request.method, request.uri, body, now)
        assert publisher is not None
        if isinstance(credentials, SignedRequest) and request.method not in IDEMPOTENT \
                and not await self.first_use(publisher.name, credentials.signature, credentials.timestamp):
            raise Unauthorized("this signed request was accepted before; sign each request anew",
                               code="replayed_signature")
        return publisher.name, body

    def body_gate(self, request: Request, length: int | None = None,
                  in_hand: bool = False) -> tuple[int, Deferred[bool] | None]:
        """How much of a request's body to read, decided from its head
        (notifier.http.connection): each route's own bound, and no body at
        all for credentials that cannot hold, looked up first. With
        *in_hand* only the bound is asked, no look-up: the connection asks
        so at every head with a body, and again, for the verdict, only of
        a body that did not come whole with its head (one in hand is read:
        the handler checks the credentials before using it)."""
        path = request.segments
        method = request.method
        authorization = [request.getHeader(b"authorization") or b""]
        if path[:2] == [b"admin", b"v1"]:
            if admin_granted(authorization[0], self.config.api.admin_token):
                return MAX_JSON_BODY, None
            return 0, succeed(False)
        if path[0] in PUSHER_PATHS and self.pusher is not None:
            # Signed with the body: read whole, then checked (notifier.pusher.api).
            return self.pusher.body_limit(), None
        if path[:2] != [b"api", b"v1"]:
            return 0, None
        if method == b"POST" and is_publish(path):
            limit = self.config.centers.max_message_bytes
        elif method == b"POST" and path[2:] == [b"messages"]:
            limit = max_body_bytes(self.config)
        else:
            limit = MAX_JSON_BODY
        if in_hand:
            return limit, None
        try:
            credentials = publisher_credentials_from(authorization)
            credentials.check_time(self.clock.seconds())
            if isinstance(credentials, SignedRequest):
                # A signature covers the body: known only once it is in, for
                # any publisher, so that no answer tells which exist.
                return limit, None
            looked_up = now_or_later(self.publishers.publisher(credentials.publisher))
        except Exception:
            return 0, succeed(False)  # the handler answers why (401, or 503 for a store away)
        if isinstance(looked_up, Deferred):
            return limit, looked_up.addCallback(credentials.may_hold)
        return limit, succeed(credentials.may_hold(looked_up))

    def _message(self, request: Reading, body: bytes) -> str:
        """The text of a single message's request: a text type, within the size."""
        if not _is_text(request.getHeader(b"content-type")):
            raise UnsupportedMediaType("messages are text: text/*, application/json or application/xml")
        return self._text(body)

    def _text(self, data: bytes) -> str:
        limit = self.config.centers.max_message_bytes
        if len(data) > limit:
            raise TooLarge(f"a message is at most {limit} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the message is not UTF-8 text", code="invalid_encoding") from None

    @staticmethod
    def _idempotency_key(request: Reading) -> str | None:
        key = request.getHeader(b"idempotency-key")
        if key is None:
            return None
        if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
            raise BadRequest(f"Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY} bytes", code="invalid_idempotency_key")
        decoded: str = key.decode("latin-1")
        return decoded

    def _admin(self, request: Reading) -> None:
        check_admin(request.getHeader(b"authorization"), self.config.api.admin_token)

    async def _center(self, center: Center, last_ts: bool = False) -> dict[str, Any]:
        """The center object (docs/protocol.rst: The publisher API); with *last_ts*, as
        the operator sees it, also when its latest message was published
        (if this node holds it)."""
        hub = self.centers.loaded(center.publisher, center.name)
        described = {
            "name": center.name,
            "path": center.path,
            "private": center.private,
            "presence": center.presence,
            "history": self.config.centers.history if center.history is None else center.history,
            "ttl": self.config.centers.idle_ttl if center.ttl is None else center.ttl,
            "subscribers": len(hub.subscribers) if hub is not None else 0,
            "last_id": hub.last_id if hub is not None else None,
            "created": center.created,
        }
        if center.presence:
            described["members"] = len(await self._members(center))
        if last_ts:
            latest = hub.latest if hub is not None else None
            described["last_ts"] = latest.ts if latest is not None else None
        return described

    async def _members(self, center: Center) -> list[tuple[str, Any]]:
        presence = self.node_presence
        return [] if presence is None else await presence.members(center.path)

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: WebRequest) -> bytes:
        return json_answer(request, {"status": "ok"})

    # publisher API

    @app.route("/api/v1/centers", methods=["GET"])
    async def list_centers(self, request: WebRequest) -> bytes:
        publisher, _ = await self._publisher(request)
        centers = await self.centers.list_centers(publisher)
        return json_answer(request, {"centers": [await self._center(c) for c in centers]})

    @app.route("/api/v1/centers/<center>", methods=["PUT"])
    async def create_center(self, request: WebRequest, center: str) -> bytes:
        publisher, body = await self._publisher(request)
        return await self._made(request, publisher, center, body)

    async def _made(self, request: WebRequest, publisher: str, center: str, body: bytes,
                    last_ts: bool = False) -> bytes:
        """``PUT`` a center: 201 and the center made, or 200 and the one there was."""
        options = _center_options(json_object(body, required=False))
        made, created = await self.centers.create_center(publisher, center, **options)
        return json_answer(request, await self._center(made, last_ts=last_ts), 201 if created else 200)

    @app.route("/api/v1/centers/<center>", methods=["GET"])
    async def get_center(self, request: WebRequest, center: str) -> bytes:
        publisher, _ = await self._publisher(request)
        hub = await self.centers.hub(publisher, center)
        return json_answer(request, await self._center(hub.center))

    @app.route("/api/v1/centers/<center>/presence", methods=["GET"])
    async def presence(self, request: WebRequest, center: str) -> bytes:
        publisher, _ = await self._publisher(request)
        hub = await self.centers.hub(publisher, center)
        if not hub.center.presence:
            raise BadRequest(f"center {center!r} does not track presence", code="no_presence")
        members = await self._members(hub.center)
        return json_answer(request, {"count": len(members),
                                     "members": [{"uid": uid, "info": info} for uid, info in members]})

    @app.route("/api/v1/webhook", methods=["PUT"])
    async def set_webhook(self, request: WebRequest) -> bytes:
        publisher, body = await self._publisher(request)
        webhook = webhook_of(json_object(body, required=True))
        await self.publishers.set_webhook(publisher, webhook)
        return json_answer(request, webhook_json(webhook))

    @app.route("/api/v1/webhook", methods=["GET"])
    async def get_webhook(self, request: WebRequest) -> bytes:
        publisher, _ = await self._publisher(request)
        webhook = await self.publishers.get_webhook(publisher)
        if webhook is None:
            raise NotFound("no webhook is set", code="no_webhook")
        return json_answer(request, webhook_json(webhook))

    @app.route("/api/v1/webhook", methods=["DELETE"])
    async def delete_webhook(self, request: WebRequest) -> bytes:
        publisher, _ = await self._publisher(request)
        await self.publishers.remove_webhook(publisher)
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/centers/<center>", methods=["DELETE"])
    async def delete_center(self, request: WebRequest, center: str) -> bytes:
        publisher, _ = await self._publisher(request)
        await self.centers.delete_center(publisher, center)
        request.setResponseCode(204)
        return b""

    async def publish_message(self, request: Request, center: str) -> bytes:
        """``POST /api/v1/centers/{center}/messages``, the one request a
        site makes most, answered without the router (ApiRoot)."""
        publisher, body = await self._publisher(request)
        text = self._message(request, body)
        event = _event(request)
        key = self._idempotency_key(request)
        message_id, reached, fresh = await self.publishing.publish(publisher, center, text, key, event=event)
        # A retry is told the first publish's id, and nothing is delivered.
        return published_answer(request, message_id, reached, 201 if fresh else 200)

    @app.route("/api/v1/messages", methods=["POST"])
    async def publish_batch(self, request: WebRequest) -> bytes:
        publisher, body = await self._publisher(request)
        document = json_object(body, required=True, limit=len(body))
        entries = document.get("messages")
        if set(document) != {"messages"} or not isinstance(entries, list) or not entries:
            raise BadRequest('the body must be {"messages": [{"center": ..., "data": ...}, ...]}',
                             code="invalid_batch")
        if len(entries) > MAX_BATCH:
            raise TooLarge(f"a batch holds at most {MAX_BATCH} messages")
        named: set[str] = set()  # centers whose names held already: each checked once
        batch = [self._batch_entry(i, entry, named) for i, entry in enumerate(entries)]

        ids, fresh = await self.publishing.publish_batch(publisher, batch, self._idempotency_key(request))
        return json_answer(request, {"ids": ids}, 201 if fresh else 200)

    def _batch_entry(self, index: int, entry: Any, named: set[str]) -> BatchItem:
        if not isinstance(entry, dict) or "center" not in entry or "data" not in entry \
                or len(entry) != (3 if "event" in entry else 2):
            raise BadRequest(f'messages[{index}] must be {{"center": ..., "data": ...}}, and may have "event"',
                             code="invalid_batch")
        center, data = entry["center"], entry["data"]
        if not isinstance(center, str) or not isinstance(data, str):
            raise BadRequest(f"messages[{index}]: center and data are strings", code="invalid_batch")
        try:
            if center not in named:
                check_center_name(center)
                named.add(center)
            # ASCII text is valid and as long in UTF-8: encoded only otherwise.
            size = len(data) if data.isascii() else len(data.encode("utf-8"))
        except UnicodeEncodeError:
            raise BadRequest(f"messages[{index}]: data is not valid text", code="invalid_encoding") from None
        except NotifierError as e:
            raise BadRequest(f"messages[{index}]: {e.message}", code=e.code) from None
        if size > self.config.centers.max_message_bytes:
            raise TooLarge(f"messages[{index}] is larger than {self.config.centers.max_message_bytes} bytes")
        if "event" in entry:
            try:
                return center, data, check_event_name(entry["event"])
            except NotifierError as e:
                raise BadRequest(f"messages[{index}]: {e.message}", code=e.code) from None
        return center, data

    # operator API

    @app.route("/admin/v1/publishers", methods=["POST"])
    async def add_publisher(self, request: WebRequest) -> bytes:
        self._admin(request)
        body = json_object(_read(request), required=True)
        name = body.get("name")
        if set(body) != {"name"} or not isinstance(name, str):
            raise BadRequest('the body must be {"name": "<publisher name>"}', code="invalid_publisher")
        publisher = await self.publishers.add_publisher(name)
        return json_answer(request, {"name": publisher.name, "secret": publisher.secret,
                                     "pusher": self._pusher_app(publisher)}, 201)

    @app.route("/admin/v1/publishers", methods=["GET"])
    async def list_publishers(self, request: WebRequest) -> bytes:
        self._admin(request)
        publishers = await self.publishers.list_publishers()
        return json_answer(request, {"publishers": [self._described(p, count) for p, count in publishers]})

    @app.route("/admin/v1/publishers/<name>", methods=["GET"])
    async def get_publisher(self, request: WebRequest, name: str) -> bytes:
        self._admin(request)
        return json_answer(request, self._described(*await self.publishers.described(name)))

    @app.route("/admin/v1/publishers/<name>", methods=["PATCH"])
    async def change_publisher(self, request: WebRequest, name: str) -> bytes:
        """Its settings: only ``{"pusher": {"client_events": true, false or
        null}}`` (``null``: as ``[pusher] client_events`` says)."""
        self._admin(request)
        body = json_object(_read(request), required=True)
        pusher = body.get("pusher")
        if set(body) != {"pusher"} or not isinstance(pusher, dict) or set(pusher) != {"client_events"} \
                or not (pusher["client_events"] is None or isinstance(pusher["client_events"], bool)):
            raise BadRequest('the body must be {"pusher": {"client_events": true, false or null}}',
                             code="invalid_publisher")
        await self.publishers.set_client_events(name, pusher["client_events"])
        return json_answer(request, self._described(*await self.publishers.described(name)))

    def _described(self, publisher: Publisher, centers: int) -> dict[str, Any]:
        """A publisher as operators see it (never its secret)."""
        return {"name": publisher.name, "created": publisher.created, "centers": centers,
                "pusher": self._pusher_app(publisher)}

    def _pusher_app(self, publisher: Publisher) -> dict[str, Any]:
        """What a Pusher library is configured with (and whether client events are relayed, in effect)."""
        return {"app_id": publisher.app_id, "key": publisher.key,
                "client_events": publisher.relays_client_events(self.config.pusher.client_events)}

    @app.route("/admin/v1/publishers/<name>/rotate", methods=["POST"])
    async def rotate(self, request: WebRequest, name: str) -> bytes:
        self._admin(request)
        publisher = await self.publishers.rotate_secret(name)
        return json_answer(request, {"name": publisher.name, "secret": publisher.secret})

    @app.route("/admin/v1/publishers/<name>", methods=["DELETE"])
    async def remove_publisher(self, request: WebRequest, name: str) -> bytes:
        self._admin(request)
        await self.publishers.remove_publisher(name)
        request.setResponseCode(204)
        return b""

    # the operator's view of a publisher's centers (docs/console.rst)

    async def _owner(self, name: str) -> str:
        if await self.publishers.publisher(name) is None:
            raise NotFound(f"no publisher {name!r}", code="no_such_publisher")
        return name

    @app.route("/admin/v1/publishers/<name>/centers", methods=["GET"])
    async def admin_centers(self, request: WebRequest, name: str) -> bytes:
        """A page of its centers: ``?prefix=&sort=&limit=&cursor=`` (notifier.domain.listing)."""
        self._admin(request)
        sort, limit, prefix = check_listing(
            query_arg(request, b"sort"), query_arg(request, b"limit"), query_arg(request, b"prefix"))
        page = await page_centers(self.centers, await self._owner(name), prefix=prefix, sort=sort,
                                  limit=limit, cursor=query_arg(request, b"cursor"))
        return json_answer(request, {"centers": [await self._center(c, last_ts=True) for c in page.centers],
                                     "next": page.next, "total": page.total})

    @app.route("/admin/v1/publishers/<name>/centers/<center>", methods=["GET"])
    async def admin_center(self, request: WebRequest, name: str, center: str) -> bytes:
        """A center, with its subscribers on this node by transport and, for
        a presence center, who is there."""
        self._admin(request)
        hub = await self.centers.hub(await self._owner(name), center)
        described = await self._center(hub.center, last_ts=True)
        transports = dict.fromkeys(TRANSPORTS, 0)
        for subscriber in tuple(hub.subscribers):
            transports[subscriber.transport_name] = transports.get(subscriber.transport_name, 0) + 1
        described["transports"] = transports
        if hub.center.presence:
            members = await self._members(hub.center)
            described["member_list"] = [{"uid": uid, "info": info} for uid, info in members[:MAX_MEMBER_LIST]]
        return json_answer(request, described)

    @app.route("/admin/v1/publishers/<name>/centers/<center>/messages", methods=["GET"])
    async def admin_messages(self, request: WebRequest, name: str, center: str) -> bytes:
        """What a center retains, newest first, a page at a time:
        ``?limit=&before=<id>``; and where it stands, for the tail's ``since``."""
        self._admin(request)
        limit = query_arg(request, b"limit")
        if limit is not None and not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_LIMIT):
            raise BadRequest(f"limit is 1 to {MAX_LIMIT}", code="invalid_query")
        before = query_arg(request, b"before")
        if before is not None and parse_id(before) is None:
            raise BadRequest("before is a message id, {epoch}-{seq}", code="invalid_query")
        hub = await self.centers.hub(await self._owner(name), center)
        messages, older = hub.retained_before(before, int(limit) if limit is not None else MESSAGES_PAGE)
        return json_answer(request, {
            "messages": [envelope(message) for message in messages],
            "position": hub.position,
            "next": messages[-1].id if older and messages else None,
            "retained": hub.retained_count,
        })

    @app.route("/admin/v1/publishers/<name>/centers/<center>", methods=["PUT"])
    async def admin_create_center(self, request: WebRequest, name: str, center: str) -> bytes:
        self._admin(request)
        return await self._made(request, await self._owner(name), center, _read(request), last_ts=True)

    @app.route("/admin/v1/publishers/<name>/centers/<center>", methods=["DELETE"])
    async def admin_delete_center(self, request: WebRequest, name: str, center: str) -> bytes:
        self._admin(request)
        await self.centers.delete_center(await self._owner(name), center)
        request.setResponseCode(204)
        return b""

    @app.route("/admin/v1/publishers/<name>/centers/<center>/messages", methods=["POST"])
    async def admin_publish(self, request: WebRequest, name: str, center: str) -> bytes:
        """A test message from the console, as its publisher would send it."""
        self._admin(request)
        text = self._message(request, _read(request))
        event = _event(request)
        await self._owner(name)
        message_id, reached, _ = await self.publishing.publish(name, center, text, event=event)
        return published_answer(request, message_id, reached, 201)

    @app.route("/admin/v1/publishers/<name>/centers/<center>/tail", methods=["GET"])
    async def admin_tail(self, request: WebRequest, name: str, center: str) -> None:
        """The live tail of a center (notifier.http.console_tail): done when it ends,
        having answered by itself (Klein then leaves the request be)."""
        self._admin(request)
        since = query_arg(request, b"since")
        if since is not None and parse_id(since) is None:
            raise BadRequest("a cursor is {epoch}-{seq}, seq being 1 to 18 ASCII digits", code="bad_cursor")
        hub = await self.centers.hub(await self._owner(name), center)
        members = await self._members(hub.center) if hub.center.presence else None
        if since is not None and hub.ahead(since):  # read on another node, ahead of this one
            await self.centers.caught_up(hub, since)
        if self.centers.loaded(name, center) is not hub:
            raise NotFound(f"no center {center!r}", code="no_such_center")  # deleted meanwhile
        tail = Tail(request, hub, self.clock)
        tail.start(members, since)
        await tail.ended

    @app.route("/admin/v1/stats", methods=["GET"])
    async def stats(self, request: WebRequest) -> bytes:
        self._admin(request)
        return json_answer(request, await self.metrics.stats())

    @app.route("/admin/v1/history", methods=["GET"])
    async def history(self, request: WebRequest) -> bytes:
        """The node's figures over time, with Redis every node's summed:
        ``?range=5m|1h|24h&after=<t>`` (notifier.domain.history)."""
        self._admin(request)
        name, after = history_query(request.args)
        return json_answer(request, await self.metrics.history.answer(name, after))

    @app.route("/metrics", methods=["GET"])
    async def prometheus(self, request: WebRequest) -> bytes:
        self._admin(request)
        body, content_type = await self.metrics.exposition()
        answering: Answering = request
        answering.setHeader(b"content-type", content_type.encode())
        return body


class ApiRoot:
    """The api listener's app: a publish goes straight to its handler, the
    console's files to the console, everything else through the Klein
    router (notifier.http.web: the one seam where Klein begins)."""

    def __init__(self, api: ApiApp) -> None:
        self.api = api
        self.router = KleinSeam(api.app.resource())
        self.console = Console()

    def serve(self, request: Request) -> Any:
        path = request.segments
        if path[0] == b"console":
            return self.console.render(request, path[1:])
        if path[0] in PUSHER_PATHS and self.api.pusher is not None:
            return self.api.pusher.serve(request)
        if is_publish(path):
            if request.method != b"POST":
                request.setHeader(b"allow", b"POST")
                raise MethodNotAllowed(f"{request.method.decode('latin-1')} is not allowed here")
            return now_or_later(self.api.publish_message(request, path[3].decode("utf-8")))
        return self.router.serve(request)
