"""One connection of a listener: every request read with llhttp (through
httptools), answered by the listener's app, in order.

What it adds to the parser is what a server facing the Internet needs:
bounds on a request head (``MAX_HEAD`` bytes, ``MAX_FIELDS`` fields) and
on its body (the site's, or each route's through its ``body_gate``), a
body refused from its head before it is read (credentials that cannot
hold, a body where none belongs), deadlines on a head and a body, an idle
timeout, pipelined requests answered one at a time (and no more read while
the client does not read the answers), and answers sent in one send each,
at the end of the reactor's turn where the site says so
(notifier.http.batching). A WebSocket upgrade admitted by the app is handed to
its protocol with the head and what followed it.

Every refusal is the documented JSON error (docs/protocol.rst: Error
codes), sent before the connection is closed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from io import BytesIO
from typing import Any, cast
from typing import Protocol as TypingProtocol

import httptools
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from notifier.domain.errors import BadRequest, MethodNotAllowed, NotifierError
from notifier.end_of_turn import EndOfTurn
from notifier.http.answers import INTERNAL_ERROR, error_answer
from notifier.http.batching import AnswersAtEndOfTurn
from notifier.http.request import NOT_DONE_YET, Request, refusal
from notifier.sockets import close_lingering, unsent
from notifier.transports.backpressure import send_now

log = Logger()

#: Bounds on a request head: its bytes (target and fields), its fields.
MAX_HEAD = 16384
MAX_FIELDS = 500
#: Bytes of pipelined requests kept while one is being answered, before
#: the client is made to wait (TCP backpressure).
MAX_PIPELINED = 16384
#: Seconds a request body has to arrive whole, from the end of its head.
BODY_TIMEOUT = 30.0
#: Seconds a connection closed for idleness has to take what was sent to
#: it, before it is cut.
ABORT_SECONDS = 15.0
#: Fields a request may give once only: given twice, the request is refused
#: (a proxy and this server could read different values).
SINGLE = frozenset({b"host", b"content-length", b"transfer-encoding", b"authorization", b"content-type",
                    b"upgrade", b"origin", b"expect", b"idempotency-key", b"notifier-event", b"last-event-id",
                    b"sec-websocket-key", b"sec-websocket-version"})

#: Bytes given to the parser at a time: it stops at a request to answer
#: before reading further (at most one step ahead of the answers).
FEED_STEP = 4096
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

BAD_REQUEST = NotifierError("malformed HTTP request", code="bad_request")
NO_HOST = NotifierError("an HTTP/1.1 request has a Host header", code="bad_request")
HEAD_TOO_LARGE = NotifierError(f"the request head is larger than {MAX_HEAD} bytes or {MAX_FIELDS} fields",
                               code="head_too_large", status=431)
SLOW_HEAD = NotifierError("the request head came too slowly", code="header_timeout", status=408)
SLOW_BODY = NotifierError("the request body came too slowly", code="body_timeout", status=408)
BODY_NOT_ALLOWED = NotifierError("this request takes no body", code="body_not_allowed")
NOT_CHUNKED = NotifierError("the only transfer coding read is chunked", code="not_implemented", status=501)


class App(TypingProtocol):
    """What answers a listener's requests."""

    def serve(self, request: Request) -> bytes | int | Deferred[Any]:
        """The whole body; ``NOT_DONE_YET`` (answered, or to be, by the
        handler itself); or a Deferred of either, or failing with the error
        to answer."""


#: What a site may say of a request's body once its head is in: how many
#: bytes of it to read, and, when that takes a look-up, a Deferred firing
#: with whether to read it at all. It is told the body's length (``None``:
#: chunked) and whether only the bound is asked (``True``: at the end of
#: every head with a body; ``False`` again, for the verdict, when the body
#: did not come whole with its head).
BodyGate = Callable[[Request, "int | None", bool], "tuple[int, Deferred[bool] | None]"]


class HttpSite(ServerFactory):
    """A listener: its app, its bounds and deadlines."""

    noisy = False

    def __init__(self, app: App, reactor: IReactorTime, *, turn: EndOfTurn, max_body_bytes: int = 64 * 1024,
                 timeout: float = 60, header_timeout: float = 10, body_timeout: float = BODY_TIMEOUT,
                 body_gate: BodyGate | None = None, bodiless: frozenset[bytes] = frozenset(),
                 at_end_of_turn: bool = False) -> None:
        self.app = app
        self.reactor = reactor
        #: Where answers wait for the end of the turn (the service's, shared
        #: with the hubs' fan-out).
        self.turn = turn
        #: The largest body read, whatever the route.
        self.max_body_bytes = max_body_bytes
        #: Seconds a connection may stay idle (0: for ever).
        self.timeOut = timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.abort_timeout = ABORT_SECONDS
        self.body_gate = body_gate
        #: The methods whose requests take no body.
        self.bodiless = bodiless
        #: Whether whole answers wait for the end of the turn to go out
        #: together (else each goes at once).
        self.at_end_of_turn = at_end_of_turn

    def buildProtocol(self, addr: IAddress | None) -> HttpConnection:
        return HttpConnection(self, addr)


class _Spent:
    """What a connection handed over reads no more with."""


#: The parser of every connection handed over.
_SPENT = httptools.HttpRequestParser(_Spent())


class _Stop(Exception):
    """Raised in a parser's callback to stop reading the connection."""


@implementer(IPushProducer)
class HttpConnection(AnswersAtEndOfTurn, Protocol):
    """One connection of a listener, until it closes or is handed over.

    It is its transport's producer: while what it sent waits unsent (a
    client that does not read), it answers nothing more and reads nothing
    more, as it does while it holds ``MAX_PIPELINED`` bytes of requests
    behind one being answered; a streamed answer's producer is told too."""

    def __init__(self, site: HttpSite, addr: IAddress | None) -> None:
        self.site = site
        self.addr = addr
        self.parser = httptools.HttpRequestParser(self)
        #: The protocol the connection was handed to.
        self.taken: Any = None
        #: Requests read and waiting to be answered (or a refusal to send),
        #: the one being answered, and bytes not read yet.
        self.ready: deque[Request | NotifierError] = deque()
        self.current: Request | None = None
        self.pending = b""
        #: The head being read: its target, its fields, its size.
        self._url: list[bytes] = []
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        #: Bytes fed to the parser after the first piece of the head.
        self._head_fed = 0
        self.in_message = False
        #: The request whose body is being read, what of it came, its bound,
        #: whether the site was asked about it.
        self.reading: Request | None = None
        self._received = 0
        self._limit = 0
        self._asked = False
        self._length: int | None = None
        #: Reading stopped for good (a refusal, an upgrade), and why.
        self.stopped = False
        #: What followed an upgrade's head.
        self.upgraded: bytes | None = None
        #: The request answered without its body read: close lingering.
        self.unread: Request | None = None
        #: Reading paused: requests held, the client reading nothing
        #: (blocked), the site deciding on a body (gated).
        self.paused = self.held = self.blocked = self.gated = False
        #: Answered a request that closes the connection.
        self.closing = False
        #: A streamed answer's producer.
        self.producer: Any = None
        #: The one timer: idle, the head's or the body's deadline.
        self.timer: IDelayedCall | None = None
        self.abort_call: IDelayedCall | None = None
        self.head_by = 0.0
        self.body_by = 0.0
        self._serving = False
        #: A request whose 100 Continue waits for the answers before it.
        self._expecting: Request | None = None
        self._framing = 0
        self._chunks = 0

    def connectionMade(self) -> None:
        transport: Any = self.transport  # TCP or TLS: a consumer too
        transport.registerProducer(self, True)
        self._arm()

    # IPushProducer: the transport's buffer is full, or has room again

    def pauseProducing(self) -> None:
        self.blocked = True
        self._read_or_not()
        if self.producer is not None:
            self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.blocked = False
        if self.current is None:
            self.held = False
        self._read_or_not()
        if self.producer is not None:
            self.producer.resumeProducing()
        if (self.pending or self.ready) and self.current is None:
            self.site.reactor.callLater(0, self._go_on)

    def stopProducing(self) -> None:
        if self.producer is not None:
            self.producer.stopProducing()

    def _read_or_not(self) -> None:
        pause = self.held or self.blocked or self.gated
        if pause != self.paused and self.transport is not None:
            self.paused = pause
            transport: Any = self.transport
            if pause:
                transport.pauseProducing()
            else:
                transport.resumeProducing()

    # reading

    def dataReceived(self, data: bytes) -> None:
        if self.taken is not None:
            self.taken.dataReceived(data)
            return
        if self.closing or self.stopped and self.upgraded is None:
            return
        if self.upgraded is not None:
            self.upgraded += data
            self._hold_if(len(self.upgraded))
            return
        if self.current is not None or self.ready or self.blocked or self.gated:
            self.pending += data
            self._hold_if(len(self.pending))
            return
        if self.pending:
            data, self.pending = self.pending + data, b""
        self._feed(data)

    def _hold_if(self, kept: int) -> None:
        if kept > MAX_PIPELINED and not self.held:
            self.held = True
            self._read_or_not()

    def _feed(self, data: bytes) -> None:
        while data:
            piece, data = (data[:FEED_STEP], data[FEED_STEP:]) if len(data) > FEED_STEP else (data, b"")
            if self.reading is not None:
                if self._length is None:
                    self._framing += len(piece)  # chunk sizes and trailers; on_body takes the data off
            elif self.in_message:
                # A head still coming: llhttp keeps a field not yet whole, so
                # its bound is kept here too (a step's slack: the piece may
                # hold what follows the head), whatever the callbacks saw.
                self._head_fed += len(piece)
                if self._head_fed > MAX_HEAD + FEED_STEP:
                    self._refuse(HEAD_TOO_LARGE)
                    break
            self._parse(piece)
            if self.reading is not None and self._framing > MAX_HEAD + 64 * self._chunks:
                self._refuse(HEAD_TOO_LARGE)  # a chunked body's framing or trailer past any reason
            if data and self.ready and not self.stopped:
                self._serve_ready()  # those answered at once let reading go on
            if data and (self.stopped or self.ready or self.gated or self.current is not None or self.blocked):
                # Something waits to be answered: what follows is read after.
                if self.upgraded is not None:
                    self.upgraded += data
                elif not self.stopped:
                    self.pending = data + self.pending
                    self._hold_if(len(self.pending))
                break
        reading = self.reading
        if reading is not None:
            # A body still coming: its deadline runs from the end of its head.
            if not self.body_by:
                self.body_by = self.site.reactor.seconds() + self.site.body_timeout
            if not self._asked and not self.stopped:
                self._ask(reading)
        elif self.in_message and not self.head_by:
            # A head still coming: its deadline runs from its first byte.
            self.head_by = self.site.reactor.seconds() + self.site.header_timeout
        if not self.ready:  # else the answer sets it (_serve_ready)
            self._arm()
        self._serve_ready()

    def _parse(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.stopped = True
            self.upgraded = data[upgrade.args[0]:]
        except httptools.HttpParserCallbackError as e:
            if not isinstance(e.__context__, _Stop):
                log.failure("reading a request failed", Failure(e.__context__ or e))
                self._refuse(BAD_REQUEST)
        except httptools.HttpParserError:
            self._refuse(BAD_REQUEST)

    def _refuse(self, error: NotifierError) -> None:
        """Stop reading: *error* is the answer after those of the requests
        read before, and the connection closes."""
        self.stopped = True
        self.reading = None
        self.ready.append(error)

    # the parser's callbacks

    def on_message_begin(self) -> None:
        self.in_message = True
        self.head_by = self.body_by = 0.0  # set once known to be needed (_feed)
        self._framing = self._chunks = 0
        self._url = []
        self._fields = []
        self._head_size = 0
        self._head_fed = 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            self._stop(HEAD_TOO_LARGE)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.reading is not None:
            return  # a trailer field, after a chunked body: never read as a header
        fields = self._fields
        fields.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD or len(fields) > MAX_FIELDS:
            self._stop(HEAD_TOO_LARGE)

    def _stop(self, error: NotifierError) -> None:
        self._refuse(error)
        raise _Stop()

    def on_headers_complete(self) -> None:
        parser = self.parser
        fields = self._fields
        headers = {name.lower(): value for name, value in fields}
        if len(headers) < len(fields):
            headers = self._repeated(fields)
        uri = b"".join(self._url)
        if not uri.startswith(b"/") and uri != b"*":
            scheme, sep, rest = uri.partition(b"://")  # absolute-form: the path is what is read
            if not sep or not scheme.isalpha():
                self._stop(BAD_REQUEST)
            uri = b"/" + rest.partition(b"/")[2]
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._stop(BAD_REQUEST)  # HTTP/0.9 (a request line alone) is not read
        if version == "1.1" and b"host" not in headers:
            self._stop(NO_HOST)  # RFC 9112: a request of HTTP/1.1 names its host
        request = Request(self, parser.get_method(), uri, headers, self._fields, version == "1.0")
        if not parser.should_keep_alive():
            request.close = True
        coding = headers.get(b"transfer-encoding")
        given = headers.get(b"content-length")
        length: int | None = None if coding is not None else int(given) if given is not None else 0  # llhttp read it
        if length != 0 and request.method in self.site.bodiless:
            self._unread(request, BODY_NOT_ALLOWED)
            raise _Stop()
        if coding is not None and coding.strip().lower() != b"chunked":
            self._stop(NOT_CHUNKED)
        if length != 0 and parser.should_upgrade():
            self._stop(BAD_REQUEST)  # llhttp would leave its body unread, taken for another protocol's
        self.reading = request
        self._received = 0
        self._asked = False
        self._length = length
        self._limit = self.site.max_body_bytes
        if length != 0:
            request.content = BytesIO()
            # The route's bound, before any of the body is kept; whether to
            # read it at all is asked once it is known not to come whole
            # with its head (_ask).
            gate = self.site.body_gate
            if gate is not None:
                limit, verdict = gate(request, length, True)
                if verdict is not None:
                    verdict.addErrback(lambda _: None)  # the handler checks the credentials itself
                self._limit = min(limit, self._limit)
            if length is not None and length > self._limit:
                request.body_too_large = True

    def _repeated(self, fields: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
        """The fields of a head that gives some more than once, by name:
        those of a list joined with ``", "``; one that must be given once
        refuses the request."""
        headers: dict[bytes, bytes] = {}
        for name, value in fields:
            key = name.lower()
            given = headers.get(key)
            if given is None:
                headers[key] = value
            elif key in SINGLE:
                self._stop(NotifierError(f"header {name.decode('latin-1')} given twice", code="bad_request"))
            else:
                headers[key] = given + b", " + value
        return headers

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        self._framing -= len(body)
        request = self.reading
        if request is None or request.body_too_large or request.body_refused:
            return
        self._received += len(body)
        if self._received > self._limit:
            request.body_too_large = True
            request.content = BytesIO()
            return
        request.content.write(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        request, self.reading = self.reading, None
        if request is None:
            return
        self.ready.append(request)

    # a body, before it is read

    def _ask(self, request: Request) -> None:
        """The site's word on a body that did not come whole with its head:
        whether to read it at all (a look-up may be awaited: reading
        waits). A body over its bound, or refused, is not read: the request
        is answered from its head."""
        self._asked = True
        gate = self.site.body_gate
        limit, verdict = gate(request, self._length, False) if gate is not None else (self._limit, None)
        self._limit = min(limit, self._limit)
        if self._received > self._limit or self._length is not None and self._length > self._limit:
            request.body_too_large = True
            request.content = BytesIO()
        if verdict is None:
            self._decided(request, True)
        elif verdict.called:
            decided: list[object] = []
            verdict.addBoth(decided.append)
            self._decided(request, decided[0])
        else:
            self.gated = True
            self._read_or_not()
            verdict.addBoth(lambda admitted: self._decided(request, admitted))

    def _decided(self, request: Request, admitted: object) -> None:
        if self.reading is not request:
            return  # gone, or cut
        if self.gated:
            self.gated = False
            self._read_or_not()
        if admitted is not True:  # a failure refuses it too: the handler answers why
            request.body_refused = True
            request.content = BytesIO()
        if request.body_refused or request.body_too_large:
            self._unread(request, None)
            self._serve_ready()
            return
        self._continue(request)
        if self.pending and not self.blocked and self.current is None and not self._serving:
            data, self.pending = self.pending, b""
            self._feed(data)
        if self.held and self.current is None and not self.ready and len(self.pending) <= MAX_PIPELINED:
            self.held = False  # it held the body's bytes while the verdict was awaited
            self._read_or_not()

    def _continue(self, request: Request) -> None:
        if self.reading is request and request.clientproto == b"HTTP/1.1" \
                and (request.getHeader(b"expect") or b"").lower() == b"100-continue":
            if self.current is None and not self.ready:
                self._queue(CONTINUE)
            else:  # after the answers before it (answered)
                self._expecting = request

    def _unread(self, request: Request, error: NotifierError | None) -> None:
        """Answer *request* from its head, its body unread (refused, too
        large, or none allowed: *error*), and close after, lingering."""
        self.stopped = True
        self.reading = None
        self.in_message = False
        self.pending = b""
        request.close = True
        self.unread = request
        self.ready.append(error if error is not None else request)

    # answering

    def _serve_ready(self) -> None:
        if self._serving:
            return
        self._serving = True
        try:
            while self.current is None and self.ready and not self.blocked and self.transport is not None \
                    and self.taken is None and not self.closing:
                item = self.ready.popleft()
                if isinstance(item, NotifierError):
                    self._answer_refusal(item)
                    return
                self.current = item
                self._serve(item)
        finally:
            self._serving = False
        if self.current is None and (self.ready or self.pending) and not self.blocked and self.transport is not None:
            self.site.reactor.callLater(0, self._go_on)  # what came while the last of them was answered too

    def _serve(self, request: Request) -> None:
        self._arm()
        try:
            body = self._route(request)
        except NotifierError as e:
            body = error_answer(request, e)
        except Exception:
            log.failure("unexpected error answering {path}", path=request.path)
            body = error_answer(request, INTERNAL_ERROR)
        if isinstance(body, bytes):
            request.answer(body)
        elif isinstance(body, Deferred):
            answer_later(request, body)

    def _route(self, request: Request) -> bytes | int | Deferred[Any]:
        if request.path == b"*":
            if request.method == b"OPTIONS":
                request.setHeader(b"allow", b"GET, HEAD, POST, PUT, DELETE, OPTIONS")
                return b""
            request.setHeader(b"allow", b"OPTIONS")
            raise MethodNotAllowed(f"{request.method.decode('latin-1')} is not allowed on *")
        path = request.path
        if b"%" in path or not path.isascii():
            try:
                b"/".join(request.segments).decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("the URL path is not UTF-8 text", code="invalid_url") from None
        answer: bytes | int | Deferred[Any] = self.site.app.serve(request)
        return answer

    def stream(self, data: bytes) -> None:
        """Part of an answer (a stream's, or one another layer frames):
        with what waits for the end of the turn, as the site's answers do,
        else at once."""
        if self.transport is None:
            return
        if self.site.at_end_of_turn or self._queued:
            self._queue(data)
        else:
            send_now(self.transport, data)

    def answered(self, request: Request, data: bytes) -> None:
        """*request*'s answer ends with *data*."""
        if request is not self.current:
            return  # its connection is gone
        self.current = None
        self.producer = None
        if self.transport is None:
            return
        if data:
            self.stream(data)
        if self._expecting is not None and not self.ready:
            if self._expecting is self.reading:
                self._queue(CONTINUE)
            self._expecting = None
        if request.close or self.upgraded is not None and not self.ready:  # the upgrade not taken over
            self.closing = True
            self.pending = b""
            if request is self.unread:
                self.send_queued()
                close_lingering(self.transport, self.site.reactor)
            else:
                self._close()
            return
        # A head or body begun behind this answer: the time the answer took
        # is not its client's, its deadline runs from now.
        now = self.site.reactor.seconds()
        if self.reading is not None:
            self.body_by = now + self.site.body_timeout
        elif self.in_message:
            self.head_by = now + self.site.header_timeout
        self._arm()
        if self.held:
            self.held = False
            self._read_or_not()
        if (self.pending or self.ready) and not self.blocked and not self._serving:
            # What came meanwhile, once this turn is done with the answer.
            self.site.reactor.callLater(0, self._go_on)

    def _go_on(self) -> None:
        if self.current is not None or self.taken is not None or self.closing or self.blocked \
                or self.transport is None or self.gated:
            return
        if self.ready:
            self._serve_ready()
        elif self.pending and not self.stopped:
            data, self.pending = self.pending, b""
            self._feed(data)

    def _answer_refusal(self, error: NotifierError) -> None:
        self.closing = True
        self._queue(refusal(error))
        self.send_queued()
        # Its client may be sending still: what it sends is read and dropped
        # a while, so that the refusal is not lost to a reset.
        close_lingering(self.transport, self.site.reactor)

    def register(self, producer: Any) -> None:
        """*producer* (a stream) is told when the client reads nothing."""
        self.producer = producer
        if self.blocked:
            producer.pauseProducing()

    def unregister(self) -> None:
        self.producer = None

    def abort(self) -> None:
        if self.transport is not None:
            transport: Any = self.transport
            transport.abortConnection()

    # handing over

    def take_over(self, request: Request, factory: Any) -> int:
        """The connection is a protocol of *factory*'s from now on,
        starting with *request*'s head and what came after it."""
        transport: Any = self.transport
        protocol = factory.buildProtocol(transport.getPeer())
        self.send_queued()
        self._no_timer()
        transport.unregisterProducer()
        self.held = self.blocked = self.gated = False
        self._read_or_not()
        self.current = None
        self.parser = _SPENT  # it refers to this connection: no cycle left behind
        self.taken = protocol
        rest = (self.upgraded or b"") + self.pending
        self.pending, self.upgraded = b"", None
        # Where the transport delivers what it reads: to the protocol of a
        # TLS wrapper or a TCP connection, or to what that protocol wraps
        # (a connection counted for its peer).
        tls = isinstance(transport, ProtocolWrapper)
        reader = transport.wrappedProtocol if tls else transport.protocol
        if isinstance(reader, ProtocolWrapper):
            reader.wrappedProtocol = protocol
        elif tls:
            transport.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        if not protocol.open_at_once(request.headers, rest):
            protocol.dataReceived(request.raw_head() + rest)
        return NOT_DONE_YET

    # deadlines

    def _arm(self) -> None:
        """The one timer, for what the connection does now: the head's or
        body's deadline while one is read; else the idle timeout. While a
        request is answered it is left as it is: when it fires then, it
        only comes back later (``_timed_out``), which costs less than
        cancelling it for every request and making it anew."""
        if self.transport is None or self.closing or self.taken is not None:
            self._no_timer()
            return
        if self.current is not None:
            return
        now = self.site.reactor.seconds()
        idle = self.site.timeOut
        if self.reading is not None:
            at = self.body_by if not idle else min(self.body_by, now + idle)
        elif self.in_message:
            at = self.head_by if not idle else min(self.head_by, now + idle)
        elif idle:
            at = now + idle
        else:
            self._no_timer()
            return
        delay = max(0.0, at - now)
        if self.timer is not None and self.timer.active():
            self.timer.reset(delay)
        else:
            self.timer = self.site.reactor.callLater(delay, self._timed_out)

    def _no_timer(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        if self.current is not None:  # being answered: not idle
            self.timer = self.site.reactor.callLater(self.site.timeOut or self.site.header_timeout, self._timed_out)
            return
        now = self.site.reactor.seconds()
        if self.reading is not None and now >= self.body_by:
            self.reading = None
            self._answer_refusal(SLOW_BODY)
        elif self.in_message and self.reading is None and now >= self.head_by:
            self._answer_refusal(SLOW_HEAD)
        else:
            if self.blocked or unsent(self.transport):
                # Its client takes nothing of what was sent: cut, rather
                # than left to the kernel with what it queued.
                self.abort()
                return
            self.closing = True
            self._close()
        if self.abort_call is None:
            self.abort_call = self.site.reactor.callLater(self.site.abort_timeout, self._cut)

    def _close(self) -> None:
        """Close once what was sent is sent: no longer the transport's
        producer (TLS closes only without one, and TCP, paused by its
        producer, would wait for it rather than close)."""
        self.send_queued()
        transport: Any = self.transport
        transport.unregisterProducer()
        transport.loseConnection()

    def _cut(self) -> None:
        self.abort_call = None
        self.abort()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closing = True  # what waits to be read or answered goes with it
        self.pending = b""
        self.upgraded = None
        self._no_timer()
        self._drop_queued()
        if self.abort_call is not None:
            if self.abort_call.active():
                self.abort_call.cancel()
            self.abort_call = None
        if self.taken is not None:
            self.taken.connectionLost(reason)
            return
        self.reading = None
        self.ready.clear()
        self.parser = _SPENT  # it refers to this connection: no cycle left behind
        request, self.current = self.current, None
        if request is not None:
            request.gone(reason)
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()


def answer_later(request: Request, result: Deferred[Any]) -> None:
    """Answer *request* with what *result* fires with (bytes; NOT_DONE_YET
    when answered otherwise), or with the JSON error it fails with; cancel
    it if the client goes away first."""

    def gone(failure: Failure) -> None:
        result.cancel()

    request.notifyFinish().addErrback(gone)

    def done(body: Any) -> None:
        if request.finished or not isinstance(body, bytes):
            return
        if request.startedWriting:  # a stream: it ends
            request.write(body)
            request.finish()
        else:
            request.answer(body)

    def failed(failure: Failure) -> None:
        if request.finished or failure.check(CancelledError):
            return
        if failure.check(NotifierError):
            error = cast(NotifierError, failure.value)
        else:
            log.failure("unexpected error answering {path}", failure, path=request.path)
            error = INTERNAL_ERROR
        if request.startedWriting:  # a stream already begun can only be ended
            request.finish()
            return
        request.answer(error_answer(request, error))

    result.addCallbacks(done, failed)
