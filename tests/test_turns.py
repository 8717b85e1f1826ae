"""The end of the reactor's turn (notifier.end_of_turn): the answers written in
it go out before the hubs' fan-out steps run, all in one delayed call."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import Clock

from notifier.config import parse_config
from notifier.end_of_turn import EndOfTurn
from notifier.service import make_service
from tests.support import config_text


class _Answers:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def send_queued(self) -> None:
        self.log.append(self.name)


def test_answers_go_before_steps_in_one_delayed_call():
    clock = Clock()
    turn = EndOfTurn(clock)
    done: list[str] = []
    turn.step(lambda: done.append("slice"))
    turn.send(_Answers(done, "answer"))
    turn.step(lambda: done.append("another slice"))
    assert len(clock.getDelayedCalls()) == 1 and done == []
    clock.advance(0)
    assert done == ["answer", "slice", "another slice"]


def test_what_a_step_schedules_waits_for_the_next_turn_and_a_failure_stops_nothing():
    clock = Clock()
    turn = EndOfTurn(clock)
    done: list[str] = []

    def failing() -> None:
        raise RuntimeError("a step that breaks")

    turn.step(failing)
    turn.step(lambda: turn.step(lambda: done.append("next turn")))
    turn.step(lambda: done.append("this turn"))
    turn.run()  # what the delayed call does
    assert done == ["this turn"]
    assert len(clock.getDelayedCalls()) == 2  # the one just run (a test clock keeps it), and the next
    turn.run()
    assert done == ["this turn", "next turn"]


def test_the_service_gives_one_end_of_turn_to_the_hubs_and_both_listeners():
    service = make_service(parse_config(config_text("sqlite::memory:")), reactor)
    sites = [getattr(child.factory, "factory", child.factory) for child in service if hasattr(child, "factory")]
    assert len(sites) == 2  # the api listener's and the public one's (through its per-peer limit)
    assert all(site.turn is service.centers.steps for site in sites)
    assert isinstance(service.centers.steps, EndOfTurn)
