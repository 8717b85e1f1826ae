"""The cost of reading a request head, per parser: the front's own reading
against httptools (llhttp) and h11, with twisted.web as the baseline.

What is measured, per request, in-process (no sockets), from the bytes of a
request in hand to the point a handler could be called (method, target,
path and query, the headers the daemon uses by lower-cased name, the body
framed and read):

- ``front``: ``notifier.front.Front._read``, the front's own code path,
  with only the answering (``_serve``) left out: the search for the end of
  the head, ``Plain.head`` (the ``HEAD`` regex), ``FIELD`` on the header
  lines, its checks, the ``PlainRequest`` it builds and the body written
  into it. Partial heads and chunked bodies are not the front's (it hands
  them to twisted.web): ``-`` in those rows.
- ``httptools``: one ``HttpRequestParser`` per connection, fed the bytes,
  with a protocol object collecting the URL, the headers (lower-cased
  names) and the body as uvicorn's ``httptools_impl`` does, then
  ``parse_url`` and the same ``PlainRequest`` the front builds.
- ``h11``: an ``h11.Connection`` per request (a server's state machine
  goes on to the next request only after an answer is sent), fed with
  ``receive_data`` and read with ``next_event`` up to ``EndOfMessage``,
  then the same ``PlainRequest``. For the pipelined pair, one connection,
  with a minimal answer sent between the two (``Response`` of
  ``Content-Length: 0``, ``EndOfMessage``, ``start_next_cycle``).
- ``twisted.web``: the daemon's ``Channel`` of a ``QuietSite`` (what every
  request the front does not take goes through today), made per request
  on a ``StringTransport`` and fed the bytes up to the resource's
  ``render`` (which answers ``NOT_DONE_YET``); the cost of making and
  dropping a channel with no request is measured apart and taken off. A
  pipelined request is read by twisted.web only once the one before it is
  answered: ``-`` in that row.

The samples: a long-poll ``GET /sub/...`` as notifier.js sends it from
Chromium, a minimal curl ``GET``, a signed single publish ``POST`` with a
100-byte body as the PHP client sends it, two such publishes pipelined in
one buffer (µs per request), the Chromium long-poll in three pieces (a
partial head) and the publish with a chunked body in two pieces.

Each case runs a loop of about 0.1 s, repeated (``--repeat``, 7 by
default); the table gives the median µs per request and the spread
(lowest–highest repeat). On a shared machine, compare the columns of one
run with each other, not figures across runs::

    .venv/bin/pip install httptools==0.9.0 h11==0.16.0   # for the comparison
    .venv/bin/python bench/parsers.py [--repeat 7] [--seconds 0.1]

``--conformance`` prints instead what each one does with odd requests
(no ``Host``, obs-fold, bare LF, ``Content-Length`` with chunked, ...):
reads them, refuses them, waits, or (the front) hands them to twisted.web.
The figures and what they mean are in docs/performance.rst.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import server
from twisted.web.resource import Resource

from notifier.api import is_publish
from notifier.front import Front, Plain, PlainRequest
from notifier.httpserver import QuietSite

try:
    import httptools
except ImportError:
    httptools = None
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

#: name, pieces as they come, requests in them, which listener's front.
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

PLAIN = {
    "public": Plain(b"GET", b"/sub/", None, upgrades=True),
    "api": Plain(b"POST", b"/", None, takes=is_publish, at_end_of_turn=True, max_body=64 * 1024),
}


# (a) the front


class _Site:
    """What ``Front._read`` uses of its site, for requests whole in hand."""

    timeOut = 0
    body_gate = None

    def __init__(self, plain: Plain) -> None:
        self.plain = plain


class _Front(Front):
    """The front, its answering left out: the request it read is kept."""

    def _serve(self, request: PlainRequest) -> None:
        self.read.append(request)
        self.current = None

    def _hand_over(self, data: bytes) -> None:
        raise AssertionError("the front does not take this sample")


def front_case(pieces: list[bytes], requests: int, listener: str) -> Callable[[], object] | None:
    if len(pieces) > 1 or b"Transfer-Encoding" in pieces[0]:
        return None  # handed to twisted.web
    front = _Front(_Site(PLAIN[listener]), None)  # type: ignore[arg-type]
    front.transport = object()  # type: ignore[assignment]
    data = pieces[0]
    read: list[PlainRequest] = []
    front.read = read  # type: ignore[attr-defined]

    def once() -> object:
        read.clear()
        front._read(data)
        return read

    result = once()
    assert len(result) == requests, result  # type: ignore[arg-type]
    return once


# (b) httptools, as uvicorn's httptools_impl reads a request


class _Collector:
    """The callbacks of one connection's ``HttpRequestParser``."""

    def __init__(self, front: Any, mounted: int) -> None:
        self.front = front
        self.mounted = mounted
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: BytesIO | None = None
        self.done: list[PlainRequest] = []
        self.parser: Any = None

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
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
        request = PlainRequest(self.front, self.parser.get_method(), target, self.headers, self.mounted)
        request.close = not self.parser.should_keep_alive()
        if self.body is not None:
            request.content = self.body
        self.done.append(request)


def httptools_case(pieces: list[bytes], requests: int, listener: str) -> Callable[[], object]:
    collector = _Collector(None, PLAIN[listener].mounted)
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


def _h11_request(event: Any, body: BytesIO | None, mounted: int) -> PlainRequest:
    headers = dict(event.headers)
    request = PlainRequest(None, event.method, event.target, headers, mounted)  # type: ignore[arg-type]
    if body is not None:
        request.content = body
    return request


def h11_case(pieces: list[bytes], requests: int, listener: str) -> Callable[[], object]:
    mounted = PLAIN[listener].mounted
    Connection, SERVER, NEED_DATA = h11.Connection, h11.SERVER, h11.NEED_DATA
    Request, Data, EndOfMessage = h11.Request, h11.Data, h11.EndOfMessage
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
                if kind is Request:
                    head, body = event, None
                elif kind is Data:
                    if body is None:
                        body = BytesIO()
                    body.write(event.data)
                elif kind is EndOfMessage:
                    done.append(_h11_request(head, body, mounted))
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


# (d) twisted.web, today's way for what the front does not take


class _Rendered(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[server.Request] = []

    def render(self, request: server.Request) -> object:
        self.rendered.append(request)
        return server.NOT_DONE_YET


def twisted_case(pieces: list[bytes], requests: int, listener: str) -> Callable[[], object] | None:
    if requests > 1:
        return None  # twisted.web reads a pipelined request after the one before is answered
    resource = _Rendered()
    site = QuietSite(resource, reactor=Clock(), max_body_bytes=64 * 1024)
    site.timeOut = None
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
    site = QuietSite(_Rendered(), reactor=Clock(), max_body_bytes=64 * 1024)
    site.timeOut = None

    def once() -> object:
        channel = site.buildProtocol(None)
        channel.makeConnection(StringTransport())
        channel.connectionLost(None)
        return channel

    return once


# What each one does with requests off the plain path (--conformance)

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


def _front_reads(data: bytes) -> str:
    plain = PLAIN["api"] if data.startswith(b"POST") else PLAIN["public"]
    front = _Front(_Site(plain), None)  # type: ignore[arg-type]
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return "twisted.web"
    request, _ = front._plain(data[:end + 4])
    return "twisted.web" if request is None else "reads"


def _httptools_reads(data: bytes) -> str:
    collector = _Collector(None, 1)
    parser = httptools.HttpRequestParser(collector)
    collector.parser = parser
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return "400"
    if not collector.done:
        return "waits"
    request = collector.done[0]
    return "reads" + (f" (body {request.content.getvalue()!r})" if data.startswith(b"POST") else "")


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
                return "reads" + (f" (body {body!r})" if data.startswith(b"POST") else "")
    except h11.RemoteProtocolError:
        return "400"


def _twisted_reads(data: bytes) -> str:
    resource = _Rendered()
    site = QuietSite(resource, reactor=Clock(), max_body_bytes=64 * 1024)
    site.timeOut = None
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    if resource.rendered:
        request = resource.rendered[0]
        body = request.content.read() if request.content is not None else b""
        channel.connectionLost(None)
        return "reads" + (f" (body {body!r})" if data.startswith(b"POST") else "")
    channel.send_queued()  # an answer waits for the end of the turn
    written = transport.value()
    channel.connectionLost(None)
    return written.split(b"\r\n", 1)[0].split(b" ", 2)[1].decode() if written else "waits"


def conformance() -> None:
    """What each one does with odd requests: read them (``reads``), refuse
    them (a status), wait for more, or (the front) hand them to twisted.web."""
    columns: list[tuple[str, Callable[[bytes], str]]] = [("front", _front_reads)]
    if httptools is not None:
        columns.append(("httptools", _httptools_reads))
    if h11 is not None:
        columns.append(("h11", _h11_reads))
    columns.append(("twisted.web", _twisted_reads))
    widths = [40] + [24] * len(columns)
    titles = ["request"] + [title for title, _ in columns]
    print("  ".join(title.ljust(width) for title, width in zip(titles, widths, strict=True)))
    for name, data in ODD:
        cells = [name] + [reads(data) for _, reads in columns]
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)))


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


def _summary(request: PlainRequest) -> tuple[object, ...]:
    """What a handler gets of a request, to check the parsers agree."""
    return (request.method, request.uri, request.path, request.postpath, request.args, request.received,
            request.close, request.content.getvalue())


def _cell(figures: list[float] | None) -> str:
    if figures is None:
        return "-"
    return f"{statistics.median(figures):.1f} ({min(figures):.1f}–{max(figures):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="repeats of each loop (default 7)")
    parser.add_argument("--seconds", type=float, default=0.1, help="length of each loop (default 0.1 s)")
    parser.add_argument("--conformance", action="store_true",
                        help="instead: what each one does with odd requests (accepts, refuses, hands over)")
    options = parser.parse_args()
    missing = [name for name, module in (("httptools", httptools), ("h11", h11)) if module is None]
    if missing:
        print(f"{' and '.join(missing)} not installed: their columns are left out. For the comparison:\n"
              "    .venv/bin/pip install httptools==0.9.0 h11==0.16.0\n"
              "(measurement only: they are not dependencies of notifier)", file=sys.stderr)
    if options.conformance:
        conformance()
        return 0
    print(f"CPython {platform.python_version()}, {platform.machine()}; "
          f"httptools {getattr(httptools, '__version__', '-')}, h11 {getattr(h11, '__version__', '-')}; "
          f"µs per request, median (lowest–highest) of {options.repeat}")
    setup = per_call_ns(twisted_setup(), options.seconds, options.repeat)
    setup_median = statistics.median(setup)
    print(f"(twisted.web: a channel made and dropped, {_cell([f / 1000 for f in setup])} µs, "
          "taken off its column)")
    makers: list[tuple[str, Callable[..., Callable[[], object] | None]]] = [("front", front_case)]
    if httptools is not None:
        makers.append(("httptools", httptools_case))
    if h11 is not None:
        makers.append(("h11", h11_case))
    makers.append(("twisted.web", twisted_case))
    widths = [44] + [22] * len(makers)
    titles = ["sample"] + [title for title, _ in makers]
    print("  ".join(title.ljust(width) for title, width in zip(titles, widths, strict=True)))
    for name, pieces, requests, listener in SAMPLES:
        cells = [name]
        read: list[tuple[object, ...]] | None = None
        for title, make in makers:
            func = make(pieces, requests, listener)
            if func is None:
                cells.append(_cell(None))
                continue
            if title != "twisted.web":  # each parser must have read the same requests
                got = [_summary(request) for request in func()]  # type: ignore[attr-defined]
                assert read is None or got == read, (title, got, read)
                read = got
            figures = per_call_ns(func, options.seconds, options.repeat)
            if title == "twisted.web":
                figures = [f - setup_median for f in figures]
            cells.append(_cell([f / 1000 / requests for f in figures]))
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
