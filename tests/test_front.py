"""The public listener's front (notifier.front): the plainest subscriber
requests are answered without twisted.web, exactly as twisted.web answers
them, and everything else is handed to twisted.web with the bytes read.

The answers are compared in memory (the public app over an in-memory
:class:`~tests.support.memory.Listener`, connections on StringTransports,
time on its Clock); what takes real connections is marked ``integration``."""

from __future__ import annotations

import json
import socket
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor, ssl
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport

from notifier.front import Front
from notifier.httpserver import Channel, QuietSite
from notifier.sites import public_site
from tests.raw import RawClient, client_frame, complete, connect, parse_response, server_frames
from tests.support import make_center, published, running, setup_site, sleep, start_daemon, until
from tests.support.front import PEER, answer_now, read_answers, recording, without_date
from tests.support.memory import Listener
from tests.support.tls import self_signed

ORIGIN = "https://www.example.org"


def http(target: str, *headers: str, method: str = "GET", version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@attrs.frozen
class MemorySite:
    """The public listener's site over an in-memory :class:`Listener`, with
    the centers ``news``, ``quiet`` and ``secret`` (private) and three messages."""

    site: Any
    listener: Listener
    ids: list[str]

    @property
    def clock(self) -> Any:
        return self.listener.api.clock

    def both(self, data: bytes) -> tuple[bytes, bytes]:
        """*data* answered by the front and by twisted.web (a channel of the same site)."""
        front_answer, front = answer_now(self.site.buildProtocol(PEER), data, self.clock)
        assert isinstance(front, Front) and not isinstance(front.channel, Channel), "the front handed it over"
        web_answer, _ = answer_now(QuietSite.buildProtocol(self.site, PEER), data, self.clock)
        return without_date(front_answer), without_date(web_answer)


@pytest.fixture
def memory_site() -> MemorySite:
    listener = Listener(public={"allowed_origins": [ORIGIN]})
    assert listener.api.put_center(listener.auth, "quiet").status == 201
    assert listener.api.put_center(listener.auth, "secret", {"private": True}).status == 201
    ids = [listener.publish(f"message {n}") for n in range(3)]
    api = listener.api
    return MemorySite(public_site(listener.app, api.config, api.clock, turn=api.turn), listener, ids)


@pytest_twisted.async_yield_fixture
async def site_daemon() -> Any:
    async with running(public={"allowed_origins": [ORIGIN]}) as daemon:
        auth = await setup_site(daemon)
        await make_center(daemon, auth, "quiet")
        await make_center(daemon, auth, "secret", private=True)
        ids = [await published(daemon, auth, f"message {n}") for n in range(3)]
        yield daemon, auth, ids


TARGETS = [
    "/sub/site/news?timeout=0",
    "/sub/site/news?since={0}&timeout=0",
    "/sub/site/news?since={0}&timeout=0&callback=app.got",
    "/sub/site/news?since={2}&timeout=0",
    "/sub/site/news?since=e-1x",
    "/sub/site/news?since=",
    "/sub/site/news?since={0}&since={1}&timeout=0",
    "/sub/site/news?callback=1bad&timeout=0",
    "/sub/site/news?timeout=1000",
    "/sub/site/news?timeout=nan",
    "/sub/site/n%65ws?timeout=0",
    "/sub/site/news?timeout=0&x=a+b;y=%41",
    "/sub/site/news/last",
    "/sub/site/news/last?callback=f",
    "/sub/site/quiet/last",
    "/sub/site/quiet/last?callback=f",
    "/sub/site/news,quiet?timeout=0",
    "/sub/site/news,quiet?since={1},&timeout=0",
    "/sub/site/news,news?timeout=0",
    "/sub/site/news,quiet/last",
    "/sub/site/nope?timeout=0",
    "/sub/site/nope/last",
    "/sub/nobody/news?timeout=0",
    "/sub/site/secret?timeout=0",
    "/sub/site/secret?timeout=0&token=not.a.token",
    "/sub/site/news/other/path",
    "/sub/site/news/",
    "/sub/site",
    "/sub/site/bad%20name?timeout=0",
]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("headers", [(), (f"Origin: {ORIGIN}",), ("Origin: https://elsewhere.example",),
                                     ("Connection: close", "Accept: application/json"),
                                     (f"Origin: \t {ORIGIN} \t", "X-Padded:" + " \t" * 7000 + "x" + "\t" * 10)])
def test_the_front_answers_as_twisted_web_does(memory_site: MemorySite, target: str, headers: tuple[str, ...]) -> None:
    front, web = memory_site.both(http(target.format(*memory_site.ids), *headers))
    assert front == web


KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = ("Upgrade: websocket", "Connection: Upgrade", KEY, "Sec-WebSocket-Version: 13")


@pytest.mark.parametrize("target, headers", [
    ("/sub/site/news", UPGRADE),
    ("/sub/site/news?format=json&since={0}", UPGRADE),
    ("/sub/site/news,quiet?since={1},", UPGRADE),
    ("/sub/site/news", (*UPGRADE, f"Origin: {ORIGIN}")),
    ("/sub/site/news", (*UPGRADE, "Origin: https://elsewhere.example")),
    ("/sub/site/news?format=xml", UPGRADE),
    ("/sub/site/news,quiet?format=raw", UPGRADE),
    ("/sub/site/nope", UPGRADE),
    ("/sub/site/secret", UPGRADE),
    ("/sub/site/news", ("Upgrade: WebSocket", "Connection: keep-alive, Upgrade", KEY, "Sec-WebSocket-Version: 13")),
    ("/sub/site/news", ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13")),
    ("/sub/site/news", ("Upgrade: websocket", "Connection: Upgrade", KEY, "Sec-WebSocket-Version: 7")),
])
def test_a_websocket_handshake_is_answered_as_through_twisted_web(memory_site: MemorySite, target: str,
                                                                 headers: tuple[str, ...]) -> None:
    # Through the front, Autobahn reads the head as it came; through
    # twisted.web, as WebSocketResource rebuilds it: the same answer, the
    # same first frames.
    front, web = memory_site.both(http(target.format(*memory_site.ids), *headers))
    assert front == web


def test_a_waiting_long_poll_is_answered_as_twisted_web_answers_it(memory_site: MemorySite) -> None:
    site, ids = memory_site.site, memory_site.ids
    answers = []
    for protocol in (site.buildProtocol(PEER), QuietSite.buildProtocol(site, PEER)):
        transport = StringTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(http(f"/sub/site/news?since={ids[-1]}", f"Origin: {ORIGIN}"))
        memory_site.clock.advance(0)
        assert transport.value() == b""  # waiting
        answers.append((protocol, transport))
    memory_site.listener.publish("live")
    for protocol, transport in answers:
        assert complete(transport.value()), "the live answer"
        protocol.connectionLost(connectionDone)
    front, web = (without_date(transport.value()) for _, transport in answers)
    assert front == web
    status, _, body = parse_response(front)
    assert status == 200 and [m["data"] for m in json.loads(body)["messages"]] == ["live"]


@pytest.mark.parametrize("data", [
    http("/sub/site/news", "Accept: text/event-stream"),
    http("/sub/site/news", "Upgrade: h2c", "Connection: Upgrade"),
    http("/sub/site/news", "Connection: Upgrade"),
    http("/sub/site/news?timeout=0", method="HEAD"),
    http("/sub/site/news", method="OPTIONS"),
    http("/sub/site/news?timeout=0", version="HTTP/1.0"),
    http("/sub/site/news?timeout=0", "Content-Length: 0"),
    http("/sub/site/news?timeout=0", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
    http("/sub/site/news?timeout=0", "Expect: 100-continue"),
    http("/sub/site/news?timeout=0", "X-Folded: a", " b"),
    http("/sub/site/news?timeout=0", "Bad Name: x"),
    http("/sub/site/n%FFws?timeout=0"),
    http("/sub/site/news?timeout=0", "Connection: close", "Connection: keep-alive"),
    http("/healthz"),
    http("/notifier.js"),
    http("http://127.0.0.1/sub/site/news?timeout=0"),
    b"GET /sub/site/news?timeout=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # a head not whole yet
])
def test_what_is_not_plain_goes_to_twisted_web(memory_site: MemorySite, data: bytes) -> None:
    front = memory_site.site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    transport.protocol = front  # what a WebSocket upgrade takes the connection from
    front.makeConnection(transport)
    front.dataReceived(data)
    assert front.channel is not None
    front.connectionLost(connectionDone)


# over real connections


def messages(body: bytes) -> list[str]:
    return [message["data"] for message in json.loads(body)["messages"]]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_keep_alive_pipelining_and_a_waiting_poll_keep_their_order(site_daemon: Any) -> None:
    daemon, auth, ids = site_daemon
    client = await connect(daemon.public_port)
    try:
        # Two at once, the first waiting for a message: the second is answered after it.
        client.send(http(f"/sub/site/news?since={ids[-1]}") + http("/sub/site/news/last"))
        await until(lambda: len(daemon.service.centers.loaded("site", "news").subscribers) == 1, 5, "the poll")
        assert client.data == b""
        await published(daemon, auth, "after")
        first, second = await read_answers(client, 2)
        assert first[0] == 200 and messages(first[2]) == ["after"]
        assert second[0] == 200 and second[2] == b"after"
        # The connection goes on serving.
        client.send(http(f"/sub/site/news?since={ids[0]}&timeout=0"))
        third = (await read_answers(client, 3))[2]
        assert messages(third[2]) == ["message 1", "message 2", "after"]
        assert not client.done
    finally:
        client.transport.loseConnection()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_websocket_taken_over_from_the_front_gets_what_came_after_its_head(site_daemon: Any) -> None:
    daemon, auth, _ = site_daemon
    client = await connect(daemon.public_port)
    try:
        # A plain request first, then the upgrade and a ping in the same send.
        client.send(http("/sub/site/news/last"))
        await read_answers(client, 1)
        start = len(client.data)
        client.send(http("/sub/site/news", *UPGRADE) + client_frame(0x9, b"are you there"))
        await until(lambda: b"\r\n\r\n" in bytes(client.data[start:]), 5, "the handshake")
        head, _, _ = bytes(client.data[start:]).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        frames_at = start + len(head) + 4
        await until(lambda: (0xA, b"are you there") in server_frames(bytes(client.data[frames_at:])), 5, "the pong")
        await published(daemon, auth, "live")
        await until(lambda: (0x1, b"live") in server_frames(bytes(client.data[frames_at:])), 5, "the message")
    finally:
        client.transport.loseConnection()
    hub = daemon.service.centers.loaded("site", "news")
    await until(lambda: not hub.subscribers, 5, "the subscriber to leave")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_client_gone_while_its_poll_waits_leaves_the_center(site_daemon: Any) -> None:
    daemon, _, ids = site_daemon
    hub = daemon.service.centers.loaded("site", "news")
    client = await connect(daemon.public_port)
    client.send(http(f"/sub/site/news?since={ids[-1]}"))
    await until(lambda: len(hub.subscribers) == 1, 5, "the poll")
    client.transport.loseConnection()
    await until(lambda: len(hub.subscribers) == 0, 5, "the poll to leave")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_connection_close_is_answered_then_closed(site_daemon: Any) -> None:
    daemon, _, _ = site_daemon
    client = await connect(daemon.public_port)
    client.send(http("/sub/site/news/last", "Connection: close") + http("/sub/site/news/last"))
    assert await client.wait_closed(5)
    status, headers, body = parse_response(bytes(client.data))
    assert (status, headers[b"connection"], body) == (200, b"close", b"message 2")
    assert bytes(client.data).count(b"HTTP/1.1 ") == 1  # what came after is not read


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_connection_handed_over_stays_with_twisted_web(site_daemon: Any) -> None:
    daemon, auth, ids = site_daemon
    client = await connect(daemon.public_port)
    try:
        client.send(http("/sub/site/news/last"))
        await read_answers(client, 1)
        client.send(http(f"/sub/site/news?since={ids[-1]}", "Accept: text/event-stream"))
        await until(lambda: b"text/event-stream" in bytes(client.data), 5, "the event stream")
        await published(daemon, auth, "streamed")
        await until(lambda: b"data: streamed" in bytes(client.data), 5, "the event")
    finally:
        client.transport.loseConnection()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_idle_connections_are_cut_but_not_while_a_poll_waits(site_daemon: Any) -> None:
    daemon, _, ids = site_daemon
    site = public_site(daemon.service.public, daemon.service.config, reactor, timeout=0.5)
    listening = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    try:
        port = listening.getHost().port
        waiting = await connect(port)
        waiting.send(http(f"/sub/site/news?since={ids[-1]}&timeout=1.5"))
        idle = await connect(port)
        idle.send(http("/sub/site/news/last"))
        await read_answers(idle, 1)
        assert await idle.wait_closed(3)  # cut, idle after its answer
        (status, _, body), = await read_answers(waiting, 1)  # answered at its timeout, not cut before
        assert status == 200 and messages(body) == []
        assert not waiting.done
        assert await waiting.wait_closed(3)  # then idle too
    finally:
        await listening.stopListening()


@pytest.mark.integration
@pytest.mark.parametrize("through", ["front", "twisted.web"])
@pytest_twisted.ensureDeferred
async def test_a_client_that_reads_nothing_is_answered_no_further(site_daemon: Any, through: str) -> None:
    # Pipelined requests answered at once pile their answers up for a client
    # that does not read: they are answered no further, and nothing more is
    # read, while the connection's buffer is full; then all are answered.
    daemon, auth, _ = site_daemon
    await published(daemon, auth, "x" * 60000)
    fronts = recording(daemon.service.public_port.factory)
    client = await connect(daemon.public_port, rcvbuf=4096)
    client.transport.pauseProducing()  # reads nothing
    count = 200
    extra = ("TE: trailers",) if through == "twisted.web" else ()  # a header the front leaves to twisted.web
    client.send(http("/sub/site/news/last", *extra) * count)
    await until(lambda: fronts, 5, "the connection")
    front = fronts[0]
    if through == "front":
        await until(lambda: front.blocked, 5, "the front to stop answering")
        assert len(front.pending) < 4 * 65536
        transport = front.transport
    else:
        await until(lambda: front.channel is not None and front.channel.paused, 5, "the channel to stop answering")
        assert len(front.channel._buffer) + sum(map(len, front.channel._dataBuffer)) < 4 * 65536
        transport = front.channel.transport
    assert len(transport.dataBuffer) + transport._tempDataLen < 4 * 65536
    client.transport.resumeProducing()
    await until(lambda: bytes(client.data).count(b"HTTP/1.1 200 OK") == count, 30, "every answer")
    client.transport.loseConnection()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_connection_cut_for_idleness_that_does_not_go_is_aborted(site_daemon: Any) -> None:
    daemon, auth, _ = site_daemon
    await published(daemon, auth, "x" * 60000)
    site = public_site(daemon.service.public, daemon.service.config, reactor, timeout=0.5)
    site.abort_timeout = 0.5
    fronts = recording(site)
    listening = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    try:
        client = await connect(listening.getHost().port, rcvbuf=4096)
        client.transport.pauseProducing()  # reads nothing: what was sent stays unsent
        await until(lambda: fronts, 5, "the connection")
        # The kernel would otherwise take a megabyte or more of it on loopback.
        fronts[0].transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        client.send(http("/sub/site/news/last") * 20)
        await until(lambda: fronts and fronts[0].blocked, 5, "the front to stop answering")
        await until(lambda: not fronts[0].transport.connected, 5, "the connection to be cut")
        client.transport.abortConnection()
    finally:
        await listening.stopListening()


# closing and idleness, after a client that read nothing reads again


async def slow_reader(daemon: Any, fronts: list[Front]) -> Any:
    """A client reading nothing for now, on a connection whose server side
    can hold little of what it sends."""
    client = await connect(daemon.public_port, rcvbuf=4096)
    client.transport.pauseProducing()
    await until(lambda: fronts, 5, "the connection")
    fronts[0].transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return client


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_connection_close_is_honoured_after_the_client_caught_up(site_daemon: Any) -> None:
    daemon, auth, _ = site_daemon
    await published(daemon, auth, "x" * 60000)
    fronts = recording(daemon.service.public_port.factory)
    client = await slow_reader(daemon, fronts)
    client.send(http("/sub/site/news/last") * 3 + http("/sub/site/news/last", "Connection: close"))
    await until(lambda: fronts[0].blocked, 5, "the front to stop answering")
    client.transport.resumeProducing()
    await until(lambda: bytes(client.data).count(b"HTTP/1.1 200 OK") == 4, 10, "every answer")
    assert await client.wait_closed(5)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_connection_close_over_tls_closes(tmp_path: Any) -> None:
    key, cert, pem = self_signed(tmp_path)
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}", public={
        "endpoint": f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"})
    try:
        auth = await setup_site(daemon)
        await published(daemon, auth, "hello")
        authority = ssl.Certificate.loadPEM(pem)
        endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS("127.0.0.1", trustRoot=authority),
                                           endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", daemon.public_port))
        client = RawClient()
        await endpoints.connectProtocol(endpoint, client)
        client.send(http("/sub/site/news/last", "Connection: close"))
        assert await client.wait_closed(5)
        status, headers, body = parse_response(bytes(client.data))
        assert (status, headers[b"connection"], body) == (200, b"close", b"hello")
    finally:
        await daemon.service.stopService()


@pytest.mark.integration
@pytest.mark.parametrize("slow", [0.0, 1.5])
@pytest_twisted.ensureDeferred
async def test_twisted_web_keeps_a_slow_reader_s_connection_without_408(slow: float) -> None:
    # Through twisted.web (a TE header the front leaves to it): requests
    # that waited while the client read nothing are not a head arriving
    # slowly, and neither is an idle connection after it caught up.
    async with running(public={"header_timeout": 1}) as daemon:
        auth = await setup_site(daemon)
        await published(daemon, auth, "x" * 60000)
        fronts = recording(daemon.service.public_port.factory)
        client = await slow_reader(daemon, fronts)
        client.send(http("/sub/site/news/last", "TE: trailers") * 4)
        await until(lambda: fronts[0].channel is not None and fronts[0].channel.paused, 5, "the channel to wait")
        await sleep(slow)  # a reader slower than header_timeout
        client.transport.resumeProducing()
        await until(lambda: bytes(client.data).count(b"HTTP/1.1 200 OK") == 4, 10, "every answer")
        answered = len(client.data)
        await sleep(1.5)  # idle, past header_timeout, far from the idle timeout
        assert bytes(client.data[answered:]) == b"" and not client.done
        client.transport.loseConnection()
