"""Webhooks without sockets: retries that read the webhook again, the
addresses ``allow_private = false`` refuses, and the sender's own path to a
public address (on a MemoryReactor: nothing ever leaves the process)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IHostnameResolver, IResolutionReceiver
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from notifier.config import WebhooksConfig
from notifier.domain.errors import BadRequest
from notifier.domain.model import Publisher, Webhook
from notifier.domain.stats import Stats
from notifier.webhooks import ANSWER_BYTES, Refused, Sender, TimedOut, Webhooks, refusal, signature, webhook_of

EVERY = ("center_occupied", "center_vacated", "member_joined", "member_left")
FIRST = Webhook("https://one.example/hook", EVERY)
OWNER = Publisher("site", "s" * 43, 0.0, "1", "k" * 20)


class Place:
    """The store as the outbox reads it: the webhook and the publisher now."""

    def __init__(self) -> None:
        self.webhook: Webhook | None = FIRST
        self.owner: Publisher | None = OWNER
        self.reads = 0

    async def find(self, publisher: str) -> tuple[Webhook | None, Publisher | None]:
        self.reads += 1
        return self.webhook, self.owner


class Site:
    """Records each request; answers each status of ``statuses`` in turn (then 204)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        self.requests.append((url, json.loads(body), headers))
        return self.statuses.pop(0) if self.statuses else 204


def _outbox(statuses: list[int]) -> tuple[Clock, Place, Site, Webhooks]:
    clock, place, site = Clock(), Place(), Site(statuses)
    config = WebhooksConfig(batch_seconds=1, timeout=5, retry_for=600)
    return clock, place, site, Webhooks(config, clock, Stats(started=0.0), place.find, site.post)


def _next_attempt(clock: Clock) -> None:
    clock.advance(61)  # past any backoff


def test_each_retry_goes_where_the_webhook_is_then_signed_with_the_secret_then():
    clock, place, site, webhooks = _outbox([500, 500, 500])
    webhooks.event("site", "center_occupied", "a", {})
    webhooks.event("site", "member_joined", "a", {"uid": "ann", "info": None})
    clock.advance(1)
    assert [url for url, _, _ in site.requests] == [FIRST.url]
    place.webhook = Webhook("https://two.example/hook", EVERY)
    _next_attempt(clock)
    assert [url for url, _, _ in site.requests] == [FIRST.url, "https://two.example/hook"]
    place.owner = Publisher("site", "t" * 43, 0.0, "1", "k" * 20)  # rotated
    place.webhook = Webhook("https://three.example/hook", ("member_joined",))
    _next_attempt(clock)
    url, body, headers = site.requests[-1]
    assert url == "https://three.example/hook"
    assert [e["name"] for e in body["events"]] == ["member_joined"]  # only what it wants now
    timestamp = int(headers["Notifier-Signature"].split(",")[0][2:])
    assert headers["Notifier-Signature"] == signature("t" * 43, timestamp, json.dumps(body).encode())
    assert len({h["Notifier-Webhook-Id"] for _, _, h in site.requests}) == 1  # one request, retried
    _next_attempt(clock)
    assert len(site.requests) == 4 and webhooks.stats.webhooks_sent["site"] == 1
    assert webhooks.outboxes == {}


def test_a_retry_the_webhook_no_longer_wants_is_not_sent():
    clock, place, site, webhooks = _outbox([500])
    webhooks.event("site", "center_occupied", "a", {})
    clock.advance(1)
    place.webhook = Webhook(FIRST.url, ("member_left",))
    _next_attempt(clock)
    assert len(site.requests) == 1
    assert webhooks.outboxes == {} and webhooks.stats.webhooks_failed["site"] == 0


@pytest.mark.parametrize("removed", ["webhook", "owner"])
def test_a_removed_webhook_or_publisher_ends_the_retries_and_drops_what_waits(removed):
    clock, place, site, webhooks = _outbox([500] * 100)
    webhooks.event("site", "center_occupied", "a", {})
    clock.advance(1)
    assert len(site.requests) == 1
    webhooks.event("site", "center_vacated", "a", {})  # waits behind the request being retried
    setattr(place, removed, None)
    for _ in range(20):
        _next_attempt(clock)
    assert len(site.requests) == 1
    assert webhooks.outboxes == {}
    stats = webhooks.stats
    assert (stats.webhooks_failed["site"], stats.webhooks_dropped["site"], stats.webhooks_retried["site"]) == (0, 0, 1)


def test_a_refused_destination_is_a_failed_attempt_logged_with_its_reason_and_retried():
    clock, place = Clock(), Place()
    attempts: list[str] = []

    async def refuse(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        attempts.append(url)
        raise Refused("one.example is at 127.0.0.1, which is loopback (allow_private = false)")

    webhooks = Webhooks(WebhooksConfig(retry_for=100), clock, Stats(started=0.0), place.find, refuse)
    logged: list[str] = []
    observer = lambda event: logged.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        webhooks.event("site", "center_occupied", "a", {})
        clock.advance(1)
        _next_attempt(clock)
        for _ in range(5):
            _next_attempt(clock)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(attempts) >= 2
    assert webhooks.stats.webhooks_retried["site"] == len(attempts) - 1
    assert webhooks.stats.webhooks_failed["site"] == 1
    assert any("not sent" in line and "loopback" in line for line in logged), logged
    assert any("given up" in line and "loopback" in line for line in logged), logged


# the addresses allow_private = false refuses


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.1.2.3", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::7f00:1", "loopback"), ("2002:7f00:1::", "loopback"),
    ("2002:a00:1::", "private"), ("2002:c0a8:101::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("fe80::1%eth0", "link-local"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("172.31.255.255", "private"),
    ("192.168.1.1", "private"), ("fd12:3456::1", "private"), ("fc00::1", "private"),
    ("::ffff:10.1.1.1", "private"), ("192.0.2.1", "private"), ("2001:db8::1", "private"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("239.255.255.250", "multicast"), ("ff02::1", "multicast"), ("ff0e::1", "multicast"),
    ("240.0.0.1", "private"), ("255.255.255.255", "private"),
    ("100.64.0.1", "not global"), ("fec0::1", "site-local"),
])
def test_private_and_special_addresses_are_refused_with_a_reason(address, reason):
    assert refusal(address) == reason


@pytest.mark.parametrize("address", [
    "8.8.8.8", "93.184.216.34", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111",
    "2a00:1450:4001:82b::200e", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::",
])
def test_public_unicast_addresses_are_allowed(address):
    assert refusal(address) is None


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_is_refused_unless_global_unicast_and_so_is_its_mapped_form(address):
    public = address.is_global and not address.is_multicast
    assert (refusal(str(address)) is None) == public
    assert refusal(f"::ffff:{address}") == refusal(str(address))
    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16"):
        if address in ipaddress.ip_network(network):
            assert refusal(str(address)) is not None


@given(st.ip_addresses(v=6))
def test_an_ipv6_address_is_allowed_only_if_global_unicast(address):
    if refusal(str(address)) is None:
        assert address.is_global and not address.is_multicast and not address.is_site_local or \
            address.ipv4_mapped is not None or address.sixtofour is not None or \
            address in ipaddress.ip_network("64:ff9b::/96")


# the sender's path to a public address, in memory


@implementer(IHostnameResolver)
class Names:
    """A resolver answering from a table, and counting questions."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> Any:
        self.asked.append(hostName)
        resolutionReceiver.resolutionBegan(None)  # type: ignore[arg-type]
        for host in self.table.get(hostName, []):
            kind = IPv6Address if ":" in host else IPv4Address
            resolutionReceiver.addressResolved(kind("TCP", host, portNumber))
        resolutionReceiver.resolutionComplete()
        return None


def _send(sender: Sender, url: str, timeout: float = 5) -> Deferred[int]:
    return Deferred.fromCoroutine(sender(url, b'{"events": []}', {"Notifier-Webhook-Id": "x"}, timeout))


def _failure(d: Deferred[int]) -> BaseException:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "not done"
    return results[0].value


def test_a_name_at_a_private_address_only_is_refused_and_nothing_is_connected():
    reactor = MemoryReactorClock()
    names = Names({"site.example": ["10.0.0.7", "::1"]})
    error = _failure(_send(Sender(reactor, allow_private=False, resolver=names), "http://site.example/hook"))
    assert isinstance(error, Refused) and "10.0.0.7" in str(error) and "private" in str(error)
    assert reactor.tcpClients == [] and names.asked == ["site.example"]
    error = _failure(_send(Sender(reactor, allow_private=False, resolver=names), "http://[::1]:8000/hook"))
    assert isinstance(error, Refused) and "loopback" in str(error)
    assert reactor.tcpClients == []


def _connected(reactor: MemoryReactorClock, index: int = 0) -> tuple[Any, StringTransport]:
    """The protocol of the *index*th connection the sender asked for, on a StringTransport."""
    protocol = reactor.tcpClients[index][2].buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_the_request_goes_to_the_public_address_checked_with_the_name_as_host():
    reactor = MemoryReactorClock()
    names = Names({"site.example": ["192.168.0.9", "93.184.216.34"]})
    answered = _send(Sender(reactor, allow_private=False, resolver=names), "http://site.example:8080/hook")
    # Connected to the address checked, never resolved again (no rebinding in between).
    assert [client[:2] for client in reactor.tcpClients] == [("93.184.216.34", 8080)]
    protocol, transport = _connected(reactor)
    head = transport.value().split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
    assert b"host: site.example:8080" in head and head[0] == b"post /hook http/1.1"
    assert not any(line.startswith(b"accept-encoding") for line in head)
    assert b"connection: close" in head and b"content-length: 14" in head
    protocol.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert answered.called and answered.result == 204
    assert names.asked == ["site.example"]


def test_the_deadline_covers_the_answer_s_body():
    reactor = MemoryReactorClock()
    answered = _send(Sender(reactor, allow_private=False, resolver=Names({"a.example": ["93.184.216.34"]})),
                     "http://a.example/", timeout=5)
    protocol, transport = _connected(reactor)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n")
    reactor.advance(4.5)
    protocol.dataReceived(b"1\r\nx\r\n")
    assert not answered.called
    reactor.advance(1)
    assert isinstance(_failure(answered), TimedOut)
    assert transport.disconnecting


def test_at_most_answer_bytes_of_an_answer_are_read():
    reactor = MemoryReactorClock()
    answered = _send(Sender(reactor, allow_private=False, resolver=Names({"a.example": ["93.184.216.34"]})),
                     "http://a.example/")
    protocol, transport = _connected(reactor)
    read: list[int] = []
    http = protocol._wrappedProtocol.wrappedProtocol  # the endpoint's wrapper, the bound's, then Agent's
    inner = http.dataReceived
    http.dataReceived = lambda data: (read.append(len(data)), inner(data))
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n"
    for _ in range(16):
        protocol.dataReceived(head + b"x" * 65536)
        head = b""
    assert sum(read) == ANSWER_BYTES and transport.disconnecting
    protocol.connectionLost(Failure(ConnectionAborted()))
    assert answered.result == 200


def test_a_head_over_answer_bytes_is_a_failure():
    reactor = MemoryReactorClock()
    answered = _send(Sender(reactor, allow_private=False, resolver=Names({"a.example": ["93.184.216.34"]})),
                     "http://a.example/")
    protocol, transport = _connected(reactor)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: y\r\n" * 2000)
    assert transport.disconnecting
    protocol.connectionLost(Failure(ConnectionAborted()))
    assert "head" in str(_failure(answered))


def test_a_retry_reads_the_store_even_just_after_the_first_attempt():
    clock, place, site, webhooks = _outbox([500])
    webhooks.event("site", "center_occupied", "a", {})
    clock.advance(1)
    place.webhook = Webhook("https://two.example/hook", EVERY)  # changed by a process not heard of
    clock.advance(1)  # the first backoff, within WEBHOOK_TTL of the first read
    assert [url for url, _, _ in site.requests] == [FIRST.url, "https://two.example/hook"]


@pytest.mark.parametrize("url", ["https://user:secret@site.example/hook", "http://:secret@site.example/hook",
                                 "https://user@site.example/hook"])
def test_a_webhook_url_with_a_user_or_password_is_refused_without_echoing_it(url):
    with pytest.raises(BadRequest) as refused:
        webhook_of({"url": url, "events": ["center_occupied"]})
    assert refused.value.code == "invalid_webhook"
    assert "secret" not in refused.value.message and url not in refused.value.message
