"""Noticing that a subscribed Redis connection went silent.

A subscribed connection only ever receives: when the network between the
daemon and Redis (or a Sentinel) swallows packets without a reset, nothing
tells it is dead, and messages would stop arriving without a sound. So it
sends ``PING`` every ``EVERY`` seconds (answered even in subscribe mode) and
is dropped once ``SILENCE`` seconds pass with nothing received; whoever
made it connects again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()

#: Seconds between two PINGs.
EVERY = 1.0
#: Seconds without receiving anything after which the connection is dropped.
SILENCE = 3.0


class Liveness:
    """Keeps *protocol* (a txredisapi protocol) honest; told of every byte
    received by ``heard()``; *silent* is called when it is dropped."""

    def __init__(self, protocol: Any, clock: IReactorTime, what: str,
                 every: float = EVERY, silence: float = SILENCE,
                 silent: Callable[[], None] = lambda: None) -> None:
        self.protocol = protocol
        self.silent = silent
        self.clock = clock
        self.what = what
        self.every = every
        self.silence = silence
        self._heard = clock.seconds()
        self._beats = LoopingCall(self._beat)
        self._beats.clock = clock

    def start(self) -> None:
        self._heard = self.clock.seconds()
        if not self._beats.running:
            self._beats.start(self.every, now=False)

    def stop(self) -> None:
        if self._beats.running:
            self._beats.stop()

    def heard(self) -> None:
        self._heard = self.clock.seconds()

    def _beat(self) -> None:
        silent = self.clock.seconds() - self._heard
        if silent >= self.silence:
            log.warn("{what} has been silent for {seconds:.1f} s: dropping it", what=self.what, seconds=silent)
            self.stop()
            self.protocol.transport.abortConnection()
            self.silent()
            return
        try:
            # Any reply will do: what counts is that something comes back.
            self.protocol.execute_command("PING", apply_timeout=False).addErrback(lambda _: None)
        except Exception:  # not connected (any more): its loss stops this
            pass
