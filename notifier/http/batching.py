"""HTTP answers batched per reactor turn: what a connection writes in a
turn goes out in one send at its end (notifier.end_of_turn)."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ITransport

from notifier.transports.backpressure import send_now

#: Bytes a connection keeps for the end of the turn at most; past them, it sends.
QUEUED_BYTES = 64 * 1024


class AnswersAtEndOfTurn:
    """What a connection's protocol writes in a turn, sent at the turn's
    end in one send (``send_now``: straight to the socket when nothing is
    queued before it), or at once past ``QUEUED_BYTES``: a connection whose
    buffer fills then pauses its protocol before it answers more. Its
    protocol has a ``transport`` and a ``site`` with the service's
    ``EndOfTurn`` as ``turn``; it sends what is queued before closing."""

    transport: ITransport | None
    site: Any
    _queued: list[bytes] | None = None
    _queued_bytes = 0

    def _queue(self, data: bytes) -> None:
        if self._queued is None:
            self._queued = [data]
            self._queued_bytes = len(data)
            self.site.turn.send(self)
        else:
            self._queued.append(data)
            self._queued_bytes += len(data)
        if self._queued_bytes > QUEUED_BYTES:
            self.send_queued()

    def send_queued(self) -> None:
        """Send what was written this turn (at its end, or before closing)."""
        queued, self._queued = self._queued, None
        if queued and self.transport is not None:
            send_now(self.transport, queued[0] if len(queued) == 1 else b"".join(queued))

    def _drop_queued(self) -> None:
        """The connection is lost: nothing more to send."""
        self._queued = None
