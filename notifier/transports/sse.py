"""Server-Sent Events subscribers: one streamed response per subscriber."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITCPTransport
from twisted.web.server import Request

from notifier.hub import Hub
from notifier.model import Message
from notifier.transports.streaming import StreamingSubscriber

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


class EventStream(StreamingSubscriber):
    """A subscriber whose messages are written to a streaming response; the
    streaming producer of that response (notifier.transports.pacing)."""

    transport_name = "sse"
    encode = staticmethod(event)

    def __init__(self, request: Request, send_buffer_bytes: int, dropped: Callable[[Hub], None]) -> None:
        self.request = request
        self.send_buffer_bytes = send_buffer_bytes
        self.dropped = dropped
        # Fires (ending the response) when a hub closes the stream; cancelled
        # when the client goes away.
        self.done: Deferred[bytes] = Deferred(lambda _: self._leave())
        request.registerProducer(self, True)

    def _announce(self, cursor: str | None, recovered: bool, resumed: bool) -> None:
        head = [f"retry: {RETRY_MS}\n".encode()]
        if not resumed:
            # An id with no data sets a browser's Last-Event-ID without an
            # event: its own reconnection then resumes from here.
            head.append(f"id: {self.hubs[-1].position}\n".encode())
        head.append(b"\n")
        if cursor is not None:
            head.append(recovery(recovered))
        self._pace(b"".join(head))

    def _keep_alive(self) -> None:
        if self._waiting is None:  # a stream that is behind needs no keep-alive
            self.request.write(HEARTBEAT)

    def close(self, reason: str) -> None:
        self._leave()
        if not self.done.called:
            self.request.unregisterProducer()
            self.done.callback(b"")

    def _write(self, data: bytes) -> None:
        self.request.write(data)

    def _limit(self) -> int:
        return self.send_buffer_bytes

    def _cut_slow(self) -> None:
        # Nothing more can reach a client this far behind: cut the connection.
        # (A TCP transport; Twisted types a channel's only as an ITransport.)
        cast(ITCPTransport, self.request.channel.transport).abortConnection()
