"""Server-Sent Events subscribers: one streamed response per subscriber."""

from __future__ import annotations

import json
import re
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from notifier.hub import Batch, Hub
from notifier.model import Message
from notifier.transports.pacing import Paced

#: How long a browser waits before reconnecting, in milliseconds.
RETRY_MS = 2000
HEARTBEAT = b": ping\n\n"
_LINES = re.compile(r"\r\n|\r|\n")


def event(message: Message) -> bytes:
    """One ``message`` event; a multi-line text becomes several ``data:`` lines."""
    data = "".join(f"data: {line}\n" for line in _LINES.split(message.data))
    return f"id: {message.id}\nevent: message\n{data}\n".encode()


def recovery(recovered: bool) -> bytes:
    return b"event: recovery\ndata: " + json.dumps({"recovered": recovered}).encode() + b"\n\n"


class EventStream(Paced):
    """A subscriber whose messages are written to a streaming response; the
    streaming producer of that response (notifier.transports.pacing)."""

    transport_name = "sse"

    def __init__(self, hub: Hub, request: IRequest, send_buffer_bytes: int,
                 dropped: Callable[[Hub], None]) -> None:
        self.hub = hub
        self.request = request
        self.send_buffer_bytes = send_buffer_bytes
        self.dropped = dropped
        # Fires (ending the response) when the hub closes the stream; cancelled
        # by Klein when the client goes away.
        self.done: Deferred[bytes] = Deferred(lambda _: self.hub.unsubscribe(self))

    def start(self, cursor: str | None) -> Deferred[bytes]:
        """Write the stream's head and backlog, then follow the hub live."""
        self.request.registerProducer(self, True)
        backlog, recovered = self.hub.attach(self, cursor)
        head = [f"retry: {RETRY_MS}\n".encode()]
        if not backlog:
            # An id with no data sets a browser's Last-Event-ID without an
            # event: its own reconnection then resumes from here.
            head.append(f"id: {self.hub.position}\n".encode())
        head.append(b"\n")
        if cursor is not None:
            head.append(recovery(recovered))
        self._send(b"".join(head))
        self._send_backlog(prepared.form(event) for prepared in backlog)
        return self.done

    def deliver(self, batch: Batch) -> None:
        self._send(batch.joined(event))

    def heartbeat(self) -> None:
        if self._stalled():
            self._give_up()  # its client has read nothing for several beats
        elif self._waiting is None:  # a stream that is behind needs no keep-alive
            self.request.write(HEARTBEAT)

    def close(self, reason: str) -> None:
        self.hub.unsubscribe(self)
        if not self.done.called:
            self.request.unregisterProducer()
            self.done.callback(b"")

    def _write(self, data: bytes) -> None:
        self.request.write(data)

    def _size(self, data: bytes) -> int:
        return len(data)

    def _limit(self) -> int:
        return self.send_buffer_bytes

    def _drop_slow(self) -> None:
        self.hub.unsubscribe(self)
        self.dropped(self.hub)
        # Nothing more can reach a client this far behind: cut the connection.
        self.request.channel.transport.abortConnection()
