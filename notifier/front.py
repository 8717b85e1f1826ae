"""The listeners' front: the requests each listener answers most,
answered without twisted.web.

A long-poll, a ``/last`` or a publish is one whole HTTP request per event,
and twisted.web's way with each (the head read a line at a time, a header
object and a ``Request`` with all its machinery) cost most of what the
daemon spends on it. The front reads the plainest form of such a request at
once: a whole head in hand, over HTTP/1.1, of the one method and path its
site's :class:`Plain` names (``GET /sub/...`` on the public listener, ``POST
/api/v1/centers/{center}/messages`` on the api listener), with a body only
where it allows one (of a ``Content-Length`` within its bound), no event
stream. A body that does not come with its head is read only once the
site's ``body_gate`` admits it (else the request is answered from its head
and the connection closed), and must be whole within the site's
``body_timeout``, as twisted.web's are (notifier.httpserver). The same
resource answers it, through :class:`PlainRequest`, with every rule it
applies to any request, and the answer goes out in one send.
A WebSocket upgrade admitted by those rules is handed to Autobahn's
protocol with the bytes of its head as they came
(:meth:`PlainRequest.take_over`): read once here, once by Autobahn, instead
of by twisted.web, rebuilt from its headers and read again.

Anything else, from its first byte on (a partial head, another method or
path, a WebSocket upgrade the front does not take, an SSE stream, a body it does not take,
anything the front's stricter reading does not take), goes to twisted.web:
the connection is handed to a ``Channel`` of the same site with the bytes
read so far, and stays with it. twisted.web's answers to odd requests are
then the only ones given: the front adds no behaviour, only a shorter way to
the same answers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import NO_BODY_CODES, RESPONSES, datetimeToString, parse_qs
from twisted.web.http_headers import Headers
from zope.interface import implementer

from notifier.answers import error_answer
from notifier.batching import AnswersAtEndOfTurn
from notifier.compat import header_name
from notifier.connections import close_lingering, unsent
from notifier.errors import NotifierError
from notifier.httpserver import NOSNIFF, SLOW_BODY, QuietSite, raw_error_response
from notifier.transports.pacing import send_now

log = Logger()

#: A request head the front takes (``Plain.head``): its method and a target
#: under its mount (of visible ASCII) over HTTP/1.1, then header lines of a
#: token, a colon and a value without control characters (tab allowed),
#: then the empty line.
HEAD = (rb"%s (%s[\x21-\x7e]*) HTTP/1\.1\r\n"
        rb"((?:[!#$%%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*)\r\n\Z")
FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([^\r\n]*)\r\n")
#: Headers that make a request twisted.web's: a body in chunks, a request
#: for an interim answer.
NOT_PLAIN = frozenset({b"transfer-encoding", b"expect", b"te"})
#: A ``Content-Length`` the front reads (twisted.web reads odder ones its way).
LENGTH = re.compile(rb"[0-9]{1,9}")
#: twisted.web's own bounds on a head (HTTPChannel.totalHeadersSize, maxHeaders).
MAX_HEAD = 16384
MAX_FIELDS = 500
#: Bytes of pipelined requests kept while one is being answered, before
#: the client is made to wait (TCP backpressure).
MAX_PIPELINED = 16384
#: Seconds a connection closed for idleness has to take what was sent to
#: it, before it is cut (as twisted.web's ``HTTPChannel.abortTimeout``).
ABORT_SECONDS = 15.0
NOT_DONE_YET: int = server.NOT_DONE_YET
SERVER = b"Server: TwistedWeb/" + server.version.split(b"/", 1)[-1] + b"\r\n"


@attr.frozen
class Plain:
    """The requests a site's front answers itself, and what answers them."""

    #: Their method.
    method: bytes
    #: Where the target starts: the path of *resource*, with its last slash.
    mount: bytes
    #: What answers them: ``render(request)`` of a :class:`PlainRequest`,
    #: bytes or ``NOT_DONE_YET`` as a twisted.web resource's.
    resource: Any
    #: Which of them, given the method and the path's segments after
    #: *mount* (``None``: all).
    takes: Callable[[bytes, list[bytes]], bool] | None = None
    #: The largest body taken (``Content-Length``); 0: none.
    max_body: int = 0
    #: Whether a WebSocket upgrade can be among them.
    upgrades: bool = False
    #: Whether answers wait for the end of the reactor's turn, as the HTTP
    #: channel's do (notifier.httpserver.Channel), to go out together.
    at_end_of_turn: bool = False
    #: Their head (``HEAD``): the target, then the header lines.
    head: re.Pattern[bytes] = attr.field(init=False)
    #: The length of *mount*.
    mounted: int = attr.field(init=False)

    @head.default
    def _head(self) -> re.Pattern[bytes]:
        return re.compile(HEAD % (re.escape(self.method), re.escape(self.mount)))

    @mounted.default
    def _mounted(self) -> int:
        return len(self.mount)


def _status_line(code: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (code, RESPONSES.get(code, b"Unknown Status"))


_STATUS = {code: _status_line(code) for code in RESPONSES}


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


def _query(query: bytes) -> dict[bytes, list[bytes]]:
    """A query's arguments, as twisted.web's ``parse_qs(query, 1)`` reads
    them; the plain ones (no escapes, no ``;``) without its detour."""
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


#: Header names as twisted.web writes them (``Access-Control-Allow-Origin``),
#: by the name given to ``setHeader``: the handlers' own, a few dozen.
_CANONICAL: dict[bytes, bytes] = {}


def _canonical(name: bytes) -> bytes:
    canonical = _CANONICAL.get(name)
    if canonical is None:
        canonical = _CANONICAL[name] = header_name(name)
    return canonical


#: The body of a request without one (read, never written).
_NO_BODY = BytesIO()


class PlainRequest:
    """What the resources a front serves (``public.Subscriptions``,
    ``api.ApiRoot`` for a publish) and ``answers.answer_later`` use of a
    twisted.web request, for a request the front read itself."""

    __slots__ = ("front", "method", "uri", "path", "postpath", "args", "code", "startedWriting", "finished",
                 "close", "head_bytes", "content", "received", "_out", "_body", "_notifications",
                 "body_refused", "body_too_large")

    clientproto = b"HTTP/1.1"
    #: Set only for a request answered without its body (Front._unread).
    body_refused: bool
    body_too_large: bool

    def __init__(self, front: Front, method: bytes, uri: bytes, headers: dict[bytes, bytes],
                 mounted: int) -> None:
        self.front = front
        self.method = method
        self.uri = uri
        path, _, query = uri.partition(b"?")
        self.path = path
        # After the mount (*mounted* bytes): what resource traversal leaves
        # to the resource.
        segments = path[mounted:].split(b"/")
        self.postpath = [unquote_to_bytes(segment) for segment in segments] if b"%" in path else segments
        self.args = _query(query) if query else {}
        self.code = 200
        #: Whether the client asked for the connection to be closed after.
        self.close = False
        #: The head as it came, for a WebSocket upgrade.
        self.head_bytes = b""
        #: The body (``Content-Length`` bytes), as twisted.web keeps it.
        self.content = _NO_BODY
        self.startedWriting = False
        self.finished = False
        self.received = headers
        #: The answer's headers by lower-cased name, in the order first set.
        self._out: dict[bytes, tuple[bytes, bytes]] = {}
        self._body: list[bytes] = []
        self._notifications: list[Deferred[None]] | None = None

    # what the handlers ask

    def getHeader(self, name: bytes) -> bytes | None:
        return self.received.get(name.lower())

    def setHeader(self, name: bytes, value: bytes) -> None:
        if b"\r" in value or b"\n" in value:  # as twisted.web's Headers do
            value = value.replace(b"\r\n", b" ").replace(b"\r", b" ").replace(b"\n", b" ")
        self._out[name.lower()] = (name, value)

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code

    def notifyFinish(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._notifications is None:
            self._notifications = []
        self._notifications.append(d)
        return d

    def write(self, data: bytes) -> None:
        self.startedWriting = True
        self._body.append(data)

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.front.answered(self, b"".join(self._body))
        notifications, self._notifications = self._notifications, None
        for d in notifications or ():
            d.callback(None)

    def take_over(self, factory: Any) -> int:
        """Hand the connection to a WebSocket protocol of *factory*, which
        reads the handshake from the head as it came, as Autobahn's
        ``WebSocketResource`` does with the one twisted.web read."""
        return self.front.take_over(factory, self.head_bytes, self.received)

    # what the front does with it

    def answer(self, body: bytes) -> None:
        """The whole answer of *body*, as twisted.web's ``Request.render``
        makes it of what a resource returns."""
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def head(self) -> bytes:
        code = self.code
        parts = [_STATUS.get(code) or _status_line(code)]
        if self.close:
            parts.append(b"Connection: close\r\n")
        parts += (SERVER, _Date.now())
        canonical = _CANONICAL
        for name, value in self._out.values():
            parts += (canonical.get(name) or _canonical(name), b": ", value, b"\r\n")
        parts += (NOSNIFF, b"\r\n")  # last, as twisted.web's (notifier.httpserver.Channel.writeHeaders)
        return b"".join(parts)

    def gone(self, reason: Failure) -> None:
        self.finished = True
        notifications, self._notifications = self._notifications, None
        for d in notifications or ():
            d.errback(reason)


@implementer(IPushProducer)
class Front(AnswersAtEndOfTurn, Protocol):
    """One connection of a listener, until it is handed over.

    It is its transport's producer: while what it sent waits unsent (a
    client that does not read), it answers nothing more and reads nothing
    more, as it does while it holds ``MAX_PIPELINED`` bytes of requests
    behind one being answered."""

    def __init__(self, site: FrontSite, addr: IAddress) -> None:
        self.site = site
        self.addr = addr
        #: The twisted.web channel the connection was handed to.
        self.channel: Any = None
        #: The request being answered, and what came after it meanwhile.
        self.current: PlainRequest | None = None
        self.pending = b""
        #: Reading paused: for requests held, or because the client does not
        #: read what is sent (the transport paused us).
        self.paused = False
        self.held = False
        self.blocked = False
        #: Answered a request that asked for the connection to be closed:
        #: whatever comes after is not read (as twisted.web does).
        self.closing = False
        #: Cuts the connection once idle for the site's ``timeOut``.
        self.idle: IDelayedCall | None = None
        #: Cuts a connection closed for idleness that does not go.
        self.abort: IDelayedCall | None = None
        #: The request whose body is being read, and how much of it is to come.
        self.reading: PlainRequest | None = None
        self.awaited = 0
        #: When that body must be in (the site's ``body_timeout`` from its head).
        self.body_by = 0.0
        #: Reading paused for the site's verdict on that body (its body_gate).
        self.gated = False

    def connectionMade(self) -> None:
        transport: Any = self.transport  # a TCP or TLS transport: an IConsumer too
        transport.registerProducer(self, True)
        if self.site.timeOut:
            self.idle = self.site.reactor.callLater(self.site.timeOut, self._timed_out)

    # IPushProducer: the transport's buffer is full, or has room again

    def pauseProducing(self) -> None:
        self.blocked = True
        self._read_or_not()

    def resumeProducing(self) -> None:
        self.blocked = False
        if self.current is None:
            self.held = False  # what it held waits for no answer: it is read next
        self._read_or_not()
        if self.pending and self.current is None:
            self.site.reactor.callLater(0, self._go_on)

    def stopProducing(self) -> None:
        pass  # the connection is going: connectionLost follows

    def _read_or_not(self) -> None:
        """Pause or resume reading the connection, as held, blocked and gated say."""
        pause = self.held or self.blocked or self.gated
        if pause != self.paused and self.transport is not None:
            self.paused = pause
            if pause:
                self.transport.pauseProducing()  # type: ignore[attr-defined]
            else:
                self.transport.resumeProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.channel is not None:
            self.channel.dataReceived(data)
            return
        if self.closing:
            return
        if self.idle is not None:
            if self.reading is None:
                self.idle.reset(self.site.timeOut or 0)
            else:  # a body: idle, or late, whichever comes first
                left = self.body_by - self.site.reactor.seconds()
                self.idle.reset(min(left, self.site.timeOut) if self.site.timeOut else left)
        if self.current is not None or self.blocked or self.gated:
            self.pending += data
            if len(self.pending) > MAX_PIPELINED and not self.held:
                self.held = True
                self._read_or_not()
            return
        if self.pending:
            data, self.pending = self.pending + data, b""
        self._read(data)

    def _read(self, data: bytes) -> None:
        while data:
            request = self.reading
            if request is None:
                end = data.find(b"\r\n\r\n")
                if end < 0 or end >= MAX_HEAD:
                    self._hand_over(data)
                    return
                end += 4
                request, awaited = self._plain(data[:end])
                if request is None:
                    self._hand_over(data)
                    return
                data = data[end:]
                if awaited > len(data):  # the body does not come whole with its head
                    if not self._may_read(request, awaited):
                        return
                    self._body_deadline()
            else:
                awaited = self.awaited
            if awaited:
                # The body, into the request as it comes (as twisted.web keeps it).
                piece = data[:awaited]
                request.content.write(piece)
                awaited -= len(piece)
                data = data[len(piece):]
                if awaited:
                    self.reading, self.awaited = request, awaited
                    return
                self.reading = None
            # What follows the request waits while it is answered (and goes
            # with the connection if it is taken over).
            self.pending = data
            self.current = request
            self._serve(request)
            if self.current is not None or self.closing or self.channel is not None or self.transport is None \
                    or self.blocked:
                return
            data, self.pending = self.pending, b""

    def _plain(self, head: bytes) -> tuple[PlainRequest | None, int]:
        """The request of *head*, if it is one the front takes, and the
        length of its body."""
        plain = self.site.plain
        match = plain.head.match(head)
        if match is None:
            return None, 0
        fields = FIELD.findall(match.group(2))
        if len(fields) > MAX_FIELDS:
            return None, 0
        headers = {name.lower(): value.strip(b" \t") for name, value in fields}
        if len(headers) < len(fields):
            return None, 0  # a header given twice: twisted.web reads some by the first, some by the last
        if not NOT_PLAIN.isdisjoint(headers):
            return None, 0
        length = 0
        given = headers.get(b"content-length")
        if given is not None:
            if LENGTH.fullmatch(given) is None:
                return None, 0
            length = int(given)
            if length > plain.max_body or not plain.max_body:
                return None, 0  # refused as twisted.web refuses it: 413, or a body not read
        close = False
        upgrade = headers.get(b"upgrade")
        if upgrade is not None and (upgrade.lower() != b"websocket" or not plain.upgrades):
            return None, 0  # an upgrade to something else: twisted.web's
        connection = headers.get(b"connection")
        if connection is not None:
            connection = connection.lower()
            if b"upgrade" in connection and upgrade is None:
                return None, 0
            # As twisted.web reads it (HTTPChannel.checkPersistence).
            close = b"close" in connection.split(b" ")
        accept = headers.get(b"accept")
        if accept is not None and b"text/event-stream" in accept:
            return None, 0
        request = PlainRequest(self, plain.method, match.group(1), headers, plain.mounted)
        request.close = close
        if upgrade is not None:
            request.head_bytes = head
        try:
            b"/".join(request.postpath).decode("utf-8")
        except UnicodeDecodeError:
            return None, 0  # twisted.web's refusal (QuietSite.getResourceFor)
        if plain.takes is not None and not plain.takes(plain.method, request.postpath):
            return None, 0
        if length:
            request.content = BytesIO()
        return request, length

    def _may_read(self, request: PlainRequest, length: int) -> bool:
        """Whether to read the body of *request* (*length* bytes): not for
        credentials that cannot hold, looked up first as for twisted.web's
        requests (notifier.httpserver.BoundedRequest); else it is answered
        from its head, and the connection closed after. Reading waits for a
        look-up."""
        gate = getattr(self.site, "body_gate", None)
        if gate is None:
            return True
        headers = Headers({name: [value] for name, value in request.received.items()})
        limit, verdict = gate(request.method, request.uri, headers, length, False)
        if verdict is None:
            if length <= limit:
                return True
            self._unread(request, False)
            return False
        if verdict.called:
            decided: list[object] = []
            verdict.addBoth(decided.append)
            if decided[0] is True and length <= limit:
                return True
            self._unread(request, decided[0] is True)
            return False
        self.gated = True
        self._read_or_not()

        def later(admitted: object) -> None:
            if self.reading is not request:
                return  # gone, or cut
            if admitted is True and length <= limit:
                self.gated = self.held = False  # held: for what came meanwhile, read now
                self._read_or_not()
                if self.pending and not self.blocked:
                    data, self.pending = self.pending, b""
                    self._read(data)
            else:
                self._unread(request, admitted is True)

        verdict.addBoth(later)  # a failure refuses it too: the handler answers why
        return True

    def _unread(self, request: PlainRequest, too_large: bool) -> None:
        """Answer *request* without its body (refused, or too large), and
        close after: what comes meanwhile is not read."""
        request.body_refused = not too_large
        request.body_too_large = too_large
        request.close = True
        self.reading, self.awaited = None, 0
        self.gated = True
        self._read_or_not()
        self.pending = b""
        self.current = request
        self._serve(request)

    def _body_deadline(self) -> None:
        """The body about to be read has the site's ``body_timeout`` to come
        whole: the idle timer fires then at the latest, whatever comes."""
        timeout = self.site.body_timeout
        self.body_by = self.site.reactor.seconds() + timeout
        if self.idle is not None:
            self.idle.reset(min(timeout, self.site.timeOut) if self.site.timeOut else timeout)
        else:
            self.idle = self.site.reactor.callLater(timeout, self._timed_out)

    def _serve(self, request: PlainRequest) -> None:
        try:
            body = self.site.plain.resource.render(request)
        except Exception:
            log.failure("unexpected error answering {path}", path=request.path)
            error = NotifierError("the server failed to answer", code="internal_error", status=500)
            body = error_answer(request, error)  # type: ignore[arg-type]  # what error_answer uses of a request
        if body is not server.NOT_DONE_YET:
            request.answer(body)

    def answered(self, request: PlainRequest, body: bytes) -> None:
        """*request* is answered with *body* (its head made now)."""
        if request is not self.current:
            return  # its connection is gone
        self.current = None
        if self.transport is None:
            return
        if request.code in NO_BODY_CODES:
            body = b""
        if self.site.plain.at_end_of_turn:
            self._queue(request.head() + body)
        else:
            send_now(self.transport, request.head() + body)
        self._idle_again()
        if request.close:
            self.closing = True
            self.pending = b""
            if getattr(request, "body_refused", False) or getattr(request, "body_too_large", False):
                self.send_queued()
                close_lingering(self.transport, self.site.reactor)  # its body is unread
            else:
                self._close()
            return
        if self.held:
            self.held = False
            self._read_or_not()
        if self.pending and not self.blocked:
            # The requests that came meanwhile, once this turn is done with
            # the answer (never from within the code that gave it).
            self.site.reactor.callLater(0, self._go_on)

    def _go_on(self) -> None:
        if self.current is None and self.channel is None and not self.closing and not self.blocked \
                and self.transport is not None:
            data, self.pending = self.pending, b""
            self._read(data)

    def take_over(self, factory: Any, head: bytes, headers: dict[bytes, bytes]) -> int:
        """The connection is *factory*'s protocol's from now on, starting
        with *head* (whose *headers* the front read) and what came after it."""
        transport: Any = self.transport
        protocol = factory.buildProtocol(transport.getPeer())
        protocol.http_producer = False
        self._let_go()
        self.current = None
        self.channel = protocol  # anything still told to the front goes to it
        data, self.pending = head + self.pending, b""
        # Where the transport delivers what it reads (as WebSocketResource.render):
        # to the protocol of a TLS wrapper or a TCP connection, or to what
        # that protocol wraps (a connection counted for its peer).
        tls = isinstance(transport, ProtocolWrapper)
        reader = transport.wrappedProtocol if tls else transport.protocol
        if isinstance(reader, ProtocolWrapper):
            reader.wrappedProtocol = protocol
        elif tls:
            transport.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        # The handshake as the front read it, when the protocol can open on
        # it; else the protocol reads the head itself.
        if not protocol.open_at_once(headers, data[len(head):]):
            protocol.dataReceived(data)
        return NOT_DONE_YET

    def _hand_over(self, data: bytes) -> None:
        """From now on the connection is twisted.web's, starting with *data*."""
        self._let_go()
        channel = QuietSite.buildProtocol(self.site, self.addr)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.channel = channel
        channel.makeConnection(self.transport)
        channel.dataReceived(data)

    def _let_go(self) -> None:
        """Before the connection goes to another protocol: the answers given
        sent, no timer, no longer its producer, reading."""
        self.send_queued()
        self._no_timer()
        transport: Any = self.transport
        transport.unregisterProducer()
        self.held = self.blocked = False
        self._read_or_not()

    def _idle_again(self) -> None:
        """Idle from now on: a whole timeout, if the site has one."""
        if not self.site.timeOut:
            self._no_timer()
        elif self.idle is not None:
            self.idle.reset(self.site.timeOut)
        else:
            self.idle = self.site.reactor.callLater(self.site.timeOut, self._timed_out)

    def _timed_out(self) -> None:
        self.idle = None
        if self.current is not None:  # being answered: not idle
            self._idle_again()
        elif self.transport is not None:
            if self.blocked or unsent(self.transport):
                # Its client takes nothing of what was sent: cut, rather
                # than left to the kernel with what it queued.
                self.transport.abortConnection()  # type: ignore[attr-defined]
                return
            if self.reading is not None:  # its body came too slowly (or stalled): told so
                self.reading = None
                self.closing = True
                self.pending = b""
                self._queue(raw_error_response(SLOW_BODY))
            self._close()
            if self.abort is None:
                self.abort = self.site.reactor.callLater(self.site.abort_timeout, self._cut)

    def _close(self) -> None:
        """Close once what was sent is sent: no longer the transport's
        producer (TLS closes only without one, and TCP, paused by its
        producer, would wait for it rather than close), as
        ``HTTPChannel.loseConnection`` does."""
        self.send_queued()
        transport: Any = self.transport
        transport.unregisterProducer()
        transport.loseConnection()

    def _cut(self) -> None:
        self.abort = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _no_timer(self) -> None:
        if self.idle is not None:
            if self.idle.active():
                self.idle.cancel()
            self.idle = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._no_timer()
        self._drop_queued()
        if self.abort is not None:
            if self.abort.active():
                self.abort.cancel()
            self.abort = None
        if self.channel is not None:
            self.channel.connectionLost(reason)
            return
        self.reading = None
        request, self.current = self.current, None
        if request is not None:
            request.gone(reason)


class FrontSite(QuietSite):
    """A listener's site whose connections start with a :class:`Front`."""

    #: Seconds a connection closed for idleness has to take what it was sent.
    abort_timeout = ABORT_SECONDS

    def __init__(self, resource: Any, plain: Plain, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        #: The requests the front answers itself.
        self.plain = plain

    def buildProtocol(self, addr: IAddress) -> Front:  # type: ignore[override]
        return Front(self, addr)
