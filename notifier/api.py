"""The api listener: the publisher API, the operator API, metrics, health."""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from notifier.auth import basic_credentials, check_admin
from notifier.config import Config
from notifier.errors import BadRequest, TooLarge, UnsupportedMediaType
from notifier.metrics import Metrics
from notifier.model import Center
from notifier.registry import HubRegistry
from notifier.web import install_error_handlers, json_answer

TEXT_TYPES = (b"application/json", b"application/xml")
MAX_JSON_BODY = 64 * 1024  # request bodies other than messages


def _is_text(content_type: bytes | None) -> bool:
    if content_type is None:
        return True
    kind = content_type.split(b";", 1)[0].strip().lower()
    return (
        kind.startswith(b"text/") or kind in TEXT_TYPES
        or kind.endswith(b"+json") or kind.endswith(b"+xml")
    )


def _read(request: IRequest, limit: int) -> bytes:
    """The request body, refused with 413 past *limit* bytes."""
    length = request.getHeader(b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"the body is larger than {limit} bytes")
    data = request.content.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the body is larger than {limit} bytes")
    return data


def _json_object(request: IRequest, *, required: bool) -> dict[str, Any]:
    data = _read(request, MAX_JSON_BODY)
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
        if key == "private":
            if not isinstance(value, bool):
                raise BadRequest("private must be true or false", code="invalid_center_options")
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

    def __init__(self, registry: HubRegistry, config: Config, clock: IReactorTime, metrics: Metrics) -> None:
        self.registry = registry
        self.config = config
        self.clock = clock
        self.metrics = metrics

    def resource(self) -> Any:
        return self.app.resource()

    async def _publisher(self, request: IRequest) -> str:
        name, secret = basic_credentials(request)
        return (await self.registry.authenticate(name, secret)).name

    def _admin(self, request: IRequest) -> None:
        check_admin(request, self.config.api.admin_token)

    def _center(self, center: Center) -> dict[str, Any]:
        hub = self.registry.loaded(center.publisher, center.name)
        return {
            "name": center.name,
            "path": center.path,
            "private": center.private,
            "history": self.config.centers.history if center.history is None else center.history,
            "ttl": self.config.centers.idle_ttl if center.ttl is None else center.ttl,
            "subscribers": len(hub.subscribers) if hub is not None else 0,
            "last_id": hub.last_id if hub is not None else None,
            "created": center.created,
        }

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return json_answer(request, {"status": "ok"})

    # publisher API

    @app.route("/api/v1/centers", methods=["GET"])
    async def list_centers(self, request: IRequest) -> bytes:
        publisher = await self._publisher(request)
        centers = await self.registry.list_centers(publisher)
        return json_answer(request, {"centers": [self._center(c) for c in centers]})

    @app.route("/api/v1/centers/<center>", methods=["PUT"])
    async def create_center(self, request: IRequest, center: str) -> bytes:
        publisher = await self._publisher(request)
        options = _center_options(_json_object(request, required=False))
        created_center, created = await self.registry.create_center(publisher, center, **options)
        return json_answer(request, self._center(created_center), 201 if created else 200)

    @app.route("/api/v1/centers/<center>", methods=["GET"])
    async def get_center(self, request: IRequest, center: str) -> bytes:
        publisher = await self._publisher(request)
        hub = await self.registry.hub(publisher, center)
        return json_answer(request, self._center(hub.center))

    @app.route("/api/v1/centers/<center>", methods=["DELETE"])
    async def delete_center(self, request: IRequest, center: str) -> bytes:
        publisher = await self._publisher(request)
        await self.registry.delete_center(publisher, center)
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/centers/<center>/messages", methods=["POST"])
    async def publish(self, request: IRequest, center: str) -> bytes:
        publisher = await self._publisher(request)
        if not _is_text(request.getHeader(b"content-type")):
            raise UnsupportedMediaType("messages are text: text/*, application/json or application/xml")
        data = _read(request, self.config.centers.max_message_bytes)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the message is not UTF-8 text", code="invalid_encoding") from None
        message, reached = await self.registry.publish(publisher, center, text)
        return json_answer(request, {"id": message.id, "subscribers": reached}, 201)

    # operator API

    @app.route("/admin/v1/publishers", methods=["POST"])
    async def add_publisher(self, request: IRequest) -> bytes:
        self._admin(request)
        body = _json_object(request, required=True)
        name = body.get("name")
        if set(body) != {"name"} or not isinstance(name, str):
            raise BadRequest('the body must be {"name": "<publisher name>"}', code="invalid_publisher")
        publisher = await self.registry.add_publisher(name)
        return json_answer(request, {"name": publisher.name, "secret": publisher.secret}, 201)

    @app.route("/admin/v1/publishers", methods=["GET"])
    async def list_publishers(self, request: IRequest) -> bytes:
        self._admin(request)
        publishers = await self.registry.list_publishers()
        return json_answer(request, {"publishers": [
            {"name": p.name, "created": p.created, "centers": count} for p, count in publishers
        ]})

    @app.route("/admin/v1/publishers/<name>/rotate", methods=["POST"])
    async def rotate(self, request: IRequest, name: str) -> bytes:
        self._admin(request)
        publisher = await self.registry.rotate_secret(name)
        return json_answer(request, {"name": publisher.name, "secret": publisher.secret})

    @app.route("/admin/v1/publishers/<name>", methods=["DELETE"])
    async def remove_publisher(self, request: IRequest, name: str) -> bytes:
        self._admin(request)
        await self.registry.remove_publisher(name)
        request.setResponseCode(204)
        return b""

    @app.route("/admin/v1/stats", methods=["GET"])
    async def stats(self, request: IRequest) -> bytes:
        self._admin(request)
        return json_answer(request, await self.metrics.stats())

    @app.route("/metrics", methods=["GET"])
    async def prometheus(self, request: IRequest) -> bytes:
        self._admin(request)
        body, content_type = await self.metrics.exposition()
        request.setHeader(b"content-type", content_type.encode())
        return body
