"""A Server-Sent Events client over a raw socket."""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Protocol


class _EventStreamProtocol(Protocol):
    """HTTP/1.0 (so the stream is not chunked) and the SSE parser of the spec."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.head: Deferred[tuple[int, dict[bytes, bytes]]] = Deferred()
        self.events: DeferredQueue[dict[str, str]] = DeferredQueue()
        self.comments = 0
        self.ended: Deferred[None] = Deferred()
        self._buffer = b""
        self._in_body = False
        self._event: dict[str, str] = {}

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if not self._in_body:
            if b"\r\n\r\n" not in self._buffer:
                return
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head.split(b"\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            self._in_body = True
            self.head.callback((int(status_line.split()[1]), headers))
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._line(line.decode())

    def _line(self, line: str) -> None:
        if line == "":
            if self._event:
                event = self._event
                if "data" in event:
                    event["data"] = event["data"][:-1]
                self.events.put(event)
            self._event = {}
        elif line.startswith(":"):
            self.comments += 1
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                self._event["data"] = self._event.get("data", "") + value + "\n"
            else:
                self._event[name] = value

    def connectionLost(self, reason: Any = None) -> None:
        if not self.head.called:
            self.head.errback(ConnectionError("closed before the answer"))
        self.ended.callback(None)


class EventSource:
    """A Server-Sent Events client over a raw socket."""

    def __init__(self, protocol: _EventStreamProtocol, status: int, headers: dict[bytes, bytes]) -> None:
        self.protocol = protocol
        self.status = status
        self.headers = headers
        self.ended = protocol.ended

    @property
    def comments(self) -> int:
        return self.protocol.comments

    async def next(self, timeout: float = 5) -> dict[str, str]:
        d = self.protocol.events.get()
        d.addTimeout(timeout, reactor)
        return await d

    def close(self) -> None:
        self.protocol.transport.loseConnection()


async def event_source(port: int, path: str, headers: dict[str, str] | None = None) -> EventSource:
    lines = [f"GET {path} HTTP/1.0", "Host: 127.0.0.1", "Accept: text/event-stream"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    protocol = _EventStreamProtocol(("\r\n".join(lines) + "\r\n\r\n").encode())
    await endpoints.connectProtocol(endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    head = protocol.head
    head.addTimeout(5, reactor)
    status, received = await head
    return EventSource(protocol, status, received)
