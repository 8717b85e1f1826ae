"""Random interleavings of publishes, disconnects and resumes against one hub.

Every client must receive every message at most once and in order, every
retained one it missed while away, and hear ``recovered: false`` exactly when
something it missed was no longer retained.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.hub import Batch, Hub
from notifier.model import Center


class Client:
    transport_name = "test"

    def __init__(self) -> None:
        self.received: list[str] = []
        self.connected = False
        self.told_lost = 0

    def deliver(self, batch: Batch) -> None:
        self.received.extend(message.id for message in batch.messages)

    def close(self, reason: str) -> None:
        self.connected = False


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
    published: list[str] = []
    clients = [Client() for _ in range(4)]
    # what each client must have: everything published after it first joined,
    # except what it was told it lost
    first_index: dict[int, int] = {}
    lost_allowed: dict[int, set[str]] = {i: set() for i in range(4)}
    start_cursor: dict[int, str] = {}

    for op, n in ops:
        if op == "publish":
            for _ in range(n):
                prepared = hub.append(f"m{len(published)}")
                published.append(prepared.message.id)
                hub.deliver(prepared)
        elif op == "leave":
            client = clients[n]
            if client.connected:
                hub.unsubscribe(client)
                client.connected = False
        else:
            client = clients[n]
            if client.connected:
                continue
            if n not in first_index:  # joining: its cursor is "from now on"
                first_index[n] = len(published)
                start_cursor[n] = hub.position
            cursor = client.received[-1] if client.received else start_cursor[n]
            backlog, recovered = hub.attach(client, cursor)
            client.connected = True
            since = published.index(cursor) + 1 if cursor in published else first_index[n]
            missed = published[since:]
            retained = {p.message.id for p in backlog}
            gone = [m for m in missed if m not in retained]
            assert recovered == (not gone), (cursor, missed, retained)
            lost_allowed[n].update(gone)
            if backlog:
                client.deliver(Batch(backlog))

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
