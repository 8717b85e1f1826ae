"""The WebSocket subscriber in memory: Autobahn's memory agent as the
browser, a hub as the center, no socket and no HTTP listener.

What the subscriber owns (notifier.transports.streaming): the starting
point, the backlog then live messages, the close codes of each reason, the
token's end, leaving, and the answer of pings.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from autobahn.twisted.testing import MemoryReactorClockResolver, create_memory_agent, create_pumper
from autobahn.twisted.websocket import WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.task import Clock

from notifier.domain.hub import Hub
from notifier.domain.model import Center, Grant
from notifier.domain.token_deadlines import TokenDeadlines
from notifier.transports.websocket import FORMATS, WebSocketSubscriber, websocket_factory


class Browser(WebSocketClientProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.received: DeferredQueue[str] = DeferredQueue()
        self.closed: Deferred[int | None] = Deferred()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.put(payload.decode())

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.closed.called:
            self.closed.callback(code)

    async def next(self) -> str:
        return await self.received.get().addTimeout(5, reactor)


def _hub(history: int = 10) -> Hub:
    return Hub(Center("site", "news", False, None, None, 0.0), "e1", history, lambda: 0.0)


def _publish(hub: Hub, text: str) -> str:
    prepared = hub.append(text)
    hub.deliver(prepared)
    return prepared.message.id


async def _open(hub: Hub, fmt: str = "json", cursor: str | None = None, expires: float | None = None,
                deadlines: TokenDeadlines | None = None) -> tuple[Browser, WebSocketSubscriber, Any]:
    factory = websocket_factory(65536, lambda hub: None)
    factory.deadlines = deadlines
    made: list[WebSocketSubscriber] = []

    def server() -> WebSocketSubscriber:
        subscriber = FORMATS[fmt]()
        subscriber.factory = factory
        subscriber.start = ((hub,), (cursor,), Grant(expires) if expires is not None else None)
        made.append(subscriber)
        return subscriber

    pumper = create_pumper()
    agent = create_memory_agent(MemoryReactorClockResolver(), pumper, server)
    pumper.start()
    browser = await agent.open("ws://localhost:8080/sub/site/news", {}, Browser)
    return browser, made[0], pumper


@pytest_twisted.ensureDeferred
async def test_a_resumed_subscriber_gets_where_it_starts_then_the_backlog_then_live_messages():
    hub = _hub()
    first = _publish(hub, "one")
    _publish(hub, "two")
    browser, subscriber, pumper = await _open(hub, cursor=first)
    try:
        assert json.loads(await browser.next()) == {"cursor": first, "recovered": True, "lost": []}
        assert json.loads(await browser.next())["data"] == "two"
        assert subscriber in hub.subscribers
        _publish(hub, "three")
        live = json.loads(await browser.next())
        assert (live["data"], live["center"], live["id"]) == ("three", "news", "e1-3")
    finally:
        await pumper.stop()


@pytest_twisted.ensureDeferred
async def test_a_raw_subscriber_gets_the_text_alone_and_no_recovery_frame():
    hub = _hub()
    first = _publish(hub, "one")
    _publish(hub, "two")
    browser, _, pumper = await _open(hub, fmt="raw", cursor=first)
    try:
        assert await browser.next() == "two"
    finally:
        await pumper.stop()


@pytest_twisted.ensureDeferred
async def test_each_reason_to_close_has_its_code():
    for reason, code in (("deleted", 1001), ("shutdown", 1001), ("expired", 4401), ("revoked", 4401)):
        hub = _hub()
        browser, subscriber, pumper = await _open(hub)
        try:
            hub.close(reason)
            assert await browser.closed.addTimeout(5, reactor) == code, reason
            assert subscriber.hubs == () and not hub.subscribers
        finally:
            await pumper.stop()


@pytest_twisted.ensureDeferred
async def test_the_subscription_ends_with_its_token():
    hub = _hub()
    clock = Clock()
    browser, subscriber, pumper = await _open(hub, expires=30.0, deadlines=TokenDeadlines(clock))
    try:
        clock.advance(29)
        assert subscriber in hub.subscribers
        clock.advance(1)
        assert await browser.closed.addTimeout(5, reactor) == 4401
        assert not hub.subscribers
    finally:
        await pumper.stop()


@pytest_twisted.ensureDeferred
async def test_a_browser_answering_pings_stays_and_leaving_unsubscribes():
    hub = _hub()
    browser, subscriber, pumper = await _open(hub)
    try:
        for _ in range(3):
            subscriber.heartbeat()  # a ping; the browser's pong comes back with the next pump
            sent = subscriber._ping
            for _ in range(50):
                if subscriber._ping is None:
                    break
                await _pause()
            assert sent is not None and subscriber._ping is None
        assert subscriber in hub.subscribers
        browser.sendClose()
        # Whether the in-memory pump hands the browser the server's close
        # frame (its own echoed: no code) before the end of the connection
        # or not (1006) is the pump's: what counts is that the subscriber left.
        assert await browser.closed.addTimeout(5, reactor) in (None, 1006)
        for _ in range(50):  # the server side hears of it with the next pump
            if not hub.subscribers:
                break
            await _pause()
        assert not hub.subscribers and subscriber.hubs == ()
    finally:
        await pumper.stop()


async def _pause() -> None:
    d: Deferred[None] = Deferred()
    reactor.callLater(0.02, d.callback, None)
    await d
