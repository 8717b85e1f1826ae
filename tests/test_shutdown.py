"""Stopping the service: stop accepting, drain subscribers over ``drain_seconds``, finish."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectError

from tests.raw import RawClient, connect
from tests.support import bounded, call, handshake_headers, sleep, start_daemon, until, websocket

pytestmark = pytest.mark.integration

DRAIN = 1.0
WEBSOCKETS = 20
LONGPOLLS = 2


async def _status_of(raw: RawClient, request: bytes) -> bytes:
    """Send *request* on an open connection; the status line of the answer."""
    raw.send(request)
    await until(lambda: b"\r\n" in raw.data)
    return bytes(raw.data).split(b"\r\n", 1)[0]


@pytest_twisted.ensureDeferred
async def test_stop_drains_websockets_over_drain_seconds_and_answers_long_polls(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'notifier.db'}", subscribers={"drain_seconds": DRAIN})
    service = daemon.service
    try:
        secret = await daemon.add_publisher("site")
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=("site", secret))
        assert status == 201, body

        sockets = await defer.gatherResults([
            defer.Deferred.fromCoroutine(websocket(f"{daemon.ws}/sub/site/news", daemon.public_port))
            for _ in range(WEBSOCKETS)
        ])
        closed_at: list[float] = []
        codes: list[int | None] = []

        def record(result: tuple[int | None, str | None]) -> None:
            codes.append(result[0])
            closed_at.append(reactor.seconds())

        for ws in sockets:
            ws.closed.addCallback(record)
        polls = [treq.get(f"{daemon.public}/sub/site/news?timeout=60", persistent=False)
                 for _ in range(LONGPOLLS)]
        hub = service.centers.loaded("site", "news")
        assert hub is not None
        await until(lambda: len(hub.subscribers) == WEBSOCKETS + LONGPOLLS)
        # Connections opened before the stop, to ask for more during the drain.
        late_poll = await connect(daemon.public_port)
        late_ws = await connect(daemon.public_port)
        port = daemon.public_port
        api_port = service.api_port.getHost().port

        started = reactor.seconds()
        stopping = service.stopService()
        await sleep(DRAIN / 4)  # in the middle of the drain
        assert not stopping.called

        # New subscriptions are refused: the listeners are closed ...
        for refused_port in (port, api_port):
            with pytest.raises(ConnectError):
                await connect(refused_port)
        # ... and a connection that was already open gets 503.
        line = await _status_of(late_poll, b"GET /sub/site/news?timeout=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert line.startswith(b"HTTP/1.1 503"), line
        await until(lambda: b'"shutting_down"' in late_poll.data)
        upgrade = "".join(f"{k}: {v}\r\n" for k, v in handshake_headers().items())
        line = await _status_of(late_ws, f"GET /sub/site/news HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n".encode())
        assert line.startswith(b"HTTP/1.1 503"), line
        await until(lambda: b'"shutting_down"' in late_ws.data)
        assert len(hub.subscribers) <= WEBSOCKETS + LONGPOLLS  # nobody joined

        await bounded(stopping, DRAIN + 5)
        finished = reactor.seconds()
        assert finished - started <= DRAIN + 5

        # Every WebSocket was closed with 1001, spread over the drain.
        await bounded(defer.gatherResults([ws.closed for ws in sockets]), 5)
        assert codes == [1001] * WEBSOCKETS
        assert max(closed_at) - min(closed_at) >= DRAIN / 3
        assert min(closed_at) >= started
        # The long-polls were answered, with no messages.
        for poll in polls:
            response = await bounded(poll, 5)
            assert response.code == 200
            body = json.loads(await response.content())
            assert body["messages"] == []
            assert body["last_id"] is None
        assert not hub.subscribers

        # The listeners stay closed.
        for refused_port in (port, api_port):
            with pytest.raises(ConnectError):
                await connect(refused_port)
        for raw in (late_poll, late_ws):
            raw.transport.loseConnection()
    finally:
        if service.running:
            await service.stopService()


@pytest_twisted.ensureDeferred
async def test_stop_with_no_subscribers_finishes_in_time(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'notifier.db'}", subscribers={"drain_seconds": DRAIN})
    port = daemon.public_port
    started = reactor.seconds()
    await bounded(daemon.service.stopService(), DRAIN + 5)
    assert reactor.seconds() - started <= DRAIN + 5
    with pytest.raises(ConnectError):
        await connect(port)
