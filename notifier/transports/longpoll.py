"""Long-poll subscribers: one request held until a message or the timeout."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from notifier.envelope import envelope
from notifier.errors import NotFound
from notifier.hub import Batch, Hub
from notifier.model import Message


def body(messages: list[Message], last_id: str | None, recovered: bool) -> bytes:
    return json.dumps(
        {"messages": [envelope(m) for m in messages], "last_id": last_id, "recovered": recovered},
        ensure_ascii=False,
    ).encode()


def live_body(batch: Batch) -> bytes:
    """The answer every waiting long-poll gets for live messages: encoded once."""
    messages = batch.messages
    return body(messages, messages[-1].id, True)


class LongPoll:
    """A waiting long-poll request, subscribed to its hub until answered."""

    transport_name = "longpoll"
    __slots__ = ("hub", "answer", "cursor", "_timer")

    def __init__(self, hub: Hub, cursor: str | None, timeout: float, clock: IReactorTime) -> None:
        self.hub = hub
        self.cursor = cursor
        self.answer: Deferred[bytes] = Deferred(lambda _: self._leave())
        self._timer: IDelayedCall | None = clock.callLater(timeout, self._expire)
        hub.subscribe(self)

    def _leave(self) -> None:
        self.hub.unsubscribe(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _respond(self, result: Any) -> None:
        self._leave()
        if not self.answer.called:
            self.answer.callback(result) if isinstance(result, bytes) else self.answer.errback(result)

    def _expire(self) -> None:
        self._timer = None
        self._respond(body([], self.cursor, True))

    def deliver(self, batch: Batch) -> None:
        self._respond(batch.form(live_body))

    def close(self, reason: str) -> None:
        if reason == "deleted":
            self._respond(NotFound("the center was deleted", code="center_deleted"))
        else:
            self._respond(body([], self.cursor, True))
