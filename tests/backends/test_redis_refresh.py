"""RedisBroker's deadline refreshes: what it remembers of the centers it
pushed on is bounded by the centers it holds (a unit test of the broker
alone, Redis replaced by a recorder of its commands)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.task import Clock

from notifier.backends.interfaces import LiveCenter
from notifier.backends.redis.broker import RedisBroker
from notifier.backends.redis.keys import Keys


class Recorder:
    """Stands for ``Redis``: records each command, answers nothing due."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    async def call(self, command: str, *args: Any) -> Any:
        self.commands.append((command, *args))
        return []


def live(center: str, subscribed: bool = True, ttl: int = 30) -> LiveCenter:
    return LiveCenter("acme", center, ttl, subscribed, False)


def pushes(redis: Recorder) -> list[str]:
    return [command[3] for command in redis.commands if command[0] == "zadd"]


@pytest_twisted.ensureDeferred
async def test_a_center_with_subscribers_is_pushed_on_a_third_of_its_ttl_at_most() -> None:
    redis = Recorder()
    broker = RedisBroker(redis, Keys(0), Clock())  # type: ignore[arg-type]
    await broker.due(100.0, [live("a"), live("idle", subscribed=False), live("forever", ttl=0)])
    assert pushes(redis) == ["acme/a"]
    await broker.due(105.0, [live("a")])  # within ttl / 3 = 10 s: not again
    assert pushes(redis) == ["acme/a"]
    await broker.due(110.0, [live("a")])
    assert pushes(redis) == ["acme/a", "acme/a"]


@pytest_twisted.ensureDeferred
async def test_what_is_remembered_is_only_the_centers_held() -> None:
    redis = Recorder()
    broker = RedisBroker(redis, Keys(0), Clock())  # type: ignore[arg-type]
    for n in range(1000):
        await broker.due(float(n), [live(f"c{n}")])  # each center held for one round only
    assert set(broker._refreshed) == {"acme/c999"}
    await broker.due(2000.0, [])
    assert broker._refreshed == {}
    # A center held again is pushed on at once, as a new one.
    await broker.due(2001.0, [live("c999")])
    assert pushes(redis)[-1] == "acme/c999"
