"""Where Klein begins: a request the api listener's connection read,
answered by a twisted.web resource (the Klein app of the operator and
publisher API).

twisted.web's ``Request`` is made on a channel of this module's
(``WebChannel``), which is what the request asks of its channel (its
transport, its addresses, its head and body written, its end), as Twisted's
own HTTP/2 streams are. The head and body it writes become the answer of
the connection's :class:`~notifier.http.request.Request`; it reads nothing
itself: its method, target, headers and body are those read already.
"""

from __future__ import annotations

from collections.abc import Iterable
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import NO_BODY_CODES
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, getChildForRequest

from notifier.http.request import NOT_DONE_YET, Request


class WebRequest(server.Request):
    """A twisted.web request, with what the connection learnt of its body
    before reading it (notifier.http.connection)."""

    #: Over its route's bound (discarded), or refused from its head.
    body_too_large = False
    body_refused = False

    def body(self) -> bytes:
        assert self.content is not None  # given before the request is received (KleinSeam.serve)
        self.content.seek(0)
        body: bytes = self.content.read()
        return body


class _Site(server.Site):
    """The resource, for the requests made on its channels (never a
    listener's factory)."""

    def __init__(self, resource: IResource) -> None:
        super().__init__(resource)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def getResourceFor(self, request: server.Request) -> IResource:
        request.site = self
        root = self.resource
        found: IResource = getChildForRequest(_Headless(root) if request.method == b"HEAD" else root, request)
        return found


class WebChannel:
    """The channel of one twisted.web request, made of the connection's
    request *request*."""

    factory = None  # no access log: URLs may carry tokens

    def __init__(self, request: Request, site: _Site) -> None:
        self.request = request
        self.site = site
        self.transport = request.transport
        self.web: WebRequest | None = None

    # what a twisted.web request asks of its channel

    def getPeer(self) -> IAddress:
        peer: IAddress = self.transport.getPeer()
        return peer

    def getHost(self) -> IAddress:
        host: IAddress = self.transport.getHost()
        return host

    def isSecure(self) -> bool:
        return bool(getattr(self.transport, "TLS", False))

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        fields = [(name, value) for name, values in headers.getAllRawHeaders() for value in values
                  if name.lower() not in (b"server", b"date")]
        status = int(code)
        if self.request.clientproto == b"HTTP/1.0" and not headers.hasHeader(b"content-length") \
                and status not in NO_BODY_CODES and self.request.method != b"HEAD":
            self.request.close = True  # not chunked on HTTP/1.0: the answer ends with the connection
        self.request.start(status, fields)

    def write(self, data: bytes) -> None:
        self.request.send_raw(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.request.send_raw(b"".join(data))

    def requestDone(self, web: server.Request) -> None:
        self.request.end_raw()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.request.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.request.unregisterProducer()

    def loseConnection(self) -> None:
        self.request.close = True
        self.request.end_raw()


class KleinSeam:
    """Answers the requests of a listener given to it with a twisted.web
    resource (a Klein app's)."""

    def __init__(self, resource: IResource) -> None:
        self.site = _Site(resource)

    def serve(self, request: Request) -> int:
        channel = WebChannel(request, self.site)
        # Twisted leaves server.Request's methods unannotated.
        web = channel.web = WebRequest(channel, parsePOSTFormSubmission=False)  # type: ignore[no-untyped-call]
        for name, value in request.fields:
            web.requestHeaders.addRawHeader(name, value)
        web.content = BytesIO(request.body())
        web.content.seek(0, 2)  # at its end, as twisted.web leaves a body it read
        web.body_too_large = request.body_too_large
        web.body_refused = request.body_refused
        request.notifyFinish().addErrback(self._gone, web)
        web.requestReceived(request.method, request.uri, request.clientproto)  # type: ignore[no-untyped-call]
        return NOT_DONE_YET


    @staticmethod
    def _gone(failure: Failure, web: WebRequest) -> None:
        web.connectionLost(failure)  # type: ignore[no-untyped-call]  # unannotated in Twisted


class _Headless:
    """A resource answering HEAD: its GET answer's length, without the body
    (which twisted.web would drop, logging the request's URI)."""

    isLeaf = True

    def __init__(self, resource: IResource) -> None:
        self.resource = resource

    def render(self, request: server.Request) -> object:
        body = self.resource.render(request)
        if isinstance(body, bytes) and body:
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        return body
