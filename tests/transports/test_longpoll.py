"""The long-poll transport's entry point (``LongPolls.serve``) in memory:
answers of history, capped and shared, live answers and timeouts, compound
cursors, JSONP, and the end of a token. No socket, time through a Clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.web import server
from twisted.web.test.requesthelper import DummyChannel

from notifier.domain.errors import Unauthorized
from notifier.domain.hub import Hub
from notifier.domain.model import Center, Grant
from notifier.domain.token_deadlines import TokenDeadlines
from notifier.transports.longpoll import ANSWER_BYTES, LongPolls


def make_hub(clock: Clock, name: str = "news", history: int = 100) -> Hub:
    return Hub(Center("site", name, False, None, None, 0.0), f"e{name}", history, clock.seconds)


def make_request() -> server.Request:
    request = server.Request(DummyChannel())
    request.method, request.clientproto = b"GET", b"HTTP/1.1"
    return request


def header(request: server.Request, name: bytes) -> bytes | None:
    return request.responseHeaders.getRawHeaders(name, [None])[0]


def result(answer: Any) -> Any:
    """What a Deferred has fired with (it must have)."""
    assert isinstance(answer, Deferred)
    box: list[Any] = []
    answer.addBoth(box.append)
    assert box, "the answer is still waiting"
    return box[0]


def publish(hub: Hub, *texts: str) -> list[str]:
    ids = []
    for text in texts:
        prepared = hub.append(text)
        hub.deliver(prepared)
        ids.append(prepared.message.id)
    return ids


def test_a_poll_behind_is_answered_at_once_from_history_with_its_headers() -> None:
    clock = Clock()
    hub = make_hub(clock)
    ids = publish(hub, "one", "two")
    request = make_request()
    payload = LongPolls(clock, TokenDeadlines(clock)).serve(request, [hub], ["enews-0"], 30, None, None)
    assert json.loads(payload) == {"messages": [{"id": ids[0], "center": "news", "data": "one", "ts": 0.0},
                                                {"id": ids[1], "center": "news", "data": "two", "ts": 0.0}],
                                   "last_id": ids[1], "recovered": True}
    assert list(request.responseHeaders.getAllRawHeaders()) == [
        (b"Cache-Control", [b"no-store"]), (b"Notifier-Cursor", [ids[1].encode()]),
        (b"Content-Type", [b"application/json"])]


def test_polls_with_the_same_cursor_share_one_answer() -> None:
    clock = Clock()
    hub = make_hub(clock)
    publish(hub, "one")
    polls = LongPolls(clock, TokenDeadlines(clock))
    first = polls.serve(make_request(), [hub], ["enews-0"], 30, None, None)
    assert polls.serve(make_request(), [hub], ["enews-0"], 30, None, None) is first


def test_an_answer_of_history_is_capped_and_the_cursor_goes_on_from_its_end() -> None:
    clock = Clock()
    hub = make_hub(clock)
    ids = publish(hub, *("x" * 100 for _ in range(5)))
    polls = LongPolls(clock, TokenDeadlines(clock), answer_bytes=350)  # two envelopes of about 150 bytes
    request = make_request()
    first = json.loads(polls.serve(request, [hub], ["enews-0"], 30, None, None))
    assert [m["id"] for m in first["messages"]] == ids[:2] and first["last_id"] == ids[1]
    assert header(request, b"notifier-cursor") == ids[1].encode()
    rest = json.loads(polls.serve(make_request(), [hub], [ids[1]], 30, None, None))
    assert [m["id"] for m in rest["messages"]] == ids[2:4]
    assert LongPolls(Clock(), TokenDeadlines(Clock())).answer_bytes == ANSWER_BYTES


def test_a_poll_up_to_date_waits_for_the_next_message_or_its_timeout() -> None:
    clock = Clock()
    hub = make_hub(clock)
    polls = LongPolls(clock, TokenDeadlines(clock))
    request = make_request()
    waiting = polls.serve(request, [hub], [None], 30, None, None)
    assert isinstance(waiting, Deferred) and not waiting.called and len(hub.subscribers) == 1
    [message_id] = publish(hub, "live")
    assert json.loads(result(waiting))["messages"][0]["data"] == "live"
    assert header(request, b"notifier-cursor") == message_id.encode() and not hub.subscribers

    request = make_request()
    waiting = polls.serve(request, [hub], [message_id], 10, None, None)
    clock.advance(10)
    assert json.loads(result(waiting)) == {"messages": [], "last_id": message_id, "recovered": True}
    assert header(request, b"notifier-cursor") == hub.position.encode() and not hub.subscribers


def test_a_poll_with_no_timeout_is_answered_at_once_with_where_the_center_stands() -> None:
    clock = Clock()
    hub = make_hub(clock)
    request = make_request()
    payload = LongPolls(clock, TokenDeadlines(clock)).serve(request, [hub], [None], 0, None, None)
    assert json.loads(payload) == {"messages": [], "last_id": None, "recovered": True}
    assert header(request, b"notifier-cursor") == hub.position.encode() and not hub.subscribers


def test_a_callback_makes_the_answer_jsonp() -> None:
    clock = Clock()
    hub = make_hub(clock)
    publish(hub, "one")
    request = make_request()
    payload = LongPolls(clock, TokenDeadlines(clock)).serve(request, [hub], ["enews-0"], 30, "app.got", None)
    assert isinstance(payload, bytes) and payload.startswith(b"/**/app.got({") and payload.endswith(b"});")
    assert header(request, b"content-type") == b"application/javascript; charset=utf-8"


def test_a_poll_of_several_centers_answers_with_a_compound_cursor() -> None:
    clock = Clock()
    a, b = make_hub(clock, "a"), make_hub(clock, "b")
    polls = LongPolls(clock, TokenDeadlines(clock))
    [a1] = publish(a, "a1")
    request = make_request()
    body = json.loads(polls.serve(request, [a, b], ["ea-0", "eb-0"], 30, None, None))
    assert [m["id"] for m in body["messages"]] == [a1]
    assert body["last_id"] == f"{a1},eb-0" and body["lost"] == []
    assert header(request, b"notifier-cursor") == f"{a1},eb-0".encode()
    # a center it cannot resume is named; the others' answer goes on
    lost = json.loads(polls.serve(make_request(), [a, b], ["ea-0", "other-3"], 30, None, None))
    assert lost["lost"] == ["b"] and lost["recovered"] is False
    # up to date on both: the first live message of either
    request = make_request()
    waiting = polls.serve(request, [a, b], [a1, "eb-0"], 30, None, None)
    [b1] = publish(b, "b1")
    assert json.loads(result(waiting))["last_id"] == f"{a1},{b1}"
    assert not a.subscribers and not b.subscribers


@pytest.mark.parametrize("centers", [1, 2])
def test_a_waiting_poll_of_a_private_center_ends_with_its_token(centers: int) -> None:
    clock = Clock()
    hubs = [make_hub(clock, name) for name in ("a", "b")[:centers]]
    waiting = LongPolls(clock, TokenDeadlines(clock)).serve(
        make_request(), hubs, [None] * centers, 60, None, Grant(expires=5.0))
    clock.advance(5)
    error = result(waiting).value
    assert isinstance(error, Unauthorized) and error.code == "expired_token"
    assert not any(hub.subscribers for hub in hubs)
