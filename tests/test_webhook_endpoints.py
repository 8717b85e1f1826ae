"""Webhooks to a hostile site, over real sockets on loopback: an endless
answer, a gzip bomb, a body fed a byte a second, a redirect, and
``allow_private``. The daemon runs in this process, so its memory is this
process's: its peak (``VmHWM``, reset before each exchange) must stay
within ``MEMORY`` of where it started."""

from __future__ import annotations

import re
import zlib
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web import resource, server
from twisted.web.client import BrowserLikePolicyForHTTPS
from zope.interface import implementer

from notifier.webhooks import Sender, TimedOut
from tests.support import Daemon, bounded, call, running, setup_site, until, websocket
from tests.support.tls import self_signed

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
#: How much the daemon's memory may grow while a hostile site answers.
MEMORY = 16 * MiB
#: The endless answer, and what the bomb inflates to.
HUGE = 300 * MiB
CHUNK = b"x" * 65536
QUICK = {"batch_seconds": 0.05, "timeout": 2, "retry_for": 0}


def _bomb() -> bytes:
    """A gzip body of a few hundred KiB that inflates to ``HUGE`` bytes of zeros."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join([packer.compress(zeros) for _ in range(HUGE // MiB)] + [packer.flush()])


@implementer(IPushProducer)
class Flood:
    """Writes *total* bytes to *request* as fast as the client takes them, then finishes."""

    def __init__(self, request: server.Request, total: int) -> None:
        self.request = request
        self.left = total
        self.paused = self.stopped = False
        request.registerProducer(self, True)
        reactor.callLater(0, self._write)

    def _write(self) -> None:
        while not (self.paused or self.stopped):
            if self.left <= 0:
                self.stopped = True
                self.request.unregisterProducer()
                self.request.finish()
                return
            self.left -= len(CHUNK)
            self.request.write(CHUNK)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused and not self.stopped:
            self.paused = False
            reactor.callLater(0, self._write)

    def stopProducing(self) -> None:
        self.stopped = True


class Hostile(resource.Resource):
    """A site whose answer is its path: ``/huge``, ``/bomb``, ``/drip``,
    ``/redirect`` (303 to *elsewhere*), or ``/ok`` (204), whatever the
    method. Records each request's method, headers and how its connection
    ended."""

    isLeaf = True

    def __init__(self, elsewhere: str = "") -> None:
        super().__init__()
        self.elsewhere = elsewhere
        self.bomb = b""
        self.seen: list[dict[str, Any]] = []

    def render(self, request: server.Request) -> Any:
        entry: dict[str, Any] = {
            "mode": request.path.decode().strip("/"), "method": request.method.decode(), "ended": None,
            "start": reactor.seconds(),
            "headers": {name.decode().lower(): values for name, values in request.requestHeaders.getAllRawHeaders()},
        }
        self.seen.append(entry)
        stop: list[Any] = []

        def ended(how: str) -> None:
            entry["ended"], entry["at"] = how, reactor.seconds()
            for thing in stop:
                thing()

        request.notifyFinish().addCallbacks(lambda _: ended("finished"), lambda _: ended("lost"))
        mode = entry["mode"]
        if mode == "huge":
            stop.append(Flood(request, HUGE).stopProducing)
            return server.NOT_DONE_YET
        if mode == "bomb":
            request.setHeader(b"content-encoding", b"gzip")
            request.setHeader(b"content-type", b"application/json")
            return self.bomb
        if mode == "drip":
            request.setHeader(b"content-type", b"text/plain")
            request.write(b"x")
            drip = LoopingCall(request.write, b"x")
            drip.start(1.0, now=False)
            stop.append(lambda: drip.running and drip.stop())
            reactor.callLater(60, lambda: drip.running and (drip.stop(), request.finish()))
            return server.NOT_DONE_YET
        if mode == "redirect":
            request.setResponseCode(303)
            request.setHeader(b"location", self.elsewhere.encode())
            return b""
        request.setResponseCode(204)
        return b""

    def ended(self) -> bool:
        return bool(self.seen) and all(entry["ended"] is not None for entry in self.seen)


@pytest_twisted.async_yield_fixture
async def hostile():
    """The hostile site, and the site its redirect points to."""
    elsewhere = Hostile()
    other = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.Site(elsewhere))
    site = Hostile(f"http://127.0.0.1:{other.getHost().port}/ok")
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.Site(site))
    site.base = f"http://127.0.0.1:{port.getHost().port}"
    site.other = elsewhere
    yield site
    await port.stopListening()
    await other.stopListening()


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.M)
    assert match is not None, field
    return int(match[1]) * 1024


def reset_peak() -> int:
    """Start the peak resident memory (VmHWM) again from now; the memory now."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status("VmRSS")


async def _hooked(daemon: Daemon, url: str) -> tuple[str, str]:
    auth = await setup_site(daemon, "news")
    status, body = await call("PUT", f"{daemon.api}/api/v1/webhook", {"url": url, "events": ["center_occupied"]},
                              auth=auth)
    assert status == 200, body
    return auth


def _counted(daemon: Daemon) -> int:
    stats = daemon.service.webhooks.stats
    return stats.webhooks_sent["site"] + stats.webhooks_failed["site"]


@pytest.mark.parametrize("mode", ["huge", "bomb"])
@pytest_twisted.ensureDeferred
async def test_an_endless_or_inflating_answer_costs_the_daemon_no_memory(hostile, mode):
    hostile.bomb = _bomb() if mode == "bomb" else b""
    async with running(webhooks=QUICK) as daemon:
        await _hooked(daemon, f"{hostile.base}/{mode}")
        before = reset_peak()
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)  # center_occupied
        await until(hostile.ended, timeout=60, what="the exchange's end")
        await until(lambda: _counted(daemon) == 1, timeout=10, what="the request counted")
        peak = _status("VmHWM")
        ws.close()
        print(f"{mode}: resident {before / MiB:.1f} MiB before, peak {peak / MiB:.1f} MiB "
              f"(+{(peak - before) / MiB:.1f} MiB)")
        assert peak - before <= MEMORY, f"+{(peak - before) / MiB:.1f} MiB"
        [entry] = hostile.seen
        assert "accept-encoding" not in entry["headers"]
        if mode == "huge":
            assert entry["ended"] == "lost"  # the daemon hung up on it
        # The status was a 200: the request counts as taken.
        assert daemon.service.webhooks.stats.webhooks_sent["site"] == 1


@pytest_twisted.ensureDeferred
async def test_a_body_fed_a_byte_a_second_is_cut_at_the_timeout(hostile):
    async with running(webhooks=QUICK) as daemon:
        await _hooked(daemon, f"{hostile.base}/drip")
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        await until(hostile.ended, timeout=20, what="the drip's connection closed")
        ws.close()
        [entry] = hostile.seen
        assert entry["ended"] == "lost"
        assert entry["at"] - entry["start"] < 15  # the timeout is 2 s: ended by it, not by the site
        await until(lambda: _counted(daemon) == 1, timeout=10)
        assert daemon.service.webhooks.stats.webhooks_failed["site"] == 1


@pytest_twisted.ensureDeferred
async def test_a_redirect_is_a_failure_and_never_followed(hostile):
    async with running(webhooks={**QUICK, "retry_for": 1.5}) as daemon:
        await _hooked(daemon, f"{hostile.base}/redirect")
        ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
        await until(lambda: _counted(daemon) == 1, timeout=20, what="the request given up")
        ws.close()
        assert hostile.other.seen == []  # the signature went nowhere else
        stats = daemon.service.webhooks.stats
        assert stats.webhooks_failed["site"] == 1 and stats.webhooks_retried["site"] >= 1
        assert len(hostile.seen) == stats.webhooks_retried["site"] + 1
        assert all((entry["mode"], entry["method"]) == ("redirect", "POST") for entry in hostile.seen)
        assert not any("accept-encoding" in entry["headers"] for entry in hostile.seen)


@pytest.mark.parametrize("allow_private", [False, True])
@pytest_twisted.ensureDeferred
async def test_a_loopback_site_is_sent_nothing_unless_private_addresses_are_allowed(hostile, allow_private):
    logged: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        logged.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        async with running(webhooks={**QUICK, "allow_private": allow_private}) as daemon:
            # A name, resolved by the reactor's resolver, off its thread.
            await _hooked(daemon, f"{hostile.base.replace('127.0.0.1', 'localhost')}/ok")
            ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
            await until(lambda: _counted(daemon) == 1, timeout=10, what="the request counted")
            ws.close()
            stats = daemon.service.webhooks.stats
    finally:
        globalLogPublisher.removeObserver(observer)
    if allow_private:
        assert stats.webhooks_sent["site"] == 1 and [entry["mode"] for entry in hostile.seen] == ["ok"]
    else:
        assert stats.webhooks_failed["site"] == 1 and hostile.seen == []
        assert any("not sent" in line and "loopback" in line and "allow_private" in line for line in logged), logged


@pytest.mark.parametrize("mode, status", [("huge", 200), ("drip", None), ("ok", 204)])
@pytest_twisted.ensureDeferred
async def test_over_tls_the_bound_and_the_deadline_close_the_connection_too(tmp_path, mode, status):
    key, cert, pem = self_signed(tmp_path)
    site = Hostile()
    description = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    port = await endpoints.serverFromString(reactor, description).listen(server.Site(site))
    sender = Sender(reactor, tls=BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(pem)))
    try:
        sent = Deferred.fromCoroutine(sender(f"https://localhost:{port.getHost().port}/{mode}", b"{}", {}, 2))
        if status is None:
            with pytest.raises(TimedOut):
                await bounded(sent, 15)
        else:
            assert await bounded(sent, 15) == status
        if mode != "ok":  # a TLS close waits for the peer's: these are aborted
            await until(site.ended, timeout=10, what="the connection closed")
            assert [entry["ended"] for entry in site.seen] == ["lost"]
        assert "accept-encoding" not in site.seen[0]["headers"]
    finally:
        await port.stopListening()
