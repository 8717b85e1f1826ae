"""The WebSocket transport's entry point (``websocket.serve``) in memory:
an admitted upgrade handed to a subscriber bound to its hubs, whether
twisted.web or the front read the request. No socket."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.task import Clock
from twisted.web import server
from twisted.web.test.requesthelper import DummyChannel

from notifier.front import PlainRequest
from notifier.hub import Hub
from notifier.model import Center, Grant
from notifier.transports import websocket

HANDSHAKE = ((b"host", b"127.0.0.1"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
             (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13"))


def make_hub(name: str = "news") -> Hub:
    return Hub(Center("site", name, False, None, None, 0.0), f"e{name}", 100, Clock().seconds)


def test_an_upgrade_read_by_twisted_web_becomes_the_subscriber_s_connection() -> None:
    hub = make_hub()
    channel = DummyChannel()
    timeouts: list[object] = []
    channel.setTimeout = timeouts.append  # type: ignore[attr-defined]
    transport = channel.transport
    transport.protocol = channel  # type: ignore[attr-defined]  # as a TCP connection has it
    request = server.Request(channel)
    request.method, request.clientproto, request.uri = b"GET", b"HTTP/1.1", b"/sub/site/news"
    request.content = BytesIO()
    for name, value in HANDSHAKE:
        request.requestHeaders.setRawHeaders(name, [value])
    factory = websocket.websocket_factory(65536, lambda hub: None)
    assert websocket.serve(factory, request, [hub], "raw", [None], None) == server.NOT_DONE_YET
    assert timeouts == [None]  # no idle timeout of twisted.web's on a subscriber's connection
    [subscriber] = hub.subscribers
    assert transport.protocol is subscriber and isinstance(subscriber, websocket.WebSocketSubscriber)
    assert transport.written.getvalue().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")  # type: ignore[attr-defined]


class ReadByTheFront(PlainRequest):
    """A request the front read, handing its connection over to a record."""

    __slots__ = ("taken",)

    def take_over(self, factory: Any) -> int:
        self.taken = factory
        return server.NOT_DONE_YET


def test_an_upgrade_read_by_the_front_is_handed_over_bound_to_its_hubs() -> None:
    hubs = [make_hub("a"), make_hub("b")]
    request = ReadByTheFront(None, b"GET", b"/sub/site/a,b", {}, 5)  # type: ignore[arg-type]  # no front needed
    factory = websocket.websocket_factory(65536, lambda hub: None)
    grant = Grant(expires=60.0)
    assert websocket.serve(factory, request, hubs, "json", ["ea-0", None], grant) == server.NOT_DONE_YET
    protocol = request.taken.buildProtocol(None)
    assert isinstance(protocol, websocket.JsonSubscriber) and protocol.factory is factory
    assert protocol.start == (hubs, ["ea-0", None], grant)
    assert not any(hub.subscribers for hub in hubs)  # subscribed once the handshake is read
