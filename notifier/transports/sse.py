"""Server-Sent Events subscribers: one streamed response per subscriber."""

from __future__ import annotations

import json
import re

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from notifier.hub import Hub, Prepared
from notifier.model import Message

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


class EventStream:
    """A subscriber whose messages are written to a streaming response."""

    transport_name = "sse"
    __slots__ = ("hub", "request", "done")

    def __init__(self, hub: Hub, request: IRequest) -> None:
        self.hub = hub
        self.request = request
        # Fires (ending the response) when the hub closes the stream; cancelled
        # by Klein when the client goes away.
        self.done: Deferred[bytes] = Deferred(lambda _: self.hub.unsubscribe(self))

    def start(self, cursor: str | None) -> Deferred[bytes]:
        """Write the stream's head and backlog, then follow the hub live."""
        backlog, recovered = self.hub.attach(self, cursor)
        chunks = [f"retry: {RETRY_MS}\n\n".encode()]
        if cursor is not None:
            chunks.append(recovery(recovered))
        chunks.extend(prepared.form(event) for prepared in backlog)
        self.request.write(b"".join(chunks))
        return self.done

    def deliver(self, prepared: Prepared) -> None:
        self.request.write(prepared.form(event))

    def heartbeat(self) -> None:
        self.request.write(HEARTBEAT)

    def close(self, reason: str) -> None:
        self.hub.unsubscribe(self)
        if not self.done.called:
            self.done.callback(b"")
