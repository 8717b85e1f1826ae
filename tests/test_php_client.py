"""The PHP publisher client (clients/php) against a real daemon.

A daemon runs in this process on free loopback ports; each PHP run is a
subprocess (clients/php/tests/call.php) that performs client calls described
by a JSON file and prints their outcomes as JSON, which the tests assert on.
The reactor keeps running meanwhile, so WebSocket and long-poll subscribers
in this process see what PHP publishes. Needs ``php`` with the curl
extension (Debian: php-cli, php-curl).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import socket
import subprocess
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import jwt
import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.support import call, opened, sleep, start_daemon, websocket
from tests.support.php import (
    INVALID_ARGUMENT,
    PHP_CLIENT,
    STRICT,
    TRANSPORT_EXCEPTION,
    Php,
    assert_refusal,
    longpoll,
    php_beside_a_daemon,
    php_path,
)

pytestmark = pytest.mark.php


@pytest_twisted.async_yield_fixture
async def php(tmp_path):
    """PHP calling, as the publisher ``site``, a daemon of its own (``php.daemon``)."""
    async with php_beside_a_daemon(tmp_path) as php:
        yield php


# centers


@pytest_twisted.ensureDeferred
async def test_create_get_list_and_delete_centers(php):
    name = "room:1@home~x"  # ':' and '@' are percent-encoded in the signed request target
    run = await php.run(
        ["createCenter", "news"],
        ["createCenter", "news", {"private": True}],
        ["createCenter", name, {"private": True, "history": 5, "ttl": 60}],
        ["getCenter", "news"],
        ["getCenter", name],
        ["listCenters"],
    )
    created, existed, private, news, room, listed = run.results
    assert created["created"] is True
    assert created["center"]["name"] == "news"
    assert created["center"]["path"] == "site/news"
    assert created["center"]["private"] is False
    assert existed["created"] is False
    assert existed["center"]["private"] is False  # an existing center keeps its options
    assert private["created"] is True
    assert private["center"] | {"created": None} == {
        "name": name, "path": f"site/{name}", "private": True, "presence": False,
        "history": 5, "ttl": 60, "subscribers": 0, "last_id": None, "created": None,
    }
    assert news == created["center"]
    assert room == private["center"]
    assert sorted(center["name"] for center in listed) == sorted(["news", name])

    run = await php.run(
        ["deleteCenter", "news"], ["getCenter", "news"], ["listCenters"], ["deleteCenter", "news"],
    )
    assert run.result(0) is None
    assert_refusal(run.exception(1), 404, "no_such_center")
    assert [center["name"] for center in run.result(2)] == [name]
    assert_refusal(run.exception(3), 404, "no_such_center")


# publishing


@pytest_twisted.ensureDeferred
async def test_a_signed_publish_reaches_a_websocket_subscriber(php):
    daemon = php.daemon
    await php.result("createCenter", "news")
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    text = 'héllo\nwörld {"json": true} ✓'
    run = await php.run(["publish", "news", text], ["getCenter", "news"])
    message_id, center = run.results
    assert isinstance(message_id, str) and message_id
    assert await ws.next() == text
    assert center["last_id"] == message_id
    assert center["subscribers"] == 1


@pytest_twisted.ensureDeferred
async def test_basic_auth_publishes_too(php):
    daemon = php.daemon
    run = await php.run(["createCenter", "news"], ["listCenters"], auth="basic")
    assert run.result(0)["created"] is True
    assert [center["name"] for center in run.result(1)] == ["news"]
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    message_id = await php.result("publish", "news", "over Basic", auth="basic")
    assert await ws.next() == "over Basic"
    assert (await php.result("getCenter", "news"))["last_id"] == message_id


@pytest_twisted.ensureDeferred
async def test_a_batch_reaches_each_center_in_order(php):
    daemon = php.daemon
    await php.run(["createCenter", "a"], ["createCenter", "b"])
    ws_a = await websocket(f"{daemon.ws}/sub/site/a?format=json", daemon.public_port)
    await opened(ws_a)
    ws_b = await websocket(f"{daemon.ws}/sub/site/b?format=json", daemon.public_port)
    await opened(ws_b)
    batch = [{"center": "a", "data": "a1"}, {"center": "b", "data": "b1"}, {"center": "a", "data": "a2"}]
    ids = await php.result("publishBatch", batch)
    assert len(ids) == 3 and len(set(ids)) == 3
    received_a = [json.loads(await ws_a.next()) for _ in range(2)]
    received_b = json.loads(await ws_b.next())
    assert [(m["id"], m["data"]) for m in received_a] == [(ids[0], "a1"), (ids[2], "a2")]
    assert (received_b["id"], received_b["data"]) == (ids[1], "b1")


@pytest_twisted.ensureDeferred
async def test_a_retried_publish_with_an_idempotency_key_is_delivered_once(php):
    daemon = php.daemon
    await php.run(["createCenter", "news"], ["createCenter", "other"])
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    batch = [{"center": "news", "data": "batched"}, {"center": "other", "data": "elsewhere"}]
    run = await php.run(
        ["publish", "news", "once", "publish-17"],
        ["publish", "news", "once", "publish-17"],  # the retry: same key
        ["publishBatch", batch, "batch-17"],
        ["publishBatch", batch, "batch-17"],
        ["publish", "news", "after"],
    )
    first, retried, batch_ids, batch_retried, after = run.results
    assert retried == first
    assert batch_retried == batch_ids
    assert after not in (first, *batch_ids)
    # Delivery is in publish order, so nothing delivered twice can hide before "after".
    assert [await ws.next() for _ in range(3)] == ["once", "batched", "after"]
    await sleep(0.2)
    assert ws.messages.pending == []


@pytest_twisted.ensureDeferred
async def test_the_same_publish_twice_in_one_second_is_delivered_twice(php):
    # Same method, target, body and (whole-second) timestamp: only the nonce
    # keeps the second signed request from being refused as a replay.
    daemon = php.daemon
    await php.result("createCenter", "news")
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    await sleep(1.01 - time.time() % 1)  # start with a fresh second to end both within it
    started = time.time()
    run = await php.run(["publish", "news", "twice"], ["publish", "news", "twice"], ["getCenter", "news"])
    assert int(time.time()) == int(started), "both publishes were meant to be signed within one second"
    first, second, center = run.results
    assert first != second
    assert [await ws.next() for _ in range(2)] == ["twice", "twice"]
    assert center["last_id"] == second
    status, body = await longpoll(daemon, "news", since="0-0")
    assert status == 200, body
    assert [(m["id"], m["data"]) for m in body["messages"]] == [(first, "twice"), (second, "twice")]


# request signing


@attrs.frozen
class Recorded:
    method: str
    target: str
    authorization: str
    body: bytes


class Recorder(Resource):
    """Answers every request as the daemon would a successful one, and keeps it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.url = ""

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        self.requests.append(Recorded(request.method.decode(), request.uri.decode(),
                                      (request.getHeader(b"authorization") or b"").decode(), body))
        n = len(self.requests)
        if request.path.endswith(b"/api/v1/messages"):
            request.setResponseCode(201)
            answer: Any = {"ids": [f"{n}-{i}" for i in range(len(json.loads(body)["messages"]))]}
        elif request.path.endswith(b"/messages"):
            request.setResponseCode(201)
            answer = {"id": f"{n}-0"}
        else:
            answer = {"centers": []}
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(answer).encode()


@pytest_twisted.async_yield_fixture
async def recorder():
    """An api listener stand-in that records what the PHP client sends (``recorder.url``)."""
    resource = Recorder()
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(resource))
    resource.url = f"http://127.0.0.1:{port.getHost().port}"
    yield resource
    await port.stopListening()


def signed_parts(recorded: Recorded) -> dict[str, str]:
    scheme, _, value = recorded.authorization.partition(" ")
    assert scheme == "Notifier-HMAC-SHA256", recorded
    return dict(part.strip().split("=", 1) for part in value.split(","))


@pytest_twisted.ensureDeferred
async def test_each_signed_request_has_its_own_nonce_and_signature(php, recorder):
    batch = [{"center": "news", "data": "b"}]
    run = await php.run(
        ["publish", "news", "same"], ["publish", "news", "same"],
        ["publish", "news", "same", "key-1"], ["publish", "news", "same", "key-1"],  # a caller's retry
        ["publishBatch", batch], ["publishBatch", batch],
        ["listCenters"], ["listCenters"],
        url=recorder.url + "/prefix/",
    )
    assert len(run.results) == 8  # every call succeeded
    requests = recorder.requests
    assert len(requests) == 8
    nonces, signatures = [], []
    for recorded in requests:
        path, query = urlsplit(recorded.target)[2:4]
        assert path in ("/prefix/api/v1/centers/news/messages", "/prefix/api/v1/messages",
                        "/prefix/api/v1/centers")
        assert recorded.target == f"{path}?{query}" and query.startswith("nonce=")
        [nonce] = parse_qs(query, strict_parsing=True)["nonce"]
        assert re.fullmatch(r"[0-9a-f]{16,}", nonce), recorded
        parts = signed_parts(recorded)
        assert set(parts) == {"publisher", "timestamp", "signature"} and parts["publisher"] == "site"
        assert abs(int(parts["timestamp"]) - time.time()) < 60
        # The nonce is signed: the signature covers the target as sent, query included.
        signed = "\n".join([recorded.method, recorded.target, parts["timestamp"],
                            hashlib.sha256(recorded.body).hexdigest()])
        expected = hmac.new(php.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        assert parts["signature"] == expected, recorded
        nonces.append(nonce)
        signatures.append(parts["signature"])
    # Each pair is the same call twice in a row: same method, path and body.
    for first, second in zip(requests[::2], requests[1::2], strict=False):
        assert (first.method, urlsplit(first.target).path, first.body) == \
            (second.method, urlsplit(second.target).path, second.body)
    assert len(set(nonces)) == len(nonces)
    assert len(set(signatures)) == len(signatures)


@pytest_twisted.ensureDeferred
async def test_basic_auth_sends_the_target_as_it_is(php, recorder):
    run = await php.run(["publish", "news", "x"], ["listCenters"], url=recorder.url, auth="basic")
    assert len(run.results) == 2  # both calls succeeded
    assert [(r.method, r.target) for r in recorder.requests] == [
        ("POST", "/api/v1/centers/news/messages"), ("GET", "/api/v1/centers"),
    ]
    assert {r.authorization for r in recorder.requests} == {"Basic " + base64.b64encode(
        f"site:{php.secret}".encode()).decode()}


@pytest_twisted.ensureDeferred
async def test_a_refusal_names_the_target_without_its_nonce(php):
    exception = await php.exception("publish", "nowhere", "x")
    assert_refusal(exception, 404, "no_such_center")
    assert exception["message"].endswith("(POST /api/v1/centers/nowhere/messages)"), exception


# subscriber tokens


@pytest_twisted.ensureDeferred
async def test_a_token_minted_by_php_opens_its_private_center_only(php):
    daemon = php.daemon
    center = "user.17.inbox"
    run = await php.run(
        ["createCenter", center, {"private": True}],
        ["publish", center, "first"],
        ["publish", center, "second"],
        ["subscriberToken", center],
        ["subscriberToken", "user.99.inbox"],
        ["subscriberToken", ["user.99.*", "user.17.*"], 120],
        ["token", php.secret, center, 60, int(time.time()) - 3600],
    )
    _, first, second, token, other, glob, expired = run.results

    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, php.secret.encode(), algorithms=["HS256"])
    assert set(claims) == {"sub", "iat", "exp"}
    assert claims["sub"] == center
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60
    claims = jwt.decode(glob, php.secret.encode(), algorithms=["HS256"])
    assert set(claims) == {"centers", "iat", "exp"}
    assert claims["centers"] == ["user.99.*", "user.17.*"]
    assert claims["exp"] - claims["iat"] == 120

    for granting in (token, glob):
        status, body = await longpoll(daemon, center, since=first, token=granting)
        assert status == 200, body
        assert [(m["id"], m["data"]) for m in body["messages"]] == [(second, "second")]
    ws = await websocket(f"{daemon.ws}/sub/site/{center}?token={token}", daemon.public_port)
    ws.close()

    status, body = await longpoll(daemon, center, since=first, token=other)
    assert (status, body["error"]) == (401, "invalid_token")
    status, body = await longpoll(daemon, center, since=first, token=expired)
    assert (status, body["error"]) == (401, "expired_token")
    status, body = await longpoll(daemon, center, since=first)
    assert (status, body["error"]) == (401, "token_required")
    with pytest.raises(ConnectionError):
        await websocket(f"{daemon.ws}/sub/site/{center}?token={other}", daemon.public_port)


# failures


@pytest_twisted.ensureDeferred
async def test_a_wrong_secret_is_refused_with_bad_credentials(php):
    await php.result("createCenter", "news")
    wrong = php.secret[::-1]
    for auth in ("hmac", "basic"):
        run = await php.run(["publish", "news", "x"], ["listCenters"], secret=wrong, auth=auth)
        for index in (0, 1):
            exception = run.exception(index)
            assert_refusal(exception, 401, "bad_credentials")
            assert wrong not in json.dumps(exception) and php.secret not in json.dumps(exception)
        assert wrong not in run.debug
        exception = await php.exception("listCenters", publisher="nobody", auth=auth)
        assert_refusal(exception, 401, "bad_credentials")


@pytest_twisted.ensureDeferred
async def test_an_unknown_center_is_404(php):
    run = await php.run(
        ["publish", "nowhere", "x"],
        ["getCenter", "nowhere"],
        ["deleteCenter", "nowhere"],
        ["publishBatch", [{"center": "nowhere", "data": "x"}]],
    )
    for index in range(4):
        assert_refusal(run.exception(index), 404, "no_such_center")
        assert "nowhere" in run.exception(index)["message"]


@pytest_twisted.ensureDeferred
async def test_an_oversize_message_is_413_and_publishes_nothing(php):
    daemon = php.daemon
    limit = daemon.service.config.centers.max_message_bytes
    run = await php.run(
        ["createCenter", "news"],
        ["publish", "news", "x" * limit],
        ["publish", "news", "x" * (limit + 1)],
        ["publishBatch", [{"center": "news", "data": "small"}, {"center": "news", "data": "é" * limit}]],
        ["getCenter", "news"],
    )
    accepted = run.result(1)
    assert_refusal(run.exception(2), 413, "too_large")
    assert_refusal(run.exception(3), 413, "too_large")
    assert run.result(4)["last_id"] == accepted


@pytest_twisted.ensureDeferred
async def test_a_daemon_that_is_not_listening_is_a_transport_exception(php):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exception = await php.exception("publish", "news", "x", url=f"http://127.0.0.1:{port}")
    assert exception["class"] == TRANSPORT_EXCEPTION
    assert (exception["status"], exception["error"], exception["timeout"]) == (0, "transport_error", False)
    assert "cannot connect" in exception["message"] and f"127.0.0.1:{port}" in exception["message"]
    assert php.secret not in exception["message"]


@pytest_twisted.ensureDeferred
async def test_a_daemon_that_does_not_answer_is_a_timeout(php):
    silent = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Protocol))
    try:
        url = f"http://127.0.0.1:{silent.getHost().port}"
        started = time.monotonic()
        exception = await php.exception("getCenter", "news", url=url, timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        await silent.stopListening()
    assert exception["class"] == TRANSPORT_EXCEPTION
    assert (exception["status"], exception["error"], exception["timeout"]) == (0, "timeout", True)
    assert "within the timeout" in exception["message"]


@pytest_twisted.ensureDeferred
async def test_wrong_arguments_raise_invalid_argument(php):
    assert (await php.exception("listCenters", auth="digest"))["class"] == INVALID_ARGUMENT
    assert (await php.exception("listCenters", url="ftp://127.0.0.1/"))["class"] == INVALID_ARGUMENT
    run = await php.run(
        ["publishBatch", []],
        ["publishBatch", [{"center": "news"}]],
        ["publish", "news", "x", ""],
        ["subscriberToken", "news", 0],
        ["subscriberToken", []],
    )
    assert [outcome["exception"]["class"] for outcome in run.outcomes] == [INVALID_ARGUMENT] * 5


@pytest_twisted.ensureDeferred
async def test_a_dumped_client_shows_no_secret(php):
    run = await php.run(["listCenters"])
    assert run.result(0) == []
    assert "(hidden)" in run.debug
    assert php.secret not in run.debug


# the Drupal example


async def run_drupal_example(php: Php, api_url: str, public_url: str) -> dict[str, Any]:
    settings = php.tmp_path / "settings.json"
    settings.write_text(json.dumps({
        "api_url": api_url, "public_url": public_url, "publisher": php.publisher, "secret": php.secret,
    }))
    out, err, code = await getProcessOutputAndValue(
        php.php, [*STRICT, str(PHP_CLIENT / "tests" / "drupal_example.php"), str(settings)],
        env=dict(os.environ), reactor=reactor)
    assert code == 0 and not err, (code, out, err)
    return json.loads(out)


@pytest_twisted.ensureDeferred
async def test_the_drupal_example_publishes_saved_nodes_after_the_response(php):
    daemon = php.daemon
    await php.result("createCenter", "content")  # what the module's hook_install does
    content = await websocket(f"{daemon.ws}/sub/site/content", daemon.public_port)

    printed = await run_drupal_example(php, daemon.api, daemon.public)
    assert printed["logs"] == []
    # Only the published node reaches the public center.
    assert json.loads(await content.next()) == {
        "op": "insert", "type": "article", "id": 1, "title": "Node 1", "url": "https://site.example/node/1",
    }
    await sleep(0.2)
    assert content.messages.pending == []
    # The author's private center was made on the way, private, and got both.
    inbox = await php.result("getCenter", "user.7")
    assert inbox["private"] is True
    browser = printed["browser"]
    assert browser["url"] == f"{daemon.public}/sub/site/content,user.7"
    assert browser["centers"] == ["content", "user.7"]
    # The page's one connection: a cursor from no epoch of either center
    # gets everything retained of both, recovered false.
    status, body = await call("GET", f"{browser['url']}?timeout=0&since=0-0,0-0&token={browser['token']}")
    assert status == 200, body
    assert body["recovered"] is False and body["lost"] == ["content", "user.7"]
    mine = [m for m in body["messages"] if m["center"] == "user.7"]
    assert [json.loads(m["data"])["id"] for m in mine] == [1, 2]
    assert mine[-1]["id"] == inbox["last_id"]
    assert [json.loads(m["data"])["id"] for m in body["messages"] if m["center"] == "content"] == [1]
    # Without the token, the private center keeps the whole URL shut.
    status, body = await call("GET", f"{browser['url']}?timeout=0")
    assert status == 401, body


@pytest_twisted.ensureDeferred
async def test_the_drupal_example_with_auto_create_makes_user_centers_private(php, tmp_path):
    # What the example's comments recommend: auto_create with
    # auto_create_private = ["user.*"]. The batch creates the missing centers
    # itself, with no 404: "content" public, "user.7" private.
    daemon = await start_daemon(f"sqlite:{tmp_path / 'auto.db'}",
                                centers={"auto_create": True, "auto_create_private": ["user.*"]})
    try:
        secret = await daemon.add_publisher("site")
        (tmp_path / "auto").mkdir()
        auto = Php(php.php, tmp_path / "auto", daemon, daemon.api, "site", secret)
        printed = await run_drupal_example(auto, daemon.api, daemon.public)
        assert printed["logs"] == []
        content, inbox = (await auto.run(["getCenter", "content"], ["getCenter", "user.7"])).results
        assert content["private"] is False
        assert inbox["private"] is True
        status, body = await longpoll(daemon, "user.7", since="0-0")
        assert (status, body["error"]) == (401, "token_required")
        token = printed["browser"]["token"]
        status, body = await longpoll(daemon, "user.7", since="0-0", token=token)
        assert status == 200, body
        assert [json.loads(m["data"])["id"] for m in body["messages"]] == [1, 2]
    finally:
        await daemon.service.stopService()


@pytest_twisted.ensureDeferred
async def test_the_drupal_example_logs_when_the_daemon_is_down(php):
    daemon = php.daemon
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    printed = await run_drupal_example(php, f"http://127.0.0.1:{port}", daemon.public)
    [line] = printed["logs"]
    assert line.startswith("Could not publish 3 message(s): notifier: transport_error: cannot connect")
    assert php.secret not in line


# the package itself


def test_every_php_file_parses():
    php = php_path()
    patterns = ("*.php", "*.module", "*.install")
    files = sorted(path for pattern in patterns for path in PHP_CLIENT.rglob(pattern))
    names = {path.name for path in files}
    assert {"autoload.php", "Client.php", "notifier_example.module", "NotifierPublisher.php"} <= names
    for path in files:
        checked = subprocess.run([php, "-l", str(path)], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, (path, checked.stdout, checked.stderr)


def test_composer_autoload_maps_each_class_to_its_file():
    composer = json.loads((PHP_CLIENT / "composer.json").read_text())
    assert composer["autoload"]["psr-4"] == {"Notifier\\": "src/"}
    assert set(composer["require"]) == {"php", "ext-curl", "ext-json"}
    sources = sorted((PHP_CLIENT / "src").glob("*.php"))
    assert {path.stem for path in sources} >= {"Client", "NotifierException", "TransportException"}
    for path in sources:
        text = path.read_text()
        assert re.search(r"^namespace Notifier;$", text, re.MULTILINE), path
        assert re.search(rf"^(final )?class {path.stem}\b", text, re.MULTILINE), path
