"""Hub: ids, retained history, cursors, and one encoding per wire form."""

from __future__ import annotations

import pytest

from notifier.domain.hub import Hub, Prepared, parse_id
from notifier.domain.model import Center, Message
from tests.support import Recorder


def publish(hub: Hub, data: str) -> Prepared:
    prepared = hub.append(data)
    hub.deliver(prepared)
    return prepared


def make_hub(history: int = 3, epoch: str = "e1") -> Hub:
    now = iter(range(1000, 2000))
    return Hub(Center("pub", "news", False, None, None, 1.0), epoch, history, lambda: float(next(now)))


def test_ids_carry_the_epoch_and_increase():
    hub = make_hub()
    ids = [publish(hub, str(i)).message.id for i in range(5)]
    assert ids == ["e1-1", "e1-2", "e1-3", "e1-4", "e1-5"]
    assert [parse_id(i) for i in ids] == [("e1", n) for n in range(1, 6)]


@pytest.mark.parametrize("bad", ["", "abc", "-1", "e1-", "e1-x", "e1-1.5", "e1-" + "9" * 30])
def test_parse_id_refuses_what_is_not_an_id(bad):
    assert parse_id(bad) is None, bad


def test_parse_id_takes_the_epoch_up_to_the_last_dash():
    assert parse_id("a-b-7") == ("a-b", 7)


def test_history_keeps_exactly_the_last_n():
    hub = make_hub(history=3)
    for i in range(5):
        publish(hub, str(i))
    messages, recovered = hub.retained_after(hub.position.replace("-5", "-0"))
    assert [p.message.data for p in messages] == ["2", "3", "4"]
    assert recovered is False
    assert hub.latest is not None and hub.latest.data == "4"
    assert hub.last_id == "e1-5"


def test_retained_after_cursors():
    hub = make_hub(history=3)
    for i in range(1, 6):
        publish(hub, str(i))  # retained: 3, 4, 5
    cases = {
        None: ([], True),
        "e1-5": ([], True),
        "e1-4": (["5"], True),
        "e1-2": (["3", "4", "5"], True),  # the message after the cursor is retained
        "e1-1": (["3", "4", "5"], False),  # 2 was lost
        "e1-0": (["3", "4", "5"], False),
        "e1-6": (["3", "4", "5"], False),  # a cursor from the future
        "e0-4": (["3", "4", "5"], False),  # another epoch
        "junk": (["3", "4", "5"], False),
    }
    for cursor, (data, recovered) in cases.items():
        messages, ok = hub.retained_after(cursor)
        assert ([p.message.data for p in messages], ok) == (data, recovered), cursor


def test_position_of_an_empty_hub_resumes_from_the_start():
    hub = make_hub()
    cursor = hub.position
    assert hub.retained_after(cursor) == ([], True)
    publish(hub, "a")
    messages, recovered = hub.retained_after(cursor)
    assert [p.message.data for p in messages] == ["a"] and recovered


def test_no_history_retains_nothing():
    hub = make_hub(history=0)
    publish(hub, "a")
    assert hub.latest is None
    assert hub.retained_after("e1-0") == ([], False)
    assert hub.retained_after("e1-1") == ([], True)


def test_deliver_prepares_each_form_once_for_all_subscribers():
    hub = make_hub()
    subscribers = [Recorder() for _ in range(3)]
    for s in subscribers:
        hub.subscribe(s)
    calls: list[Message] = []

    def encode(message: Message) -> bytes:
        calls.append(message)
        return message.data.encode()

    prepared = hub.append("x")
    assert hub.deliver(prepared) == 3
    forms = [s.batches[0].joined(encode) for s in subscribers]
    assert forms == [b"x"] * 3
    assert calls == [prepared.message]  # encoded once
    assert all(s.batches[0] is subscribers[0].batches[0] for s in subscribers)


def test_a_subscriber_may_leave_while_delivered_to():
    hub = make_hub()
    leaving = [Recorder(hub=hub, leave_on_delivery=True) for _ in range(3)]
    staying = Recorder(hub=hub)
    for s in [*leaving, staying]:
        hub.subscribe(s)
    assert hub.deliver(hub.append("a")) == 4
    assert hub.deliver(hub.append("b")) == 1
    assert [len(s.batches) for s in leaving] == [1, 1, 1]
    assert len(staying.batches) == 2


def test_close_tells_every_subscriber_why_and_forgets_them():
    hub = make_hub()
    subscribers = [Recorder() for _ in range(2)]
    for s in subscribers:
        hub.subscribe(s)
    hub.close("deleted")
    assert [s.closed for s in subscribers] == [["deleted"], ["deleted"]]
    assert not hub.subscribers


def _scheduled_hub(history: int = 3) -> tuple[Hub, list]:
    """A hub whose fan-out steps wait in a list, run one by one by the test."""
    steps: list = []
    hub = Hub(Center("pub", "news", False, None, None, 1.0), "e1", history, lambda: 1.0, schedule=steps.append)
    return hub, steps


def test_a_fan_out_is_a_step_of_its_own_and_gathers_what_is_published_meanwhile():
    hub, steps = _scheduled_hub()
    subscriber = Recorder()
    hub.subscribe(subscriber)
    first = publish(hub, "one")
    assert subscriber.batches == [] and len(steps) == 1  # nothing written yet
    publish(hub, "two")
    assert len(steps) == 1  # the fan-out waiting takes it along
    steps.pop(0)()
    assert [b.messages for b in subscriber.batches] == [[first.message, hub.latest]]
    assert hub.position == "e1-2"


def test_a_large_fan_out_writes_a_slice_per_step(monkeypatch):
    monkeypatch.setattr("notifier.domain.hub.FANOUT_SLICE", 2)
    hub, steps = _scheduled_hub()
    subscribers = [Recorder() for _ in range(5)]
    for subscriber in subscribers:
        hub.subscribe(subscriber)
    publish(hub, "one")
    steps.pop(0)()
    assert sum(1 for s in subscribers if s.batches) == 2
    publish(hub, "two")  # published during the fan-out: the next batch
    assert len(steps) == 1  # the slices go on; nothing more is scheduled
    turns = 1
    while steps:
        steps.pop(0)()
        turns += 1
        written = sum(len(s.batches) for s in subscribers)
        assert written <= 2 * 2 * turns  # never more than a slice or two a turn
    assert turns >= 4
    assert all([m.data for b in s.batches for m in b.messages] == ["one", "two"] for s in subscribers)


def test_an_up_to_date_cursor_while_a_fan_out_waits_is_recovered_with_nothing_to_send():
    for history in (0, 1):
        hub, steps = _scheduled_hub(history)
        hub.subscribe(Recorder())
        publish(hub, "a")
        publish(hub, "b")
        # e1-0 is where every subscriber is: "a" and "b" are on their way.
        assert hub.retained_after("e1-0") == ([], True)
        steps.pop(0)()
        assert hub.retained_after("e1-2") == ([], True)


def test_with_nobody_to_send_to_nothing_waits_for_a_fan_out():
    hub, steps = _scheduled_hub()
    publish(hub, "a")
    publish(hub, "b")
    assert steps == []  # no step scheduled, for nobody
    # Sent, as far as anyone coming now is concerned: a cursor from before
    # finds both in the history, a subscriber from now on neither.
    assert [p.message.data for p in hub.retained_after("e1-0")[0]] == ["a", "b"]
    assert hub.position == "e1-2"
    late = Recorder()
    hub.subscribe(late)
    publish(hub, "c")
    assert len(steps) == 1
    steps.pop(0)()
    assert [m.data for b in late.batches for m in b.messages] == ["c"]


def test_an_answer_kept_for_others_is_not_given_once_history_has_moved():
    # Long-poll answers are kept by where they start in the retained
    # messages; a full history moves by one with each message appended,
    # before it is fanned out: the answer kept before is not that one's.
    hub = make_hub(history=3)
    for i in range(1, 4):
        publish(hub, str(i))  # retained: 1, 2, 3

    def answer(cursor: str) -> list[str]:
        start, end, _ = hub.resume_point(cursor)
        return hub.memo(("longpoll", start), lambda: [p.message.data for p in hub.retained(start, end)])

    assert answer("e1-1") == ["2", "3"]
    hub.append("4")  # retained: 2, 3, 4; 4 is on its way to every subscriber
    assert answer("e1-2") == ["3"]
    assert answer("e1-1") == ["2", "3"]
