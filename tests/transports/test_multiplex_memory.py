"""Multiplexed subscriptions in memory: where a subscriber starts, how the
backlogs of several centers interleave, one subscriber however many hubs it
is attached to, and each message encoded once per wire form for all."""

from __future__ import annotations

import json
from typing import Any

import pytest
import treq

import notifier.transports.longpoll
import notifier.transports.sse
from notifier.domain.hub import Hub, Prepared, interleave
from notifier.domain.model import Center, Message
from notifier.http.metrics import Metrics
from tests.support import Recorder, result_of
from tests.support.memory import Listener, fired


def _hub(name: str = "news", history: int = 3, epoch: str = "e1") -> Hub:
    return Hub(Center("site", name, False, None, None, 0.0), epoch, history, lambda: 0.0)


def _publish(hub: Hub, text: str) -> str:
    prepared = hub.append(text)
    hub.deliver(prepared)
    return prepared.message.id


def test_an_opening_says_the_position_just_before_what_it_sends():
    hub = _hub(history=3)
    assert hub.attach(Recorder(), None).position == "e1-0"
    ids = [_publish(hub, f"m{i}") for i in range(5)]  # e1-3 to e1-5 retained
    live = hub.attach(Recorder(), None)
    assert (live.backlog, live.recovered, live.position) == ([], True, "e1-5")
    resumed = hub.attach(Recorder(), ids[2])
    assert ([p.message.id for p in resumed.backlog], resumed.recovered, resumed.position) == (ids[3:], True, ids[2])
    # Too old, or another epoch: what is retained, from just before its oldest.
    for cursor in (ids[0], "other-2", "e1-99"):
        opening = hub.attach(Recorder(), cursor)
        assert ([p.message.id for p in opening.backlog], opening.recovered) == (ids[2:], False), cursor
        assert opening.position == ids[1], cursor
        # Handed back, that position resumes with nothing lost.
        again = hub.attach(Recorder(), opening.position)
        assert (again.backlog, again.recovered) == (opening.backlog, True)
    # What is on its way to the subscribers is not in a backlog: it comes live.
    hub.schedule = lambda call: None
    _publish(hub, "on its way")
    assert hub.attach(Recorder(), None).position == ids[-1]


def test_history_zero_starts_where_everything_sent_ends():
    hub = _hub(history=0)
    _publish(hub, "a")
    opening = hub.attach(Recorder(), "e1-0")
    assert (opening.backlog, opening.recovered, opening.position) == ([], False, "e1-1")


def _prepared(center: str, seq: int, ts: float) -> Prepared:
    return Prepared(Message(f"e-{seq}", center, f"{center}{seq}", ts))


def test_backlogs_interleave_in_publish_order_each_center_kept_in_its_own():
    a = [_prepared("a", 1, 1.0), _prepared("a", 2, 3.0), _prepared("a", 3, 2.5)]  # the clock went back
    b = [_prepared("b", 1, 2.0), _prepared("b", 2, 2.6)]
    merged = interleave([a, b])
    assert [p.message.data for p in merged if p.message.center == "a"] == ["a1", "a2", "a3"]
    assert [p.message.data for p in merged if p.message.center == "b"] == ["b1", "b2"]
    assert [p.message.data for p in merged][:2] == ["a1", "b1"]
    assert interleave([a]) is a


def test_a_subscriber_of_several_hubs_is_one_subscriber_of_the_node():
    listener = Listener()
    api = listener.api
    assert api.put_center(listener.auth, "user.17").status == 201
    news, user = api.hub("site", "news"), api.hub("site", "user.17")
    subscriber = Recorder("sse")
    subscriber.hubs = (news, user)  # type: ignore[attr-defined]
    news.subscribe(subscriber)
    user.subscribe(subscriber)
    single = Recorder("sse")
    user.subscribe(single)
    assert list(api.centers.subscribers()).count(subscriber) == 1
    assert len(list(api.centers.subscribers())) == 2
    assert Metrics(api.publishers, api.centers, api.stats, api.clock).connections() == {("sse", "site"): 2}


class _Counting:
    """Wraps an encoding function and counts its calls."""

    def __init__(self, encode: Any) -> None:
        self.encode = encode
        self.calls = 0

    def __call__(self, message: Message) -> Any:
        self.calls += 1
        return self.encode(message)


@pytest.fixture
def encodings(monkeypatch):
    counters = {}
    for module in (notifier.transports.sse, notifier.transports.longpoll):
        counter = _Counting(module.envelope_json)
        monkeypatch.setattr(module, "envelope_json", counter)
        counters[module.__name__.rsplit(".", 1)[1]] = counter
    return counters


def test_a_message_is_encoded_once_per_wire_form_for_every_multiplexed_subscriber(encodings):
    listener = Listener()
    for center in ("user.17", "node.5"):
        assert listener.api.put_center(listener.auth, center).status == 201
    path = "/sub/site/news,user.17,node.5"
    chunks: list[list[bytes]] = []
    for _ in range(10):
        response = result_of(listener.get(path, {"Accept": "text/event-stream"}))
        received: list[bytes] = []
        treq.collect(response, received.append)
        chunks.append(received)
    cursor = json.loads(listener.body(result_of(listener.get(path + "?timeout=0"))))["last_id"]
    polls = [listener.get(f"{path}?since={cursor}") for _ in range(10)]
    polls += [listener.get("/sub/site/news?timeout=5") for _ in range(10)]
    listener.http.flush()
    assert not any(fired(poll) for poll in polls)

    message_id = listener.publish("hello")
    # SSE: the envelope once, and each stream's own compound id before it.
    assert encodings["sse"].calls == 1
    for received in chunks:
        events = b"".join(received).split(b"\n\n")
        event = next(e for e in events if b"event: message" in e)
        lines = event.split(b"\n")
        assert lines[0] == f"id: {message_id},{cursor.split(',', 1)[1]}".encode()
        assert json.loads(lines[2][len(b"data: "):])["id"] == message_id
    # Long-poll: the envelope once for the twenty answers, and the ten
    # multiplexed ones waiting with one cursor share a body.
    assert encodings["longpoll"].calls == 1
    bodies = [listener.body(result_of(poll)) for poll in polls]
    assert len(set(bodies[:10])) == 1 and len(set(bodies[10:])) == 1
    assert json.loads(bodies[0])["last_id"] == f"{message_id},{cursor.split(',', 1)[1]}"
    assert json.loads(bodies[10])["last_id"] == message_id
