"""The api listener's front (notifier.front with the api's ``Plain``): a
plain ``POST /api/v1/centers/{center}/messages`` is answered without
twisted.web, exactly as twisted.web answers it, and everything else is
handed to twisted.web with the bytes read.

The answers are compared in memory (the api app of an in-memory
:class:`~tests.support.memory.Api`, connections on StringTransports, time
on its Clock); what takes real connections or a store that makes requests
wait is marked ``integration``."""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport

from notifier.front import Front
from notifier.httpserver import Channel, QuietSite
from notifier.sites import api_site
from tests.raw import complete, connect, parse_response
from tests.support import Api, make_center, running, setup_site, sign, signature_header, sleep, until
from tests.support.front import PEER, answer_now, answer_of, read_answers, recording, without_date

TARGET = "/api/v1/centers/news/messages"
_numbers = itertools.count()


def request(body: bytes = b"hello", *headers: str, target: str = TARGET, length: bool = True,
            method: str = "POST") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def basic(auth: tuple[str, str]) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def normal(answer: bytes) -> bytes:
    """*answer* without what differs between two publishes: the date, the id."""
    return re.sub(rb'"id": "[^"]*"', b'"id": "-"', without_date(answer))


@attrs.frozen
class MemorySite:
    """The api listener's site over an in-memory :class:`Api`, with the
    publisher ``site`` and its centers ``news`` and ``quiet``."""

    site: Any
    api: Api
    auth: tuple[str, str]

    def both(self, make: Callable[[], bytes]) -> tuple[bytes, bytes]:
        """A request of *make* answered by the front, another by twisted.web
        (a channel of the same site)."""
        front_answer, front = answer_now(self.site.buildProtocol(PEER), make(), self.api.clock)
        assert isinstance(front, Front) and not isinstance(front.channel, Channel), "the front handed it over"
        web_answer, _ = answer_now(QuietSite.buildProtocol(self.site, PEER), make(), self.api.clock)
        return normal(front_answer), normal(web_answer)


@pytest.fixture
def memory_site() -> MemorySite:
    # On the clock of now: signatures are checked against it.
    api = Api(start=time.time(), centers={"max_message_bytes": 1000})
    auth = api.add_publisher("site")
    for center in ("news", "quiet"):
        assert api.put_center(auth, center).status == 201
    return MemorySite(api_site(api.app, api.config, api.clock, turn=api.turn), api, auth)


@pytest_twisted.async_yield_fixture
async def api_daemon() -> Any:
    async with running(centers={"max_message_bytes": 1000}) as daemon:
        auth = await setup_site(daemon)
        await make_center(daemon, auth, "quiet")
        yield daemon, auth


async def both(daemon: Any, make: Callable[[], bytes]) -> tuple[bytes, bytes]:
    """A request of *make* answered by the front, another by twisted.web (a
    channel of the same site)."""
    site = daemon.service.api_port.factory
    front_answer, front = await answer_of(site.buildProtocol(PEER), make())
    assert isinstance(front, Front) and not isinstance(front.channel, Channel), "the front handed it over"
    web_answer, _ = await answer_of(QuietSite.buildProtocol(site, PEER), make())
    return normal(front_answer), normal(web_answer)


def signed(auth: tuple[str, str], *, secret: str | None = None) -> Callable[[], bytes]:
    def make() -> bytes:
        # A signature is accepted once: each request signs a body of its own.
        body = b"signed %09d" % next(_numbers)
        timestamp = int(time.time())
        signature = sign(secret or auth[1], "POST", TARGET, timestamp, body)
        return request(body, "Authorization: " + signature_header(auth[0], timestamp, signature))
    return make


def keyed(auth: tuple[str, str]) -> Callable[[], bytes]:
    return lambda: request(b"once", basic(auth), f"Idempotency-Key: key-{next(_numbers)}")


CASES: dict[str, Callable[[tuple[str, str]], Callable[[], bytes]]] = {
    "plain text": lambda auth: lambda: request(b"hello", basic(auth)),
    "a type": lambda auth: lambda: request(b'{"a": 1}', basic(auth), "Content-Type: application/json"),
    "not text": lambda auth: lambda: request(b"\x00\x01", basic(auth), "Content-Type: image/png"),
    "not UTF-8": lambda auth: lambda: request(b"\xff\xfe", basic(auth)),
    "empty": lambda auth: lambda: request(b"", basic(auth)),
    "no length": lambda auth: lambda: request(b"", basic(auth), length=False),
    "the largest message": lambda auth: lambda: request(b"x" * 1000, basic(auth)),
    "no credentials": lambda auth: lambda: request(b"hello"),
    "a wrong secret": lambda auth: lambda: request(b"hello", basic((auth[0], "wrong"))),
    "no such publisher": lambda auth: lambda: request(b"hello", basic(("nobody", auth[1]))),
    "a malformed authorization": lambda auth: lambda: request(b"hello", "Authorization: Basic !!!"),
    "no such center": lambda auth: lambda: request(b"hello", basic(auth),
                                                   target="/api/v1/centers/nope/messages"),
    "a bad center name": lambda auth: lambda: request(b"hello", basic(auth),
                                                      target="/api/v1/centers/bad%20name/messages"),
    "an escaped center name": lambda auth: lambda: request(b"hello", basic(auth),
                                                           target="/api/v1/centers/n%65ws/messages"),
    "a query": lambda auth: lambda: request(b"hello", basic(auth), target=TARGET + "?x=1"),
    "signed": signed,
    "signed wrongly": lambda auth: signed(auth, secret="wrong"),
    "an idempotency key": keyed,
    "an empty idempotency key": lambda auth: lambda: request(b"x", basic(auth), "Idempotency-Key: "),
    "connection close": lambda auth: lambda: request(b"bye", basic(auth), "Connection: close"),
    "padded headers": lambda auth: lambda: request(b"x", basic(auth) + " \t", "X-Padded:" + " \t" * 50 + "x"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_front_publishes_as_twisted_web_does(memory_site: MemorySite, case: str) -> None:
    front, web = memory_site.both(CASES[case](memory_site.auth))
    assert front == web


def test_what_the_front_answers_is_published(memory_site: MemorySite) -> None:
    auth = memory_site.auth
    front, _ = memory_site.both(lambda: request(b"hello", basic(auth), target="/api/v1/centers/quiet/messages"))
    status, headers, body = parse_response(front)
    assert status == 201 and headers[b"content-type"] == b"application/json"
    assert body == b'{"id": "-", "subscribers": 0}'
    hub = memory_site.api.centers.loaded("site", "quiet")
    assert hub.seq == 2 and hub.latest.data == "hello"  # one through each


def test_a_retried_idempotency_key_is_told_the_first_id(memory_site: MemorySite) -> None:
    site, auth = memory_site.site, memory_site.auth
    answers = []
    for _ in range(2):
        answer, front = answer_now(site.buildProtocol(PEER), request(b"once", basic(auth), "Idempotency-Key: k1"),
                                   memory_site.api.clock)
        assert front.channel is None  # the front's own answer
        answers.append(parse_response(answer))
    (first, _, first_body), (second, _, second_body) = answers
    assert (first, second) == (201, 200) and first_body == second_body


@pytest.mark.parametrize("data", [
    request(b"x" * 1001, "Authorization: Basic eDp4"),  # past max_message_bytes: twisted.web's 413
    request(b"hello", "Content-Length: 5", length=False) .replace(b"Content-Length: 5", b"Content-Length: +5"),
    request(b"5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked", length=False),
    request(b"hello", "Expect: 100-continue"),
    request(b"hello", "Upgrade: websocket", "Connection: Upgrade"),
    request(b"hello", "Content-Length: 5"),  # given twice
    request(b'{"messages": []}', target="/api/v1/messages"),
    request(b"", method="PUT", target="/api/v1/centers/news"),
    request(b"", method="GET", target="/api/v1/centers/news/messages", length=False),
    request(b"hello", target="/api/v1/centers/news/messages/x"),
    request(b"hello", target="/api/v1/centers/n%FFws/messages"),
    request(b"hello", target="/admin/v1/publishers/site/centers/news/messages"),
    request(b"hello", target="/console/x"),
    b"POST /api/v1/centers/news/messages HTTP/1.0\r\nContent-Length: 1\r\n\r\nx",
    b"POST /api/v1/centers/news/messages HTTP/1.1\r\nHost: x\r\n",  # a head not whole yet
])
def test_what_is_not_plain_goes_to_twisted_web(memory_site: MemorySite, data: bytes) -> None:
    front = memory_site.site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    front.makeConnection(transport)
    front.dataReceived(data)
    assert front.channel is not None
    front.connectionLost(connectionDone)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_body_in_pieces_and_pipelined_publishes_over_one_connection(api_daemon: Any) -> None:
    daemon, auth = api_daemon
    fronts = recording(daemon.service.api_port.factory)
    client = await connect(daemon.service.api_port.getHost().port)
    try:
        # The head, then the body a byte at a time: answered once whole.
        whole = request(b"in pieces", basic(auth))
        head_end = whole.index(b"\r\n\r\n") + 4
        client.send(whole[:head_end])
        for byte in whole[head_end:]:
            await sleep(0.01)
            assert client.data == b""
            client.send(bytes([byte]))
        (status, _, _), = await read_answers(client, 1)
        hub = daemon.service.centers.loaded("site", "news")
        assert status == 201 and hub.latest.data == "in pieces"
        # Three in one send, the last cut in the middle of its body.
        seq = hub.seq
        three = b"".join(request(text.encode(), basic(auth)) for text in ("one", "two", "thr33"))
        client.send(three[:-2])
        await read_answers(client, 3)
        await sleep(0.05)
        assert hub.seq == seq + 2
        client.send(three[-2:])
        answers = await read_answers(client, 4)
        assert [status for status, _, _ in answers] == [201] * 4
        assert hub.seq == seq + 3 and hub.latest.data == "thr33"
        # All of it read by the front itself.
        assert len(fronts) == 1 and fronts[0].channel is None
        assert not client.done
    finally:
        client.transport.loseConnection()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_publish_that_waits_for_the_store_is_answered(api_daemon: Any) -> None:
    # A publisher not looked up yet: its credentials wait for the store,
    # and the answer comes later through the front all the same.
    daemon, _ = api_daemon
    auth = ("other", await daemon.add_publisher("other"))
    await make_center(daemon, auth, "news")
    daemon.service.publishers.forget_publisher("other")
    front, web = await both(daemon, lambda: request(b"later", basic(auth)))
    assert front == web and parse_response(front)[0] == 201


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_connection_close_is_answered_then_closed(api_daemon: Any) -> None:
    daemon, auth = api_daemon
    fronts = recording(daemon.service.api_port.factory)
    client = await connect(daemon.service.api_port.getHost().port)
    client.send(request(b"last", basic(auth), "Connection: close") + request(b"never", basic(auth)))
    assert await client.wait_closed(5)
    assert len(fronts) == 1 and fronts[0].channel is None
    status, headers, body = parse_response(bytes(client.data))
    assert (status, headers[b"connection"]) == (201, b"close"), body
    assert bytes(client.data).count(b"HTTP/1.1 ") == 1  # what came after is not read
    assert daemon.service.centers.loaded("site", "news").latest.data == "last"


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_publish_then_a_request_for_twisted_web_are_answered_in_order(api_daemon: Any) -> None:
    daemon, auth = api_daemon
    client = await connect(daemon.service.api_port.getHost().port)
    try:
        client.send(request(b"first", basic(auth))
                    + request(b"", basic(auth), method="GET", target="/api/v1/centers/news", length=False))
        (published, _, body), = await read_answers(client, 1)
        assert published == 201 and b'"subscribers": 0' in body
        first = bytes(client.data).index(b"\r\n\r\n") + 4 + len(body)
        await until(lambda: complete(bytes(client.data[first:])), 5, "the second answer")
        described, _, description = parse_response(bytes(client.data[first:]))
        assert described == 200 and json.loads(description)["name"] == "news"
    finally:
        client.transport.loseConnection()


@pytest_twisted.async_yield_fixture
async def large_daemon() -> Any:
    async with running(centers={"max_message_bytes": 100_000}) as daemon:
        yield daemon, await setup_site(daemon)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_bodies_past_64_kib_go_to_twisted_web_and_are_published(large_daemon: Any) -> None:
    daemon, auth = large_daemon
    site = daemon.service.api_port.factory
    for size, through_front in ((65536, True), (65537, False)):
        answer, front = await answer_of(site.buildProtocol(PEER), request(b"x" * size, basic(auth)))
        assert (front.channel is None) is through_front, size
        assert parse_response(answer)[0] == 201
        assert daemon.service.centers.loaded("site", "news").latest.data == "x" * size


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_body_read_while_the_client_reads_nothing_is_read_once_it_does(large_daemon: Any) -> None:
    # Bytes of a body that came while the front was paused (more than it
    # keeps of pipelined requests): once resumed, it reads the rest.
    daemon, auth = large_daemon
    front = daemon.service.api_port.factory.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    front.makeConnection(transport)
    whole = request(b"y" * 40000, basic(auth))
    front.pauseProducing()
    front.dataReceived(whole[:20000])
    front.resumeProducing()
    await sleep(0.01)
    assert transport.producerState == "producing"
    front.dataReceived(whole[20000:])
    await until(lambda: complete(transport.value()), 5, "the answer")
    assert parse_response(transport.value())[0] == 201 and front.channel is None
    front.connectionLost(connectionDone)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_large_body_behind_a_publish_that_waits_is_answered_after_it(large_daemon: Any) -> None:
    daemon, _ = large_daemon
    auth = ("other", await daemon.add_publisher("other"))
    await make_center(daemon, auth, "news")
    daemon.service.publishers.forget_publisher("other")  # the first publish waits for the store
    client = await connect(daemon.service.api_port.getHost().port)
    try:
        client.send(request(b"first", basic(auth)) + request(b"z" * 40000, basic(auth)))
        answers = await read_answers(client, 2)
        assert [status for status, _, _ in answers] == [201, 201]
        assert daemon.service.centers.loaded("other", "news").latest.data == "z" * 40000
    finally:
        client.transport.loseConnection()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_answers_past_64_kib_are_sent_before_the_end_of_the_turn(api_daemon: Any) -> None:
    # As the HTTP channel's: a client pipelining many publishes gets their
    # answers as they pass 64 KiB, so that one that reads nothing pauses
    # the front before it answers more.
    daemon, auth = api_daemon
    site = daemon.service.api_port.factory
    await answer_of(site.buildProtocol(PEER), request(b"warm", basic(auth)))  # the publisher looked up
    front = site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    front.makeConnection(transport)
    front.dataReceived(request(b"one", basic(auth)))
    assert transport.value() == b""  # at the end of the turn
    await until(lambda: complete(transport.value()), 5, "the answer")
    transport.clear()
    front.dataReceived(b"".join(request(b"%d" % n, basic(auth)) for n in range(500)))
    sent = transport.value().count(b"HTTP/1.1 201 ")
    assert 0 < sent < 500 and len(transport.value()) > 64 * 1024
    await until(lambda: transport.value().count(b"HTTP/1.1 201 ") == 500, 5, "every answer")
    front.connectionLost(connectionDone)
