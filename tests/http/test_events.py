"""A message's event (docs/protocol.rst: Events), in memory: named by a
publish (``Notifier-Event``) or a batch entry (``"event"``), refused when it
is no event name, and carried to every wire form that can carry it (the
envelope of long-poll and WebSocket ``format=json``, the ``event:`` line of
SSE, SSE ``format=json``), in retained history too; a message of the
default event on the wire as it was before events were.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import pytest
import treq
from hypothesis import given
from hypothesis import strategies as st

from notifier.backends.interfaces import Publication
from notifier.domain.errors import BadRequest
from notifier.domain.hub import Batch, Hub
from notifier.domain.idempotency import fingerprint
from notifier.domain.model import Center, Message
from notifier.domain.names import check_event_name
from notifier.transports import sse
from notifier.transports.envelope import envelope_json
from notifier.transports.websocket import json_frame, raw_frame
from tests.support import ADMIN_TOKEN, START, Answer, result_of
from tests.support.memory import Listener

PRICE = {"Notifier-Event": "price"}


def published(listener: Listener, text: str, headers: dict[str, Any] | None = None,
              center: str = "news") -> str:
    answer = listener.api.request("POST", f"/api/v1/centers/{center}/messages", text, auth=listener.auth,
                                  headers={"Content-Type": "text/plain", **(headers or {})})
    assert answer.status == 201, answer
    listener.http.flush()
    return str(answer.json()["id"])


def refused(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert json.loads(answer.body)["error"] == code, answer


def polled(listener: Listener, since: str, path: str = "/sub/site/news") -> bytes:
    return listener.body(result_of(listener.get(f"{path}?since={since}&timeout=0")))


def read_events(text: str) -> list[dict[str, str]]:
    """The events of an event stream, read as the HTML standard reads them
    (each line's field, one space after the colon dropped, ``data`` lines
    joined with a line feed)."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in re.split(r"\r\n|\r|\n", text)[:-1]:
        if not line:
            if fields or data:
                events.append({**fields, "data": "\n".join(data)} if data else fields)
            fields, data = {}, []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
    return events


class Streamed:
    """An event stream of the public listener in memory: what it got."""

    def __init__(self, listener: Listener, path: str, headers: dict[str, str] | None = None) -> None:
        self.listener = listener
        response = result_of(listener.get(path, {"Accept": "text/event-stream", **(headers or {})}))
        assert response.code == 200, response
        self.chunks: list[bytes] = []
        treq.collect(response, self.chunks.append)
        listener.http.flush()

    @property
    def events(self) -> list[dict[str, str]]:
        """The events of messages (those with data and an id of one)."""
        return [event for event in read_events(b"".join(self.chunks).decode()) if "data" in event and "id" in event]


# publishing an event, and where it shows


def test_a_named_event_reaches_the_envelope_of_a_long_poll_after_its_data():
    listener = Listener()
    first = published(listener, "before")
    waiting = listener.get(f"/sub/site/news?since={first}")
    named = published(listener, "A-1 is 12.50", PRICE)
    body = listener.body(result_of(waiting))
    assert body == (b'{"messages": [{"id": "%s", "center": "news", "data": "A-1 is 12.50", "ts": %r, '
                    b'"event": "price"}], "last_id": "%s", "recovered": true}'
                    % (named.encode(), START, named.encode()))


def test_a_message_of_the_default_event_is_the_envelope_it_always_was():
    listener = Listener()
    first = published(listener, "before")
    plain = published(listener, "plain")
    named_default = published(listener, "said", {"Notifier-Event": "message"})
    body = json.loads(polled(listener, first))
    assert body["messages"] == [
        {"id": plain, "center": "news", "data": "plain", "ts": START},
        {"id": named_default, "center": "news", "data": "said", "ts": START},
    ]
    assert list(body["messages"][0]) == ["id", "center", "data", "ts"]


def test_an_event_stream_names_each_message_s_event_on_its_event_line():
    listener = Listener()
    stream = Streamed(listener, "/sub/site/news")
    named = published(listener, "two\nlines", PRICE)
    plain = published(listener, "plain")
    raw = b"".join(stream.chunks).decode()
    assert f"id: {named}\nevent: price\ndata: two\ndata: lines\n\n" in raw
    assert f"id: {plain}\nevent: message\ndata: plain\n\n" in raw
    assert stream.events == [{"id": named, "event": "price", "data": "two\nlines"},
                             {"id": plain, "event": "message", "data": "plain"}]


def test_an_event_stream_as_json_is_every_message_a_message_event_of_its_envelope():
    listener = Listener()
    stream = Streamed(listener, "/sub/site/news?format=json")
    named = published(listener, "two\nlines", PRICE)
    plain = published(listener, "plain")
    assert [(event["id"], event["event"]) for event in stream.events] == [(named, "message"), (plain, "message")]
    assert [json.loads(event["data"]) for event in stream.events] == [
        {"id": named, "center": "news", "data": "two\nlines", "ts": START, "event": "price"},
        {"id": plain, "center": "news", "data": "plain", "ts": START},
    ]


def test_an_event_stream_of_several_centers_names_events_unless_asked_as_json():
    listener = Listener()
    assert listener.api.put_center(listener.auth, "alerts").status == 201
    named_stream = Streamed(listener, "/sub/site/news,alerts")
    json_stream = Streamed(listener, "/sub/site/news,alerts?format=json")
    named = published(listener, "fire", {"Notifier-Event": "alarm"}, center="alerts")
    plain = published(listener, "calm")
    for stream, events in ((named_stream, ["alarm", "message"]), (json_stream, ["message", "message"])):
        assert [event["event"] for event in stream.events] == events
        envelopes = [json.loads(event["data"]) for event in stream.events]
        assert [(e["id"], e.get("event")) for e in envelopes] == [(named, "alarm"), (plain, None)]


def test_sse_format_is_raw_or_json():
    listener = Listener()
    answer = result_of(listener.get("/sub/site/news?format=xml", {"Accept": "text/event-stream"}))
    assert answer.code == 400
    assert json.loads(listener.body(answer))["error"] == "invalid_format"


def test_a_websocket_envelope_names_the_event_and_a_raw_frame_is_the_text_alone():
    named = Message("e-1", "news", "x", 1.5, "price")
    plain = Message("e-2", "news", "x", 1.5)
    assert json.loads(json_frame(named)[2:]) == {"id": "e-1", "center": "news", "data": "x", "ts": 1.5,
                                                 "event": "price"}
    assert json_frame(plain)[2:] == b'{"id": "e-2", "center": "news", "data": "x", "ts": 1.5}'
    assert raw_frame(named) == raw_frame(plain)


def test_the_console_tail_is_every_message_a_message_event_naming_its_event_in_the_envelope():
    hub = Hub(Center("site", "news", False, None, None, 0.0), "e", 10, lambda: 1.5)
    text = sse.envelope_events(_batch(hub, [("x", "price"), ("y", "message")])).decode()
    assert [(event["event"], json.loads(event["data"]).get("event")) for event in read_events(text)] == [
        ("message", "price"), ("message", None)]


def _batch(hub: Hub, items: list[tuple[str, str]]) -> Batch:
    return Batch([hub.append(data, event=event) for data, event in items])


# refusals


@pytest.mark.parametrize("value", [b"", b"x" * 201, b"a\tb", b"\xc2\x85", b"\xff\xfe"],
                         ids=["empty", "201 characters", "tab", "C1", "not UTF-8"])
def test_a_notifier_event_that_is_no_event_name_is_400_invalid_event_and_publishes_nothing(value):
    listener = Listener()
    answer = listener.api.request("POST", "/api/v1/centers/news/messages", "x", auth=listener.auth,
                                  headers={"Content-Type": "text/plain", "Notifier-Event": value})
    refused(answer, 400, "invalid_event")
    assert listener.api.hub("site", "news").seq == 0


def test_an_event_name_of_200_characters_of_any_text_is_one():
    listener = Listener()
    name = "é" * 199 + "✓"
    first = published(listener, "before")
    published(listener, "x", {"Notifier-Event": name.encode()})
    [message] = json.loads(polled(listener, first))["messages"]
    assert message["event"] == name


def test_notifier_event_given_twice_is_400_bad_request():
    listener = Listener()
    answer = listener.api.request("POST", "/api/v1/centers/news/messages", "x", auth=listener.auth,
                                  headers={"Content-Type": "text/plain", "Notifier-Event": ["a", "b"]})
    refused(answer, 400, "bad_request")
    assert listener.api.hub("site", "news").seq == 0


# batches


def _batch_answer(listener: Listener, entries: list[Any], key: str | None = None) -> Answer:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    answer = listener.api.request("POST", "/api/v1/messages", json.dumps({"messages": entries}),
                                  auth=listener.auth, headers=headers)
    listener.http.flush()
    return answer


def test_a_batch_entry_may_name_its_event():
    listener = Listener()
    first = published(listener, "before")
    answer = _batch_answer(listener, [{"center": "news", "data": "a", "event": "price"},
                                      {"center": "news", "data": "b"},
                                      {"center": "news", "data": "c", "event": "message"}])
    assert answer.status == 201, answer
    messages = json.loads(polled(listener, first))["messages"]
    assert [(m["data"], m.get("event")) for m in messages] == [("a", "price"), ("b", None), ("c", None)]


@pytest.mark.parametrize(("entry", "code"), [
    ({"center": "news", "data": "x", "event": ""}, "invalid_event"),
    ({"center": "news", "data": "x", "event": None}, "invalid_event"),
    ({"center": "news", "data": "x", "event": 7}, "invalid_event"),
    ({"center": "news", "data": "x", "event": "a\nb"}, "invalid_event"),
    ({"center": "news", "data": "x", "event": "\ud800"}, "invalid_event"),
    ({"center": "news", "data": "x", "event": "x" * 201}, "invalid_event"),
    ({"center": "news", "data": "x", "name": "price"}, "invalid_batch"),
    ({"center": "news", "data": "x", "event": "a", "more": 1}, "invalid_batch"),
])
def test_a_batch_entry_whose_event_is_not_one_refuses_the_whole_batch(entry, code):
    listener = Listener()
    answer = _batch_answer(listener, [{"center": "news", "data": "fine"}, entry])
    refused(answer, 400, code)
    assert "messages[1]" in json.loads(answer.body)["message"]
    assert listener.api.hub("site", "news").seq == 0


def test_an_idempotency_key_retried_with_another_event_is_another_request():
    listener = Listener()
    entries = [{"center": "news", "data": "a", "event": "price"}]
    first = _batch_answer(listener, entries, key="k")
    assert first.status == 201
    assert _batch_answer(listener, entries, key="k").status == 200
    refused(_batch_answer(listener, [{"center": "news", "data": "a", "event": "stock"}], key="k"),
            409, "idempotency_key_reused")
    refused(_batch_answer(listener, [{"center": "news", "data": "a"}], key="k"), 409, "idempotency_key_reused")
    # A single publish of the default event is the batch of one it always was.
    listener.api.request("POST", "/api/v1/messages", json.dumps({"messages": [{"center": "news", "data": "b"}]}),
                         auth=listener.auth, headers={"Idempotency-Key": "j"})
    retry = listener.api.request("POST", "/api/v1/centers/news/messages", "b", auth=listener.auth,
                                 headers={"Content-Type": "text/plain", "Idempotency-Key": "j"})
    assert retry.status == 200, retry


def test_a_message_of_the_default_event_fingerprints_as_before_events_were():
    assert fingerprint([("news", "a", "message")]) == fingerprint([("news", "a")])
    assert fingerprint([("news", "a", "price")]) != fingerprint([("news", "a")])
    # the event after the data is never read as the next message
    assert fingerprint([("news", "a", "1:b")]) != fingerprint([("news", "a"), ("b", "")])


def test_the_admin_publish_takes_notifier_event_too():
    listener = Listener()
    first = published(listener, "before")
    answer = listener.api.request("POST", "/admin/v1/publishers/site/centers/news/messages", "test",
                                  admin=ADMIN_TOKEN, headers={"Content-Type": "text/plain", **PRICE})
    assert answer.status == 201, answer
    [message] = json.loads(polled(listener, first))["messages"]
    assert (message["data"], message["event"]) == ("test", "price")
    bad = listener.api.request("POST", "/admin/v1/publishers/site/centers/news/messages", "test",
                               admin=ADMIN_TOKEN, headers={"Content-Type": "text/plain", "Notifier-Event": ""})
    refused(bad, 400, "invalid_event")


# history


def test_a_resume_gets_each_retained_message_with_its_event_on_every_transport():
    listener = Listener()
    first = published(listener, "before")
    named = published(listener, "x", PRICE)
    plain = published(listener, "y")
    assert [(m["id"], m.get("event")) for m in json.loads(polled(listener, first))["messages"]] == [
        (named, "price"), (plain, None)]
    stream = Streamed(listener, f"/sub/site/news?since={first}")
    assert [(e["id"], e["event"]) for e in stream.events] == [(named, "price"), (plain, "message")]
    as_json = Streamed(listener, "/sub/site/news?format=json", {"Last-Event-ID": first})
    assert [json.loads(e["data"]).get("event") for e in as_json.events] == ["price", None]


def test_a_hub_restored_from_a_shared_store_keeps_each_message_s_event():
    hub = Hub(Center("site", "news", False, None, None, 0.0), "e", 10, lambda: 9.0)
    hub.restore("e", 3, [(1, 1.0, "a"), (2, 2.0, "b", "price"), (3, 3.0, "c")])
    assert [(m.message.id, m.message.event, m.message.exclude) for m in hub.retained(0, 3)] == [
        ("e-1", "message", None), ("e-2", "price", None), ("e-3", "message", None)]
    live = hub.append("d", event="alarm", exclude="123.456")
    assert (live.message.event, live.message.exclude) == ("alarm", "123.456")


def test_a_named_event_counts_against_the_retained_bytes():
    plain = Hub(Center("site", "a", False, None, None, 0.0), "e", 10, lambda: 0.0)
    named = Hub(Center("site", "b", False, None, None, 0.0), "e", 10, lambda: 0.0)
    plain.append("x")
    named.append("x", event="y" * 100)
    assert named.retained_bytes > plain.retained_bytes + 100
    named.drop_oldest()
    assert named.retained_bytes == 0


def test_a_publication_is_plain_only_with_the_default_event_and_nothing_to_skip():
    base = ("site", "news", "x", "e", 0, 10, 0)
    assert Publication(*base).plain
    assert not Publication(*base, "price").plain
    assert not Publication(*base, "message", "1.2").plain


# the rule, and what an SSE reader makes of it


def _is_event_name(text: str) -> bool:
    return 1 <= len(text) <= 200 and not any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


@given(st.text(max_size=210))
def test_an_event_name_is_1_to_200_characters_none_of_them_a_control_character(text):
    try:
        accepted = check_event_name(text) == text
    except BadRequest as e:
        assert e.code == "invalid_event"
        accepted = False
    assert accepted == _is_event_name(text)


EVENT_NAMES = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200)


@given(EVENT_NAMES, st.text())
def test_every_event_name_reads_back_from_an_event_stream_with_its_data(name, data):
    message = Message("e-1", "news", data, 1.5, name)
    read = read_events(sse.event(message).decode())
    assert read == [{"id": "e-1", "event": name, "data": "\n".join(re.split(r"\r\n|\r|\n", data))}]
    [envelope] = read_events(sse.json_event(message).decode())
    assert envelope["event"] == "message"
    assert json.loads(envelope["data"]) == json.loads(envelope_json(message))
    assert json.loads(envelope_json(message))["event"] == name
