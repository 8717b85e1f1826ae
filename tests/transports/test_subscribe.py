"""Subscribing over real sockets: WebSocket and long-poll, side by side."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq

from tests.support import call, handshake_headers, opened, publish, published, setup_site, sleep, websocket

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_a_message_reaches_websocket_and_long_poll_at_once(daemon):
    auth = await setup_site(daemon)
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    poll = treq.get(f"{daemon.public}/sub/site/news?timeout=10", persistent=False)
    await sleep(0.2)  # the long-poll is waiting
    status, answer = await publish(daemon, auth, "héllo")
    assert status == 201, answer
    assert answer["subscribers"] == 2
    assert await ws.next() == "héllo"
    response = await poll
    assert response.code == 200
    body = json.loads(await response.content())
    assert body["recovered"] is True
    assert body["last_id"] == answer["id"]
    [message] = body["messages"]
    assert message["id"] == answer["id"]
    assert message["data"] == "héllo"
    assert message["center"] == "news"
    assert isinstance(message["ts"], float)


@pytest_twisted.ensureDeferred
async def test_websocket_json_format_sends_the_envelope(daemon):
    auth = await setup_site(daemon)
    ws = await websocket(f"{daemon.ws}/sub/site/news?format=json", daemon.public_port)
    start = await opened(ws)
    sent = await published(daemon, auth, "one")
    assert start == {"cursor": sent.rsplit("-", 1)[0] + "-0", "recovered": True, "lost": []}
    envelope = json.loads(await ws.next())
    assert envelope["id"] == sent
    assert envelope["data"] == "one"
    assert envelope["center"] == "news"


@pytest.mark.parametrize("path", ["/sub/site/nothing", "/sub/nobody/news", "/sub/site/bad%20name"])
@pytest_twisted.ensureDeferred
async def test_websocket_handshake_to_an_unknown_center_is_a_json_404(daemon, path):
    await setup_site(daemon)
    status, body = await call("GET", daemon.public + path, headers=handshake_headers())
    assert status == 404, path
    assert body["error"] == "no_such_center"


@pytest_twisted.ensureDeferred
async def test_unknown_websocket_format_is_refused(daemon):
    await setup_site(daemon)
    status, body = await call("GET", f"{daemon.public}/sub/site/news?format=xml", headers=handshake_headers())
    assert status == 400
    assert body["error"] == "invalid_format"


@pytest_twisted.ensureDeferred
async def test_deleting_a_center_closes_websockets_with_1001_and_answers_long_polls(daemon):
    auth = await setup_site(daemon)
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    poll = treq.get(f"{daemon.public}/sub/site/news?timeout=10", persistent=False)
    await sleep(0.2)
    status, _ = await call("DELETE", f"{daemon.api}/api/v1/centers/news", auth=auth)
    assert status == 204
    code, _ = await ws.closed
    assert code == 1001
    response = await poll
    assert response.code == 404
    assert json.loads(await response.content())["error"] == "center_deleted"


@pytest_twisted.ensureDeferred
async def test_long_poll_times_out_with_no_messages_and_the_cursor_it_was_given(daemon):
    auth = await setup_site(daemon)
    sent = await published(daemon, auth, "before")
    status, body = await call("GET", f"{daemon.public}/sub/site/news?timeout=0.2&since={sent}")
    assert status == 200
    assert body == {"messages": [], "last_id": sent, "recovered": True}
    status, body = await call("GET", f"{daemon.public}/sub/site/news?timeout=0.2")
    assert body == {"messages": [], "last_id": None, "recovered": True}


@pytest_twisted.ensureDeferred
async def test_long_poll_since_answers_retained_messages_at_once(daemon):
    auth = await setup_site(daemon)
    first = await published(daemon, auth, "1")
    await published(daemon, auth, "2")
    third = await published(daemon, auth, "3")
    status, body = await call("GET", f"{daemon.public}/sub/site/news?since={first}")
    assert status == 200
    assert [m["data"] for m in body["messages"]] == ["2", "3"]
    assert body["last_id"] == third
    assert body["recovered"] is True


@pytest_twisted.ensureDeferred
async def test_long_poll_with_a_cursor_of_another_epoch_is_not_recovered(daemon):
    auth = await setup_site(daemon)
    await published(daemon, auth, "1")
    status, body = await call("GET", f"{daemon.public}/sub/site/news?since=stale-3")
    assert body["recovered"] is False
    assert [m["data"] for m in body["messages"]] == ["1"]


@pytest_twisted.ensureDeferred
async def test_long_poll_jsonp_and_bad_callbacks(daemon):
    auth = await setup_site(daemon)
    first = await published(daemon, auth, "x")
    await published(daemon, auth, "y")
    status, body = await call("GET", f"{daemon.public}/sub/site/news?since={first}&callback=app.got")
    assert status == 200
    assert body.startswith(b"/**/app.got(") and body.endswith(b");")
    inner = json.loads(body[len(b"/**/app.got("):-2])
    assert [m["data"] for m in inner["messages"]] == ["y"]
    for bad in ("1abc", "a-b", "alert(1)", "a..b"):
        status, body = await call("GET", f"{daemon.public}/sub/site/news?callback={bad}")
        assert status == 400, bad
        assert body["error"] == "invalid_callback"


@pytest.mark.parametrize("bad", ["-1", "121", "nan", "soon"])
@pytest_twisted.ensureDeferred
async def test_long_poll_timeout_bounds(daemon, bad):
    await setup_site(daemon)
    status, body = await call("GET", f"{daemon.public}/sub/site/news?timeout={bad}")
    assert status == 400, bad
    assert body["error"] == "invalid_timeout"


@pytest_twisted.ensureDeferred
async def test_last_gives_the_latest_message_as_text_or_jsonp(daemon):
    auth = await setup_site(daemon)
    status, body = await call("GET", f"{daemon.public}/sub/site/news/last")
    assert status == 204 and body == b""
    status, body = await call("GET", f"{daemon.public}/sub/site/news/last?callback=cb")
    assert body == b"/**/cb(null);"
    await published(daemon, auth, "first")
    await published(daemon, auth, 'second "quoted"')
    response = await treq.get(f"{daemon.public}/sub/site/news/last", persistent=False)
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    assert await response.content() == b'second "quoted"'
    status, body = await call("GET", f"{daemon.public}/sub/site/news/last?callback=cb")
    assert body == b'/**/cb("second \\"quoted\\"");'
    status, body = await call("GET", f"{daemon.public}/sub/site/nothing/last")
    assert status == 404


@pytest_twisted.ensureDeferred
async def test_unknown_paths_and_wrong_methods_on_the_public_listener(daemon):
    await setup_site(daemon)
    status, body = await call("GET", f"{daemon.public}/nothing/here")
    assert status == 404 and body["error"] == "no_such_path"
    status, body = await call("POST", f"{daemon.public}/sub/site/news")
    assert status == 405 and body["error"] == "method_not_allowed"
    status, body = await call("GET", f"{daemon.public}/healthz")
    assert status == 200 and body == {"status": "ok"}
