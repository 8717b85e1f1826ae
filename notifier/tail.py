"""The console's live tail of a center (docs/console.rst).

``GET /admin/v1/publishers/{publisher}/centers/{center}/tail`` answers an
event stream of what the center's subscribers get, as it goes out, and its
presence items: an observer of the hub (``Hub.observers``), not one of its
subscribers, so watching a center neither counts as a subscriber nor makes
it occupied, nor a member of it.

    event: hello          data: {"center", "position"}
    id: <id> / event: message / data: {"id", "center", "data", "ts"}
    event: members|join|leave   data: the presence item
    event: end            data: {"reason"}   (the center deleted, the daemon stopping)

with a comment line every ``KEEP_ALIVE`` seconds. A tail that falls more
than ``MAX_BUFFER`` bytes behind is ended: it is a view, not a delivery.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web import server

from notifier.compat import temp_data_length
from notifier.hub import Batch, Hub
from notifier.transports.sse import envelope_event

#: Seconds between two comment lines of an idle tail.
KEEP_ALIVE = 15.0
#: Bytes a tail may have waiting to be sent before it is ended.
MAX_BUFFER = 4 * 1024 * 1024


class Tail:
    def __init__(self, request: server.Request, hub: Hub, clock: IReactorTime) -> None:
        self.request = request
        self.hub = hub
        self.clock = clock
        self.done = False
        self._timer: IDelayedCall | None = None
        #: Fires once the tail has ended (its request finished, or gone).
        self.ended: Deferred[None] = Deferred()

    def start(self, members: list[tuple[str, Any]] | None) -> None:
        """Open the stream: where the center stands, and who is there (a
        presence center); from now on, what goes out."""
        request = self.request
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        hello = {"center": self.hub.center.name, "position": self.hub.position}
        self._write(f"event: hello\ndata: {json.dumps(hello)}\n\n".encode())
        if members is not None:
            item = {"presence": "members", "center": self.hub.center.name,
                    "members": [{"uid": uid, "info": info} for uid, info in members]}
            self._write(f"event: members\ndata: {json.dumps(item, ensure_ascii=False)}\n\n".encode())
        self.hub.observers.add(self)
        request.notifyFinish().addBoth(self._gone)
        self._timer = self.clock.callLater(KEEP_ALIVE, self._keep_alive)

    # Observer

    def deliver(self, batch: Batch) -> None:
        self._write(b"".join(b"id: " + message.id.encode() + envelope_event(message)
                             for message in batch.messages))

    def present(self, item: Any) -> None:
        self._write(f"event: {item.kind}\ndata: {item.json()}\n\n".encode())

    def close(self, reason: str) -> None:
        if self.done:
            return
        self.request.write(f"event: end\ndata: {json.dumps({'reason': reason})}\n\n".encode())
        self.done = True
        self.request.finish()
        self._forget()

    # the connection

    def _write(self, data: bytes) -> None:
        if self.done:
            return
        self.request.write(data)
        transport: Any = self.request.transport
        waiting = len(getattr(transport, "dataBuffer", b"")) + temp_data_length(transport)
        if waiting > MAX_BUFFER:
            self.close("slow")

    def _keep_alive(self) -> None:
        self._timer = None
        if not self.done:
            self._write(b": keep-alive\n\n")
            self._timer = self.clock.callLater(KEEP_ALIVE, self._keep_alive)

    def _gone(self, _: object) -> None:
        self._forget()

    def _forget(self) -> None:
        if not self.ended.called:
            self.ended.callback(None)
        self.done = True
        self.hub.observers.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
