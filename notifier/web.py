"""What both Klein apps share: JSON answers and the one error path."""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound

from notifier.errors import MethodNotAllowed, NotFound, NotifierError

log = Logger()

JSON = b"application/json"


def json_answer(request: IRequest, body: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON)
    return json.dumps(body).encode()


def _error(request: IRequest, error: NotifierError) -> bytes:
    request.setResponseCode(error.status)
    request.setHeader(b"content-type", JSON)
    request.setHeader(b"cache-control", b"no-store")
    return error.body()


def install_error_handlers(app: Klein) -> None:
    """Every failure of *app* becomes SPEC.md's JSON error; none is a traceback."""

    @app.handle_errors(NotifierError)
    def notifier_error(_app: object, request: IRequest, failure: Failure) -> bytes:
        return _error(request, failure.value)

    @app.handle_errors(RouteNotFound)
    def no_route(_app: object, request: IRequest, failure: Failure) -> bytes:
        return _error(request, NotFound("no such path", code="no_such_path"))

    @app.handle_errors(RouteMethodNotAllowed)
    def wrong_method(_app: object, request: IRequest, failure: Failure) -> bytes:
        allowed = failure.value.valid_methods or []
        request.setHeader(b"allow", ", ".join(allowed).encode())
        method = request.method.decode("latin-1")
        return _error(request, MethodNotAllowed(f"{method} is not allowed here"))

    @app.handle_errors(Exception)
    def unexpected(_app: object, request: IRequest, failure: Failure) -> bytes:
        log.failure("unexpected error answering {method} {path}", failure,
                    method=request.method, path=request.path)
        return _error(request, NotifierError("the server failed to answer", code="internal_error", status=500))


class QuietSite(server.Site):
    """A Site that keeps no access log (URLs may carry subscriber tokens) and
    never shows a traceback."""

    displayTracebacks = False

    def log(self, request: server.Request) -> None:
        pass
