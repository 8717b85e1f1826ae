"""What the operator console needs of the daemon (docs/console.rst):
its files on the api listener with their security headers, the admin view
of a publisher's centers, a test publish, and the live tail, in memory and
over real sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from notifier.http import console_tail
from notifier.http.console import HEADERS
from tests.support import (
    ADMIN_TOKEN,
    Api,
    call,
    event_source,
    expect_json_error,
    opened,
    result_of,
    setup_site,
    sleep,
    start_daemon,
    subscriber_count,
    subscriber_token,
    until,
    websocket,
)


def _api_with_site() -> tuple[Api, tuple[str, str]]:
    api = Api()
    site = api.add_publisher("site")
    return api, site


# the files


def test_the_console_is_served_with_headers_that_forbid_what_it_never_does():
    api = Api()
    page = api.request("GET", "/console/")
    assert page.status == 200 and page.content_type == "text/html"
    assert b"<script src=" in page.body and b"<script>" not in page.body  # no inline script
    for name, value in HEADERS.items():
        assert page.header(name.decode()) == value.decode()
    assert "default-src 'self'" in page.header("content-security-policy")
    assert page.header("x-frame-options") == "DENY"
    script = api.request("GET", "/console/console.js")
    assert script.status == 200 and script.content_type == "text/javascript"
    moved = api.http.get("http://127.0.0.1:8081/console", allow_redirects=False)
    api.http.flush()
    response = result_of(moved)
    assert response.code == 301 and response.headers.getRawHeaders(b"location") == [b"/console/"]
    missing = api.request("GET", "/console/nothing.js")
    expect_json_error(missing.status, missing.json(), 404, "no_such_path")
    assert missing.header("x-frame-options") == "DENY"
    assert api.request("GET", "/console/../notifier.js").status == 404
    refused = api.request("POST", "/console/")
    expect_json_error(refused.status, refused.json(), 405, "method_not_allowed")


# the admin view of centers


def test_the_operator_lists_makes_publishes_to_and_deletes_a_publisher_s_centers():
    api, site = _api_with_site()
    made = api.admin("PUT", "/admin/v1/publishers/site/centers/room", {"private": True, "presence": True})
    assert made.status == 201
    room = made.json()
    assert (room["name"], room["private"], room["presence"], room["members"], room["last_ts"]) == (
        "room", True, True, 0, None)
    assert api.admin("PUT", "/admin/v1/publishers/site/centers/room").status == 200
    assert api.put_center(site, "news").status == 201
    sent = api.request("POST", "/admin/v1/publishers/site/centers/news/messages", "hello",
                       admin=ADMIN_TOKEN, headers={"Content-Type": "text/plain"})
    assert sent.status == 201 and sent.json()["subscribers"] == 0
    listed = api.admin("GET", "/admin/v1/publishers/site/centers").json()["centers"]
    news = next(center for center in listed if center["name"] == "news")
    assert news["last_id"] == sent.json()["id"] and news["last_ts"] == api.clock.seconds()
    assert [center["name"] for center in listed] == ["news", "room"]
    # the publisher sees what the operator published
    assert api.request("GET", "/api/v1/centers/news", auth=site).json()["last_id"] == sent.json()["id"]
    assert api.admin("DELETE", "/admin/v1/publishers/site/centers/room").status == 204
    gone = api.admin("DELETE", "/admin/v1/publishers/site/centers/room")
    expect_json_error(gone.status, gone.json(), 404, "no_such_center")
    assert [c["name"] for c in api.admin("GET", "/admin/v1/publishers/site/centers").json()["centers"]] == ["news"]


def test_the_admin_center_routes_refuse_what_they_should():
    api, site = _api_with_site()
    for method, path in (("GET", "/admin/v1/publishers/site/centers"),
                         ("PUT", "/admin/v1/publishers/site/centers/x"),
                         ("DELETE", "/admin/v1/publishers/site/centers/x"),
                         ("POST", "/admin/v1/publishers/site/centers/x/messages"),
                         ("GET", "/admin/v1/publishers/site/centers/x/tail")):
        answer = api.request(method, path, auth=site)  # a publisher is no operator
        expect_json_error(answer.status, answer.json(), 401)
    unknown = api.admin("GET", "/admin/v1/publishers/nobody/centers")
    expect_json_error(unknown.status, unknown.json(), 404, "no_such_publisher")
    unknown = api.admin("PUT", "/admin/v1/publishers/nobody/centers/x")
    expect_json_error(unknown.status, unknown.json(), 404, "no_such_publisher")
    bad = api.admin("PUT", "/admin/v1/publishers/site/centers/x", {"presence": True})
    expect_json_error(bad.status, bad.json(), 400, "presence_needs_private")
    binary = api.request("POST", "/admin/v1/publishers/site/centers/x/messages", b"\x00",
                         admin=ADMIN_TOKEN, headers={"Content-Type": "image/png"})
    expect_json_error(binary.status, binary.json(), 415)
    missing = api.request("POST", "/admin/v1/publishers/site/centers/x/messages", "hi",
                          admin=ADMIN_TOKEN, headers={"Content-Type": "text/plain"})
    expect_json_error(missing.status, missing.json(), 404, "no_such_center")
    tail = api.admin("GET", "/admin/v1/publishers/site/centers/x/tail")
    expect_json_error(tail.status, tail.json(), 404, "no_such_center")


def test_stats_name_the_node_and_the_store():
    api = Api()
    stats = api.admin("GET", "/admin/v1/stats").json()
    assert {"node", "store"} <= set(stats) and stats["store"] == "sqlite"


# the tail, over real sockets


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_the_tail_shows_messages_and_presence_without_being_a_subscriber(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}", presence={"leave_grace": 0.2})
    try:
        auth = await setup_site(daemon)
        status, body = await daemon.admin("PUT", "/admin/v1/publishers/site/centers/room",
                                          {"private": True, "presence": True})
        assert status == 201, body
        api_port = daemon.service.api_port.getHost().port
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        tail = await event_source(api_port, "/admin/v1/publishers/site/centers/room/tail", headers)
        assert tail.status == 200
        hello = await tail.next()
        assert hello["event"] == "hello" and json.loads(hello["data"])["center"] == "room"
        assert json.loads((await tail.next())["data"]) == {"presence": "members", "center": "room", "members": []}
        # watching is no subscribing: no subscriber, no member
        assert await subscriber_count(daemon, auth, "room") == 0
        status, presence = await call("GET", f"{daemon.api}/api/v1/centers/room/presence", auth=auth)
        assert presence["count"] == 0

        token = subscriber_token(auth[1], centers=["room"], uid="17", info={"name": "Ann"})
        member = await websocket(f"{daemon.ws}/sub/site/room?format=json&token={token}", daemon.public_port)
        await opened(member)
        joined = await tail.next()
        assert joined["event"] == "join" and json.loads(joined["data"])["uid"] == "17"
        ids = []
        for text in ("one", "two"):
            status, body = await call("POST", f"{daemon.api}/admin/v1/publishers/site/centers/room/messages",
                                      raw=text.encode(), admin=ADMIN_TOKEN, headers={"Content-Type": "text/plain"})
            assert status == 201 and body["subscribers"] == 1, body
            ids.append(body["id"])
        for message_id, text in zip(ids, ("one", "two"), strict=True):
            event = await tail.next()
            assert event["event"] == "message" and event["id"] == message_id
            assert json.loads(event["data"]) == {"id": message_id, "center": "room", "data": text,
                                                 "ts": json.loads(event["data"])["ts"]}
        # the member got them too, as any subscriber does
        frames = [json.loads(await member.next()) for _ in range(3)]
        assert [frame.get("data") for frame in frames if "id" in frame] == ["one", "two"]
        member.close()
        left = await tail.next()
        assert left["event"] == "leave" and json.loads(left["data"])["uid"] == "17"

        # A new secret revokes the private center's subscriptions, not the tail.
        status, body = await daemon.admin("POST", "/admin/v1/publishers/site/rotate")
        assert status == 200, body
        status, body = await call("POST", f"{daemon.api}/admin/v1/publishers/site/centers/room/messages",
                                  raw=b"three", admin=ADMIN_TOKEN, headers={"Content-Type": "text/plain"})
        assert status == 201, body
        event = await tail.next()
        assert event["event"] == "message" and json.loads(event["data"])["data"] == "three", event

        status, _ = await daemon.admin("DELETE", "/admin/v1/publishers/site/centers/room")
        assert status == 204
        end = await tail.next()
        assert end["event"] == "end" and json.loads(end["data"]) == {"reason": "deleted"}
    finally:
        await daemon.service.stopService()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_tail_whose_reader_leaves_is_forgotten_and_the_console_is_not_public(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}")
    try:
        await setup_site(daemon)
        api_port = daemon.service.api_port.getHost().port
        tail = await event_source(api_port, "/admin/v1/publishers/site/centers/news/tail",
                                  {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        await tail.next()
        hub = daemon.service.centers.loaded("site", "news")
        assert hub is not None and len(hub.observers) == 1
        tail.close()
        await until(lambda: not hub.observers, what="the tail forgotten")
        refused = await event_source(api_port, "/admin/v1/publishers/site/centers/news/tail",
                                     {"Authorization": "Bearer wrong"})
        assert refused.status == 401
        status, body = await call("GET", f"{daemon.public}/console/")
        assert status == 404
        kept = await event_source(api_port, "/admin/v1/publishers/site/centers/news/tail",
                                  {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        await kept.next()
    finally:
        await daemon.service.stopService()
    end = await kept.next()  # a stopping daemon ends its tails, saying why
    assert end["event"] == "end" and json.loads(end["data"]) == {"reason": "shutdown"}


@pytest.mark.integration
@pytest.mark.parametrize("tls", [False, True])
@pytest_twisted.ensureDeferred
async def test_a_tail_that_is_not_read_is_ended_past_its_buffer(tmp_path, monkeypatch, tls):
    from twisted.internet import endpoints, reactor, ssl

    from tests.raw import RawClient
    from tests.support.tls import self_signed

    monkeypatch.setattr(console_tail, "MAX_BUFFER", 256 * 1024)  # a tail is ended past it, TLS or not
    api: dict = {}
    if tls:
        key, cert, pem = self_signed(tmp_path)
        api = {"endpoint": f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"}
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}", api=api)
    try:
        node = daemon.service
        await node.publishers.add_publisher("site")  # in the daemon: its api listener may be TLS
        await node.centers.create_center("site", "news")
        port = daemon.service.api_port.getHost().port
        endpoint: Any = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        if tls:
            endpoint = endpoints.wrapClientTLS(
                ssl.optionsForClientTLS("127.0.0.1", trustRoot=ssl.Certificate.loadPEM(pem)), endpoint)
        client = RawClient()
        await endpoints.connectProtocol(endpoint, client)
        client.send(f"GET /admin/v1/publishers/site/centers/news/tail HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode())
        await until(lambda: node.centers.loaded("site", "news") is not None
                    and node.centers.loaded("site", "news").observers, 5, "the tail to start")
        hub = node.centers.loaded("site", "news")
        client.transport.pauseProducing()  # the reader reads no more
        for _ in range(400):  # 8 MB, far more than the buffer and the sockets hold
            await node.publishing.publish("site", "news", "x" * 20_000)
            await sleep(0)  # the fan-out's turn
            if not hub.observers:
                break
        assert not hub.observers  # ended as too slow
        client.transport.resumeProducing()  # and finds the end of the stream after what it was sent
        await client.wait_for(lambda data: b'event: end\ndata: {"reason": "slow"}' in data, 10)
        assert b'event: end\ndata: {"reason": "slow"}' in bytes(client.data)
        client.transport.loseConnection()
    finally:
        await daemon.service.stopService()
