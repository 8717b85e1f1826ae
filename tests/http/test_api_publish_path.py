"""The api listener's publish path (``POST /api/v1/centers/{center}/messages``)
as its connections read it: a body in pieces, pipelined publishes and
other requests answered in order, ``Connection: close``, bodies past
64 KiB, answers sent at the end of the turn, a client that reads nothing.

In memory (the api listener's site of an in-memory
:class:`~tests.support.memory.Api` on a StringTransport, time on its
Clock); what needs a store that makes a publish wait is marked
``integration``, over real sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport

from notifier.http.batching import QUEUED_BYTES
from notifier.http.listeners import api_site
from tests.raw import complete, connect, parse_response
from tests.support import Api, basic, make_center, running, setup_site, until

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
#: A publisher's name and secret.
Auth = tuple[str, str]
TARGET = "/api/v1/centers/news/messages"


def request(body: bytes, *fields: str, target: str = TARGET, method: str = "POST") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *fields]
    if method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def authorization(auth: tuple[str, str]) -> str:
    return "Authorization: " + basic(*auth)


def split(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The whole answers in *data* (of a Content-Length, or chunked), in order."""
    answers = []
    while complete(data):
        status, headers, body = parse_response(data)
        end = data.index(b"\r\n\r\n") + 4
        if headers.get(b"transfer-encoding") == b"chunked":
            end = data.index(b"\r\n0\r\n\r\n", end - 2) + 7
        else:
            end += len(body)
        answers.append((status, headers, body))
        data = data[end:]
    return answers


class Connection:
    """One connection of the api listener of *api*, on a StringTransport."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.protocol = api_site(api.app, api.config, api.clock, turn=api.turn).buildProtocol(PEER)
        self.transport = StringTransport(peerAddress=PEER)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        """*data* from the client; the end of the reactor's turn."""
        self.protocol.dataReceived(data)
        self.api.clock.advance(0)

    def answers(self) -> list[tuple[int, dict[bytes, bytes], bytes]]:
        return split(self.transport.value())

    def close(self) -> None:
        self.protocol.connectionLost(connectionDone)


@pytest.fixture
def api() -> Api:
    """The api listener in memory."""
    return Api(centers={"max_message_bytes": 100_000})


@pytest.fixture
def auth(api: Api) -> Auth:
    """The publisher ``site``, with its centers ``news`` and ``quiet``."""
    auth = api.add_publisher("site")
    for center in ("news", "quiet"):
        assert api.put_center(auth, center).status == 201
    return auth


def latest(api: Api, center: str = "news") -> tuple[int, str | None]:
    hub = api.hub("site", center)
    return hub.seq, hub.latest.data if hub.latest is not None else None


def test_a_body_in_pieces_is_published_once_whole(api: Api, auth: Auth) -> None:
    connection = Connection(api)
    seq, _ = latest(api)
    whole = request(b"in pieces", authorization(auth))
    head_end = whole.index(b"\r\n\r\n") + 4
    connection.send(whole[:head_end])
    for byte in whole[head_end:-1]:
        connection.send(bytes([byte]))
        assert connection.transport.value() == b""
    connection.send(whole[-1:])
    ((status, _, body),) = connection.answers()
    assert status == 201 and json.loads(body)["subscribers"] == 0
    assert latest(api) == (seq + 1, "in pieces")
    connection.close()


def test_pipelined_publishes_one_cut_in_its_body_are_published_as_they_are_whole(api: Api, auth: Auth) -> None:
    connection = Connection(api)
    seq, _ = latest(api)
    three = b"".join(request(text, authorization(auth)) for text in (b"one", b"two", b"thr33"))
    connection.send(three[:-2])
    assert [status for status, _, _ in connection.answers()] == [201, 201]
    assert latest(api) == (seq + 2, "two")
    connection.send(three[-2:])
    assert [status for status, _, _ in connection.answers()] == [201, 201, 201]
    assert latest(api) == (seq + 3, "thr33")
    assert not connection.transport.disconnecting
    connection.close()


def test_a_publish_then_a_request_for_the_router_are_answered_in_order(api: Api, auth: Auth) -> None:
    connection = Connection(api)
    connection.send(request(b"first", authorization(auth))
                    + request(b"", authorization(auth), method="GET", target="/api/v1/centers/news")
                    + request(b"second", authorization(auth), target="/api/v1/centers/quiet/messages"))
    (published, _, _), (described, _, description), (again, _, _) = connection.answers()
    assert (published, described, again) == (201, 200, 201)
    assert json.loads(description)["name"] == "news"
    assert latest(api)[1] == "first" and latest(api, "quiet")[1] == "second"
    connection.close()


def test_connection_close_is_answered_then_closed_and_what_followed_is_not_read(api: Api, auth: Auth) -> None:
    connection = Connection(api)
    connection.send(request(b"last", authorization(auth), "Connection: close")
                    + request(b"never", authorization(auth)))
    ((status, headers, _),) = connection.answers()
    assert (status, headers[b"connection"]) == (201, b"close")
    assert connection.transport.value().count(b"HTTP/1.1 ") == 1
    assert connection.transport.disconnecting and latest(api)[1] == "last"
    connection.close()


@pytest.mark.parametrize("size", [65536, 65537, 100_000])
def test_bodies_past_64_kib_are_published(api: Api, auth: Auth, size: int) -> None:
    connection = Connection(api)
    connection.send(request(b"x" * size, authorization(auth)))
    ((status, _, _),) = connection.answers()
    assert status == 201 and latest(api)[1] == "x" * size
    connection.close()


def test_a_body_past_the_largest_message_is_413_from_its_head(api: Api, auth: Auth) -> None:
    connection = Connection(api)
    whole = request(b"x" * 100_001, authorization(auth))
    connection.send(whole[:whole.index(b"\r\n\r\n") + 4])
    ((status, headers, body),) = connection.answers()
    assert (status, headers[b"connection"], json.loads(body)["error"]) == (413, b"close", "too_large")
    connection.close()


def test_a_body_that_came_while_the_client_read_nothing_is_read_once_it_does(api: Api, auth: Auth) -> None:
    connection = Connection(api)
    whole = request(b"y" * 40000, authorization(auth))
    connection.protocol.pauseProducing()
    connection.send(whole[:20000])
    connection.protocol.resumeProducing()
    api.clock.advance(0)
    assert connection.transport.producerState == "producing"
    connection.send(whole[20000:])
    ((status, _, _),) = connection.answers()
    assert status == 201 and latest(api)[1] == "y" * 40000
    connection.close()


def test_answers_wait_for_the_end_of_the_turn_and_past_64_kib_are_sent_before_it(api: Api, auth: Auth) -> None:
    # A client pipelining many publishes gets their answers as they pass
    # 64 KiB, so that one that reads nothing pauses the connection before
    # it answers more.
    connection = Connection(api)
    connection.protocol.dataReceived(request(b"one", authorization(auth)))
    assert connection.transport.value() == b""  # at the end of the turn
    api.clock.advance(0)
    assert [status for status, _, _ in connection.answers()] == [201]
    connection.transport.clear()
    connection.protocol.dataReceived(b"".join(request(b"%d" % n, authorization(auth)) for n in range(1000)))
    sent = connection.transport.value()
    assert 0 < sent.count(b"HTTP/1.1 201 ") < 1000 and len(sent) > QUEUED_BYTES
    api.clock.advance(0)
    assert [status for status, _, _ in connection.answers()] == [201] * 1000
    assert latest(api)[1] == "999"
    connection.close()


# a store that makes a publish wait, over real sockets


@pytest_twisted.async_yield_fixture
async def api_daemon() -> Any:
    async with running(centers={"max_message_bytes": 100_000}) as daemon:
        await setup_site(daemon)
        auth = ("other", await daemon.add_publisher("other"))
        await make_center(daemon, auth, "news")
        daemon.service.publishers.forget_publisher("other")  # its next publish looks it up in the store
        yield daemon, auth


async def read_answers(client: Any, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The first *count* whole answers *client* received, waiting for them."""
    await until(lambda: len(split(bytes(client.data))) >= count or client.done, 5, f"{count} answers")
    return split(bytes(client.data))[:count]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_publish_that_waits_for_the_store_is_answered(api_daemon: Any) -> None:
    daemon, auth = api_daemon
    client = await connect(daemon.service.api_port.getHost().port)
    try:
        client.send(request(b"later", authorization(auth)))
        ((status, _, body),) = await read_answers(client, 1)
        assert status == 201, body
        assert daemon.service.centers.loaded("other", "news").latest.data == "later"
    finally:
        client.transport.loseConnection()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_large_body_behind_a_publish_that_waits_is_answered_after_it(api_daemon: Any) -> None:
    daemon, auth = api_daemon
    client = await connect(daemon.service.api_port.getHost().port)
    try:
        client.send(request(b"first", authorization(auth)) + request(b"z" * 40000, authorization(auth)))
        answers = await read_answers(client, 2)
        assert [status for status, _, _ in answers] == [201, 201]
        hub = daemon.service.centers.loaded("other", "news")
        assert hub.latest.data == "z" * 40000 and hub.seq == 2
    finally:
        client.transport.loseConnection()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_body_still_coming_waits_for_the_store_then_is_published(api_daemon: Any) -> None:
    # The head first: its credentials are looked up before the body is read.
    daemon, auth = api_daemon
    client = await connect(daemon.service.api_port.getHost().port)
    try:
        whole = request(b"after the look-up", authorization(auth), "Expect: 100-continue")
        head_end = whole.index(b"\r\n\r\n") + 4
        client.send(whole[:head_end])
        await until(lambda: bytes(client.data).startswith(b"HTTP/1.1 100 Continue\r\n\r\n") or client.done, 5,
                    "100 Continue")
        assert bytes(client.data) == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.data.clear()
        client.send(whole[head_end:])
        ((status, _, _),) = await read_answers(client, 1)
        assert status == 201
        assert daemon.service.centers.loaded("other", "news").latest.data == "after the look-up"
    finally:
        client.transport.loseConnection()
