"""Presence and webhooks through the PHP client (clients/php) against a real daemon.

The harness is tests/test_php_client.py's (``Php``: client calls made by a
php-cli subprocess, clients/php/tests/call.php), with a daemon whose members
leave after ``GRACE`` and whose webhook events are gathered for 0.1 s. A
site's webhook route is PHP's own web server (``php -S``) running
clients/php/tests/webhook_receiver.php, which checks each request the daemon
sends with ``Notifier\\Webhook::verify()``; the Drupal example's route runs
through clients/php/tests/drupal_example.php. Needs ``php`` with the curl
extension (Debian: php-cli, php-curl).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.utils import getProcessOutputAndValue

from tests.support import call, event_source, free_port, opened, sleep, until, websocket
from tests.support.php import (
    INVALID_ARGUMENT,
    PHP_CLIENT,
    STRICT,
    Php,
    assert_refusal,
    longpoll,
    php_beside_a_daemon,
)

pytestmark = pytest.mark.php

RECEIVER = PHP_CLIENT / "tests" / "webhook_receiver.php"
DRUPAL_EXAMPLE = PHP_CLIENT / "tests" / "drupal_example.php"
WEBHOOK_EXCEPTION = "Notifier\\WebhookException"
EVENTS = ["center_occupied", "center_vacated", "member_joined", "member_left"]
ROOM = {"private": True, "presence": True}

GRACE = 0.3
FAST = {"presence": {"leave_grace": GRACE}, "webhooks": {"batch_seconds": 0.1, "timeout": 2}}


@pytest_twisted.async_yield_fixture
async def php(tmp_path):
    """PHP calling, as the publisher ``site``, a daemon of its own whose presence and webhooks act fast."""
    async with php_beside_a_daemon(tmp_path, **FAST) as php:
        yield php


# presence


def claims_of(token: str, secret: str) -> dict[str, Any]:
    return jwt.decode(token, secret.encode(), algorithms=["HS256"])


async def item(ws: Any, timeout: float = 5) -> dict[str, Any]:
    return json.loads(await ws.next(timeout))


@pytest_twisted.ensureDeferred
async def test_presence_lists_the_members_that_php_tokens_let_in(php):
    daemon = php.daemon
    run = await php.run(
        ["createCenter", "room.1", ROOM],
        ["presence", "room.1"],
        ["subscriberToken", "room.1", 600, "ann", {"name": "Ann", "roles": ["editor"]}],
        ["subscriberToken", ["room.*"], 600, "bob"],
        ["subscriberToken", "room.1", 600, "carol", {}],
    )
    created, empty, ann_token, bob_token, carol_token = run.results
    assert created["created"] is True
    assert (created["center"]["private"], created["center"]["presence"], created["center"]["members"]) == \
        (True, True, 0)
    assert empty == {"count": 0, "members": []}
    ann_info = {"name": "Ann", "roles": ["editor"]}
    claims = claims_of(ann_token, php.secret)
    assert set(claims) == {"sub", "uid", "info", "iat", "exp"}
    assert (claims["sub"], claims["uid"], claims["info"], claims["exp"] - claims["iat"]) == \
        ("room.1", "ann", ann_info, 600)
    claims = claims_of(bob_token, php.secret)
    assert set(claims) == {"centers", "uid", "iat", "exp"}
    assert (claims["centers"], claims["uid"]) == (["room.*"], "bob")
    assert claims_of(carol_token, php.secret)["info"] == {}  # an empty info is still an object

    ann = await websocket(f"{daemon.ws}/sub/site/room.1?format=json&token={ann_token}", daemon.public_port)
    await opened(ann)
    assert await item(ann) == {"presence": "members", "center": "room.1",
                               "members": [{"uid": "ann", "info": ann_info}]}
    bob = await event_source(daemon.public_port, f"/sub/site/room.1?token={bob_token}")
    assert bob.status == 200
    assert "retry" in await bob.next()  # the opening
    assert (await bob.next())["event"] == "members"
    assert await item(ann) == {"presence": "join", "center": "room.1", "uid": "bob", "info": None}
    carol = await websocket(f"{daemon.ws}/sub/site/room.1?format=json&token={carol_token}", daemon.public_port)
    await opened(carol)
    assert (await item(carol))["presence"] == "members"
    assert await item(ann) == {"presence": "join", "center": "room.1", "uid": "carol", "info": {}}
    joined = await bob.next()
    assert (joined["event"], json.loads(joined["data"])["uid"]) == ("join", "carol")

    everyone, center = (await php.run(["presence", "room.1"], ["getCenter", "room.1"])).results
    # (Carol's empty object is PHP's empty array, as json_decode(..., true) makes it.)
    assert everyone == {"count": 3, "members": [
        {"uid": "ann", "info": ann_info}, {"uid": "bob", "info": None}, {"uid": "carol", "info": []},
    ]}
    assert (center["members"], center["subscribers"]) == (3, 3)

    ann.close()
    left = await bob.next(GRACE * 10)
    assert (left["event"], json.loads(left["data"])) == ("leave", {"presence": "leave", "center": "room.1",
                                                                  "uid": "ann"})
    assert await php.result("presence", "room.1") == {"count": 2, "members": [
        {"uid": "bob", "info": None}, {"uid": "carol", "info": []},
    ]}
    bob.close()
    carol.close()


@pytest_twisted.ensureDeferred
async def test_presence_refusals_and_the_limits_of_uid_and_info(php):
    daemon = php.daemon
    # The daemon's own measure of info: JSON with a space after ':' and ','.
    room = 1024 - len(json.dumps({"bio": ""}, ensure_ascii=False).encode())
    run = await php.run(
        ["createCenter", "news"],
        ["createCenter", "room.1", ROOM],
        ["presence", "news"],
        ["presence", "absent"],
        ["createCenter", "open", {"presence": True}],
        ["getCenter", "open"],
        ["subscriberToken", "room.1"],
        ["subscriberToken", "room.1", 600, "x" * 128, {"bio": "x" * room}],
        ["subscriberToken", "room.1", 600, "é" * 128],  # 128 characters, 256 bytes
    )
    assert_refusal(run.exception(2), 400, "no_presence")
    assert_refusal(run.exception(3), 404, "no_such_center")
    assert_refusal(run.exception(4), 400, "presence_needs_private")
    assert_refusal(run.exception(5), 404, "no_such_center")  # nothing was made
    without_uid, at_the_limits, accented = run.result(6), run.result(7), run.result(8)
    assert "uid" not in claims_of(without_uid, php.secret)
    status, body = await longpoll(daemon, "room.1", timeout="0", token=without_uid)
    assert (status, body["error"]) == (401, "uid_required")
    for token in (at_the_limits, accented):
        status, body = await longpoll(daemon, "room.1", timeout="0", token=token)
        assert status == 200, body

    run = await php.run(
        ["subscriberToken", "room.1", 600, ""],
        ["subscriberToken", "room.1", 600, "x" * 129],
        ["subscriberToken", "room.1", 600, "ann", ["not", "an object"]],
        ["subscriberToken", "room.1", 600, None, {"name": "Ann"}],  # info without a uid
        # 1024 bytes as PHP writes it, 1025 as the daemon measures it.
        ["subscriberToken", "room.1", 600, "ann", {"bio": "x" * (room + 1)}],
        ["token", php.secret, "room.1", 600, None, "é" * 129],
        ["token", php.secret, "room.1", 600, None, "ann", {"name": "Ann"}],
    )
    for index, word in enumerate(["uid", "uid", "info", "uid", "1024", "uid"]):
        exception = run.exception(index)
        assert exception["class"] == INVALID_ARGUMENT, exception
        assert word in exception["message"], exception
    claims = claims_of(run.result(6), php.secret)
    assert (claims["uid"], claims["info"]) == ("ann", {"name": "Ann"})


# the webhook's settings


@pytest_twisted.ensureDeferred
async def test_a_webhook_is_set_read_replaced_and_deleted(php):
    daemon = php.daemon
    url = "https://site.example/notifier/webhook"
    local = "http://127.0.0.1:8000/hook"
    run = await php.run(
        ["getWebhook"],
        ["setWebhook", url],
        ["getWebhook"],
    )
    assert run.results == [None, {"url": url, "events": EVENTS}, {"url": url, "events": EVENTS}]
    # Stored as sent, whoever reads it.
    assert await call("GET", f"{daemon.api}/api/v1/webhook", auth=("site", php.secret)) == \
        (200, {"url": url, "events": EVENTS})

    run = await php.run(
        ["setWebhook", local, ["member_left", "center_vacated"]],
        ["getWebhook"],
        ["deleteWebhook"],
        ["getWebhook"],
        ["deleteWebhook"],  # none: still fine
    )
    replaced = {"url": local, "events": ["member_left", "center_vacated"]}
    assert run.results == [replaced, replaced, None, None, None]
    status, body = await call("GET", f"{daemon.api}/api/v1/webhook", auth=("site", php.secret))
    assert (status, body["error"]) == (404, "no_webhook")


@pytest_twisted.ensureDeferred
async def test_a_wrong_webhook_is_refused_and_other_errors_are_not_mistaken_for_no_webhook(php):
    url = "https://site.example/notifier/webhook"
    run = await php.run(
        ["setWebhook", "ftp://site.example/hook"],
        ["setWebhook", "site.example/hook"],
        ["setWebhook", url, ["center_exploded"]],
        ["setWebhook", url, []],
        ["setWebhook", url, {"first": "center_vacated"}],  # not a list
        ["getWebhook"],
    )
    for index in range(4):
        assert_refusal(run.exception(index), 400, "invalid_webhook")
    assert run.exception(4)["class"] == INVALID_ARGUMENT
    assert run.result(5) is None  # nothing was stored
    wrong = "not " + php.secret
    run = await php.run(["getWebhook"], ["setWebhook", url], ["deleteWebhook"], secret=wrong)
    for index in range(3):
        assert_refusal(run.exception(index), 401, "bad_credentials")


# a PHP site receiving the daemon's webhook requests


@attrs.define
class Receiver:
    """``php -S`` serving clients/php/tests/webhook_receiver.php on ``url``."""

    process: subprocess.Popen[bytes]
    folder: Path
    url: str

    def set_secret(self, secret: str) -> None:
        """The secret the site verifies with from its next request on (replaced at once)."""
        staged = self.folder / "secret.new"
        staged.write_text(secret)
        os.replace(staged, self.folder / "secret")

    def requests(self) -> list[dict[str, Any]]:
        """What the site got and how it answered, in order (complete lines only)."""
        log = self.folder / "requests.jsonl"
        if not log.exists():
            return []
        *complete, _ = log.read_text().split("\n")
        return [json.loads(line) for line in complete]

    def accepted(self) -> list[dict[str, Any]]:
        return [request for request in self.requests() if request["status"] == 204]


@pytest_twisted.async_yield_fixture
async def receiver(php):
    """A PHP site on a free port checking webhook requests with ``php.secret``;
    stopped after the test, which fails if PHP reported any error or warning."""
    folder = php.tmp_path / "site"
    folder.mkdir()
    (folder / "secret").write_text(php.secret)
    errors = folder / "php-errors.log"
    port = free_port()
    with (folder / "server.log").open("wb") as server_log:
        process = subprocess.Popen(
            [php.php, "-d", "error_reporting=-1", "-d", "display_errors=0", "-d", "log_errors=1",
             "-d", f"error_log={errors}", "-S", f"127.0.0.1:{port}", "-t", str(folder), str(RECEIVER)],
            env={**os.environ, "NOTIFIER_WEBHOOK_DIR": str(folder)},
            stdin=subprocess.DEVNULL, stdout=server_log, stderr=subprocess.STDOUT)
    site = Receiver(process, folder, f"http://127.0.0.1:{port}/notifier/webhook")
    try:
        deadline = reactor.seconds() + 10
        while True:
            assert process.poll() is None, (folder / "server.log").read_text()
            try:
                status, _ = await call("GET", site.url)
            except ConnectionRefusedError:
                assert reactor.seconds() < deadline, "php -S is not listening"
                await sleep(0.05)
                continue
            assert status == 405  # the route takes POST only
            break
        yield site
    finally:
        process.terminate()
        for _ in range(250):
            if process.poll() is not None:
                break
            await sleep(0.02)
        else:
            process.kill()
            process.wait()
    assert not errors.exists() or errors.read_text() == "", errors.read_text()


def _names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((event["name"], event["center"]) for event in events)


@pytest_twisted.ensureDeferred
async def test_the_daemons_signed_requests_pass_webhook_verify_in_a_php_site(php, receiver):
    daemon = php.daemon
    run = await php.run(
        ["createCenter", "room.1", ROOM],
        ["setWebhook", receiver.url],
        ["subscriberToken", "room.1", 600, "ann", {"name": "Ann"}],
    )
    token = run.result(2)
    ann = await websocket(f"{daemon.ws}/sub/site/room.1?format=json&token={token}", daemon.public_port)
    await opened(ann)

    def events() -> list[dict[str, Any]]:
        return [event for request in receiver.accepted() for event in request["events"]]

    await until(lambda: len(events()) >= 2, timeout=10, what="occupied and joined")
    ann.close()
    await until(lambda: len(events()) >= 4, timeout=10, what="vacated and left")
    await sleep(0.3)
    requests = receiver.requests()
    assert [(request["status"], request["error"]) for request in requests] == [(204, None)] * len(requests)
    received = events()
    assert len(received) == 4, received
    assert _names(received[:2]) == [("center_occupied", "room.1"), ("member_joined", "room.1")]
    assert _names(received[2:]) == [("center_vacated", "room.1"), ("member_left", "room.1")]
    joined = next(event for event in received if event["name"] == "member_joined")
    assert (joined["uid"], joined["info"]) == ("ann", {"name": "Ann"})
    assert next(event for event in received if event["name"] == "member_left")["uid"] == "ann"
    for request in requests:
        # What verify() answered is the body the daemon signed, decoded.
        assert json.loads(base64.b64decode(request["body"])) == {"events": request["events"]}
        assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", request["signature"]), request
        assert re.fullmatch(r"[0-9a-f]{32}", request["id"]), request
    assert len({request["id"] for request in requests}) == len(requests)


@pytest_twisted.ensureDeferred
async def test_a_site_with_another_secret_refuses_until_it_has_the_right_one_then_gets_the_same_request(
        php, receiver):
    daemon = php.daemon
    receiver.set_secret("not " + php.secret)
    await php.run(["createCenter", "news"], ["setWebhook", receiver.url, ["center_occupied"]])
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    await until(lambda: receiver.requests(), timeout=10, what="a first request")
    first = receiver.requests()[0]
    assert (first["status"], first["error"], first["events"]) == (401, "bad_signature", None)
    receiver.set_secret(php.secret)
    await until(lambda: receiver.accepted(), timeout=15, what="an accepted retry")
    *refused, accepted = receiver.requests()
    assert [(request["status"], request["error"]) for request in refused] == [(401, "bad_signature")] * len(refused)
    # A retry: the same id and body, signed again.
    assert {request["id"] for request in refused} == {accepted["id"]}
    assert {request["body"] for request in refused} == {accepted["body"]}
    assert _names(accepted["events"]) == [("center_occupied", "news")]
    ws.close()


def sign(secret: str, body: str, timestamp: int) -> str:
    """``Notifier-Signature`` as docs/protocol.rst (Webhooks) documents it."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def assert_webhook_refusal(exception: dict[str, Any], status: int, error: str) -> None:
    assert exception["class"] == WEBHOOK_EXCEPTION, exception
    assert exception["status"] == exception["code"] == status, exception
    assert exception["error"] == error, exception
    assert exception["message"].startswith(f"notifier webhook refused: {error}: "), exception


@pytest_twisted.ensureDeferred
async def test_verify_refuses_altered_forged_stale_and_malformed_requests(php, receiver):
    # One real request of the daemon, as the site got it.
    daemon = php.daemon
    await php.run(["createCenter", "news"], ["setWebhook", receiver.url, ["center_occupied"]])
    ws = await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)
    await until(lambda: receiver.accepted(), timeout=10, what="a request")
    ws.close()
    real = receiver.accepted()[0]
    body = base64.b64decode(real["body"]).decode()
    signature = real["signature"]
    t, v1 = (part.split("=", 1)[1] for part in signature.split(","))
    t = int(t)
    headers = {"Notifier-Signature": signature, "Notifier-Webhook-Id": real["id"]}
    secret = php.secret
    now = int(time.time())
    decoded = json.loads(body)

    run = await php.run(
        ["verify", secret, headers, body],
        ["verify", secret, {"notifier-signature": [signature]}, body],  # Symfony's HeaderBag::all()
        ["verify", secret, {"HTTP_NOTIFIER_SIGNATURE": signature}, body],  # $_SERVER
        ["verify", secret, {"NOTIFIER-SIGNATURE": f"v0=old, v1={'0' * 64}, t={t}, v1={v1}, v1={'f' * 64}"}, body],
        ["verify", secret, headers, body, 300, t + 300],  # just within the tolerance
        ["verify", secret, headers, body.replace('"news"', '"newz"')],
        ["verify", "not " + secret, headers, body],
        ["verify", secret, {"Notifier-Signature": f"t={t},v1={v1.upper()}"}, body],
        ["verify", secret, headers, body, 300, t + 301],
        ["verify", secret, headers, body, 300, t - 301],  # from the future
        ["verify", secret, headers, body, 0, t + 1],
        ["verify", secret, {"Notifier-Webhook-Id": real["id"]}, body],
        ["verify", secret, {"Notifier-Signature": " "}, body],
        ["verify", secret, {"Notifier-Signature": f"v1={v1}"}, body],
        ["verify", secret, {"Notifier-Signature": f"t={t}"}, body],
        ["verify", secret, {"Notifier-Signature": f"t=soon,v1={v1}"}, body],
        ["verify", secret, {"Notifier-Signature": f"t={t},t={t},v1={v1}"}, body],
        ["verify", secret, {"Notifier-Signature": sign(secret, "not json", now)}, "not json"],
        ["verify", secret, {"Notifier-Signature": sign(secret, '{"hello": 1}', now)}, '{"hello": 1}'],
        ["verify", "", headers, body],
        ["verify", secret, headers, body, -1],
        ["webhookId", headers],
        ["webhookId", {"notifier-webhook-id": [real["id"]]}],
        ["webhookId", {"Notifier-Signature": signature}],
        ["sign", secret, body, t],
    )
    for index in range(5):
        assert run.result(index) == decoded, index
    assert decoded["events"][0]["name"] == "center_occupied"
    expected = [(401, "bad_signature")] * 3 + [(401, "stale_signature")] * 3 + \
        [(401, "missing_signature")] * 2 + [(401, "malformed_signature")] * 4 + [(400, "invalid_body")] * 2
    for index, (status, error) in enumerate(expected, start=5):
        assert_webhook_refusal(run.exception(index), status, error)
        assert secret not in run.exception(index)["message"]
    assert run.exception(19)["class"] == run.exception(20)["class"] == INVALID_ARGUMENT
    # The daemon's very signature, made again by Webhook::sign().
    assert [run.result(index) for index in range(21, 25)] == [real["id"], real["id"], None, signature]


# the Drupal example's webhook route


async def run_drupal_webhook(php: Php, notifier: dict[str, Any], requests: list[dict[str, Any]]) -> dict[str, Any]:
    settings = php.tmp_path / "settings.json"
    settings.write_text(json.dumps(notifier))
    sent = php.tmp_path / "requests.json"
    sent.write_text(json.dumps(requests))
    out, err, code = await getProcessOutputAndValue(
        php.php, [*STRICT, str(DRUPAL_EXAMPLE), str(settings), str(sent)], env=dict(os.environ), reactor=reactor)
    assert code == 0 and not err, (code, out, err)
    return json.loads(out)


@pytest_twisted.ensureDeferred
async def test_the_drupal_example_handles_each_signed_webhook_request_once(php):
    secret = php.secret
    notifier = {"api_url": php.url, "publisher": php.publisher, "secret": secret}
    now = int(time.time())
    first = json.dumps({"events": [
        {"name": "center_occupied", "center": "room.1", "ts": now - 0.5},
        {"name": "member_joined", "center": "room.1", "ts": now - 0.4, "uid": "ann", "info": {"name": "Ann"}},
        {"name": "center_vacated", "center": "news", "ts": now - 0.3},
    ]})
    second = json.dumps({"events": [
        {"name": "member_left", "center": "room.1", "ts": now - 0.2, "uid": "ann"},
        {"name": "center_renamed", "center": "room.1", "ts": now - 0.1},  # of a later notifier: ignored
    ]})

    def hook(request_id: str, body: str, key: str = secret, at: int = now) -> dict[str, Any]:
        return {"headers": {"Notifier-Signature": sign(key, body, at), "Notifier-Webhook-Id": request_id},
                "body": body}

    printed = await run_drupal_webhook(php, notifier, [
        hook("w1", first),
        hook("w1", first),  # its retry: the answer to the first got lost
        hook("w2", second, key="not " + secret),
        hook("w2", second, at=now - 3600),
        {"headers": {"Notifier-Webhook-Id": "w2"}, "body": second},
        hook("w2", "not json"),
        hook("w2", second),  # refused ones were not taken for handled
    ])
    responses = printed["responses"]
    assert [response["status"] for response in responses] == [204, 204, 401, 401, 401, 400, 204]
    assert [response["body"] for response in responses if response["status"] == 204] == [""] * 3
    assert [json.loads(response["body"])["error"] for response in responses[2:6]] == [
        "bad_signature", "stale_signature", "missing_signature", "invalid_body"]
    assert printed["invalidated"] == [["notifier_center:room.1", "notifier_center:news"]]
    logs = printed["logs"]
    assert logs[0] == "info: ann joined room.1"
    assert logs[-1] == "info: ann left room.1"
    refusals = logs[1:-1]
    assert len(refusals) == 4
    for line, error in zip(refusals, ["bad_signature", "stale_signature", "missing_signature", "invalid_body"],
                           strict=True):
        assert line.startswith(f"warning: Refused a webhook request: notifier webhook refused: {error}: "), line
        assert secret not in line
    assert printed["seen"] == {"collection": "notifier_example.webhook", "expire": {"w1": 86400, "w2": 86400}}

    # Without a secret in settings.php nothing is verified, and notifier is told to come back.
    printed = await run_drupal_webhook(php, {"api_url": php.url, "publisher": php.publisher},
                                       [hook("w3", first)])
    [response] = printed["responses"]
    assert (response["status"], json.loads(response["body"])["error"]) == (503, "not_configured")
    assert (printed["invalidated"], printed["seen"]["expire"]) == ([], {})
