"""The answers both listeners give: JSON bodies, the one error path, and
answers that come later (a Deferred) or at once."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from json.encoder import encode_basestring_ascii
from typing import Any, Generic, TypeVar, cast

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from werkzeug.routing import RequestRedirect as RouteRedirect

from notifier.domain.errors import MethodNotAllowed, NotFound, NotifierError
from notifier.http.request import Answering

log = Logger()
T = TypeVar("T")

JSON = b"application/json"
#: The answer to whatever failed unexpectedly (logged, never shown).
INTERNAL_ERROR = NotifierError("the server failed to answer", code="internal_error", status=500)


def json_answer(request: Answering, body: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON)
    return json.dumps(body).encode()


def published_answer(request: Answering, message_id: str, reached: int, status: int) -> bytes:
    """``json_answer`` of ``{"id": message_id, "subscribers": reached}``,
    byte for byte, without ``json.dumps`` making an encoder: the answer of
    every publish."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON)
    return b'{"id": %s, "subscribers": %d}' % (encode_basestring_ascii(message_id).encode(), reached)


def jsonp_answer(request: Answering, callback: str, payload: bytes) -> bytes:
    """*payload* (JSON) passed to the JavaScript function *callback*, an
    identifier path already checked: a long-poll's or ``/last``'s answer
    to a script tag."""
    request.setHeader(b"content-type", b"application/javascript; charset=utf-8")
    return b"/**/" + callback.encode() + b"(" + payload + b");"


def error_answer(request: Answering, error: NotifierError) -> bytes:
    request.setResponseCode(error.status)
    request.setHeader(b"content-type", JSON)
    request.setHeader(b"cache-control", b"no-store")
    return error.body()


def now_or_later(coroutine: Coroutine[Any, Any, T]) -> T | Deferred[T]:
    """Run *coroutine*: its result at once if it never has to wait (a publish
    to a live center does not), else a Deferred of it. Exceptions it raises
    before waiting are raised here."""
    try:
        awaited = coroutine.send(None)
    except StopIteration as done:
        result: T = done.value  # StopIteration leaves the coroutine's result untyped
        return result
    return _CoroutineDriver(coroutine).drive(awaited)


class _CoroutineDriver(Generic[T]):
    """Drives a coroutine that waits on Deferreds, as ``Deferred.fromCoroutine``
    does but with one Deferred of its own and no other coroutine: this is the
    path of every publish that waits for the store. Cancelling the result
    cancels what the coroutine waits on, which sees ``CancelledError``."""

    __slots__ = ("coroutine", "result", "awaited")

    def __init__(self, coroutine: Coroutine[Any, Any, T]) -> None:
        self.coroutine = coroutine
        self.result: Deferred[T] = Deferred(self._cancel)
        self.awaited: Deferred[Any] | None = None

    def drive(self, awaited: Any) -> Deferred[T]:
        """Go on from *awaited*, what the coroutine yielded; a loop rather
        than recursion while what it waits on has fired already."""
        while True:
            if isinstance(awaited, Deferred) and (not awaited.called or awaited.paused):
                self.awaited = awaited
                awaited.addBoth(self._resume)
                return self.result
            # A Deferred that has fired (the coroutine reads its result), or
            # a bare yield (asyncio-style futures are not used here).
            try:
                awaited = self.coroutine.send(None)
            except StopIteration as done:
                self._finish(done.value, None)
                return self.result
            except BaseException:
                self._finish(None, Failure())
                return self.result

    def _resume(self, value: Any) -> None:
        # In the awaited Deferred's callbacks: its result is *value* still,
        # which the coroutine reads as it goes on (a failure is thrown into
        # it); then it is consumed.
        self.awaited = None
        try:
            if isinstance(value, Failure):
                awaited = value.throwExceptionIntoGenerator(self.coroutine)
            else:
                awaited = self.coroutine.send(None)
        except StopIteration as done:
            self._finish(done.value, None)
            return None
        except BaseException:
            self._finish(None, Failure())
            return None
        self.drive(awaited)
        return None

    def _finish(self, value: Any, failure: Failure | None) -> None:
        if self.result.called:
            return  # cancelled, and the coroutine went on regardless
        if failure is None:
            self.result.callback(value)
        else:
            self.result.errback(failure)

    def _cancel(self, _: Deferred[T]) -> None:
        if self.awaited is not None:
            self.awaited.cancel()


def install_error_handlers(app: Klein) -> None:
    """Every failure of *app* becomes the documented JSON error; none is a traceback.

    Each handler is a Klein ``KleinErrorMethod``: its parameters are named
    ``self`` (what the app is bound to), ``request`` and ``failure``."""

    @app.handle_errors(NotifierError)
    def notifier_error(self: object, request: IRequest, failure: Failure) -> bytes:
        return error_answer(request, cast(NotifierError, failure.value))  # handled for NotifierError only

    @app.handle_errors(RouteNotFound)
    def no_route(self: object, request: IRequest, failure: Failure) -> bytes:
        return error_answer(request, NotFound("no such path", code="no_such_path"))

    @app.handle_errors(RouteRedirect)
    def empty_segment(self: object, request: IRequest, failure: Failure) -> bytes:
        # Werkzeug would redirect a path with "//" to its merged form: not ours.
        return error_answer(request, NotFound("no such path", code="no_such_path"))

    @app.handle_errors(RouteMethodNotAllowed)
    def wrong_method(self: object, request: IRequest, failure: Failure) -> bytes:
        allowed = cast(RouteMethodNotAllowed, failure.value).valid_methods or []
        request.setHeader(b"allow", ", ".join(allowed).encode())
        method = request.method.decode("latin-1")
        return error_answer(request, MethodNotAllowed(f"{method} is not allowed here"))

    @app.handle_errors(Exception)
    def unexpected(self: object, request: IRequest, failure: Failure) -> bytes:
        log.failure("unexpected error answering {method} {path}", failure,
                    method=request.method, path=request.path)
        return error_answer(request, INTERNAL_ERROR)
