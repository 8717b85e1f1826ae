"""The HTTP plumbing of both listeners: the channel, the request and the
site, each bending twisted.web where notifier needs it (bounded bodies,
JSON refusals of what never became a request, one send per answer,
deadlines on request heads and bodies, no access log)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from notifier import compat
from notifier.answers import error_answer
from notifier.batching import AnswersAtEndOfTurn
from notifier.compat import (
    ChannelHooks,
    RequestHooks,
    line_buffer,
    pause_reading,
    pipelined_too_much,
    request_line,
    request_method,
    transport_waits,
)
from notifier.connections import close_lingering, unsent
from notifier.errors import BadRequest, MethodNotAllowed, NotifierError
from notifier.turns import EndOfTurn

#: What a site may say of a request's body once its head is in: how many
#: bytes of it to keep, and, when that takes a look-up, a Deferred firing
#: with whether to read it at all (docs/protocol.rst: Limits, timeouts and keep-alives). It is told the
#: body's length and whether the whole body came with the head (then no
#: look-up is worth it: the handler checks the credentials before using it).
BodyGate = Callable[[bytes, bytes, Headers, "int | None", bool], "tuple[int, Deferred[bool] | None]"]

#: Seconds a request body has to arrive whole, from the end of its head
#: (``QuietSite.body_timeout``): else 408 ``body_timeout`` and the
#: connection is cut, so a body drip-fed a byte at a time cannot hold it.
BODY_TIMEOUT = 30.0
#: Whether a site's ``body_gate`` is asked before a body is read, from the
#: channel's request line (notifier.compat.CHANNEL_HEAD).
EARLY_GATE = compat.CHANNEL_HEAD
#: Sent on every answer, whatever its type (docs/security.rst).
NOSNIFF = b"X-Content-Type-Options: nosniff\r\n"


class BoundedRequest(RequestHooks, server.Request):
    """A request whose body is kept only up to what its site allows.

    Past the limit the rest is discarded as it arrives and ``body_too_large``
    is set, for the handler to answer 413: nothing unbounded is buffered. A
    site with a ``body_gate`` sets the limit per request, from its head, and
    may refuse the body outright (``body_refused``: credentials that do not
    hold, looked up before the body is read, with the connection paused).

    A body refused, or too large by its ``Content-Length``, is not read at
    all: the request is answered from its head, and the connection closed
    after (``Channel.answer_unread``); no ``100 Continue`` is sent for it.
    """

    body_too_large = False
    body_refused = False
    #: The site's verdict on the body is awaited; then whether the client
    #: awaits a ``100 Continue``.
    verdict_pending = False
    continue_awaited = False
    #: The body is being read (from the head's end to the request's start).
    reading_body = False
    _received = 0
    _limit = 0
    #: A QuietSite's requests come in on its channels.
    channel: Channel

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        site = channel.site
        self._limit = site.max_body_bytes
        gate: BodyGate | None = getattr(site, "body_gate", None) if EARLY_GATE else None
        verdict = None
        if gate is not None:
            # The body came whole with the head (LineReceiver keeps what
            # follows the head in _buffer), and no 100 Continue is awaited.
            in_hand = length is not None and len(line_buffer(channel)) >= length \
                and not self.requestHeaders.hasHeader(b"expect")
            # The method and target are the channel's until the body is in.
            self._limit, verdict = gate(*request_line(channel), self.requestHeaders, length, in_hand)
        kept = length
        if length is not None and length > self._limit:
            self.body_too_large = True
            kept = 0
        self.reading_body = True
        super().gotLength(kept)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        if verdict is not None:
            if length == 0:  # no body: the handler checks the credentials
                verdict.addErrback(lambda failure: None)
            else:  # once the body's buffer exists
                self._await_verdict(verdict)

    @property
    def unread(self) -> bool:
        """Whether the body is not to be read: answered from the head."""
        return self.body_refused or self.body_too_large

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.reading_body = False
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def _await_verdict(self, verdict: Deferred[bool]) -> None:
        if verdict.called:
            verdict.addBoth(self._verdict)  # a failure refuses it too: the handler answers why
            return
        # A connection's transport is its producer (HTTPChannel.connectionMade
        # registers it as one); Twisted types it only as an ITransport.
        channel = self.channel
        transport = cast(IPushProducer, channel.transport)
        transport.pauseProducing()
        self.verdict_pending = True

        def decided(admitted: object) -> None:
            self.verdict_pending = False
            self._verdict(admitted)
            # Unless gone, or the body came whole meanwhile (the handler
            # refuses it then).
            if self.reading_body and self.channel is not None:
                if self.body_refused:
                    channel.answer_unread(self)  # still paused: the body is not read
                    return
                if self.continue_awaited:
                    channel.send_continue()
            transport.resumeProducing()  # a closed connection ignores it

        verdict.addBoth(decided)

    def _verdict(self, admitted: object) -> None:
        if admitted is not True:
            self.body_refused = True
            assert self.content is not None  # made by gotLength before any verdict
            self.content.seek(0)
            self.content.truncate()

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large or self.body_refused:
            return
        self._received += len(data)
        if self._received > self._limit:
            self.body_too_large = True
            assert self.content is not None  # made by gotLength, before any of the body
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def star(self) -> bool:
        # Twisted answers "OPTIONS *" itself and any other method on "*" with
        # a bare 405: that one is a JSON error too.
        if self.method == b"OPTIONS":
            return False
        # Request's own setHeader, write and finish are unannotated in Twisted.
        self.setHeader(b"allow", b"OPTIONS")  # type: ignore[no-untyped-call]
        method = self.method.decode("latin-1")
        body = error_answer(self, MethodNotAllowed(f"{method} is not allowed on *"))
        self.write(body)  # type: ignore[no-untyped-call]
        self.finish()  # type: ignore[no-untyped-call]
        return True

    def render(self, resrc: IResource) -> None:
        # twisted.web logs each HEAD request given a body, with its URI.
        headless = _Headless(resrc) if self.method == b"HEAD" else resrc
        super().render(headless)  # type: ignore[no-untyped-call]  # unannotated in Twisted


class _Headless:
    """A resource answering HEAD: its GET answer's length, without the body
    (which twisted.web would drop, logging the request's URI)."""

    def __init__(self, resource: IResource) -> None:
        self.resource = resource

    def render(self, request: server.Request) -> object:
        body = self.resource.render(request)
        if isinstance(body, bytes) and body:
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        return body


def raw_error_response(error: NotifierError, headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A whole HTTP/1.1 answer of *error*, closing the connection: for a
    request that never became one twisted.web can answer."""
    body = error.body()
    lines = [b"HTTP/1.1 %d %s" % (error.status, RESPONSES.get(error.status, b"Error")),
             b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
    lines += [name + b": " + value for name, value in headers or ()]
    return b"\r\n".join(lines) + b"\r\n" + NOSNIFF + b"\r\n" + body


_BAD_REQUEST = NotifierError("malformed HTTP request", code="bad_request")
_SLOW_HEAD = NotifierError("the request head came too slowly", code="header_timeout", status=408)
SLOW_BODY = NotifierError("the request body came too slowly", code="body_timeout", status=408)
_BODY_NOT_ALLOWED = NotifierError("this request takes no body", code="body_not_allowed")


class Channel(AnswersAtEndOfTurn, ChannelHooks, HTTPChannel):
    """HTTP/1.1 whose refusals of malformed requests are JSON too, and whose
    answers are sent at the end of the reactor's turn, straight to the
    socket when nothing is queued (the same path as the WebSocket fan-out,
    notifier.transports.pacing).

    An answer waits for the end of the turn that made it so that the
    answers of one turn go out together (notifier.batching, before the hubs'
    fan-out steps):
    on this machine a send that wakes a client asleep costs a third of
    what answering a publish does, and one wake-up then serves several
    answers. Everything a channel writes goes through that one queue, in
    order; closing the connection sends what is queued first.
    """

    _host: IAddress | None = None
    #: Whether the connection is closed with a request's body unread
    #: (notifier.connections.close_lingering).
    lingering = False
    #: Set by the site that builds the channel (Site.buildProtocol).
    site: QuietSite
    #: The status line and headers, sent with the first body bytes: one send.
    _head = b""
    #: When the request head being read began (``None``: none is being read).
    head_started: float | None = None
    #: When the request body being read began (``None``: none is being read).
    body_started: float | None = None

    # An absolute bound on each request head, from its first byte, and on
    # each body, from the head's end: the idle timeout alone starts again
    # with every byte, so a head or body drip-fed a byte at a time would
    # hold the connection forever. The site's one sweep cuts what is late
    # (QuietSite.sweep_heads): no timer per request.

    def dataReceived(self, data: bytes) -> None:
        # A head begins with its first byte parsed: not with bytes that wait
        # while the client reads nothing (``paused``), nor with none.
        if self.line_mode and self.head_started is None and not self.paused and (data or line_buffer(self)):
            self.head_started = self.site.head_begun(self)
        super().dataReceived(data)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def allHeadersReceived(self) -> None:
        self._head_done()
        if EARLY_GATE and request_method(self) in self.site.bodiless and (
                self.length != 0 or self.requests[-1].requestHeaders.hasHeader(b"transfer-encoding")):
            # A body where none belongs: refused before any of it is read.
            self._queue(raw_error_response(_BODY_NOT_ALLOWED))
            self.lingering = True
            self.loseConnection()
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        request: BoundedRequest = self.requests[-1]
        if request.unread:
            # Answered from its head (HTTPChannel.lineReceived goes on with
            # allContentReceived for a length of 0): the body is not read.
            self._no_more(request)
            self.length = 0
        elif self.length != 0:
            self.body_started = self.site.body_begun(self)

    def allContentReceived(self) -> None:
        self._body_done()
        super().allContentReceived()  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def answer_unread(self, request: BoundedRequest) -> None:
        """Answer *request*, whose body is being read, without the rest of
        it, and close after (reading stays paused until then)."""
        self._no_more(request)
        self.allContentReceived()

    def _no_more(self, request: BoundedRequest) -> None:
        """No request after *request*, whose body is left unread: its answer
        closes the connection, lingering."""
        self.persistent = False
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        self.lingering = True

    def continue_expected(self) -> None:
        # Only for a body the site will read: a verdict awaited sends it
        # once the credentials hold (BoundedRequest._await_verdict).
        request: BoundedRequest = self.requests[-1]
        if request.verdict_pending:
            request.continue_awaited = True
        elif not request.unread:
            self.send_continue()

    def send_continue(self) -> None:
        self._queue(b"HTTP/1.1 100 Continue\r\n\r\n")  # after what is queued before it

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._head_done()
        self._body_done()
        self._drop_queued()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def _head_done(self) -> None:
        if self.head_started is not None:
            self.head_started = None
            self.site.head_ended(self)

    def _body_done(self) -> None:
        if self.body_started is not None:
            self.body_started = None
            self.site.body_ended(self)

    def head_too_slow(self) -> None:
        self._head_done()
        self._cut(_SLOW_HEAD)

    def body_too_slow(self) -> None:
        self._body_done()
        self._cut(SLOW_BODY)

    def _cut(self, error: NotifierError) -> None:
        assert self.transport is not None  # a request being read: connected
        self.send_queued()
        self.transport.write(raw_error_response(error))
        self.transport.loseConnection()

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes,
                     headers: Headers | Iterable[tuple[bytes, bytes]]) -> None:
        if not isinstance(headers, Headers):
            # HTTPChannel.writeHeaders is unannotated in Twisted.
            super().writeHeaders(version, code, reason, headers)  # type: ignore[no-untyped-call]
            return
        parts = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():  # Headers refuses CR and LF
            for value in values:
                parts += (name, b": ", value, b"\r\n")
        parts += (NOSNIFF, b"\r\n")  # last, as the front's (notifier.front.PlainRequest.head)
        self._head = b"".join(parts)

    def write(self, data: bytes) -> None:
        head, self._head = self._head, b""
        self._queue(head + data if head else data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        head, self._head = self._head, b""
        self._queue(head + b"".join(iovec))

    def _flush_head(self) -> None:
        if self._head:
            self.write(b"")

    def requestDone(self, request: http.Request) -> None:
        self._flush_head()  # an answer without a body
        waiting = self.persistent and transport_waits(self)
        if waiting:
            # The client reads nothing of what was sent (the transport paused
            # us): twisted.web would go on answering every request it
            # pipelined, their answers growing without bound. The requests
            # read wait as lines not parsed yet (LineReceiver stops at
            # ``paused``), and reading stops, until the client reads.
            self.paused = True
        super().requestDone(request)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        if waiting and self.transport is not None:
            pause_reading(self)

    def rawDataReceived(self, data: bytes) -> None:
        super().rawDataReceived(data)
        # twisted.web stops reading past a few pipelined kilobytes only when
        # the client keeps up: also when it does not.
        if pipelined_too_much(self):
            pause_reading(self)

    def resumeProducing(self) -> None:
        super().resumeProducing()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        if self.paused:
            self.paused = False
            if self.transport is not None and line_buffer(self):
                self.dataReceived(b"")  # the requests that waited

    def timeoutConnection(self) -> None:
        if self.transport is not None and unsent(self.transport):
            # Its client takes nothing of what was sent: cut, rather than
            # left to the kernel with what it queued.
            self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        super().timeoutConnection()  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def loseConnection(self) -> None:
        self._flush_head()
        self.send_queued()
        if self.lingering and self.transport is not None:
            close_lingering(self.transport, self.site.reactor)  # a body left unread
            return
        super().loseConnection()  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def getHost(self) -> IAddress:
        # Asked by every request: one getsockname(2) per connection is enough.
        if self._host is None:
            self._host = super().getHost()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        return self._host

    def lineLengthExceeded(self, line: bytes) -> None:
        # A request line or header over MAX_LENGTH: Twisted would only hang up.
        self.bad_request()

    def bad_request(self) -> None:
        assert self.transport is not None  # a request being read: connected
        self._queue(raw_error_response(_BAD_REQUEST))
        self.loseConnection()


class QuietSite(server.Site):
    """The Site of both listeners.

    It keeps no access log (URLs may carry subscriber tokens), never shows a
    traceback, bounds request bodies, and cuts connections idle (or sending
    a request slowly) for ``timeout`` seconds; a request being answered, a
    long-poll say, is not idle. A request head must be in within
    ``header_timeout`` seconds of its first byte, its body within
    ``body_timeout`` seconds of the head's end; a body sent with one of the
    ``bodiless`` methods is refused (400 ``body_not_allowed``).
    """

    #: Seconds a request body has to arrive whole, from the end of its head.
    body_timeout = BODY_TIMEOUT

    displayTracebacks = False
    requestFactory = BoundedRequest
    # Twisted types a site's protocol as its HTTP/1.1-or-2 wrapper's factory;
    # any HTTPChannel builds a working channel (HTTP/1.1 only) as well.
    protocol = Channel  # type: ignore[assignment]

    def __init__(self, resource: IResource, *, max_body_bytes: int = 64 * 1024, timeout: float = 60,
                 header_timeout: float = 10, body_gate: BodyGate | None = None,
                 bodiless: frozenset[bytes] = frozenset(), turn: EndOfTurn | None = None,
                 **kwargs: object) -> None:
        # Bodies are opaque: Twisted would parse a POSTed form into
        # request.args and answer a malformed multipart body with a bare 400,
        # before our handlers could refuse it as JSON (415).
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, timeout=timeout, **kwargs)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout
        if body_gate is not None:
            self.body_gate = body_gate
        #: The methods whose requests take no body.
        self.bodiless = bodiless
        self.noisy = False
        #: The channels reading a request head, or body, and since when.
        self._heads: dict[Channel, float] = {}
        self._bodies: dict[Channel, float] = {}
        #: Where the channels' answers wait for the end of the turn: the
        #: service's, shared with the hubs' fan-out; else one of its own.
        self.turn = turn if turn is not None else EndOfTurn(self.reactor)
        self._head_sweep = LoopingCall(self.sweep_heads)
        self._head_sweep.clock = self.reactor

    def head_begun(self, channel: Channel) -> float:
        return self._begun(self._heads, channel)

    def head_ended(self, channel: Channel) -> None:
        self._heads.pop(channel, None)

    def body_begun(self, channel: Channel) -> float:
        return self._begun(self._bodies, channel)

    def body_ended(self, channel: Channel) -> None:
        self._bodies.pop(channel, None)

    def _begun(self, started: dict[Channel, float], channel: Channel) -> float:
        now = self.reactor.seconds()
        started[channel] = now
        if not self._head_sweep.running:
            self._head_sweep.start(min(1.0, self.header_timeout / 4, self.body_timeout / 4), now=False)
        return now

    def sweep_heads(self) -> None:
        """Cut the connections whose request head, or body, is late."""
        if not self._heads and not self._bodies:
            self._head_sweep.stop()
            return
        now = self.reactor.seconds()
        oldest = now - self.header_timeout
        for channel in [c for c, started in self._heads.items() if started <= oldest]:
            channel.head_too_slow()
        oldest = now - self.body_timeout
        for channel in [c for c, started in self._bodies.items() if started <= oldest]:
            channel.body_too_slow()

    def stopFactory(self) -> None:
        if self._head_sweep.running:
            self._head_sweep.stop()
        super().stopFactory()

    def getResourceFor(self, request: server.Request) -> IResource:
        # Klein answers a path that does not decode to UTF-8 with HTML (and
        # logs a traceback): refuse it here, as JSON.
        assert request.postpath is not None  # Request.process set it
        try:
            b"/".join(request.postpath).decode("utf-8")
        except UnicodeDecodeError:
            request.site = self
            return _Refusal(BadRequest("the URL path is not UTF-8 text", code="invalid_url"))
        found: IResource = super().getResourceFor(request)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        return found

    def log(self, request: http.Request) -> None:
        pass


class _Refusal(Resource):
    isLeaf = True

    def __init__(self, error: NotifierError) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves Resource.__init__ unannotated
        self.error = error

    def render(self, request: IRequest) -> bytes:
        return error_answer(request, self.error)
