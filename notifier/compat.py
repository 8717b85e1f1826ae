"""The private names of Twisted and Autobahn that notifier borrows, for
speed, all here.

Each is checked once, at import, against the installed library; each has
a flag saying whether it holds and, when it does not, notifier takes the
library's public path instead: slower, with the same answers. No other
module touches another library's private name (tests/test_compat.py
checks it, and each fallback). The one subclass that overrides private
methods gets them from :class:`FastWebSocket`, empty when the names are
gone: ``notifier.transports.websocket.WebSocketSubscriber``.

The versions the suite runs with are in ``constraints.txt`` (newest) and
``constraints-lowest.txt`` (lowest), both tested (``make test``).
"""

from __future__ import annotations

import dis
import inspect
from collections import deque
from collections.abc import Callable, Mapping
from functools import cached_property
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import autobahn.twisted.websocket as _autobahn_twisted
import autobahn.util as _autobahn_util
import autobahn.websocket.protocol as _autobahn_protocol
from autobahn.twisted.util import create_transport_details
from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.wamp.types import TransportDetails
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
from twisted.internet import abstract, tcp
from twisted.logger import Logger

log = Logger()

#: The borrowings that did not hold, by name (logged once at start, ``fell_back``).
FELL_BACK: list[str] = []


def _holds(name: str, check: Callable[[], object]) -> bool:
    try:
        held = bool(check())
    except Exception:
        held = False
    if not held:
        FELL_BACK.append(name)
    return held


def _has(obj: object, *names: str) -> bool:
    return all(hasattr(obj, name) for name in names)


def _method(cls: type, name: str, params: int) -> bool:
    """Whether *cls* has a method *name* taking *params* arguments besides self."""
    method = getattr(cls, name, None)
    return callable(method) and len(inspect.signature(method).parameters) == params + 1


def fell_back() -> None:
    """Log, once at start, which borrowings took the public path."""
    if FELL_BACK:
        log.info("with these Twisted and Autobahn versions, the slower public path for: {names}",
                 names=", ".join(FELL_BACK))


# -- Twisted: a connection's bytes not sent yet --------------------------------

#: ``FileDescriptor._tempDataBuffer`` and ``_tempDataLen``: what ``write``
#: took since its buffer was last joined (notifier.transports.backpressure.send_now
#: writes to the socket only when nothing waits; unsent, the tail's bound).
TEMP_DATA = _holds("write buffers", lambda: (
    (probe := abstract.FileDescriptor(reactor=object())) is not None  # type: ignore[arg-type]
    and probe._tempDataBuffer == [] and probe._tempDataLen == 0
    and issubclass(tcp.Connection, abstract.FileDescriptor)))
#: The bytes *transport* (a FileDescriptor) took since its buffer was last
#: joined, and their length; without them, none are known.
temp_data: Callable[[Any], list[bytes]] = attrgetter("_tempDataBuffer") if TEMP_DATA else (lambda transport: [])


def temp_data_length(transport: object) -> int:
    """The length of ``temp_data`` of *transport*, any transport (0: none known)."""
    return getattr(transport, "_tempDataLen", 0) if TEMP_DATA else 0


# -- Autobahn: a connection set up and opened without its bookkeeping --------

#: What Autobahn's ``WebSocketProtocol._connectionMade`` sets the same on
#: every server connection, while no timings are tracked and the opening
#: handshake has no timer (its UTF-8 validator is made when first used);
#: tests/transports/test_websocket_setup.py compares them with what Autobahn sets.
CONNECTING: dict[str, object] = {
    "_perMessageCompress": None, "trackedTimings": None, "data": b"", "triggered": False,
    "state": WebSocketServerProtocol.STATE_CONNECTING, "send_state": WebSocketServerProtocol.SEND_STATE_GROUND,
    "wasMaxFramePayloadSizeExceeded": False, "wasMaxMessagePayloadSizeExceeded": False,
    "closedByMe": False, "failedByMe": False, "droppedByMe": False, "wasClean": False, "wasNotCleanReason": None,
    "wasServerConnectionDropTimeout": False, "wasOpenHandshakeTimeout": False, "wasCloseHandshakeTimeout": False,
    "wasServingFlashSocketPolicyFile": False, "localCloseCode": None, "localCloseReason": None,
    "remoteCloseCode": None, "remoteCloseReason": None, "openHandshakeTimeoutCall": None,
    "closeHandshakeTimeoutCall": None, "autoPingTimeoutCall": None, "autoPingPendingCall": None,
    "autoPingPending": None, "autoPingPendingSeq": 0, "autoPingPendingSent": None,
}

#: ``WebSocketProtocol._connectionMade`` (set up as ``CONNECTING``, overridden),
#: ``_transport_details`` (made when asked), ``_wskey`` and ``_onOpen`` (the
#: handshake the public listener read, answered by notifier.transports.websocket's
#: ``open_at_once``), txaio's ``Logger._log_level``. Without them each
#: WebSocket is set up and opened by Autobahn.
FAST_WEBSOCKET = _holds("WebSocket setup", lambda: (
    set(CONNECTING) <= set(WebSocketProtocol._connectionMade.__code__.co_names)
    and _method(WebSocketServerProtocol, "_connectionMade", 0)
    and _method(WebSocketServerProtocol, "_onOpen", 0)
    and "_wskey" in WebSocketServerProtocol.processHandshake.__code__.co_names
    and "_transport_details" in WebSocketServerProtocol.connectionMade.__code__.co_names
    and isinstance(getattr(WebSocketServerProtocol.log, "_log_level", None), str)))


def _plain_tcp(transport: object) -> bool:
    return isinstance(transport, tcp.Server) and not transport.TLS


#: Set on a listening port whose socket has TCP_NODELAY, which the
#: connections it accepts inherit (notifier.transports.websocket.send_at_once).
NO_DELAY = "notifier_no_delay"


class FastWebSocket:
    """The parts of a WebSocketServerProtocol subclass that set a
    connection up and open it without Autobahn's bookkeeping."""

    def debug_logged(self) -> bool:
        """Whether Autobahn's debug lines are logged: then its own setup
        runs, and its lines say what it set up."""
        return getattr(self.log, "_log_level", "debug") in ("debug", "trace")  # type: ignore[attr-defined]

    def open_websocket(self, key: bytes) -> None:
        """Open, as Autobahn's handshake does once answered, on *key*."""
        this: Any = self
        this._wskey = key.decode("ascii")
        if _plain_tcp(this.transport):
            this.onOpen()  # Autobahn's _onOpen adds a TLS channel's details first
        else:
            this._onOpen()

    # (Hidden from mypy: Autobahn types _transport_details as an attribute.)
    if FAST_WEBSOCKET and not TYPE_CHECKING:
        @cached_property
        def _transport_details(self) -> TransportDetails:
            """Made when asked, on a plain TCP connection (connectionMade)."""
            this: Any = self
            details = create_transport_details(this.transport, this.is_server)
            details.channel_framing = TransportDetails.CHANNEL_FRAMING_WEBSOCKET
            return details

        def connectionMade(self) -> None:
            # Autobahn's makes the transport's details (the peer, the process
            # and thread ids...), sets TCP_NODELAY on the connection, then sets
            # the protocol up: about a tenth of what opening a WebSocket cost.
            # On a plain TCP connection the daemon accepted, the details and the
            # peer are made when asked, and TCP_NODELAY came from the listening
            # socket; anything else, or a debug line to log, goes Autobahn's way.
            this: Any = self
            transport = this.transport
            if not _plain_tcp(transport) or not getattr(self, "tcpNoDelay", False) or self.debug_logged():
                super().connectionMade()  # type: ignore[misc]
                return
            vars(this).pop("_transport_details", None)  # the empty one Autobahn made: made when asked
            if not getattr(transport.server, NO_DELAY, False):
                transport.setTcpNoDelay(True)
            self._connectionMade()

        def _connectionMade(self) -> None:
            # Autobahn sets some thirty attributes on every connection, the
            # same on each but three, lists its options for a debug line and
            # formats the list with pformat, logged or not. The subscriber has
            # the same ones as class attributes (CONNECTING, and the options
            # on its factory's class), makes the three of its own, and leaves
            # the rest to Autobahn only for a debug line that is logged (or
            # timings tracked, or a handshake timer).
            this: Any = self
            if self.debug_logged() or getattr(this, "trackTimings", True) or this.openHandshakeTimeout > 0:
                super()._connectionMade()  # type: ignore[misc]
                return
            this.trafficStats = TrafficStats()
            this.send_queue = deque()
            this.factory.countConnections += 1  # as WebSocketServerProtocol does (and undoes when lost)


def connecting_attributes(cls: type) -> None:
    """Set ``CONNECTING`` on *cls*, when Autobahn's setup is skipped."""
    if FAST_WEBSOCKET:
        for name, value in CONNECTING.items():
            setattr(cls, name, value)


# -- Autobahn: log line colours made only when logged -------------------------

class _IfLogged:
    """What ``make(value)`` would give, made only when a log line is
    (``str.format`` asks for it)."""

    __slots__ = ("make", "value")

    def __init__(self, make: Callable[[Any], str], value: object) -> None:
        self.make = make
        self.value = value

    def __format__(self, spec: str) -> str:
        return format(self.make(self.value), spec)

    def __str__(self) -> str:
        return self.make(self.value)


def _hltype_if_logged(value: object) -> _IfLogged:
    return _IfLogged(_autobahn_util.hltype, value)


def _hlval_if_logged(value: object, color: str = "white", bold: bool = True) -> _IfLogged:
    return _IfLogged(lambda value: _autobahn_util.hlval(value, color=color, bold=bold), value)


#: Autobahn names the method of each of its debug log lines in colour
#: (``hltype``) as it calls the logger, logged or not: several per connection
#: opened, a tenth of what Autobahn spends on one. It colours the values of
#: some (``hlval``) the same way. Its two modules that do so get them made
#: only when a line is logged, if both use them (and only for log lines).
LAZY_COLOURS = _holds("Autobahn log colours", lambda: all(
    getattr(module, "hltype", None) is _autobahn_util.hltype and getattr(module, "hlval", None) is _autobahn_util.hlval
    for module in (_autobahn_protocol, _autobahn_twisted)))
if LAZY_COLOURS:
    for _module in (_autobahn_protocol, _autobahn_twisted):
        _module.hltype = _hltype_if_logged  # type: ignore[attr-defined]
        _module.hlval = _hlval_if_logged  # type: ignore[attr-defined]


# -- Autobahn: what it sets on a connection for each message it reads -----

#: The attributes Autobahn sets on a connection as it reads a client's
#: message: a connection that reads them (a Pusher one) keeps them as slots,
#: so that its ``__dict__`` stays as small as that of a connection reading
#: none (notifier.pusher.connection). Each must be one Autobahn assigns.
_MESSAGE_NAMES = (
    "_isMessageCompressed", "current_frame_masker", "frame_length", "frame_data", "message_data",
    "message_data_total_length", "message_is_binary", "utf8validateIncomingCurrentMessage", "utf8validateLast",
)


def _assigned(cls: type) -> set[str]:
    """The attribute names the methods of *cls* store on ``self``."""
    names: set[str] = set()
    for method in vars(cls).values():
        code = getattr(method, "__code__", None)
        if code is not None:
            names.update(instruction.argval for instruction in dis.get_instructions(code)
                         if instruction.opname == "STORE_ATTR")
    return names


MESSAGE_SLOTS_HOLD = _holds("message state as slots", lambda: set(_MESSAGE_NAMES) <= _assigned(WebSocketProtocol))
#: Those names, or none when Autobahn no longer sets them all (then they are
#: plain attributes, as Autobahn makes them).
MESSAGE_SLOTS: tuple[str, ...] = _MESSAGE_NAMES if MESSAGE_SLOTS_HOLD else ()

#: The flags above, by name (tests/test_compat.py turns each off).
FLAGS: Mapping[str, bool] = {
    "TEMP_DATA": TEMP_DATA, "FAST_WEBSOCKET": FAST_WEBSOCKET, "LAZY_COLOURS": LAZY_COLOURS,
    "MESSAGE_SLOTS_HOLD": MESSAGE_SLOTS_HOLD,
}
