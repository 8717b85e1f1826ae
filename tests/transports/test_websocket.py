"""The WebSocket transport's entry point (``websocket.serve``) in memory:
an admitted upgrade read by a listener's connection, handed over to a
subscriber bound to its hubs. No socket."""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from notifier.domain.hub import Hub
from notifier.domain.model import Center, Grant
from notifier.end_of_turn import EndOfTurn
from notifier.http.connection import HttpSite
from notifier.http.request import NOT_DONE_YET, Request
from notifier.transports import websocket

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
HANDSHAKE = (b"GET /sub/site/news HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def make_hub(name: str = "news") -> Hub:
    return Hub(Center("site", name, False, None, None, 0.0), f"e{name}", 100, Clock().seconds)


class Upgrades:
    """A listener's app that admits every upgrade to *hubs*."""

    def __init__(self, hubs: list[Hub]) -> None:
        self.hubs = hubs
        self.factory = websocket.websocket_factory(65536, lambda hub: None)

    def serve(self, request: Request) -> int:
        return websocket.serve(self.factory, request, self.hubs, "raw", [None] * len(self.hubs), None)


def upgraded(data: bytes) -> tuple[Hub, StringTransport, Any, Clock]:
    """A connection of a listener that read *data*: the hub its upgrade was
    admitted to, the transport, the connection, the listener's clock."""
    hub = make_hub()
    clock = Clock()
    site = HttpSite(Upgrades([hub]), clock, turn=EndOfTurn(clock), timeout=60)
    connection = site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    transport.protocol = connection  # type: ignore[attr-defined]  # as a TCP connection has it
    connection.makeConnection(transport)
    connection.dataReceived(data)
    return hub, transport, connection, clock


def test_an_upgrade_read_by_the_connection_becomes_the_subscriber_s_connection() -> None:
    hub, transport, connection, clock = upgraded(HANDSHAKE)
    [subscriber] = hub.subscribers
    assert isinstance(subscriber, websocket.WebSocketSubscriber)
    assert transport.protocol is subscriber and connection.taken is subscriber  # type: ignore[attr-defined]
    assert transport.value().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    # No timer of the listener's on a subscriber's connection: it stays open.
    assert connection.timer is None and clock.getDelayedCalls() == []
    clock.advance(3600)
    assert not transport.disconnecting and list(hub.subscribers) == [subscriber]


def test_what_followed_the_head_reaches_the_subscriber() -> None:
    # A close frame sent with the handshake: the subscriber answers it.
    mask = b"\x01\x02\x03\x04"
    payload = struct.pack("!H", 1000)
    close = b"\x88\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    hub, transport, _, _ = upgraded(HANDSHAKE + close)
    head, _, frames = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ") and frames == b"\x88\x02" + payload  # 1000 echoed
    assert transport.disconnecting  # the closing handshake done, the server closes


class Recorded(Request):
    """A request read by a connection, handing its connection over to a record."""

    __slots__ = ("taken",)

    def take_over(self, factory: Any) -> int:
        self.taken = factory
        return NOT_DONE_YET


def test_an_upgrade_is_handed_over_bound_to_its_hubs() -> None:
    hubs = [make_hub("a"), make_hub("b")]
    request = Recorded(None, b"GET", b"/sub/site/a,b", {}, [])  # type: ignore[arg-type]  # no connection needed
    factory = websocket.websocket_factory(65536, lambda hub: None)
    grant = Grant(expires=60.0)
    assert websocket.serve(factory, request, hubs, "json", ["ea-0", None], grant) == NOT_DONE_YET
    protocol = request.taken.buildProtocol(None)
    assert isinstance(protocol, websocket.JsonSubscriber) and protocol.factory is factory
    assert protocol.start == (hubs, ["ea-0", None], grant)
    assert not any(hub.subscribers for hub in hubs)  # subscribed once the handshake is read
