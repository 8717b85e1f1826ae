"""A subscriber resuming from a position another node reached first
(``Centers.caught_up``): its node catches up with the broker before it
answers; every subscriber doing so meanwhile waits for the same catch-up,
one that leaves stops nothing, and a broker out of reach is said."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from notifier.backends.interfaces import Stream
from notifier.backends.local import LocalBroker
from notifier.domain.errors import Unavailable
from notifier.domain.model import Center
from tests.memory_store import MemoryStore
from tests.support import result_of
from tests.support.memory import Node, Recorder


class Behind(LocalBroker):
    """A broker holding a stream further on than the node: each ``stream``
    answers when the test says."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.asked: list[Deferred[Stream | None]] = []

    async def stream(self, center: Center) -> Stream | None:
        answer: Deferred[Stream | None] = Deferred()
        self.asked.append(answer)
        return await answer


def _behind() -> tuple[Node, Behind, Any, list[Recorder]]:
    clock = Clock()
    broker = Behind(clock)
    node = Node(MemoryStore(), broker, clock)
    result_of(ensureDeferred(node.publishers.add_publisher("site")))
    result_of(ensureDeferred(node.centers.create_center("site", "news")))
    hub = result_of(ensureDeferred(node.centers.hub("site", "news")))
    subscribers = [Recorder() for _ in range(400)]  # more than one slice of a fan-out
    for subscriber in subscribers:
        hub.subscribe(subscriber)
    for n in range(1, 4):
        hub.deliver(hub.append(f"m{n}", n, float(n)))
    clock.advance(0)
    return node, broker, hub, subscribers


def _stream(hub: Any, last: int) -> Stream:
    return Stream(hub.epoch, last, tuple((n, float(n), f"m{n}") for n in range(1, last + 1)))


def _turns(node: Node, n: int = 20) -> None:
    for _ in range(n):
        node.clock.advance(0)


def test_every_resume_meanwhile_waits_for_the_one_catch_up_then_for_its_fan_out():
    node, broker, hub, subscribers = _behind()
    cursor = f"{hub.epoch}-6"
    first = ensureDeferred(node.centers.caught_up(hub, cursor))
    second = ensureDeferred(node.centers.caught_up(hub, cursor))
    leaving = ensureDeferred(node.centers.caught_up(hub, cursor))
    assert len(broker.asked) == 1  # one read of the stream for all
    assert not first.called and not second.called  # not answered "from the future" meanwhile
    leaving.cancel()  # a subscriber that left stops nothing
    leaving.addErrback(lambda _: None)
    broker.asked[0].callback(_stream(hub, 6))
    _turns(node)
    assert first.called and second.called
    assert hub.sent == hub.seq == 6 and not hub.ahead(cursor)
    assert subscribers[-1].delivered == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert hub.resume_point(cursor)[2] is True


def test_a_position_the_broker_has_not_reached_either_stays_from_the_future():
    node, broker, hub, _ = _behind()
    resumed = ensureDeferred(node.centers.caught_up(hub, f"{hub.epoch}-99"))
    broker.asked[0].callback(_stream(hub, 4))
    _turns(node)
    assert resumed.called and hub.seq == 4
    assert hub.ahead(f"{hub.epoch}-99") and hub.resume_point(f"{hub.epoch}-99")[2] is False


def test_a_broker_out_of_reach_is_unavailable_and_the_next_resume_asks_again():
    from twisted.logger import globalLogPublisher

    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)

    def logged_failures() -> list[dict]:
        return [event for event in seen if "log_failure" in event]

    node, broker, hub, _ = _behind()
    resumed = ensureDeferred(node.centers.caught_up(hub, f"{hub.epoch}-5"))
    broker.asked[0].errback(Unavailable("the state store (Redis) is unreachable", code="store_unavailable"))
    failure = []
    resumed.addErrback(failure.append)
    assert failure and failure[0].check(Unavailable)
    assert not logged_failures(), "a store out of reach is a warning, not a traceback"
    again = ensureDeferred(node.centers.caught_up(hub, f"{hub.epoch}-5"))
    assert len(broker.asked) == 2
    broker.asked[1].callback(_stream(hub, 5))
    _turns(node)
    assert again.called and hub.sent == 5
    globalLogPublisher.removeObserver(seen.append)


@pytest.mark.parametrize("cursor", ["other-9", "nonsense"])
def test_a_cursor_of_another_epoch_or_none_asks_nothing(cursor):
    node, broker, hub, _ = _behind()
    assert ensureDeferred(node.centers.caught_up(hub, cursor)).called
    assert broker.asked == []
