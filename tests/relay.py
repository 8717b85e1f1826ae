"""A TCP relay between a browser and the daemon that a test can cut.

``cut()`` drops every relayed connection and refuses new ones until
``restore()``; ``freeze()`` makes the connections relayed so far swallow
whatever either side sends, without closing them (a network that went
black), while new ones are relayed as usual; ``block`` makes it refuse
requests of some kinds (WebSocket upgrades, event streams) as a proxy that
does not support them would.
"""

from __future__ import annotations

from twisted.internet import endpoints, protocol, reactor
from twisted.internet.interfaces import IListeningPort


class _Upstream(protocol.Protocol):
    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream

    def connectionMade(self) -> None:
        self.downstream.upstream_ready(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.downstream.frozen:
            self.downstream.transport.write(data)

    def connectionLost(self, reason: object = None) -> None:
        self.downstream.transport.loseConnection()


class _Downstream(protocol.Protocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []
        self.frozen = False

    def connectionMade(self) -> None:
        self.relay.connections.add(self)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.relay.target)
        endpoints.connectProtocol(endpoint, _Upstream(self)).addErrback(
            lambda _: self.transport.abortConnection())

    def upstream_ready(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for data in self.pending:
            upstream.transport.write(data)
        self.pending = []

    def dataReceived(self, data: bytes) -> None:
        if self.frozen:
            return
        # Every chunk: a kept-alive connection carries several requests.
        if self.relay.block:
            lowered = data.lower()
            for marker in self.relay.block:
                if marker in lowered:
                    self.relay.refused += 1
                    self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    self.transport.loseConnection()
                    return
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def connectionLost(self, reason: object = None) -> None:
        self.relay.connections.discard(self)
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class Relay(protocol.Factory):
    def __init__(self, target: int, block: tuple[bytes, ...] = ()) -> None:
        self.target = target
        self.block = block
        self.refused = 0
        self.connections: set[_Downstream] = set()
        self.port: IListeningPort | None = None
        self.port_number = 0

    def buildProtocol(self, addr: object) -> _Downstream:
        return _Downstream(self)

    async def start(self) -> int:
        self.port = await endpoints.TCP4ServerEndpoint(
            reactor, self.port_number, interface="127.0.0.1").listen(self)
        self.port_number = self.port.getHost().port
        return self.port_number

    async def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        for connection in list(self.connections):
            connection.transport.abortConnection()
            if connection.upstream is not None:
                connection.upstream.transport.abortConnection()

    def freeze(self) -> int:
        """Swallow everything on the connections relayed so far, keeping
        them open; how many there are."""
        for connection in self.connections:
            connection.frozen = True
        return len(self.connections)

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.cut()
