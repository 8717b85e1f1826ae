"""One sweeping timer for every connection's keep-alive, not a timer each."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from notifier.registry import HubRegistry


class Heartbeat:
    """Every *interval* seconds, calls ``heartbeat()`` on each subscriber that has one."""

    def __init__(self, registry: HubRegistry, clock: IReactorTime, interval: float) -> None:
        self.registry = registry
        self._loop = LoopingCall(self.beat)
        self._loop.clock = clock
        self.interval = interval

    def beat(self) -> None:
        for subscriber in self.registry.subscribers():
            heartbeat = getattr(subscriber, "heartbeat", None)
            if heartbeat is not None:
                heartbeat()

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
