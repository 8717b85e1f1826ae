"""``reuseport:PORT[:interface=ADDRESS][:backlog=N]``: a TCP listener that
several processes open on the same port (``SO_REUSEPORT``), so that one
daemon per core shares it and the kernel spreads connections among them.

The endpoint description parser is a Twisted plugin
(``twisted/plugins/notifier_reuseport.py``), so the description works
wherever Twisted endpoints do: in ``[public] endpoint`` and ``[api]
endpoint``.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, interfaces
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    def __init__(self, reactor: Any, port: int, interface: str = "", backlog: int = 128) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    def listen(self, factory: Any) -> defer.Deferred[IListeningPort]:
        return defer.execute(self._listen, factory)

    def _listen(self, factory: Any) -> IListeningPort:
        family = socket.AF_INET6 if ":" in self.interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.interface, self.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
            port: interfaces.IListeningPort = self.reactor.adoptStreamPort(sock.fileno(), family, factory)
            return port
        finally:
            sock.close()  # the reactor holds its own duplicate of the socket


@implementer(IPlugin, interfaces.IStreamServerEndpointStringParser)
class ReusePortParser:
    prefix = "reuseport"

    def parseStreamServer(  # type: ignore[override]  # the interface allows any arguments: these are ours
            self, reactor: Any, port: str, interface: str = "", backlog: str = "128") -> ReusePortEndpoint:
        return ReusePortEndpoint(reactor, int(port), interface, int(backlog))
