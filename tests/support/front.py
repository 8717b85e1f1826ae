"""The answers of a front (notifier.front) as the tests of both listeners
read them: from a StringTransport, or from a raw connection."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport

from notifier.front import Front
from tests.raw import complete, parse_response
from tests.support.waiting import until

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def without_date(answer: bytes) -> bytes:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.startswith(b"Date: ")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def answer_now(protocol: Any, data: bytes, clock: Any) -> tuple[bytes, Any]:
    """What *protocol* (a new connection of a site whose time is *clock*)
    answers to *data* by the end of the turn it came in."""
    transport = StringTransport(peerAddress=PEER)
    transport.protocol = protocol  # what a WebSocket upgrade takes the connection from
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    clock.advance(0)
    assert answered(transport.value()), transport.value()
    transport.protocol.connectionLost(connectionDone)
    return transport.value(), protocol


def answered(data: bytes) -> bool:
    """Whether *data* holds a whole answer, or a WebSocket handshake's."""
    return complete(data) or (data.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in data)


async def answer_of(protocol: Any, data: bytes) -> tuple[bytes, Any]:
    """What *protocol* (a new connection of the site) answers to *data*."""
    transport = StringTransport(peerAddress=PEER)
    transport.protocol = protocol  # what a WebSocket upgrade takes the connection from
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    await until(lambda: answered(transport.value()), 5, "an answer")
    transport.protocol.connectionLost(connectionDone)
    return transport.value(), protocol


async def read_answers(client: Any, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The first *count* whole answers *client* has received, waiting for them."""

    def split(data: bytes) -> list[bytes]:
        answers = []
        while complete(data):
            status, headers, body = parse_response(data)
            head_end = data.index(b"\r\n\r\n") + 4
            answers.append(data[:head_end + len(body)])
            data = data[head_end + len(body):]
        return answers

    await until(lambda: len(split(bytes(client.data))) >= count, 5, f"{count} answers")
    return [parse_response(answer) for answer in split(bytes(client.data))[:count]]


def recording(site: Any) -> list[Front]:
    """The fronts *site* makes from now on."""
    made: list[Front] = []
    build = site.buildProtocol

    def record(addr: Any) -> Any:
        protocol = build(addr)
        made.append(protocol)
        return protocol

    site.buildProtocol = record
    return made
