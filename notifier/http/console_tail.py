"""The console's live tail of a center (docs/console.rst).

``GET /admin/v1/publishers/{publisher}/centers/{center}/tail`` answers an
event stream of what the center's subscribers get, as it goes out, and its
presence items: an observer of the hub (``Hub.observers``), not one of its
subscribers, so watching a center neither counts as a subscriber nor makes
it occupied, nor a member of it; nor does a new secret of its publisher
end it, as it ends the subscriptions of a private center.

    event: hello          data: {"center", "position", "recovered"}
    id: <id> / event: message / data: {"id", "center", "data", "ts"}, and "event" when not "message"
    event: members|join|leave   data: the presence item
    event: end            data: {"reason"}   (the center deleted, the daemon stopping)

in the frames of the SSE transport (notifier.transports.sse), a ``format=json``
stream's events of envelopes (every message a ``message`` event, its own
event named in its envelope), each message encoded once for both; with a
comment line every ``KEEP_ALIVE`` seconds. A tail that falls more than
``MAX_BUFFER`` bytes behind is ended: it is a view, not a delivery. With
``since=<position>`` (where the center stood when the console read its
history), the messages retained after it come first, then the live ones.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web import server

from notifier.compat import temp_data_length
from notifier.domain.hub import Batch, Hub
from notifier.domain.presence import Item, members_item
from notifier.transports import sse

#: Seconds between two comment lines of an idle tail.
KEEP_ALIVE = 15.0
#: Bytes a tail may have waiting to be sent before it is ended.
MAX_BUFFER = 4 * 1024 * 1024
#: The comment line of an idle tail.
KEEP_ALIVE_COMMENT = sse.comment("keep-alive")


class Tail:
    def __init__(self, request: server.Request, hub: Hub, clock: IReactorTime) -> None:
        self.request = request
        self.hub = hub
        self.clock = clock
        self.done = False
        self._timer: IDelayedCall | None = None
        #: Fires once the tail has ended (its request finished, or gone).
        self.ended: Deferred[None] = Deferred()

    def start(self, members: list[tuple[str, Any]] | None, since: str | None = None) -> None:
        """Open the stream: where the center stands, who is there (a
        presence center), what it retains after *since* (a position the
        console had, e.g. of the history it shows); from now on, what goes
        out. All in one turn: nothing goes out between the retained
        messages and the live ones."""
        request = self.request
        hub = self.hub
        sse.start_response(request, cache_control=b"no-store")
        backlog, recovered = hub.retained_after(since) if since is not None else ([], True)
        hello = {"center": hub.center.name, "position": hub.position, "recovered": recovered}
        self._write(sse.named_event("hello", json.dumps(hello)))
        if members is not None:
            self._write(sse.item_event(members_item(hub.center.name, members)))
        if backlog:
            self._write(sse.envelope_events(Batch(backlog)))
        hub.observers.add(self)
        request.notifyFinish().addBoth(self._gone)
        self._timer = self.clock.callLater(KEEP_ALIVE, self._keep_alive)

    # Observer

    def deliver(self, batch: Batch) -> None:
        self._write(sse.envelope_events(batch))

    def present(self, item: Item) -> None:
        self._write(item.form(sse.item_event))

    def close(self, reason: str) -> None:
        if self.done:
            return
        self.request.write(sse.named_event("end", json.dumps({"reason": reason})))
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
            self._write(KEEP_ALIVE_COMMENT)
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
