"""The error family every HTTP answer of notifier's is built from (docs/protocol.rst: Errors)."""

from __future__ import annotations

import json


class NotifierError(Exception):
    """A refusal that reaches a peer as ``{"error": code, "message": message}``."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> bytes:
        return json.dumps({"error": self.code, "message": self.message}).encode()


class BadRequest(NotifierError):
    status, code = 400, "bad_request"


class Unauthorized(NotifierError):
    status, code = 401, "unauthorized"


class Forbidden(NotifierError):
    status, code = 403, "forbidden"


class NotFound(NotifierError):
    status, code = 404, "not_found"


class MethodNotAllowed(NotifierError):
    status, code = 405, "method_not_allowed"


class Conflict(NotifierError):
    status, code = 409, "conflict"


class TooLarge(NotifierError):
    status, code = 413, "too_large"


class UnsupportedMediaType(NotifierError):
    status, code = 415, "unsupported_media_type"


class Unavailable(NotifierError):
    status, code = 503, "unavailable"
