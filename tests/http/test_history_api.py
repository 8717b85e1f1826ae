"""``GET /admin/v1/history`` in memory: the node's samples over the three
ranges, continued with ``after``, its refusals, and a long-poll answered
between two samples counted in the next."""

from __future__ import annotations

from typing import Any

import pytest

from notifier.domain.history import SERIES
from tests.support import ADMIN_TOKEN, Api, Listener, Recorder, expect_json_error, result_of

#: A whole minute, and half a second before it, when the in-memory node starts.
T0 = 1_800_000_000 - 1_800_000_000 % 60
START = T0 - 0.5


def _history(api: Api, query: str = "") -> dict[str, Any]:
    answer = api.admin("GET", "/admin/v1/history" + query)
    assert answer.status == 200, answer
    return answer.json()


def _seconds(api: Api, n: int) -> None:
    for _ in range(n):
        api.clock.advance(1)


@pytest.fixture
def api() -> Api:
    node = Api(start=START)
    node.metrics.history.start()
    yield node
    node.metrics.history.stop()


def test_the_history_of_the_last_five_minutes_by_default(api):
    site = api.add_publisher("site")
    assert api.put_center(site, "news").status == 201
    hub = api.hub("site", "news")
    nothing = _history(api)
    assert nothing == {"range": "5m", "step": 1, "now": START, "nodes": [], "t": [],
                       "series": {series: [] for series in SERIES}, "by_node": {}}
    subscribers = [Recorder("websocket"), Recorder("sse"), Recorder("sse")]
    for subscriber in subscribers:
        hub.subscribe(subscriber)
    api.publish(site, "news", "one")
    api.publish(site, "news", "two")
    _seconds(api, 1)
    hub.unsubscribe(subscribers[2])
    _seconds(api, 1)
    node = api.metrics.node
    answer = _history(api)
    assert answer == {
        "range": "5m", "step": 1, "now": START + 2, "nodes": [node], "t": [T0, T0 + 1],
        "series": {"websocket": [1, 1], "sse": [2, 1], "longpoll": [0, 0], "pusher": [0, 0],
                   "messages_in": [2.0, 0.0], "messages_out": [6.0, 0.0]},
        "by_node": {node: {"websocket": [1, 1], "sse": [2, 1], "longpoll": [0, 0], "pusher": [0, 0],
                           "messages_in": [2.0, 0.0], "messages_out": [6.0, 0.0]}},
    }
    assert _history(api, "?range=5m") == answer


def test_after_continues_the_history_with_the_later_samples_only(api):
    _seconds(api, 5)
    first = _history(api)
    assert first["t"] == list(range(T0, T0 + 5))
    assert _history(api, f"?after={first['t'][-1]}")["t"] == []
    _seconds(api, 2)
    later = _history(api, f"?after={first['t'][-1]}")
    assert later["t"] == [T0 + 5, T0 + 6] and later["series"]["websocket"] == [0, 0]
    assert _history(api, f"?after={T0 + 4.5}")["t"] == [T0 + 5, T0 + 6]
    assert _history(api, "?range=1h&after=0")["t"] == list(range(T0, T0 + 7))


def test_five_minutes_one_hour_and_a_day(api):
    _seconds(api, 3660 + 125)
    last = T0 + 3660 + 124
    five = _history(api, "?range=5m")
    assert five["step"] == 1 and five["t"] == list(range(last - 299, last + 1))
    hour = _history(api, "?range=1h")
    assert hour["step"] == 1 and hour["t"] == list(range(last - 3599, last + 1))
    day = _history(api, "?range=24h")
    assert day["range"] == "24h" and day["step"] == 60
    assert day["t"] == list(range(T0, last - last % 60, 60))  # whole minutes: the current one is not over
    assert len(day["t"]) == 63 and all(t % 60 == 0 for t in day["t"])
    assert _history(api, f"?range=24h&after={day['t'][-2]}")["t"] == [day["t"][-1]]


@pytest.mark.parametrize("query", ["?range=2h", "?range=", "?range=1H", "?range=5m&after=later",
                                   "?after=", "?after=NaN", "?range=24h&after=1e400", "?range=%FF"])
def test_another_range_or_an_after_that_is_no_number_is_refused(api, query):
    answer = api.admin("GET", "/admin/v1/history" + query)
    expect_json_error(answer.status, answer.json(), 400, "invalid_query")


def test_the_history_needs_the_admin_token(api):
    for authorization in (None, "Bearer wrong"):
        answer = api.request("GET", "/admin/v1/history", authorization=authorization)
        expect_json_error(answer.status, answer.json(), 401, "bad_credentials")
    assert api.request("GET", "/admin/v1/history", admin=ADMIN_TOKEN).status == 200


def test_a_long_poll_answered_between_two_samples_counts_in_the_next():
    listener = Listener()
    api = listener.api
    history = api.metrics.history
    history.start()
    _seconds(api, 1)
    waiting = listener.get("/sub/site/news?timeout=30")
    listener.publish("now")  # answers it: no long-poll waits at the sample
    response = result_of(waiting)
    assert response.code == 200 and b'"now"' in listener.body(response)
    assert api.stats.subscribed.counts["longpoll"] == 0
    _seconds(api, 1)
    _seconds(api, 1)
    answer = _history(api)
    assert answer["series"]["longpoll"] == [0, 1, 0]
    assert answer["series"]["messages_in"] == [0.0, 1.0, 0.0]
    history.stop()
