"""The cost of reading a request head, per parser: the daemon's HTTP layer
(httptools, that is llhttp, with its bounds and checks) against raw
httptools and h11, with Twisted's own twisted.web as the baseline.

What is measured, per request, in-process (no sockets), from the bytes of a
request in hand to the point a handler is called (method, target, path
segments and query arguments, the headers by lower-cased name, the body
framed and read):

- ``notifier``: the daemon's layer, ``notifier.http.connection``: an
  ``HttpConnection`` of an ``HttpSite`` configured as each listener's
  (notifier.http.listeners: the public one's 4 KiB body bound and bodiless ``GET``,
  the api one's 64 KiB bound, a ``body_gate`` and answers at the end of the
  turn), on a ``StringTransport``, its clock a ``Clock``, its turn an
  ``EndOfTurn``. Included: the parser's callbacks, the head's bounds, the
  field dictionary (repeated fields checked and joined), the ``Request``
  (path segments, query arguments), the body's bounds and the body copied,
  the deadlines set and cancelled on the clock, and the route's checks up
  to the app's ``serve``, which keeps the request and returns
  ``NOT_DONE_YET``: answering is left out. The ``body_gate`` is a
  stand-in giving the route's bound without a look-up (the api's own reads
  the path and, for a body not whole with its head, the credentials).
  A connection is made per request, and dropped after; a connection made
  and dropped with no request is measured apart and taken off. For the
  pipelined pair, one connection: it reads the second request only once
  the first is answered, so the figure includes answering the first
  (``request.answer(b"")``: its head built, queued and written to the
  transport at the end of the turn) and the delayed call that goes on with
  the second (the clock advanced by 0); what that answer costs is printed
  apart, measured on one publish.
- ``httptools``: one ``HttpRequestParser`` per connection, fed the bytes,
  with a protocol object collecting the URL, the header fields and the
  body as uvicorn's ``httptools_impl`` does, then ``parse_url`` and the
  same ``notifier.http.request.Request`` the layer builds (with no
  connection).
- ``h11``: an ``h11.Connection`` per request (a server's state machine
  goes on to the next request only after an answer is sent), fed with
  ``receive_data`` and read with ``next_event`` up to ``EndOfMessage``,
  then the same ``Request``. For the pipelined pair, one connection,
  with a minimal answer sent between the two (``Response`` of
  ``Content-Length: 0``, ``EndOfMessage``, ``start_next_cycle``).
- ``twisted.web``: Twisted's own ``twisted.web.server.Site`` (not the
  daemon's: it has none any more) with a resource whose ``render``
  answers ``NOT_DONE_YET``, its ``HTTPChannel`` made per request on a
  ``StringTransport`` and fed the bytes up to ``render``; the cost of
  making and dropping a channel with no request is measured apart and
  taken off. A pipelined request is read by twisted.web only once the one
  before it is answered: ``-`` in that row.

The samples: a long-poll ``GET /sub/...`` as notifier.js sends it from
Chromium, a minimal curl ``GET``, a signed single publish ``POST`` with a
100-byte body as the PHP client sends it, two such publishes pipelined in
one buffer (µs per request), the Chromium long-poll in three pieces (a
partial head) and the publish with a chunked body in two pieces.

Each case runs a loop of about 0.1 s, repeated (``--repeat``, 7 by
default); the table gives the median µs per request and the spread
(lowest–highest repeat). On a shared machine, compare the columns of one
run with each other, not figures across runs::

    .venv/bin/pip install h11==0.16.0   # for the comparison only
    .venv/bin/python bench/parsers.py [--repeat 7] [--seconds 0.1]

``--conformance`` prints instead what each one does with odd requests
(no ``Host``, obs-fold, bare LF, ``Content-Length`` with chunked, ...):
reads them, refuses them (the status answered), or waits for more.
``--breakdown`` prints where the layer's time goes, on the samples read
whole: the layer without its head's bounds, without its deadlines, without
the route's checks (each with the part's method made to do nothing), and
``on_headers_complete``, the ``Request`` and llhttp's parse with callbacks
that do nothing, timed alone. The figures and what they mean are in
docs/performance.rst.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from io import BytesIO
from typing import Any

import httptools
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import server
from twisted.web.resource import Resource

from notifier.end_of_turn import EndOfTurn
from notifier.http.connection import HttpConnection, HttpSite
from notifier.http.listeners import PUBLIC_MAX_BODY
from notifier.http.request import NOT_DONE_YET, Request

try:
    import h11
except ImportError:
    h11 = None

# The samples

TOKEN = b"v1.demo.orders-42.1796648000.Jm2u3Xc9yq0yF5Vb8tq2s6mJvVQm4rZ0h7k1b2c3d4e"
CHROMIUM_GET = (
    b"GET /sub/demo/orders-42?since=1733570000123-17&timeout=0&token=" + TOKEN + b" HTTP/1.1\r\n"
    b"Host: notify.example.org:8080\r\n"
    b"Connection: keep-alive\r\n"
    b"Pragma: no-cache\r\n"
    b"Cache-Control: no-cache\r\n"
    b'sec-ch-ua-platform: "Linux"\r\n'
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/131.0.0.0 Safari/537.36\r\n"
    b'sec-ch-ua: "Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24"\r\n'
    b"sec-ch-ua-mobile: ?0\r\n"
    b"Accept: */*\r\n"
    b"Origin: https://www.example.org\r\n"
    b"Sec-Fetch-Site: same-site\r\n"
    b"Sec-Fetch-Mode: cors\r\n"
    b"Sec-Fetch-Dest: empty\r\n"
    b"Referer: https://www.example.org/\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Accept-Language: en-GB,en;q=0.9,fr;q=0.8\r\n"
    b"\r\n")
CURL_GET = (b"GET /sub/demo/orders-42 HTTP/1.1\r\n"
            b"Host: 127.0.0.1:8080\r\n"
            b"User-Agent: curl/7.88.1\r\n"
            b"Accept: */*\r\n"
            b"\r\n")
BODY = b'{"data":{"event":"order.paid","order":4217,"total":"129.90","currency":"EUR"},"type":"order"}'
BODY = BODY + b" " * (100 - len(BODY))
PUBLISH_TARGET = b"/api/v1/centers/orders-42/messages?nonce=6f1c2a9e0b7d4c3e8a5f1b2d3c4e5f60"
PUBLISH_HEAD = (
    b"POST " + PUBLISH_TARGET + b" HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8081\r\n"
    b"User-Agent: notifier-php/1.0\r\n"
    b"Authorization: Notifier-HMAC-SHA256 publisher=demo, timestamp=1733570000, "
    b"signature=3b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c\r\n"
    b"Accept: application/json\r\n"
    b"Content-Type: application/json\r\n")
PUBLISH = PUBLISH_HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
CHUNKED = (PUBLISH_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
           + b"%x\r\n" % 60 + BODY[:60] + b"\r\n" + b"%x\r\n" % 40 + BODY[60:] + b"\r\n0\r\n\r\n")
assert len(BODY) == 100

#: name, pieces as they come, requests in them, which listener.
SAMPLES: list[tuple[str, list[bytes], int, str]] = [
    (f"long-poll GET, Chromium ({len(CHROMIUM_GET)} B)", [CHROMIUM_GET], 1, "public"),
    (f"GET, curl ({len(CURL_GET)} B)", [CURL_GET], 1, "public"),
    (f"publish POST, PHP client ({len(PUBLISH)} B)", [PUBLISH], 1, "api"),
    ("two publishes pipelined, per request", [PUBLISH + PUBLISH], 2, "api"),
    ("long-poll GET in 3 pieces (partial head)",
     [CHROMIUM_GET[:200], CHROMIUM_GET[200:500], CHROMIUM_GET[500:]], 1, "public"),
    ("publish, chunked body, 2 pieces",
     [CHUNKED[:len(PUBLISH_HEAD) + 40], CHUNKED[len(PUBLISH_HEAD) + 40:]], 1, "api"),
]

API_MAX_BODY = 64 * 1024


# (a) notifier: the daemon's own layer


class _App:
    """An app that keeps each request and leaves it unanswered."""

    def __init__(self) -> None:
        self.served: list[Request] = []

    def serve(self, request: Request) -> int:
        self.served.append(request)
        return NOT_DONE_YET


def _gate(request: Request, length: int | None, in_hand: bool) -> tuple[int, None]:
    """The api listener's ``body_gate``, standing in: the route's bound, no look-up."""
    return API_MAX_BODY, None


def notifier_site(listener: str) -> tuple[HttpSite, _App, Clock]:
    """An ``HttpSite`` set up as the listener's (notifier.http.listeners)."""
    app, clock = _App(), Clock()
    turn = EndOfTurn(clock)
    if listener == "public":
        site = HttpSite(app, clock, turn=turn, max_body_bytes=PUBLIC_MAX_BODY, bodiless=frozenset({b"GET", b"HEAD"}))
    else:
        site = HttpSite(app, clock, turn=turn, max_body_bytes=API_MAX_BODY, body_gate=_gate, at_end_of_turn=True)
    return site, app, clock


def notifier_case(pieces: list[bytes], requests: int, listener: str) -> Callable[[], object]:
    site, app, clock = notifier_site(listener)
    served = app.served
    build, advance = site.buildProtocol, clock.advance

    def once() -> object:
        served.clear()
        connection = build(None)
        connection.makeConnection(StringTransport())
        for piece in pieces:
            connection.dataReceived(piece)
        while len(served) < requests:  # the next one is read once this one is answered
            served[-1].answer(b"")
            advance(0)
        connection.connectionLost()
        return served

    result = once()
    assert len(result) == requests and not clock.calls, (result, clock.calls)  # type: ignore[arg-type]
    return once


def notifier_answer(pieces: list[bytes], listener: str) -> Callable[[], object]:
    """A request read, then answered with an empty body sent at the end of
    the turn: what answering adds to the pipelined pair's first request."""
    site, app, clock = notifier_site(listener)
    served = app.served
    build, advance = site.buildProtocol, clock.advance

    def once() -> object:
        served.clear()
        connection = build(None)
        transport = StringTransport()
        connection.makeConnection(transport)
        for piece in pieces:
            connection.dataReceived(piece)
        served[0].answer(b"")
        advance(0)
        connection.connectionLost()
        return transport

    assert once().value().startswith(b"HTTP/1.1 200 OK\r\n")  # type: ignore[attr-defined]
    return once


def notifier_setup(listener: str) -> Callable[[], object]:
    """Making and dropping a connection with no request, taken off the above."""
    site, _, _ = notifier_site(listener)

    def once() -> object:
        connection = site.buildProtocol(None)
        connection.makeConnection(StringTransport())
        connection.connectionLost()
        return connection

    return once


# (b) httptools, as uvicorn's httptools_impl reads a request


class _Collector:
    """The callbacks of one connection's ``HttpRequestParser``."""

    def __init__(self) -> None:
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.headers: dict[bytes, bytes] = {}
        self.body: BytesIO | None = None
        self.done: list[Request] = []
        self.parser: Any = None

    def on_message_begin(self) -> None:
        self.url = b""
        self.fields = []
        self.headers = {}
        self.body = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        if self.body is None:
            self.body = BytesIO()
        self.body.write(body)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self.url)
        target = parsed.path if parsed.query is None else parsed.path + b"?" + parsed.query
        parser = self.parser
        request = Request(None, parser.get_method(), target, self.headers, self.fields,  # type: ignore[arg-type]
                          parser.get_http_version() == "1.0")
        request.close = not parser.should_keep_alive()
        if self.body is not None:
            request.content = self.body
        self.done.append(request)


def httptools_case(pieces: list[bytes], requests: int, listener: str) -> Callable[[], object]:
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    collector.parser = parser
    feed = parser.feed_data
    done = collector.done

    def once() -> object:
        done.clear()
        for piece in pieces:
            feed(piece)
        return done

    result = once()
    assert len(result) == requests, result  # type: ignore[arg-type]
    return once


# (c) h11


def _h11_request(event: Any, body: BytesIO | None) -> Request:
    fields = list(event.headers)
    headers = dict(fields)
    request = Request(None, event.method, event.target, headers, fields,  # type: ignore[arg-type]
                      event.http_version == b"1.0")
    request.close = b"close" in headers.get(b"connection", b"").lower()
    if body is not None:
        request.content = body
    return request


def h11_case(pieces: list[bytes], requests: int, listener: str) -> Callable[[], object]:
    Connection, SERVER, NEED_DATA = h11.Connection, h11.SERVER, h11.NEED_DATA
    H11Request, Data, EndOfMessage = h11.Request, h11.Data, h11.EndOfMessage
    answer = h11.Response(status_code=200, headers=[(b"content-length", b"0")])

    def once() -> object:
        done = []
        conn = Connection(SERVER)
        head: Any = None
        body: BytesIO | None = None
        for piece in pieces:
            conn.receive_data(piece)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                kind = type(event)
                if kind is H11Request:
                    head, body = event, None
                elif kind is Data:
                    if body is None:
                        body = BytesIO()
                    body.write(event.data)
                elif kind is EndOfMessage:
                    done.append(_h11_request(head, body))
                    if len(done) < requests:  # the next one is read once this one is answered
                        conn.send(answer)
                        conn.send(EndOfMessage())
                        conn.start_next_cycle()
                    else:
                        break
                else:
                    break
        return done

    result = once()
    assert len(result) == requests, result  # type: ignore[arg-type]
    return once


# (d) twisted.web: Twisted's own Site, as a baseline


class _Rendered(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[server.Request] = []

    def render(self, request: server.Request) -> object:
        self.rendered.append(request)
        return server.NOT_DONE_YET


def _twisted_site(resource: Resource) -> server.Site:
    site = server.Site(resource, reactor=Clock())
    site.timeOut = None
    return site


def twisted_case(pieces: list[bytes], requests: int, listener: str) -> Callable[[], object] | None:
    if requests > 1:
        return None  # twisted.web reads a pipelined request after the one before is answered
    resource = _Rendered()
    site = _twisted_site(resource)
    rendered = resource.rendered

    def once() -> object:
        rendered.clear()
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        for piece in pieces:
            channel.dataReceived(piece)
        channel.connectionLost(None)
        return rendered

    result = once()
    assert len(result) == requests, result  # type: ignore[arg-type]
    return once


def twisted_setup() -> Callable[[], object]:
    """Making and dropping a channel with no request, taken off the above."""
    site = _twisted_site(_Rendered())

    def once() -> object:
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.connectionLost(None)
        return channel

    return once


# What each one does with odd requests (--conformance)

_GET = b"GET /sub/demo/c HTTP/1.1\r\nHost: h\r\n"
_POST = b"POST /api/v1/centers/c/messages HTTP/1.1\r\nHost: h\r\n"
#: name, request (whole: head and body).
ODD: list[tuple[str, bytes]] = [
    ("plain GET (for reference)", _GET + b"\r\n"),
    ("no Host", b"GET /sub/demo/c HTTP/1.1\r\nAccept: */*\r\n\r\n"),
    ("two Host fields", _GET + b"Host: other\r\n\r\n"),
    ("obs-fold (continuation line)", _GET + b"X-A: one\r\n two\r\n\r\n"),
    ("whitespace before the colon", _GET + b"Accept : */*\r\n\r\n"),
    ("bare LF line ends", b"GET /sub/demo/c HTTP/1.1\nHost: h\n\n"),
    ("bare CR in a value", _GET + b"X-A: a\rb\r\n\r\n"),
    ("NUL in a value", _GET + b"X-A: a\x00b\r\n\r\n"),
    ("obs-text (0xff) in a value", _GET + b"X-A: caf\xff\r\n\r\n"),
    ("empty line before the request line", b"\r\n" + _GET + b"\r\n"),
    ("fragment in the target", b"GET /sub/demo/c#x HTTP/1.1\r\nHost: h\r\n\r\n"),
    ("bad %-escape in the target", b"GET /sub/demo/c%zz HTTP/1.1\r\nHost: h\r\n\r\n"),
    ('"{|}\\^` in the target', b'GET /sub/demo/c"{|}\\^` HTTP/1.1\r\nHost: h\r\n\r\n'),
    ("byte 0x80 in the target", b"GET /sub/demo/c\x80 HTTP/1.1\r\nHost: h\r\n\r\n"),
    ("two spaces after the method", b"GET  /sub/demo/c HTTP/1.1\r\nHost: h\r\n\r\n"),
    ("HTTP/1.0", b"GET /sub/demo/c HTTP/1.0\r\nHost: h\r\n\r\n"),
    ("GET with Content-Length: 0", _GET + b"Content-Length: 0\r\n\r\n"),
    ("POST, Content-Length: 2", _POST + b"Content-Length: 2\r\n\r\n{}"),
    ("POST, Content-Length: 002", _POST + b"Content-Length: 002\r\n\r\n{}"),
    ("POST, Content-Length: +2", _POST + b"Content-Length: +2\r\n\r\n{}"),
    ("POST, Content-Length: 2, 2", _POST + b"Content-Length: 2, 2\r\n\r\n{}"),
    ("POST, two Content-Length 2 and 3", _POST + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x"),
    ("POST, Content-Length and chunked", _POST + b"Content-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2\r\n{}\r\n0\r\n\r\n"),
    ("POST, Transfer-Encoding: gzip, chunked", _POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
     b"2\r\n{}\r\n0\r\n\r\n"),
    ("POST, Transfer-Encoding: chunked, gzip", _POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n{}"),
    ("POST, chunk size with extension", _POST + b"Transfer-Encoding: chunked\r\n\r\n2;x=y\r\n{}\r\n0\r\n\r\n"),
    ("POST, chunk with LF only", _POST + b"Transfer-Encoding: chunked\r\n\r\n2\n{}\n0\n\n"),
]


def _reads(data: bytes, body: bytes) -> str:
    return "reads" + (f" (body {body!r})" if data.startswith(b"POST") else "")


def _status(written: bytes) -> str:
    return written.split(b"\r\n", 1)[0].split(b" ", 2)[1].decode() if written else "waits"


def _notifier_reads(data: bytes) -> str:
    site, app, clock = notifier_site("api" if data.startswith(b"POST") else "public")
    connection: HttpConnection = site.buildProtocol(None)
    transport = StringTransport()
    connection.makeConnection(transport)
    connection.dataReceived(data)
    clock.advance(0)  # an answer that waits for the end of the turn
    if app.served:
        connection.connectionLost()
        return _reads(data, app.served[0].body())
    written = transport.value()
    connection.connectionLost()
    return _status(written)


def _httptools_reads(data: bytes) -> str:
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    collector.parser = parser
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return "400"
    if not collector.done:
        return "waits"
    return _reads(data, collector.done[0].body())


def _h11_reads(data: bytes) -> str:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                return "waits"
            if type(event) is h11.Data:
                body += event.data
            if type(event) is h11.EndOfMessage:
                return _reads(data, body)
    except h11.RemoteProtocolError:
        return "400"


def _twisted_reads(data: bytes) -> str:
    resource = _Rendered()
    channel = _twisted_site(resource).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    if resource.rendered:
        request = resource.rendered[0]
        body = request.content.read() if request.content is not None else b""
        channel.connectionLost(None)
        return _reads(data, body)
    written = transport.value()
    channel.connectionLost(None)
    return _status(written)


def conformance() -> None:
    """What each one does with odd requests: read them (``reads``), refuse
    them (the status answered), or wait for more."""
    columns: list[tuple[str, Callable[[bytes], str]]] = [("notifier", _notifier_reads),
                                                          ("httptools", _httptools_reads)]
    if h11 is not None:
        columns.append(("h11", _h11_reads))
    columns.append(("twisted.web", _twisted_reads))
    widths = [40] + [24] * len(columns)
    titles = ["request"] + [title for title, _ in columns]
    print("  ".join(title.ljust(width) for title, width in zip(titles, widths, strict=True)))
    for name, data in ODD:
        cells = [name] + [reads(data) for _, reads in columns]
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)))


# Where the layer's time goes (--breakdown)


class _Unbounded(HttpConnection):
    """The layer without the head's bounds: the callbacks keep what they get."""

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))


class _Untimed(HttpConnection):
    """The layer without its deadlines: no timer set, reset or cancelled."""

    def _arm(self) -> None:
        pass


class _Unrouted(HttpConnection):
    """The layer without the route's checks (``*``, a UTF-8 path)."""

    def _route(self, request: Request) -> Any:
        return self.site.app.serve(request)


class _Nothing:
    """The layer's callbacks, doing nothing."""

    def on_message_begin(self) -> None:
        pass

    def on_url(self, url: bytes) -> None:
        pass

    def on_header(self, name: bytes, value: bytes) -> None:
        pass

    def on_headers_complete(self) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        pass


def _layer(kind: type[HttpConnection], data: bytes, listener: str) -> tuple[Callable[[], object],
                                                                          Callable[[], object]]:
    """A request read by a connection of *kind*, and a connection of it made
    and dropped with no request."""
    site, app, _ = notifier_site(listener)
    served = app.served

    def once() -> object:
        served.clear()
        connection = kind(site, None)
        connection.makeConnection(StringTransport())
        connection.dataReceived(data)
        connection.connectionLost()
        return served

    def setup() -> object:
        connection = kind(site, None)
        connection.makeConnection(StringTransport())
        connection.connectionLost()
        return connection

    assert len(once()) == 1  # type: ignore[arg-type]
    return once, setup


def _parts(data: bytes, listener: str) -> list[Callable[[], object]]:
    """Parts of the layer timed alone, on a request it read: its
    ``on_headers_complete``, the ``Request`` it builds, and llhttp's parse
    with callbacks that do nothing."""
    site, app, _ = notifier_site(listener)
    connection = site.buildProtocol(None)
    connection.makeConnection(StringTransport())
    connection.dataReceived(data)
    request = app.served[0]
    method, uri, fields, headers = request.method, b"".join(connection._url), connection._fields, request.headers

    def headers_complete() -> object:
        connection.reading = None
        connection.on_headers_complete()
        return connection.reading

    def build() -> object:
        return Request(connection, method, uri, headers, fields)

    feed = httptools.HttpRequestParser(_Nothing()).feed_data

    def parse() -> object:
        return feed(data)

    return [headers_complete, build, parse]


def breakdown(seconds: float, repeat: int) -> None:
    """Where the layer's time goes, on the samples read whole: the layer as
    measured in the table, then without each of its parts (the difference
    is what the part costs), then parts timed alone."""
    titles = ["sample", "layer", "w/o bounds", "w/o deadlines", "w/o route", "headers_complete", "Request",
              "llhttp, no-op"]
    widths = [36, 8, 11, 14, 10, 17, 8, 13]
    print(f"µs per request, median of {repeat} loops")
    print("  ".join(title.ljust(width) for title, width in zip(titles, widths, strict=True)))

    def median(func: Callable[[], object]) -> float:
        return statistics.median(per_call_ns(func, seconds, repeat)) / 1000

    for name, pieces, requests, listener in SAMPLES:
        if len(pieces) > 1 or requests > 1:
            continue
        data = pieces[0]
        cells = [name.split(" (")[0]]
        for kind in (HttpConnection, _Unbounded, _Untimed, _Unrouted):
            once, setup = _layer(kind, data, listener)
            cells.append(f"{median(once) - median(setup):.1f}")
        cells += [f"{median(func):.1f}" for func in _parts(data, listener)]
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)), flush=True)
    print("headers_complete: on_headers_complete alone (the field dictionary, the target's and version's "
          "checks, the Request, the body's framing and bound); Request: its constructor alone; llhttp, "
          "no-op: the parse with the layer's callbacks doing nothing")


# timing


def per_call_ns(func: Callable[[], object], seconds: float, repeat: int) -> list[float]:
    """Nanoseconds per call of *func*, one figure per repeat of a loop of
    about *seconds*."""
    loops = 1
    while True:  # calibrate
        start = time.perf_counter_ns()
        for _ in range(loops):
            func()
        spent = time.perf_counter_ns() - start
        if spent >= seconds * 1e9 / 5:
            break
        loops *= 2
    loops = max(1, int(loops * seconds * 1e9 / max(spent, 1)))
    figures = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter_ns()
        for _ in range(loops):
            func()
        figures.append((time.perf_counter_ns() - start) / loops)
    return figures


def _summary(request: Request) -> tuple[object, ...]:
    """What a handler gets of a request, to check the parsers agree."""
    return (request.method, request.uri, request.path, request.segments, request.args, request.headers,
            request.clientproto, request.close, request.body())


def _cell(figures: list[float] | None) -> str:
    if figures is None:
        return "-"
    return f"{statistics.median(figures):.1f} ({min(figures):.1f}–{max(figures):.1f})"


def _us(figures: list[float]) -> list[float]:
    return [f / 1000 for f in figures]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="repeats of each loop (default 7)")
    parser.add_argument("--seconds", type=float, default=0.1, help="length of each loop (default 0.1 s)")
    parser.add_argument("--conformance", action="store_true",
                        help="instead: what each one does with odd requests (reads, refuses, waits)")
    parser.add_argument("--breakdown", action="store_true",
                        help="instead: where the layer's time goes, on the samples read whole")
    options = parser.parse_args()
    if h11 is None:
        print("h11 not installed: its column is left out. For the comparison:\n"
              "    .venv/bin/pip install h11==0.16.0\n"
              "(measurement only: it is not a dependency of notifier)", file=sys.stderr)
    if options.conformance:
        conformance()
        return 0
    seconds, repeat = options.seconds, options.repeat
    if options.breakdown:
        breakdown(seconds, repeat)
        return 0
    print(f"CPython {platform.python_version()}, {platform.machine()}; Twisted {version('Twisted')}, "
          f"httptools {httptools.__version__}, h11 {getattr(h11, '__version__', '-')}; "
          f"µs per request, median (lowest–highest) of {repeat}")
    setups = {listener: statistics.median(per_call_ns(notifier_setup(listener), seconds, repeat))
              for listener in ("public", "api")}
    print(f"(notifier: a connection made and dropped, {setups['public'] / 1000:.1f} µs on the public "
          f"listener's site, {setups['api'] / 1000:.1f} on the api's, taken off its column)")
    read = statistics.median(per_call_ns(notifier_case([PUBLISH], 1, "api"), seconds, repeat))
    answered = statistics.median(per_call_ns(notifier_answer([PUBLISH], "api"), seconds, repeat))
    print(f"(notifier: answering a publish with an empty body, sent at the end of the turn, "
          f"{(answered - read) / 1000:.1f} µs; in the pipelined pair, once for the two)")
    setup = per_call_ns(twisted_setup(), seconds, repeat)
    twisted_setup_median = statistics.median(setup)
    print(f"(twisted.web: a channel made and dropped, {_cell(_us(setup))} µs, taken off its column)")
    makers: list[tuple[str, Callable[..., Callable[[], object] | None]]] = [
        ("notifier", notifier_case), ("httptools", httptools_case)]
    if h11 is not None:
        makers.append(("h11", h11_case))
    makers.append(("twisted.web", twisted_case))
    widths = [44] + [22] * len(makers)
    titles = ["sample"] + [title for title, _ in makers]
    print("  ".join(title.ljust(width) for title, width in zip(titles, widths, strict=True)))
    for name, pieces, requests, listener in SAMPLES:
        cells = [name]
        seen: list[tuple[object, ...]] | None = None
        for title, make in makers:
            func = make(pieces, requests, listener)
            if func is None:
                cells.append(_cell(None))
                continue
            if title != "twisted.web":  # each parser must have read the same requests
                got = [_summary(request) for request in func()]  # type: ignore[attr-defined]
                assert seen is None or got == seen, (title, got, seen)
                seen = got
            figures = per_call_ns(func, seconds, repeat)
            if title == "notifier":
                figures = [f - setups[listener] for f in figures]
            elif title == "twisted.web":
                figures = [f - twisted_setup_median for f in figures]
            cells.append(_cell([f / 1000 / requests for f in figures]))
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
