"""The one request type of both listeners: what a handler reads of a
request and how it answers it.

A handler answers in one of three ways: it returns the whole body (bytes)
and the connection sends it with its head in one send; it writes a stream
(``write`` then ``finish``: chunks on HTTP/1.1, the body up to the close on
HTTP/1.0); or it hands the connection over (``take_over``, a WebSocket).
"""

from __future__ import annotations

import time
from io import BytesIO
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES, RESPONSES, datetimeToString, parse_qs

from notifier import __version__
from notifier.domain.errors import BadRequest, NotifierError

if TYPE_CHECKING:
    from notifier.http.connection import HttpConnection

#: What a handler returns when it answers later, itself (as twisted.web's
#: ``NOT_DONE_YET``, whose value it is).
NOT_DONE_YET = 1
#: Sent on every answer, whatever its type (docs/security.rst).
NOSNIFF = b"X-Content-Type-Options: nosniff\r\n"
SERVER = b"Server: notifier/" + __version__.encode() + b"\r\n"


class Answering(Protocol):
    """What the answers of notifier.http.answers set on a request: this module's
    ``Request``, or the twisted.web request Klein's handlers are given
    (notifier.http.web)."""

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...

    def setHeader(self, name: bytes, value: bytes) -> None: ...


class Reading(Answering, Protocol):
    """What the handlers of the publisher and operator API read of a
    request, of either kind: its head and its body."""

    method: bytes
    uri: bytes
    #: Over its route's bound (discarded), or refused from its head.
    body_too_large: bool
    body_refused: bool

    def getHeader(self, key: bytes) -> bytes | None: ...

    def body(self) -> bytes: ...


#: Reasons of the statuses sent that Twisted's RESPONSES lacks.
_REASONS = {431: b"Request Header Fields Too Large"}


def status_line(code: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (code, RESPONSES.get(code) or _REASONS.get(code, b"Unknown Status"))


_STATUS = {code: status_line(code) for code in RESPONSES}


def refusal(error: NotifierError, headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A whole answer of *error* that closes the connection: for what never
    became a request a handler answers (a head refused, a handshake)."""
    body = error.body()
    lines = [status_line(error.status), b"Content-Type: application/json\r\n",
             b"Content-Length: %d\r\n" % len(body), b"Connection: close\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers or ()]
    return b"".join(lines) + NOSNIFF + b"\r\n" + body


class _Date:
    """The ``Date`` header line, made once a second."""

    second = -1
    line = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.line = b"Date: " + datetimeToString(second) + b"\r\n"
        return cls.line


def query_arguments(query: bytes) -> dict[bytes, list[bytes]]:
    """A query's arguments, as ``parse_qs(query, 1)`` reads them; the plain
    ones (no escapes, no ``;``) without its detour."""
    if b"%" in query or b"+" in query or b";" in query:
        parsed: dict[bytes, list[bytes]] = parse_qs(query, 1)
        return parsed
    args: dict[bytes, list[bytes]] = {}
    for item in query.split(b"&"):
        key, equals, value = item.partition(b"=")
        if equals:
            values = args.get(key)
            if values is None:
                args[key] = [value]
            else:
                values.append(value)
    return args


_CANONICAL: dict[bytes, bytes] = {}


def header_name(name: bytes) -> bytes:
    """*name* as answers write it (``Access-Control-Allow-Origin``)."""
    canonical = _CANONICAL.get(name)
    if canonical is None:
        canonical = b"-".join(part[:1].upper() + part[1:] for part in name.lower().split(b"-"))
        if len(_CANONICAL) < 256:
            _CANONICAL[name] = canonical
    return canonical


#: The body of a request without one.
_NO_BODY = BytesIO()


class Request:
    """One HTTP request read by a listener's connection, and its answer."""

    __slots__ = ("connection", "method", "uri", "path", "segments", "args", "headers", "fields",
                 "clientproto", "content", "code", "close", "startedWriting", "finished", "body_too_large",
                 "body_refused", "_out", "_notifications", "_chunked")

    def __init__(self, connection: HttpConnection, method: bytes, uri: bytes, headers: dict[bytes, bytes],
                 fields: list[tuple[bytes, bytes]], http10: bool = False) -> None:
        self.connection = connection
        self.method = method
        self.uri = uri
        path, _, query = uri.partition(b"?")
        #: The path as it came.
        self.path = path
        #: Its segments after the first ``/``, percent-decoded.
        segments = path[1:].split(b"/")
        self.segments = [unquote_to_bytes(segment) for segment in segments] if b"%" in path else segments
        self.args = query_arguments(query) if query else {}
        #: The header fields by lower-cased name (a repeated one joined with ``", "``).
        self.headers = headers
        #: The header fields as they came, names as sent.
        self.fields = fields
        self.clientproto = b"HTTP/1.0" if http10 else b"HTTP/1.1"
        #: The body.
        self.content = _NO_BODY
        self.code = 200
        #: Whether the connection closes after the answer.
        self.close = False
        self.startedWriting = False
        self.finished = False
        #: Set for a body over its route's bound (discarded), or refused
        #: from its head: the request is answered without it.
        self.body_too_large = False
        self.body_refused = False
        #: The answer's headers by lower-cased name, in the order first set.
        self._out: dict[bytes, tuple[bytes, bytes]] = {}
        self._notifications: list[Deferred[None]] | None = None
        self._chunked = False

    # what the handlers read

    def getHeader(self, key: bytes) -> bytes | None:
        return self.headers.get(key.lower())

    @property
    def peer(self) -> IAddress | None:
        return self.connection.addr

    @property
    def transport(self) -> Any:
        """The connection's transport (to look at what waits unsent)."""
        return self.connection.transport

    def body(self) -> bytes:
        return self.content.getvalue() if isinstance(self.content, BytesIO) else b""

    # what they answer

    def setHeader(self, name: bytes, value: bytes) -> None:
        if b"\r" in value or b"\n" in value:
            value = value.replace(b"\r\n", b" ").replace(b"\r", b" ").replace(b"\n", b" ")
        self._out[name.lower()] = (name, value)

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code

    def notifyFinish(self) -> Deferred[None]:
        """Fires once the answer is sent, fails if the connection goes first."""
        d: Deferred[None] = Deferred()
        if self._notifications is None:
            self._notifications = []
        self._notifications.append(d)
        return d

    def answer(self, body: bytes) -> None:
        """The whole answer, *body* with its head, in one send."""
        if self.finished:
            return
        if self.method == b"HEAD" or self.code in NO_BODY_CODES:
            if self.code not in NO_BODY_CODES:
                self.setHeader(b"content-length", b"%d" % len(body))
            body = b""
        else:
            self.setHeader(b"content-length", b"%d" % len(body))
        self._done(self.head() + body)

    def write(self, data: bytes) -> None:
        """Part of a streamed answer: its head goes with the first part."""
        if self.finished:
            return
        if self.method == b"HEAD":
            data = b""  # the head a GET would have, and no body
        if not self.startedWriting:
            self.startedWriting = True
            if self.clientproto == b"HTTP/1.1":
                self._chunked = self.method != b"HEAD"
                self.setHeader(b"transfer-encoding", b"chunked")
            else:
                self.close = True  # the answer ends with the connection
            self.connection.stream(self.head() + self._framed(data))
            return
        if data:
            self.connection.stream(self._framed(data))

    def _framed(self, data: bytes) -> bytes:
        """*data* as the stream sends it: a chunk (none for no data)."""
        return b"%x\r\n%s\r\n" % (len(data), data) if self._chunked and data else data

    def finish(self) -> None:
        """End the answer (a stream, or an empty body)."""
        if self.finished:
            return
        if not self.startedWriting:
            self.answer(b"")
            return
        self._done(b"0\r\n\r\n" if self._chunked else b"")

    def start(self, code: int, headers: list[tuple[bytes, bytes]]) -> None:
        """An answer whose head another layer made (notifier.http.web):
        *headers* as given, its body sent with ``send_raw`` as it framed it."""
        self.startedWriting = True
        self.code = code
        out = self._out
        for name, value in headers:
            key = name.lower()
            while key in out:  # a field given more than once (Set-Cookie): each is sent
                key += b"+"
            out[key] = (name, value)
        self.connection.stream(self.head())

    def send_raw(self, data: bytes) -> None:
        if not self.finished:
            self.connection.stream(data)

    def end_raw(self) -> None:
        if not self.finished:
            self._done(b"")

    def _done(self, data: bytes) -> None:
        self.finished = True
        self.connection.answered(self, data)
        notifications, self._notifications = self._notifications, None
        for d in notifications or ():
            d.callback(None)

    def take_over(self, factory: Any) -> int:
        """Hand the connection to a protocol of *factory* (a WebSocket's),
        which reads the request's head as it came and what followed it."""
        self.finished = True
        return self.connection.take_over(self, factory)

    def abort(self) -> None:
        """Cut the connection (a client too slow to follow its stream)."""
        self.connection.abort()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.connection.register(producer)

    def unregisterProducer(self) -> None:
        self.connection.unregister()

    def head(self) -> bytes:
        code = self.code
        parts = [_STATUS.get(code) or status_line(code)]
        if self.close:
            parts.append(b"Connection: close\r\n")
        elif self.clientproto == b"HTTP/1.0":
            parts.append(b"Connection: keep-alive\r\n")  # it asked to keep it: kept
        parts += (SERVER, _Date.now())
        canonical = _CANONICAL
        for name, value in self._out.values():
            parts += (canonical.get(name) or header_name(name), b": ", value, b"\r\n")
        parts += (NOSNIFF, b"\r\n")
        return b"".join(parts)

    def raw_head(self) -> bytes:
        """The request's head, rebuilt from what was read (for a protocol
        the connection is handed to that reads it again)."""
        lines = [b"%s %s %s\r\n" % (self.method, self.uri, self.clientproto)]
        lines += [name + b": " + value + b"\r\n" for name, value in self.fields]
        lines.append(b"\r\n")
        return b"".join(lines)

    def gone(self, reason: Failure) -> None:
        """The connection went before the answer did."""
        self.finished = True
        notifications, self._notifications = self._notifications, None
        for d in notifications or ():
            d.errback(reason)


def query_arg(request: Any, name: bytes) -> str | None:
    """The first value of query parameter *name* of *request* (``None``
    without one); 400 if it is not UTF-8."""
    values: list[bytes] | None = request.args.get(name)
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"query parameter {name.decode()!r} is not UTF-8") from None
