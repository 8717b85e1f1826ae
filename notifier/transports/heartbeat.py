"""One sweeping timer for every connection's keep-alive, not a timer each."""

from __future__ import annotations

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime

from notifier.domain.centers import Centers


def beat(centers: Centers) -> None:
    """Call ``heartbeat()`` on each subscriber that has one."""
    for subscriber in centers.subscribers():
        heartbeat = getattr(subscriber, "heartbeat", None)
        if heartbeat is not None:
            heartbeat()


def heartbeat_service(centers: Centers, clock: IReactorTime, interval: float) -> TimerService:
    """Beats every *interval* seconds while running."""
    service = TimerService(interval, beat, centers)
    service.clock = clock
    return service
