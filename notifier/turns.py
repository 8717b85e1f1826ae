"""What is left for the end of the reactor's turn, done in one delayed call.

Two kinds of work wait for the end of a turn: the HTTP answers written
during it (``AnswersAtEndOfTurn``: the HTTP channel's and the api
listener's front's, sent together, one wake-up of a client serving
several), and the hubs' fan-out steps (``registry.HubRegistry``:
one slice of subscribers each). The answers go first: a publisher's answer
that waited behind a fan-out slice would hold back its next publish, and
with it what the next batch gathers (fan-out to 1,000 subscribers under
load measured 3x slower that way, docs/performance.rst). One ``EndOfTurn``
serves every site and registry of a reactor (``end_of_turn``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol
from weakref import WeakKeyDictionary

from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.logger import Logger

from notifier.transports.pacing import send_now

log = Logger()


class Sender(Protocol):
    def send_queued(self) -> None: ...


#: Bytes a connection keeps for the end of the turn at most; past them, it sends.
QUEUED_BYTES = 64 * 1024


class AnswersAtEndOfTurn:
    """What a connection's protocol writes in a turn, sent at the turn's
    end in one send (``send_now``: straight to the socket when nothing is
    queued before it), or at once past ``QUEUED_BYTES``: a connection whose
    buffer fills then pauses its protocol before it answers more. Its
    protocol has a ``transport`` and a ``site`` with the reactor's
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


class EndOfTurn:
    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._senders: list[Sender] = []
        self._steps: list[Callable[[], object]] = []
        self._scheduled = False

    def send(self, sender: Sender) -> None:
        """Have *sender* send what it queued, at the end of this turn."""
        self._senders.append(sender)
        self._schedule()

    def step(self, call: Callable[[], object]) -> None:
        """Run *call* at the end of this turn, after the answers are sent."""
        self._steps.append(call)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.clock.callLater(0, self.run)

    def run(self) -> None:
        """Send every queued answer, then run every step (those they
        schedule in turn wait for the next turn's end)."""
        self._scheduled = False
        senders, self._senders = self._senders, []
        steps, self._steps = self._steps, []
        for sender in senders:
            try:
                sender.send_queued()
            except Exception:
                log.failure("sending an answer failed")
        for call in steps:
            try:
                call()
            except Exception:
                log.failure("a fan-out step failed")


_TURNS: WeakKeyDictionary[Any, EndOfTurn] = WeakKeyDictionary()


def end_of_turn(clock: IReactorTime) -> EndOfTurn:
    """The ``EndOfTurn`` of *clock* (a reactor, or a test's clock)."""
    turn = _TURNS.get(clock)
    if turn is None:
        turn = _TURNS[clock] = EndOfTurn(clock)
    return turn
