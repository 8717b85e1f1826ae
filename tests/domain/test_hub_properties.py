"""Random interleavings of publishes, disconnects and resumes against one hub.

Every client must receive every message at most once and in order, every
retained one it missed while away, and hear ``recovered: false`` exactly when
something it missed was no longer retained.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

import notifier.domain.hub
from notifier.domain.hub import Batch, Hub
from notifier.domain.model import Center


class Client:
    """A browser: what it received across its connections."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.connection: Connection | None = None

    @property
    def connected(self) -> bool:
        return self.connection is not None


class Connection:
    """One connection of a client: each resume is a new one, as on the wire."""

    transport_name = "test"

    def __init__(self, client: Client) -> None:
        self.client = client

    def deliver(self, batch: Batch) -> None:
        self.client.received.extend(message.id for message in batch.messages)

    def close(self, reason: str) -> None:
        self.client.connection = None


operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 4)),
        st.tuples(st.just("leave"), st.integers(0, 3)),
        st.tuples(st.just("resume"), st.integers(0, 3)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(history=st.integers(0, 5), ops=operations)
def test_resume_is_exactly_once_and_honest(history: int, ops: list[tuple[str, int]]) -> None:
    hub = Hub(Center("p", "c", False, None, None, 0.0), "ep", history, lambda: 0.0)
    _run(hub, ops, lambda: None)


#: The same, with the fan-out a step of its own, as the reactor runs it:
#: ``("turn", n)`` lets n turns go by, each writing a slice of 2 subscribers;
#: publishes, leaves and resumes fall between the slices.
deferred_operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 4)),
        st.tuples(st.just("leave"), st.integers(0, 3)),
        st.tuples(st.just("resume"), st.integers(0, 3)),
        st.tuples(st.just("turn"), st.integers(1, 3)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(history=st.integers(0, 5), ops=deferred_operations)
def test_resume_is_exactly_once_and_honest_with_fan_out_in_slices(
        history: int, ops: list[tuple[str, int]]) -> None:
    clock = Clock()
    # A step scheduled for the next turn runs a second later: advancing the
    # clock by one second is one turn of the reactor.
    hub = Hub(Center("p", "c", False, None, None, 0.0), "ep", history, clock.seconds,
              schedule=lambda step: clock.callLater(1, step))

    def turns(n: int) -> None:
        for _ in range(n):
            clock.advance(1)

    def settle() -> None:
        while clock.getDelayedCalls():
            clock.advance(1)

    slice_was = notifier.domain.hub.FANOUT_SLICE
    notifier.domain.hub.FANOUT_SLICE = 2
    try:
        _run(hub, ops, settle, turns)
    finally:
        notifier.domain.hub.FANOUT_SLICE = slice_was


def _run(hub: Hub, ops: list[tuple[str, int]], settle: Callable[[], None],
         turn: Callable[[int], None] | None = None) -> None:
    published: list[str] = []
    clients = [Client() for _ in range(4)]
    # what each client must have: everything published after it first joined,
    # except what it was told it lost
    first_index: dict[int, int] = {}
    lost_allowed: dict[int, set[str]] = {i: set() for i in range(4)}
    start_cursor: dict[int, str] = {}

    for op, n in ops:
        if op == "turn":
            assert turn is not None
            turn(n)
        elif op == "publish":
            for _ in range(n):
                prepared = hub.append(f"m{len(published)}")
                published.append(prepared.message.id)
                hub.deliver(prepared)
        elif op == "leave":
            client = clients[n]
            if client.connection is not None:
                hub.unsubscribe(client.connection)
                client.connection = None
        else:
            client = clients[n]
            if client.connected:
                continue
            if n not in first_index:  # joining: its cursor is "from now on"
                start_cursor[n] = hub.position
                # What is on its way to every subscriber reaches it too.
                first_index[n] = int(hub.position.rsplit("-", 1)[1])
            cursor = client.received[-1] if client.received else start_cursor[n]
            client.connection = Connection(client)
            backlog, recovered, _ = hub.attach(client.connection, cursor)
            since = published.index(cursor) + 1 if cursor in published else first_index[n]
            # What is on its way to every subscriber is not missed: it comes live.
            on_its_way = int(hub.position.rsplit("-", 1)[1])
            missed = published[since:on_its_way]
            retained = {p.message.id for p in backlog}
            gone = [m for m in missed if m not in retained]
            assert recovered == (not gone), (cursor, missed, retained)
            lost_allowed[n].update(gone)
            if backlog:
                client.connection.deliver(Batch(backlog))

    settle()
    for n, client in enumerate(clients):
        if n not in first_index:
            assert client.received == []
            continue
        assert len(client.received) == len(set(client.received)), "duplicate delivery"
        positions = [published.index(i) for i in client.received]
        assert positions == sorted(positions), "out of order"
        # received everything from first join up to its last disconnect or now,
        # but for what it was told it lost
        if client.received:
            until = published.index(client.received[-1]) + 1
        else:
            until = first_index[n]
        expected = [m for m in published[first_index[n]:until] if m not in lost_allowed[n]]
        assert client.received == expected
        if client.connected:
            assert client.received == [
                m for m in published[first_index[n]:] if m not in lost_allowed[n]
            ]
