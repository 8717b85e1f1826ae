"""Request bodies at the edge of both listeners: none on a subscription's
GET or HEAD, each within a deadline from its head, none read before the
credentials in its head hold (nor a ``100 Continue`` sent); and what every
answer carries or leaves out of the log whatever the request (HEAD, nosniff)."""

from __future__ import annotations

import base64
import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import provider

from notifier.end_of_turn import EndOfTurn
from notifier.http.connection import HttpConnection, HttpSite
from notifier.http.request import Request
from tests.raw import RawClient, complete, connect, expect_raw_error, parse_response
from tests.support import (
    make_center,
    published,
    running,
    setup_site,
    sign,
    signature_header,
    sleep,
    subscriber_token,
    until,
)

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
TARGET = "/api/v1/centers/news/messages"


def head(method: str, target: str, *headers: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def basic(user: str, secret: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def expect_error(data: bytes, status: int, code: str) -> dict[bytes, bytes]:
    """The one documented error in *data*; its headers."""
    got, headers, body = parse_response(data)
    expect_raw_error(got, headers, body, status, code)
    assert data.count(b"HTTP/1.1 ") == 1, data
    return headers


class _Echo:
    """Answers a request with its body; 401 for one whose body was refused."""

    def serve(self, request: Request) -> bytes:
        if request.body_refused:
            request.setResponseCode(401)
            return b"refused"
        return b"got " + request.body()


def _connected(protocol: Any) -> StringTransport:
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    return transport


# A body drip-fed is cut at its deadline (unit, on a clock)


def _drip(protocol: Any, clock: Clock, transport: StringTransport, seconds: float) -> None:
    """A byte of body every 0.5 s, for *seconds*, or until the connection is closed."""
    for _ in range(int(seconds / 0.5)):
        if transport.disconnecting:
            return
        protocol.dataReceived(b"x")
        clock.advance(0.5)


def _site(clock: Clock, timeout: float = 60, **kwargs: Any) -> HttpSite:
    return HttpSite(_Echo(), clock, turn=EndOfTurn(clock), max_body_bytes=1000, timeout=timeout, **kwargs)


def _posting(chunked: bool = False) -> tuple[Clock, Any, StringTransport]:
    """A connection of a site whose bodies have 3 s: its clock, its
    protocol and its transport."""
    clock = Clock()
    site = _site(clock)
    site.body_timeout = 3
    protocol = site.buildProtocol(PEER)
    return clock, protocol, _connected(protocol)


@pytest.mark.parametrize("framing", ["Content-Length: 1000", "Transfer-Encoding: chunked"])
def test_a_drip_fed_body_is_cut_at_its_deadline(framing: str) -> None:
    clock, protocol, transport = _posting()
    protocol.dataReceived(head("POST", "/x", framing))
    if framing.startswith("Transfer"):
        protocol.dataReceived(b"3e8\r\n")
    _drip(protocol, clock, transport, 10)  # each byte well within the idle timeout
    assert transport.disconnecting and clock.seconds() <= 4, clock.seconds()
    expect_error(transport.value(), 408, "body_timeout")
    protocol.connectionLost(connectionDone)


def test_a_body_in_time_is_read_and_the_deadline_is_for_bodies_only() -> None:
    clock, protocol, transport = _posting()
    protocol.dataReceived(head("POST", "/x", "Content-Length: 4"))
    _drip(protocol, clock, transport, 1)  # two bytes, then the rest in time
    protocol.dataReceived(b"yz")
    clock.advance(0)  # the end of the turn
    assert parse_response(transport.value())[2] == b"got xxyz"
    clock.advance(10)  # idle, past the body's deadline: within the idle timeout
    assert not transport.disconnecting
    protocol.connectionLost(connectionDone)


def test_a_stalled_body_is_cut_at_the_idle_timeout_if_that_comes_first() -> None:
    clock = Clock()
    site = _site(clock, timeout=2)
    protocol = site.buildProtocol(PEER)
    transport = _connected(protocol)
    protocol.dataReceived(head("POST", "/x", "Content-Length: 1000"))
    clock.advance(1)
    protocol.dataReceived(b"x")
    clock.advance(1.5)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting and clock.seconds() < site.body_timeout
    protocol.connectionLost(connectionDone)


# 100 Continue once the credentials hold (unit)


def _gated(verdict: Deferred[bool]) -> HttpSite:
    def gate(request: Request, length: int | None, in_hand: bool) -> tuple[int, Deferred[bool]]:
        return 1000, verdict

    return _site(Clock(), body_gate=gate)


def test_100_continue_waits_for_the_verdict_on_the_credentials() -> None:
    verdict: Deferred[bool] = Deferred()
    channel = _gated(verdict).buildProtocol(PEER)
    transport = _connected(channel)
    channel.dataReceived(head("POST", "/x", "Expect: 100-continue", "Content-Length: 2"))
    channel.site.turn.run()
    assert transport.value() == b"" and transport.producerState == "paused"
    verdict.callback(True)
    channel.site.turn.run()
    assert transport.value() == CONTINUE and transport.producerState == "producing"
    channel.dataReceived(b"hi")
    channel.site.turn.run()
    assert parse_response(transport.value()[len(CONTINUE):])[2] == b"got hi"
    channel.connectionLost(connectionDone)


def test_a_body_refused_is_answered_at_once_without_100_continue_and_closed() -> None:
    verdict: Deferred[bool] = Deferred()
    channel = _gated(verdict).buildProtocol(PEER)
    transport = _connected(channel)
    channel.dataReceived(head("POST", "/x", "Expect: 100-continue", "Content-Length: 900"))
    verdict.callback(False)
    channel.site.turn.run()
    status, headers, body = parse_response(transport.value())
    assert (status, body, headers[b"connection"]) == (401, b"refused", b"close")
    assert CONTINUE not in transport.value()
    assert transport.disconnecting  # the body is not read
    channel.connectionLost(connectionDone)


# the same over real sockets, on the daemon's listeners


@pytest_twisted.async_yield_fixture
async def quick() -> Any:
    """A daemon whose listeners give a body 1 s, and its publisher."""
    async with running() as daemon:
        daemon.service.public_port.factory.body_timeout = 1
        daemon.service.api_port.factory.body_timeout = 1
        auth = await setup_site(daemon)
        yield daemon, auth


def _api_port(daemon: Any) -> int:
    return int(daemon.service.api_port.getHost().port)


async def _sent(port: int, data: bytes) -> RawClient:
    client = await connect(port)
    client.send(data)
    return client


@contextlib.contextmanager
def connections_of(site: HttpSite) -> Iterator[list[HttpConnection]]:
    """The connections *site* makes meanwhile."""
    build = site.buildProtocol
    made: list[HttpConnection] = []

    def record(addr: Any) -> HttpConnection:
        made.append(build(addr))
        return made[-1]

    site.buildProtocol = record  # type: ignore[method-assign]
    try:
        yield made
    finally:
        site.buildProtocol = build  # type: ignore[method-assign]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("framing", ["Content-Length: 100000000", "Content-Length: 1", "Transfer-Encoding: chunked",
                                     "Transfer-Encoding: identity"])
@pytest_twisted.ensureDeferred
async def test_a_body_on_a_get_or_head_of_the_public_listener_is_refused_at_once(quick: Any, method: str,
                                                                                 framing: str) -> None:
    daemon, _ = quick
    for target in ("/sub/site/news?timeout=0", "/sub/site/news/last", "/healthz"):
        started = time.monotonic()
        client = await _sent(daemon.public_port, head(method, target, framing))
        assert await client.wait_closed(3), (target, bytes(client.data))
        assert time.monotonic() - started < 2
        headers = expect_error(bytes(client.data), 400, "body_not_allowed")
        assert headers[b"connection"] == b"close"
    # An empty body is no body.
    client = await _sent(daemon.public_port, head("GET", "/healthz", "Content-Length: 0", "Connection: close"))
    assert await client.wait_closed(3)
    assert parse_response(bytes(client.data))[0] == 200


DRIPS = {
    "public listener": ("public", head("POST", "/sub/site/news", "Content-Length: 1000")),
    "api listener, through Klein": ("api", head("POST", "/api/v1/messages", "{auth}", "Content-Length: 1000")),
    "api listener, a publish": ("api", head("POST", TARGET, "{auth}", "Content-Length: 1000")),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(DRIPS))
@pytest_twisted.ensureDeferred
async def test_a_drip_fed_body_is_cut_on_both_listeners(quick: Any, case: str) -> None:
    daemon, auth = quick
    listener, data = DRIPS[case]
    site = daemon.service.public_port.factory if listener == "public" else daemon.service.api_port.factory
    port = daemon.public_port if listener == "public" else _api_port(daemon)
    with connections_of(site) as made:
        client = await _sent(port, data.replace(b"{auth}", basic(*auth).encode()))
        started = time.monotonic()
        for _ in range(40):  # a byte every 0.1 s: well within the idle timeout, every time
            if client.done:
                break
            client.send(b"x")
            await sleep(0.1)
    assert client.done, "the drip-fed body was never cut"
    assert time.monotonic() - started < 3.5
    expect_error(bytes(client.data), 408, "body_timeout")
    assert len(made) == 1  # one connection, cut


BAD = {
    "a wrong secret": lambda auth: basic(auth[0], "wrong"),
    "an unknown publisher": lambda auth: basic("nobody", auth[1]),
    "a stale signature": lambda auth: "Authorization: " + signature_header(
        auth[0], int(time.time()) - 3600, sign(auth[1], "POST", TARGET, int(time.time()) - 3600, b"")),
    "no credentials": lambda auth: "X-No: credentials",
    "a wrong admin token": lambda auth: "Authorization: Bearer wrong",
}
FRAMINGS = {
    "within the bound": "Content-Length: 60000",
    "over the bound": "Content-Length: 100000000",
    "chunked": "Transfer-Encoding: chunked",
}


@pytest.mark.integration
@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("expect", [False, True])
@pytest_twisted.ensureDeferred
async def test_bad_credentials_are_answered_before_the_body_and_without_100_continue(
        quick: Any, bad: str, framing: str, expect: bool) -> None:
    daemon, auth = quick
    headers = [BAD[bad](auth), FRAMINGS[framing]] + (["Expect: 100-continue"] if expect else [])
    target = "/admin/v1/publishers" if bad == "a wrong admin token" else TARGET
    client = await _sent(_api_port(daemon), head("POST", target, *headers))
    assert await client.wait_closed(2), bytes(client.data)  # answered and closed, the body never sent
    answer = expect_error(bytes(client.data), 401, "missing_credentials" if bad == "no credentials"
                          else "stale_signature" if bad == "a stale signature" else "bad_credentials")
    assert answer[b"connection"] == b"close"
    assert not bytes(client.data).startswith(b"HTTP/1.1 100 ")


@pytest.mark.integration
@pytest.mark.parametrize("length", [60000, 65536])
@pytest.mark.parametrize("looked_up", [True, False])
@pytest_twisted.ensureDeferred
async def test_good_credentials_get_100_continue_then_their_body_is_read(quick: Any, length: int,
                                                                         looked_up: bool) -> None:
    daemon, auth = quick
    daemon.service.api_port.factory.body_timeout = 30
    if not looked_up:
        daemon.service.publishers.forget_publisher(auth[0])  # the verdict waits for the store
    for expect in (False, True):
        client = await _sent(_api_port(daemon), head("POST", TARGET, basic(*auth), f"Content-Length: {length}",
                                                     "Connection: close",
                                                     *(["Expect: 100-continue"] if expect else [])))
        if expect:
            await client.wait_for(lambda data: data.startswith(CONTINUE), 2)
            assert bytes(client.data) == CONTINUE
        else:
            await sleep(0.2)
            assert bytes(client.data) == b"" and not client.done  # waits for the body
        client.send(b"m" * length)
        assert await client.wait_closed(5)
        status, _, body = parse_response(bytes(client.data).removeprefix(CONTINUE))
        assert status == 201, body


@pytest.mark.integration
@pytest.mark.parametrize("expect", [False, True])
@pytest_twisted.ensureDeferred
async def test_a_signed_request_is_read_alike_whether_its_publisher_exists_or_not(quick: Any, expect: bool) -> None:
    daemon, auth = quick
    daemon.service.api_port.factory.body_timeout = 30
    answers = []
    for name in (auth[0], "nobody"):
        # A signature in its window, but not of this body: known to be wrong only once it is in.
        signed = "Authorization: " + signature_header(name, int(time.time()), "0" * 64)
        client = await _sent(_api_port(daemon), head("POST", TARGET, signed, "Content-Length: 60000",
                                                     "Connection: close",
                                                     *(["Expect: 100-continue"] if expect else [])))
        if expect:
            await client.wait_for(lambda data: data.startswith(CONTINUE), 2)
        else:
            await sleep(0.2)
            assert not client.done  # waits for the body
        client.send(b"m" * 60000)
        assert await client.wait_closed(5)
        assert bytes(client.data).startswith(CONTINUE) is expect
        expect_error(bytes(client.data).removeprefix(CONTINUE), 401, "bad_credentials")
        answers.append(bytes(client.data).split(b"\r\n\r\n")[-1])
    assert answers[0] == answers[1]


@pytest.mark.integration
@pytest.mark.parametrize("expect", [False, True])
@pytest_twisted.ensureDeferred
async def test_a_body_too_large_by_its_length_is_answered_at_once(quick: Any, expect: bool) -> None:
    daemon, auth = quick
    client = await _sent(_api_port(daemon), head("POST", TARGET, basic(*auth), "Content-Length: 65537",
                                                 *(["Expect: 100-continue"] if expect else [])))
    assert await client.wait_closed(2), bytes(client.data)
    assert expect_error(bytes(client.data), 413, "too_large")[b"connection"] == b"close"


# HEAD requests leave nothing in the log


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_head_requests_log_nothing_and_never_a_token() -> None:
    async with running() as daemon:
        auth = await setup_site(daemon)
        await make_center(daemon, auth, "secret", private=True)
        await published(daemon, auth, "hello")
        token = subscriber_token(auth[1], sub="secret")
        targets = ["/sub/site/news?timeout=0&token={t}", "/sub/site/news/last?token={t}",
                   "/sub/site/secret?timeout=0&token={t}", "/sub/site/secret/last?token={t}",
                   "/sub/site/nope?timeout=0&token={t}", "/sub/site/news,secret?timeout=0&token={t}",
                   "/healthz?token={t}", "/notifier.js?token={t}", "/nope?token={t}"]
        events: list[LogEvent] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            if not event.get("log_namespace", "").endswith(".OneShotFactory"):  # the clients'
                events.append(event)

        globalLogPublisher.addObserver(observe)
        try:
            for _ in range(5):
                for target in targets:
                    for port in (daemon.public_port, _api_port(daemon)):
                        client = await _sent(port, head("HEAD", target.format(t=token), "Connection: close"))
                        assert await client.wait_closed(5)
                        status = parse_response(bytes(client.data) + b"\r\n")[0] if client.data else 0
                        assert 200 <= status < 500, (target, bytes(client.data))
        finally:
            globalLogPublisher.removeObserver(observe)
        texts = [formatEvent(event) + repr(event) for event in events]
        assert not [text for text in texts if token in text or "I think I'll eat it" in text], texts[:3]
        assert len(events) < 5, texts


# X-Content-Type-Options: nosniff on every answer


async def _answer(port: int, data: bytes) -> bytes:
    """The one answer to *data* (after any 100 Continue)."""
    client = await _sent(port, data)
    await until(lambda: complete(bytes(client.data).removeprefix(CONTINUE)) or client.done, 5, "the answer")
    client.transport.loseConnection()
    return bytes(client.data).removeprefix(CONTINUE)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_every_answer_says_nosniff() -> None:
    async with running(public={"header_timeout": 0.5}) as daemon:
        auth = await setup_site(daemon)
        await make_center(daemon, auth, "quiet")
        await make_center(daemon, auth, "secret", private=True)
        await published(daemon, auth, "hello")
        public = [
            head("GET", "/sub/site/news/last"),  # text
            head("GET", "/sub/site/quiet/last"),  # 204
            head("GET", "/sub/site/news/last?callback=f"),  # JSONP
            head("GET", "/sub/site/secret/last"),  # 401
            head("GET", "/sub/site/nope/last"),  # 404
            head("GET", "/sub/site/news,quiet/last"),  # 400
            head("HEAD", "/sub/site/news/last"),
            head("OPTIONS", "/sub/site/news/last", "Origin: https://www.example.org"),
            head("POST", "/sub/site/news/last"),  # 405
            head("GET", "/sub/site/news/last", "Accept: application/json", "X-Other: x"),  # twisted.web's
            head("GET", "/sub/site/news?timeout=0"),
            head("GET", "/sub/site/news?timeout=0", "Accept: */*", "X-Other: x"),
            head("GET", "/healthz"),
            head("GET", "/notifier.js"),
            head("GET", "/sub/site/news", "Content-Length: 1"),  # body_not_allowed
            b"GET /sub/site/news HTTP/1.1\r\nBad header\r\n\r\n",  # bad_request
            b"GET /sub/site/news?timeout=0 HTTP/1.1\r\nHost: x\r\n",  # header_timeout
        ]
        api = [
            head("POST", TARGET, basic(*auth), "Content-Length: 2") + b"hi",  # the front's
            head("POST", TARGET, basic(*auth), "Content-Length: 2", "Expect: 100-continue") + b"hi",
            head("POST", TARGET, basic(auth[0], "wrong"), "Content-Length: 2") + b"hi",
            head("GET", "/api/v1/centers", basic(*auth)),
            head("GET", "/healthz"),
            head("GET", "/metrics"),
        ]
        for port, requests in ((daemon.public_port, public), (_api_port(daemon), api)):
            for data in requests:
                if not data.endswith(b"Host: x\r\n"):  # the head left unfinished is cut
                    data = data.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
                answer = await _answer(port, data)
                fields = answer.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
                assert fields.count(b"x-content-type-options: nosniff") == 1, (data, answer)


@pytest.mark.integration
@pytest.mark.parametrize("framing", ["Content-Length: 60000", "Content-Length: 100000000"])
@pytest_twisted.ensureDeferred
async def test_a_refusal_sent_while_its_body_is_still_coming_is_read_not_reset(quick: Any, framing: str) -> None:
    daemon, auth = quick
    daemon.service.api_port.factory.body_timeout = 30
    sock = socket.create_connection(("127.0.0.1", _api_port(daemon)))
    try:
        sock.setblocking(False)
        # The head with wrong credentials, and at once as much of the body
        # as the kernel takes: the daemon answers without reading it.
        sock.send(head("POST", TARGET, basic(auth[0], "wrong"), framing))
        with contextlib.suppress(BlockingIOError):
            for _ in range(64):
                sock.send(b"m" * 1024)
        await sleep(0.5)  # the answer, and whatever the daemon does with what it did not read, is in
        # The client, still sending its body as curl does, is not reset:
        # what it sends is read and dropped for a while.
        with contextlib.suppress(BlockingIOError):
            sock.send(b"m" * 1024)
        await sleep(0.2)
        received = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := sock.recv(65536):
                received += chunk
        expect_error(received, 401, "bad_credentials")
        await until(lambda: _ended(sock), 5, "the daemon to close")
    finally:
        sock.close()


def _ended(sock: socket.socket) -> bool:
    """Whether *sock*'s peer closed it, as TCP does (a reset raises)."""
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
