"""What is left for the end of the reactor's turn, done in one delayed call.

Two kinds of work wait for the end of a turn: the HTTP answers written
during it (``Sender``\\ s: the connections of a listener that answers at
the end of the turn, notifier.http.connection and notifier.http.batching, sent
together, one wake-up of a client serving several), and the hubs' fan-out steps (notifier.domain.centers: one slice of
subscribers each). The answers go first: a publisher's answer that waited
behind a fan-out slice would hold back its next publish, and with it what
the next batch gathers (fan-out to 1,000 subscribers under load measured
3x slower that way, docs/performance.rst). The service makes one
``EndOfTurn`` and gives it to both listeners' sites and to the centers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()


class Sender(Protocol):
    """A connection whose answers of this turn wait to be sent together."""

    def send_queued(self) -> None: ...


class EndOfTurn:
    """The answers to send and the fan-out steps to run at the end of the
    reactor's turn, answers first, in one delayed call per turn."""

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
