"""What the public listener bounds per connection and per peer: the kernel's
send buffer of each connection, connections from one address (an IPv6
/64) at once, and what a connection cut for idleness may leave queued."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
import termios
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from notifier.compat import temp_data

#: ``SO_SNDBUF`` of the public listener's connections (Linux doubles it, and
#: the connections it accepts inherit it from the listening socket): the most
#: the kernel holds for a client that reads nothing. Without it Linux grows a
#: connection's buffer to ``tcp_wmem``'s maximum, megabytes, even toward a
#: peer that reads nothing. Smaller, a fan-out of large batches costs more:
#: 400 KB per WebSocket took the daemon twice the CPU with 64 KiB, 1.1 times
#: with this (docs/operating.rst).
SEND_BUFFER = 256 * 1024


def bound_send_buffer(port: object, size: int = SEND_BUFFER) -> None:
    """Set ``SO_SNDBUF`` of the connections *port* accepts to *size*, once
    on its listening socket (a TCP one)."""
    sock = getattr(port, "socket", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except OSError:
        pass


def _tcp(transport: Any) -> Any:
    """The TCP connection under *transport* (TLS, a wrapper)."""
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    return transport


def unsent(transport: Any) -> bool:
    """Whether *transport* holds bytes its peer has not taken yet: in
    Twisted's buffer, or in the kernel's send queue (``SIOCOUTQ``)."""
    tcp = _tcp(transport)
    if getattr(tcp, "dataBuffer", b"") or (hasattr(tcp, "dataBuffer") and temp_data(tcp)):
        return True
    sock = getattr(tcp, "socket", None)
    if sock is None:
        return False
    try:
        queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return False
    return queued > 0


#: Seconds a connection answered with a request's body unread goes on
#: reading (and dropping) what its client still sends before it is cut:
#: closed with unread bytes, the kernel would answer them with a reset,
#: which can reach the client before the answer and take it with it.
LINGER_SECONDS = 2.0


class _Dropping(Protocol):
    """What a lingering connection is read by: nothing kept; once its
    client closes too (or the time is up), its protocol is told it is lost."""

    def __init__(self, protocol: Any, cut: Any) -> None:
        self.protocol = protocol
        self.cut = cut

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.cut.active():
            self.cut.cancel()
        self.protocol.connectionLost(reason)


def close_lingering(transport: Any, reactor: Any) -> None:
    """Close *transport* once what was sent is sent, reading and dropping
    what its client still sends for ``LINGER_SECONDS`` (TCP: half-closed
    first); any other transport (TLS) is closed as usual."""
    transport.unregisterProducer()
    if _tcp(transport) is not transport or not hasattr(transport, "loseWriteConnection"):
        transport.loseConnection()
        return
    transport.protocol = _Dropping(transport.protocol, reactor.callLater(LINGER_SECONDS, transport.abortConnection))
    transport.loseWriteConnection()
    transport.resumeProducing()


def peer_of(host: str | None) -> str | None:
    """Whom a connection from *host* counts for: its IPv4 address, or the
    /64 network of its IPv6 one (what one subscriber line is given)."""
    if host is None or ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class _Counted(ProtocolWrapper):
    """A connection counted for its peer's address until it is lost,
    whichever protocol it is handed to meanwhile. It only listens: the
    protocol it wraps writes to the connection itself, so that a fan-out
    goes straight to the socket (notifier.transports.backpressure.send_now)."""

    host = ""

    def makeConnection(self, transport: Any) -> None:
        self.connected = 1
        self.transport = transport
        self.wrappedProtocol.makeConnection(transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        factory: PerPeerLimit = self.factory  # the factory that built it
        factory.release(self.host)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]  # unannotated in Twisted


class _Refused(Protocol):
    """A connection over the limit: cut at once, nothing read."""

    def connectionMade(self) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]  # a TCP or TLS transport


class PerPeerLimit(WrappingFactory[_Counted]):
    """The public listener's factory when ``[public] max_connections_per_ip``
    is set: at most *limit* connections at once from one peer address;
    another is cut as soon as it is accepted. Each is counted once, at
    accept, whatever protocol its connection hands it to later."""

    protocol = _Counted

    def __init__(self, wrapped: Any, limit: int) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.limit = limit
        #: Connections open, by peer address.
        self.peers: dict[str, int] = {}

    def buildProtocol(self, addr: IAddress | None) -> Protocol:  # type: ignore[override]
        host = peer_of(getattr(addr, "host", None))
        if host is None:  # a UNIX socket: no address to count by
            return _Counted(self, self.wrappedFactory.buildProtocol(addr))
        count = self.peers.get(host, 0)
        if count >= self.limit:
            return _Refused()
        self.peers[host] = count + 1
        counted = _Counted(self, self.wrappedFactory.buildProtocol(addr))
        counted.host = host
        return counted

    def release(self, host: str) -> None:
        count = self.peers.get(host, 0) - 1
        if count > 0:
            self.peers[host] = count
        else:
            self.peers.pop(host, None)

    # The connections are counted by address only: none kept.

    def registerProtocol(self, p: Any) -> None:
        pass

    def unregisterProtocol(self, p: Any) -> None:
        pass
