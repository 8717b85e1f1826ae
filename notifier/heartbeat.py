"""One sweeping timer for every connection's keep-alive, not a timer each."""

from __future__ import annotations

from twisted.application.internet import TimerService
from twisted.internet.interfaces import IReactorTime

from notifier.registry import HubRegistry


def beat(registry: HubRegistry) -> None:
    """Call ``heartbeat()`` on each subscriber that has one."""
    for subscriber in registry.subscribers():
        heartbeat = getattr(subscriber, "heartbeat", None)
        if heartbeat is not None:
            heartbeat()


def heartbeat_service(registry: HubRegistry, clock: IReactorTime, interval: float) -> TimerService:
    """Beats every *interval* seconds while running."""
    service = TimerService(interval, beat, registry)
    service.clock = clock
    return service
