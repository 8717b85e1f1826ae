"""Publish order across the centers of a multiplexed subscription, in memory.

Random publishes (a batch across centers among them), fan-outs in slices
over turns, disconnects and resumes with the compound cursor: each
subscriber of several centers must receive every message of its centers
once, in publish order, live and replayed alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

import notifier.domain.hub
from notifier.domain.hub import Batch, Hub, interleave
from notifier.domain.model import Center
from notifier.transports.longpoll import ANSWER_BYTES, MultiLongPoll, live_items
from notifier.transports.ordering import InOrder, held_back
from tests.support import Recorder

CENTERS = ("a", "b", "c")
#: What each client follows, in the order of its URL.
FOLLOWS = (("a", "b", "c"), ("c", "a"), ("b", "c"))


class Connection:
    """One connection of a multiplexed client, as a streaming subscriber
    holds it (notifier.transports.streaming.attach_many)."""

    transport_name = "test"

    def __init__(self, client: Client, hubs: Sequence[Hub], cursors: Sequence[str | None]) -> None:
        self.client = client
        openings = [hub.attach(self, cursor) for hub, cursor in zip(hubs, cursors, strict=True)]
        assert all(opening.recovered for opening in openings)
        self.in_order = InOrder(hubs)
        client.got(self.in_order.backlog(interleave([opening.backlog for opening in openings])))

    def deliver(self, batch: Batch) -> None:
        taken = self.in_order.take(batch)
        if taken is not None:
            self.client.got(taken.items)

    def close(self, reason: str) -> None:
        raise AssertionError(reason)


class Client:
    def __init__(self, hubs: Sequence[Hub]) -> None:
        self.hubs = hubs
        self.received: list[str] = []
        self.cursor: dict[str, str] = {}  # each center's position
        self.connection: Connection | None = None

    def got(self, items: list[notifier.domain.hub.Prepared]) -> None:
        for prepared in items:
            self.received.append(prepared.message.id)
            self.cursor[prepared.message.center] = prepared.message.id

    def join(self) -> None:
        if not self.cursor:  # first time: live only, from where each center stands
            self.cursor = {hub.center.name: hub.position for hub in self.hubs}
        self.connection = Connection(self, self.hubs, [self.cursor[hub.center.name] for hub in self.hubs])

    def leave(self) -> None:
        if self.connection is not None:
            for hub in self.hubs:
                hub.unsubscribe(self.connection)
            self.connection = None


operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.lists(st.sampled_from(CENTERS), min_size=1, max_size=6)),
        st.tuples(st.just("turn"), st.integers(1, 3)),
        st.tuples(st.just("leave"), st.integers(0, len(FOLLOWS) - 1)),
        st.tuples(st.just("join"), st.integers(0, len(FOLLOWS) - 1)),
    ),
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(fillers=st.lists(st.integers(0, 5), min_size=3, max_size=3), ops=operations)
def test_several_centers_come_in_publish_order_exactly_once(fillers: list[int], ops: list) -> None:
    clock = Clock()
    # A step scheduled for the next turn runs a second later; each center
    # has subscribers of its own, written 2 per turn: a center's fan-out
    # can take turns while another's is done.
    hubs = {name: Hub(Center("p", name, False, None, None, 0.0), f"e{name}", 1000, clock.seconds,
                      schedule=lambda step: clock.callLater(1, step)) for name in CENTERS}
    for hub, count in zip(hubs.values(), fillers, strict=True):
        for _ in range(count):
            hub.subscribe(Recorder())
    clients = [Client([hubs[name] for name in follows]) for follows in FOLLOWS]
    published: list[tuple[str, str]] = []  # (center, id) in publish order
    joined_at: dict[int, dict[str, int]] = {}  # each center's seq before a client's first join

    slice_was = notifier.domain.hub.FANOUT_SLICE
    notifier.domain.hub.FANOUT_SLICE = 2
    try:
        for op, arg in ops:
            if op == "publish":  # a batch: appended in order, then fanned out (as publishing does)
                for name in arg:
                    prepared = hubs[name].append(f"{name}{len(published)}")
                    published.append((name, prepared.message.id))
                    hubs[name].deliver(prepared)
            elif op == "turn":
                for _ in range(arg):
                    clock.advance(1)
            elif op == "leave":
                clients[arg].leave()
            elif clients[arg].connection is None:
                if arg not in joined_at:
                    joined_at[arg] = {hub.center.name: hub.sent for hub in clients[arg].hubs}
                clients[arg].join()
        for i in joined_at:  # everyone back, resuming
            if clients[i].connection is None:
                clients[i].join()
        while clock.getDelayedCalls():
            clock.advance(1)
    finally:
        notifier.domain.hub.FANOUT_SLICE = slice_was

    for i, client in enumerate(clients):
        if i not in joined_at:
            assert client.received == []
            continue
        start = joined_at[i]
        expected = [message_id for name, message_id in published
                    if name in start and int(message_id.rsplit("-", 1)[1]) > start[name]]
        assert client.received == expected


def test_a_batch_across_centers_is_held_until_what_comes_before_it_has_come() -> None:
    # Center "a" is slow to write to its many subscribers: "b"'s message,
    # published after "a"'s, waits for it; then both go, in publish order.
    steps: list = []
    a = Hub(Center("p", "a", False, None, None, 0.0), "ea", 10, lambda: 0.0, schedule=steps.append)
    b = Hub(Center("p", "b", False, None, None, 0.0), "eb", 10, lambda: 0.0, schedule=steps.append)
    client = Client([a, b])
    client.join()
    for hub, text in ((a, "a1"), (b, "b1"), (a, "a2")):
        hub.deliver(hub.append(text))
    b_fan_out, a_fan_out = steps.pop(1), steps.pop(0)
    b_fan_out()  # b's fan-out first: b1 came after a1, on its way
    assert client.received == []
    a_fan_out()
    assert client.received == ["ea-1", "eb-1", "ea-2"]


def test_a_long_poll_waits_for_what_was_published_before_its_backlog() -> None:
    # "a" has not written a1 yet when a poll of both asks: b1, published
    # after it, is not answered alone; both are, in publish order.
    steps: list = []
    a = Hub(Center("p", "a", False, None, None, 0.0), "ea", 10, lambda: 0.0, schedule=steps.append)
    b = Hub(Center("p", "b", False, None, None, 0.0), "eb", 10, lambda: 0.0, schedule=steps.append)
    for hub in (a, b):
        hub.subscribe(Recorder())
    a.deliver(a.append("a1"))
    b.deliver(b.append("b1"))
    steps.pop(1)()  # b's fan-out
    backlog = interleave([a.retained(*a.resume_point("ea-0")[:2]), b.retained(*b.resume_point("eb-0")[:2])])
    assert [p.message.id for p in backlog] == ["eb-1"]
    now, held = held_back([a, b], backlog)
    assert (now, [p.message.id for p in held]) == ([], ["eb-1"])
    poll = MultiLongPoll([a, b], ["ea-0", "eb-0"], 30, Clock(), None, held)
    answers: list = []
    poll.answer.addCallback(answers.append)
    steps.pop(0)()  # a's fan-out
    [(body, cursor)] = answers
    assert [m["id"] for m in json.loads(body)["messages"]] == ["ea-1", "eb-1"]
    assert cursor == "ea-1,eb-1"


def test_a_long_poll_answer_across_centers_is_cut_only_where_each_center_keeps_the_rest() -> None:
    clock = Clock()
    kept, live = (Hub(Center("p", name, False, None, None, 0.0), f"e{name}", history, clock.seconds,
                      schedule=lambda step: clock.callLater(1, step)) for name, history in (("a", 1000), ("b", 0)))
    hubs = {"a": kept, "b": live}
    # A merged batch past the cap: "a"'s messages, then one of "b", which keeps none.
    items = [kept.append("x" * 4000) for _ in range(49)] + [live.append("kept nowhere")]
    assert sum(len(prepared.message.data) for prepared in items) > ANSWER_BYTES
    assert live_items(Batch(items), hubs.__getitem__) == items
    # Where every center past the cut keeps what is left, the answer is cut.
    items = [kept.append("x" * 4000) for _ in range(49)]
    cut = live_items(Batch(items), hubs.__getitem__)
    assert 0 < len(cut) < len(items) and cut == items[:len(cut)]
