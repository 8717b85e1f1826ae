"""The public listener in memory: its site through treq over in-memory
connections (SiteTreq), time through a Clock, the api of the same centers
to publish. No socket.

Long-poll waiting and timing out, SSE streaming and ending, ``/last`` and
JSONP, CORS, and the refusals, as a browser sees them.
"""

from __future__ import annotations

import json

import treq

from tests.support import result_of
from tests.support.memory import PUBLIC, Listener, fired


def test_a_long_poll_waits_for_the_next_message():
    listener = Listener()
    waiting = listener.get("/sub/site/news")
    assert not fired(waiting)
    message_id = listener.publish("hello")
    response = result_of(waiting)
    body = json.loads(listener.body(response))
    assert [m["data"] for m in body["messages"]] == ["hello"]
    assert body["last_id"] == message_id and body["recovered"] is True
    assert response.headers.getRawHeaders(b"notifier-cursor") == [message_id.encode()]


def test_a_long_poll_times_out_on_the_clock_and_says_where_to_go_on():
    listener = Listener()
    waiting = listener.get("/sub/site/news?timeout=10")
    listener.api.clock.advance(9.9)
    assert not fired(waiting)
    listener.api.clock.advance(0.1)
    listener.http.flush()
    response = result_of(waiting)
    assert json.loads(listener.body(response)) == {"messages": [], "last_id": None, "recovered": True}
    cursor = response.headers.getRawHeaders(b"notifier-cursor")[0].decode()
    listener.publish("after")
    again = json.loads(listener.body(result_of(listener.get(f"/sub/site/news?since={cursor}"))))
    assert [m["data"] for m in again["messages"]] == ["after"]


def test_an_event_stream_gets_its_head_then_live_events_and_ends_with_its_center():
    listener = Listener()
    response = result_of(listener.get("/sub/site/news", {"Accept": "text/event-stream"}))
    assert response.headers.getRawHeaders(b"content-type") == [b"text/event-stream; charset=utf-8"]
    chunks: list[bytes] = []
    done = treq.collect(response, chunks.append)
    listener.http.flush()
    assert b"".join(chunks).startswith(b"retry: 2000\nid: ")
    message_id = listener.publish("two\nlines")
    assert f"id: {message_id}\nevent: message\ndata: two\ndata: lines\n\n".encode() in b"".join(chunks)
    assert listener.api.request("DELETE", "/api/v1/centers/news", auth=listener.auth).status == 204
    listener.http.flush()
    assert done.called


def test_last_and_jsonp():
    listener = Listener()
    assert result_of(listener.get("/sub/site/news/last")).code == 204
    listener.publish("latest")
    response = result_of(listener.get("/sub/site/news/last"))
    assert listener.body(response) == b"latest"
    jsonp = listener.body(result_of(listener.get("/sub/site/news/last?callback=app.got")))
    assert jsonp == b'/**/app.got("latest");'
    refused = result_of(listener.get("/sub/site/news/last?callback=alert(1)"))
    assert refused.code == 400 and json.loads(listener.body(refused))["error"] == "invalid_callback"


def test_cors_for_allowed_origins_only():
    listener = Listener(public={"allowed_origins": ["https://site.example"]})
    allowed = result_of(listener.get("/sub/site/news?timeout=0", {"Origin": "https://site.example"}))
    assert allowed.headers.getRawHeaders(b"access-control-allow-origin") == [b"https://site.example"]
    other = result_of(listener.get("/sub/site/news?timeout=0", {"Origin": "https://evil.example"}))
    assert other.code == 200 and not other.headers.hasHeader(b"access-control-allow-origin")
    preflight = listener.http.request("OPTIONS", PUBLIC + "/sub/site/news", headers={"Origin": "https://site.example"})
    listener.http.flush()
    assert result_of(preflight).code == 204


def test_refusals_are_json_on_every_path():
    listener = Listener()
    for path, status, code in (
        ("/sub/site/none?timeout=0", 404, "no_such_center"),
        ("/sub/site/news?since=a-%C2%B2", 400, "bad_cursor"),
        ("/sub/site/news?timeout=121", 400, "invalid_timeout"),
        ("/sub/site/news/last/more", 404, "no_such_path"),
        ("/nowhere", 404, "no_such_path"),
    ):
        response = result_of(listener.get(path))
        body = json.loads(listener.body(response))
        assert response.code == status and set(body) == {"error", "message"}, (path, body)
        assert code is None or body["error"] == code, (path, body)
    posted = listener.http.post(PUBLIC + "/sub/site/news", data=b"x")
    listener.http.flush()
    assert result_of(posted).code == 405


def test_a_backlog_cut_short_says_to_go_on_from_its_last_message():
    # send_buffer_bytes bounds a long-poll's answer: the header and the
    # body's last_id both say where the client goes on from.
    listener = Listener(subscribers={"send_buffer_bytes": 1024})
    ids = [listener.publish("x" * 300) for _ in range(8)]
    response = result_of(listener.get(f"/sub/site/news?since={ids[0]}&timeout=0"))
    body = json.loads(listener.body(response))
    sent = [m["id"] for m in body["messages"]]
    assert 0 < len(sent) < 7 and sent == ids[1:1 + len(sent)]
    assert body["last_id"] == sent[-1]
    assert response.headers.getRawHeaders(b"notifier-cursor") == [sent[-1].encode()]
