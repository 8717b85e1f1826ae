"""Backpressure shared by the streaming transports.

A subscriber is the streaming producer of its own connection: while Twisted
has paused it (the connection's buffer is full), what it would send waits as
references to the bytes every subscriber shares; past ``send_buffer_bytes``
of them the subscriber is dropped, so one stuck client never grows the
daemon's memory. While the client keeps up this costs one ``is None`` test.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from typing import Any

from twisted.internet.tcp import Connection

from notifier import compat

#: Heartbeats a connection may stay paused through (its client reading
#: nothing) before it is dropped as stuck, however little waits.
STALLED_BEATS = 3

#: Whether a write may go straight to the socket: only when Twisted's
#: buffers are known to be empty (notifier.compat.TEMP_DATA).
FAST_SEND = compat.TEMP_DATA
_temp_data = compat.temp_data

#: A replayed backlog is written in pieces of about this size, so that
#: backpressure applies to it as to live messages.
BACKLOG_PIECE = 64 * 1024


def pieces(forms: Iterable[bytes], size: int = BACKLOG_PIECE) -> Iterable[bytes]:
    """*forms* joined into pieces of about *size* bytes (one form may be larger)."""
    piece: list[bytes] = []
    length = 0
    for form in forms:
        piece.append(form)
        length += len(form)
        if length >= size:
            yield b"".join(piece)
            piece, length = [], 0
    if piece:
        yield b"".join(piece)


def send_now(transport: Any, data: bytes) -> None:
    """Write *data* to *transport*, straight to its socket when nothing is
    queued before it.

    Twisted's ``write`` buffers and registers the socket for writing, and
    once the buffer is sent, unregisters it: two ``epoll_ctl`` calls besides
    the ``send``, per connection per message, which cost a fan-out more than
    the send itself. A socket with an empty buffer almost always takes the
    whole frame at once; whatever it does not take goes through ``write``.
    """
    # Only a plain TCP connection: a TLS one (wrapped, or started in place)
    # must encrypt what it sends.
    if FAST_SEND and isinstance(transport, Connection) and not transport.TLS and not transport.dataBuffer \
            and not _temp_data(transport) and transport.connected and not transport.disconnecting:
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0  # EAGAIN; or a broken connection, which write() will notice
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class Paced(ABC):
    _waiting: deque[Any] | None = None
    _waiting_bytes = 0
    _paused_beats = 0
    #: Dropped as too slow: nothing more is sent.
    _dropped = False

    # what a transport provides

    @abstractmethod
    def _write(self, item: Any) -> None:
        """Send *item* on the connection."""

    @abstractmethod
    def _size(self, item: Any) -> int:
        """The bytes *item* takes."""

    @abstractmethod
    def _limit(self) -> int:
        """How many bytes may wait before the subscriber is dropped."""

    @abstractmethod
    def _drop_slow(self) -> None:
        """Leave the hub and end the connection: it fell too far behind."""

    # sending

    def _pace(self, item: Any) -> None:
        if self._waiting is None:
            if not self._dropped:
                self._write(item)
            return
        self._waiting.append(item)
        self._waiting_bytes += self._size(item)
        if self._waiting_bytes > self._limit():
            self._give_up()

    def _give_up(self) -> None:
        """Drop the subscriber as too slow (or stuck): nothing more is sent."""
        self._waiting = None
        self._dropped = True
        self._drop_slow()

    def _send_backlog(self, forms: Iterable[bytes]) -> None:
        """Send a replayed backlog: in pieces, each counted against the
        limit once the connection is paused, like live messages."""
        for piece in pieces(forms):
            if self._dropped:
                return
            self._pace(piece)

    def _stalled(self) -> bool:
        """Asked every heartbeat: whether the connection has stayed paused
        through ``STALLED_BEATS`` of them, its client reading nothing."""
        if self._waiting is None:
            self._paused_beats = 0
            return False
        self._paused_beats += 1
        return self._paused_beats >= STALLED_BEATS

    # IPushProducer

    def pauseProducing(self) -> None:
        if self._waiting is None and not self._dropped:
            self._waiting = deque()
            self._waiting_bytes = 0

    def resumeProducing(self) -> None:
        self._paused_beats = 0
        waiting, self._waiting = self._waiting, None
        while waiting:
            self._write(waiting.popleft())
            if self._waiting is not None:  # paused again: the rest waits
                self._waiting.extendleft(reversed(waiting))
                self._waiting_bytes = sum(self._size(item) for item in self._waiting)
                return

    def stopProducing(self) -> None:
        self._waiting = None
