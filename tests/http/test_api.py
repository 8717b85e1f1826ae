"""The api listener in memory: publisher API, operator API, metrics, health.

Every request goes through treq to the listener's site over an in-memory
connection (``tests.support.memory.SiteTreq``); the store is a
``MemoryStore`` whose calls complete at once, so every answer is ready as
soon as the in-memory connection is flushed and no reactor runs.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from notifier.domain.hub import parse_id
from notifier.domain.publishers import PUBLISHER_TTL
from notifier.http.listeners import api_site
from tests.support import ADMIN_TOKEN, START, Answer, Api, Recorder, basic, result_of

URL_SAFE = re.compile(r"[A-Za-z0-9_-]+\Z")
APP_ID = re.compile(r"[0-9]{1,20}\Z")
APP_KEY = re.compile(r"[a-z0-9]{20}\Z")


def expect(answer: Answer, status: int) -> Any:
    """Assert a successful JSON answer of *status*; its decoded body."""
    assert answer.status == status, answer
    return answer.json()


def expect_error(answer: Answer, status: int, code: str | None = None) -> dict[str, str]:
    """Assert the documented error shape: JSON ``{"error": code, "message": text}``."""
    assert answer.status == status, answer
    assert answer.content_type == "application/json", answer
    body = json.loads(answer.body)
    assert set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and re.fullmatch(r"[a-z_]+", body["error"]), body
    assert isinstance(body["message"], str) and body["message"], body
    assert "Traceback" not in body["message"]
    if code is not None:
        assert body["error"] == code, body
    return body


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def site(api: Api) -> tuple[str, str]:
    """The credentials of publisher ``site``."""
    return api.add_publisher("site")


# health, routing


def test_healthz_needs_no_credentials(api):
    assert expect(api.request("GET", "/healthz"), 200) == {"status": "ok"}


@pytest.mark.parametrize("path", [
    "/", "/nothing", "/api/v1/nothing", "/api/v2/centers", "/admin/v1/nothing",
    "/api/v1/centers/news/messages/extra", "/admin/v1/publishers/site/rotate/now",
])
def test_unknown_paths_are_json_404(api, site, path):
    expect_error(api.request("GET", path, auth=site), 404)
    expect_error(api.request("POST", path, "x", auth=site), 404)


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("POST", "/healthz", {"GET"}),
    ("PATCH", "/api/v1/centers/news", {"GET", "PUT", "DELETE"}),
    ("DELETE", "/api/v1/centers", {"GET"}),
    ("PUT", "/api/v1/centers/news/messages", {"POST"}),
    ("PUT", "/admin/v1/publishers", {"GET", "POST"}),
    ("GET", "/admin/v1/publishers/site/rotate", {"POST"}),
    ("POST", "/admin/v1/publishers/site", {"GET", "PATCH", "DELETE"}),
    ("POST", "/admin/v1/stats", {"GET"}),
    ("POST", "/admin/v1/history", {"GET"}),
    ("POST", "/metrics", {"GET"}),
])
def test_wrong_methods_are_json_405_with_allow(api, site, method, path, allowed):
    answer = api.request(method, path, "{}", auth=site)
    expect_error(answer, 405, "method_not_allowed")
    allow = {m.strip() for m in (answer.header("allow") or "").split(",")}
    assert allowed <= allow
    assert method not in allow


# creating centers


def test_put_creates_then_finds_the_same_center(api, site):
    first = expect(api.put_center(site, "news"), 201)
    assert first["name"] == "news"
    assert first["path"] == "site/news"
    assert first["private"] is False
    assert first["subscribers"] == 0
    assert first["last_id"] is None
    assert first["created"] == START
    api.clock.advance(10)
    assert expect(api.put_center(site, "news"), 200) == first


def test_put_again_with_other_options_keeps_the_center_as_it_was(api, site):
    first = expect(api.put_center(site, "news"), 201)
    again = expect(api.put_center(site, "news", {"private": True, "history": 3}), 200)
    assert again == first
    assert again["private"] is False


def test_put_options_are_kept(api, site):
    center = expect(api.put_center(site, "secret.room", {"private": True, "history": 5, "ttl": 60}), 201)
    assert center["private"] is True
    assert center["history"] == 5
    assert center["ttl"] == 60
    assert expect(api.request("GET", "/api/v1/centers/secret.room", auth=site), 200) == center
    # history overrides [centers] history for this center's hub
    assert api.hub("site", "secret.room").history == 5
    plain = expect(api.put_center(site, "plain", {}), 201)
    assert plain["private"] is False
    assert plain["history"] == api.config.centers.history


def test_put_history_is_exactly_what_is_retained(api, site):
    expect(api.put_center(site, "news", {"history": 2}), 201)
    ids = [expect(api.publish(site, "news", str(n)), 201)["id"] for n in range(4)]
    retained, recovered = api.retained("site", "news", ids[1])
    assert [m.data for m in retained] == ["2", "3"] and recovered is True
    retained, recovered = api.retained("site", "news", ids[0])
    assert [m.data for m in retained] == ["2", "3"] and recovered is False


@pytest.mark.parametrize("body", [
    b"   ", b"", b"{}",
])
def test_put_without_options_takes_the_defaults(api, site, body):
    answer = api.request("PUT", "/api/v1/centers/news", body, auth=site)
    assert expect(answer, 201)["private"] is False


@pytest.mark.parametrize("options", [
    {"private": "yes"}, {"private": 1}, {"private": None},
    {"history": "5"}, {"history": -1}, {"history": 1.5}, {"history": True}, {"history": [5]},
    {"ttl": "60"}, {"ttl": -1}, {"ttl": 2.5}, {"ttl": False},
    {"privat": True}, {"name": "other"}, {"private": True, "extra": 1},
])
def test_put_refuses_bad_options(api, site, options):
    expect_error(api.put_center(site, "news", options), 400)
    expect_error(api.request("GET", "/api/v1/centers/news", auth=site), 404)


@pytest.mark.parametrize("body", [
    b"{", b"{'private': true}", b"private=true", b"[]", b'"private"', b"1", b"null", b"true",
    b"\xff\xfe{}", b'{"private": tru}',
    b"[" * 50_000,  # nested past the parser's recursion limit, unterminated
    b"[" * 30_000 + b"]" * 30_000,  # nested past the recursion limit, well-formed
    b'{"a":' * 12_000,
])
def test_put_refuses_malformed_json_with_400(api, site, body):
    expect_error(api.request("PUT", "/api/v1/centers/news", body, auth=site), 400)
    expect_error(api.request("GET", "/api/v1/centers/news", auth=site), 404)


def test_put_refuses_a_huge_nested_body_without_failing(api, site):
    # Past the 64 KiB limit for JSON request bodies: refused as too large
    # before it is parsed, never a 500.
    expect_error(api.request("PUT", "/api/v1/centers/news", b"[" * 100_000, auth=site), 413)


@pytest.mark.parametrize("name", [
    "bad%20name", "%C3%BC", "a*b", "a%22b", "x" * 201, "a%00b", "%3Cscript%3E",
])
def test_put_refuses_invalid_center_names(api, site, name):
    expect_error(api.put_center(site, name), 400, "invalid_center_name")
    assert expect(api.request("GET", "/api/v1/centers", auth=site), 200) == {"centers": []}


@pytest.mark.parametrize("name", ["a", "x" * 200, "A-Za-z0-9._:@~=,;-", "user.17.inbox", "a:b@c~d", "private-a,b;c=d"])
def test_put_accepts_every_valid_center_name(api, site, name):
    center = expect(api.put_center(site, name), 201)
    assert center["name"] == name
    assert center["path"] == f"site/{name}"


# listing, reading, deleting


def test_list_get_delete(api, site):
    assert expect(api.request("GET", "/api/v1/centers", auth=site), 200) == {"centers": []}
    news = expect(api.put_center(site, "news"), 201)
    api.clock.advance(1)
    alerts = expect(api.put_center(site, "alerts", {"private": True}), 201)
    listed = expect(api.request("GET", "/api/v1/centers", auth=site), 200)
    assert sorted(listed["centers"], key=lambda c: c["name"]) == [alerts, news]
    assert expect(api.request("GET", "/api/v1/centers/news", auth=site), 200) == news
    expect_error(api.request("GET", "/api/v1/centers/nothing", auth=site), 404, "no_such_center")

    answer = api.request("DELETE", "/api/v1/centers/news", auth=site)
    assert answer.status == 204 and answer.body == b""
    expect_error(api.request("GET", "/api/v1/centers/news", auth=site), 404, "no_such_center")
    expect_error(api.request("DELETE", "/api/v1/centers/news", auth=site), 404, "no_such_center")
    expect_error(api.publish(site, "news", "late"), 404, "no_such_center")
    assert expect(api.request("GET", "/api/v1/centers", auth=site), 200) == {"centers": [alerts]}


def test_a_center_created_again_after_delete_is_new(api, site):
    expect(api.put_center(site, "news", {"private": True}), 201)
    expect(api.publish(site, "news", "old"), 201)
    assert api.request("DELETE", "/api/v1/centers/news", auth=site).status == 204
    api.clock.advance(5)
    center = expect(api.put_center(site, "news"), 201)
    assert center["private"] is False
    assert center["last_id"] is None
    assert center["created"] == START + 5


def test_center_shows_live_subscribers_and_last_id(api, site):
    expect(api.put_center(site, "news"), 201)
    hub = api.hub("site", "news")
    hub.subscribe(Recorder("websocket"))
    hub.subscribe(Recorder("longpoll"))
    published = expect(api.publish(site, "news", "hello"), 201)
    center = expect(api.request("GET", "/api/v1/centers/news", auth=site), 200)
    assert center["subscribers"] == 2
    assert center["last_id"] == published["id"]
    [listed] = expect(api.request("GET", "/api/v1/centers", auth=site), 200)["centers"]
    assert listed == center


def test_delete_closes_the_subscribers_of_the_center(api, site):
    expect(api.put_center(site, "news"), 201)
    expect(api.put_center(site, "other"), 201)
    gone, staying = Recorder(), Recorder()
    api.hub("site", "news").subscribe(gone)
    api.hub("site", "other").subscribe(staying)
    assert api.request("DELETE", "/api/v1/centers/news", auth=site).status == 204
    assert gone.closed == ["deleted"]
    assert staying.closed == []


# publisher isolation


def test_publishers_never_see_each_others_centers(api, site):
    other = api.add_publisher("other")
    expect(api.put_center(site, "news", {"private": True}), 201)
    hub = api.hub("site", "news")
    subscriber = Recorder()
    hub.subscribe(subscriber)

    expect_error(api.request("GET", "/api/v1/centers/news", auth=other), 404, "no_such_center")
    assert expect(api.request("GET", "/api/v1/centers", auth=other), 200) == {"centers": []}
    expect_error(api.request("DELETE", "/api/v1/centers/news", auth=other), 404, "no_such_center")
    expect_error(api.publish(other, "news", "intrusion"), 404, "no_such_center")
    assert subscriber.delivered == [] and subscriber.closed == []
    assert hub.last_id is None

    # the same name is free for the other publisher, on its own path
    theirs = expect(api.put_center(other, "news"), 201)
    assert theirs["path"] == "other/news" and theirs["private"] is False
    expect(api.publish(other, "news", "theirs"), 201)
    assert subscriber.delivered == []
    mine = expect(api.request("GET", "/api/v1/centers/news", auth=site), 200)
    assert mine["path"] == "site/news" and mine["private"] is True and mine["last_id"] is None
    assert [c["path"] for c in expect(api.request("GET", "/api/v1/centers", auth=site), 200)["centers"]] == [
        "site/news"]


def test_auto_create_makes_the_publishers_own_center():
    api = Api(centers={"auto_create": True})
    site, other = api.add_publisher("site"), api.add_publisher("other")
    expect(api.put_center(site, "news", {"private": True}), 201)
    expect(api.publish(other, "news", "x"), 201)
    theirs = expect(api.request("GET", "/api/v1/centers/news", auth=other), 200)
    assert theirs["path"] == "other/news" and theirs["private"] is False
    assert expect(api.request("GET", "/api/v1/centers/news", auth=site), 200)["last_id"] is None


# publishing


def test_publish_answers_201_with_an_id_and_the_subscribers_reached(api, site):
    expect(api.put_center(site, "news"), 201)
    first, second = Recorder("websocket"), Recorder("sse")
    hub = api.hub("site", "news")
    hub.subscribe(first)
    hub.subscribe(second)
    body = expect(api.publish(site, "news", "héllo wörld"), 201)
    assert set(body) == {"id", "subscribers"}
    assert isinstance(body["id"], str) and body["id"]
    assert body["subscribers"] == 2
    assert first.delivered == second.delivered == ["héllo wörld"]
    hub.unsubscribe(second)
    assert expect(api.publish(site, "news", "two"), 201)["subscribers"] == 1
    assert second.delivered == ["héllo wörld"]


def test_published_ids_are_unique_and_increasing(api, site):
    expect(api.put_center(site, "news"), 201)
    ids = [expect(api.publish(site, "news", f"m{n}"), 201)["id"] for n in range(25)]
    assert len(set(ids)) == len(ids)
    parsed = [parse_id(i) for i in ids]
    assert None not in parsed
    assert {epoch for epoch, _ in parsed} == {parsed[0][0]}
    seqs = [seq for _, seq in parsed]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # resuming after any id yields exactly the later messages, in order
    retained, recovered = api.retained("site", "news", ids[9])
    assert recovered is True
    assert [m.id for m in retained] == ids[10:]
    assert expect(api.request("GET", "/api/v1/centers/news", auth=site), 200)["last_id"] == ids[-1]


def test_publish_to_an_unknown_center_is_404(api, site):
    expect_error(api.publish(site, "nothing", "x"), 404, "no_such_center")
    expect_error(api.request("GET", "/api/v1/centers/nothing", auth=site), 404)


def test_publish_with_auto_create_creates_the_center():
    api = Api(centers={"auto_create": True})
    site = api.add_publisher("site")
    body = expect(api.publish(site, "fresh", "first"), 201)
    center = expect(api.request("GET", "/api/v1/centers/fresh", auth=site), 200)
    assert center["path"] == "site/fresh"
    assert center["private"] is False
    assert center["last_id"] == body["id"]
    assert center["created"] == START
    second = expect(api.publish(site, "fresh", "second"), 201)
    assert second["id"] != body["id"]
    assert len(expect(api.request("GET", "/api/v1/centers", auth=site), 200)["centers"]) == 1


def test_message_size_is_counted_in_bytes():
    api = Api(centers={"max_message_bytes": 16})
    site = api.add_publisher("site")
    expect(api.put_center(site, "news"), 201)
    hub = api.hub("site", "news")
    assert expect(api.publish(site, "news", "x" * 16), 201)
    expect_error(api.publish(site, "news", "x" * 17), 413)
    assert expect(api.publish(site, "news", "é" * 8), 201)  # 8 characters, 16 bytes
    expect_error(api.publish(site, "news", "é" * 8 + "x"), 413)  # 9 characters, 17 bytes
    expect_error(api.publish(site, "news", "x" * 10_000), 413)
    assert [m.data for m in api.retained("site", "news", hub.position)[0]] == []
    assert [m.data for m in api.retained("site", "news", f"{hub.epoch}-0")[0]] == ["x" * 16, "é" * 8]


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain; charset=utf-8", "TEXT/PLAIN", "text/html", "text/csv",
    "application/json", "application/json; charset=utf-8", "application/xml",
    "application/vnd.x+json", "application/atom+xml", None,
])
def test_publish_accepts_text_content_types(api, site, content_type):
    expect(api.put_center(site, "news"), 201)
    expect(api.publish(site, "news", '{"a": "<b>"}', content_type=content_type), 201)
    assert api.hub("site", "news").latest.data == '{"a": "<b>"}'


MULTIPART = (
    b'--xyz\r\nContent-Disposition: form-data; name="message"\r\n\r\nhello\r\n--xyz--\r\n'
)


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/octet-stream", b"hello"),
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("multipart/form-data; boundary=xyz", MULTIPART),
    ("application/x-www-form-urlencoded", b"message=hello"),
    ("application/javascript", b"alert(1)"),
])
def test_publish_refuses_other_content_types_with_415(api, site, content_type, body):
    expect(api.put_center(site, "news"), 201)
    expect_error(api.publish(site, "news", body, content_type=content_type), 415)
    assert api.hub("site", "news").last_id is None


@pytest.mark.parametrize("body", [b"\xff", b"caf\xe9", b"\xc3", b"\xed\xa0\x80"])
def test_publish_refuses_non_utf8_with_400(api, site, body):
    expect(api.put_center(site, "news"), 201)
    expect_error(api.publish(site, "news", body), 400)
    assert api.hub("site", "news").last_id is None


# publisher credentials


def _basic_raw(text: bytes) -> str:
    return "Basic " + base64.b64encode(text).decode()


@pytest.mark.parametrize("authorization", [
    None,
    "",
    "Basic",
    "Basic !!!not-base64!!!",
    "Basic c2l0ZQ",  # bad padding
    _basic_raw(b"site"),  # no colon
    _basic_raw(b"\xff\xfe:\xff"),  # not UTF-8
    "Digest username=site",
    "Notifier-HMAC-SHA256 publisher=site, timestamp=0, signature=00",
    f"Bearer {ADMIN_TOKEN}",
])
def test_publisher_api_refuses_missing_or_malformed_credentials(api, site, authorization):
    expect(api.put_center(site, "news"), 201)
    for method, path, body in (
        ("GET", "/api/v1/centers", None),
        ("GET", "/api/v1/centers/news", None),
        ("PUT", "/api/v1/centers/other", None),
        ("DELETE", "/api/v1/centers/news", None),
        ("POST", "/api/v1/centers/news/messages", "x"),
    ):
        answer = api.request(method, path, body, authorization=authorization,
                             headers={"Content-Type": "text/plain"})
        expect_error(answer, 401)
    assert expect(api.request("GET", "/api/v1/centers/news", auth=site), 200)["last_id"] is None


def test_publisher_api_refuses_wrong_secrets_and_unknown_publishers(api, site):
    name, secret = site
    expect(api.put_center(site, "news"), 201)
    for auth in ((name, secret + "x"), (name, secret[:-1]), (name, ""), ("ghost", secret),
                 ("", secret), (name.upper(), secret), (ADMIN_TOKEN, ADMIN_TOKEN)):
        expect_error(api.publish(auth, "news", "x"), 401, "bad_credentials")
        expect_error(api.request("GET", "/api/v1/centers", auth=auth), 401, "bad_credentials")
    assert api.hub("site", "news").last_id is None


def test_basic_scheme_is_case_insensitive(api, site):
    token = base64.b64encode(f"{site[0]}:{site[1]}".encode()).decode()
    assert expect(api.request("GET", "/api/v1/centers", authorization=f"basic {token}"), 200) == {
        "centers": []}


# the operator API


ADMIN_REQUESTS = [
    ("POST", "/admin/v1/publishers", '{"name": "newcomer"}'),
    ("GET", "/admin/v1/publishers", None),
    ("POST", "/admin/v1/publishers/site/rotate", None),
    ("GET", "/admin/v1/publishers/site", None),
    ("PATCH", "/admin/v1/publishers/site", '{"pusher": {"client_events": true}}'),
    ("DELETE", "/admin/v1/publishers/site", None),
    ("GET", "/admin/v1/stats", None),
    ("GET", "/admin/v1/history", None),
    ("GET", "/metrics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_REQUESTS)
def test_admin_api_refuses_missing_or_wrong_tokens(api, site, method, path, body):
    for authorization in (
        None, "", "Bearer", "Bearer ", "Bearer wrong", f"Bearer {ADMIN_TOKEN}x", f"Bearer {ADMIN_TOKEN[:-1]}",
        f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN, basic(*site), basic("admin", ADMIN_TOKEN),
    ):
        expect_error(api.request(method, path, body, authorization=authorization), 401)
    # nothing happened
    listed = expect(api.admin("GET", "/admin/v1/publishers"), 200)["publishers"]
    assert [p["name"] for p in listed] == ["site"]
    assert expect(api.request("GET", "/api/v1/centers", auth=site), 200) == {"centers": []}


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_REQUESTS)
def test_an_empty_admin_token_refuses_everything(method, path, body):
    api = Api(api={"admin_token": ""})
    publisher = result_of(Deferred.fromCoroutine(api.publishers.add_publisher("site")))
    for authorization in (None, "", "Bearer", "Bearer ", "Bearer x", f"Bearer {ADMIN_TOKEN}",
                          basic("site", publisher.secret)):
        expect_error(api.request(method, path, body, authorization=authorization), 401)
    # the publisher API and health are unaffected
    assert expect(api.request("GET", "/api/v1/centers", auth=("site", publisher.secret)), 200) == {
        "centers": []}
    assert expect(api.request("GET", "/healthz"), 200) == {"status": "ok"}


def test_add_publisher_answers_its_secret_once(api):
    body = expect(api.admin("POST", "/admin/v1/publishers", {"name": "site"}), 201)
    assert set(body) == {"name", "secret", "pusher"}
    assert body["name"] == "site"
    assert isinstance(body["secret"], str)
    assert len(body["secret"]) >= 43 and URL_SAFE.match(body["secret"])
    # the secret works at once
    assert expect(api.request("GET", "/api/v1/centers", auth=("site", body["secret"])), 200) == {
        "centers": []}
    other = expect(api.admin("POST", "/admin/v1/publishers", {"name": "other"}), 201)
    assert other["secret"] != body["secret"]


def test_add_publisher_twice_is_409_and_keeps_the_first(api):
    site = api.add_publisher("site")
    expect_error(api.admin("POST", "/admin/v1/publishers", {"name": "site"}), 409)
    assert expect(api.request("GET", "/api/v1/centers", auth=site), 200) == {"centers": []}
    assert len(expect(api.admin("GET", "/admin/v1/publishers"), 200)["publishers"]) == 1


@pytest.mark.parametrize("body", [
    {"name": "Site"}, {"name": "SITE"}, {"name": ""}, {"name": "x" * 65}, {"name": "-site"},
    {"name": "_site"}, {"name": "si te"}, {"name": "site/news"}, {"name": "sité"}, {"name": "site\n"},
    {"name": 42}, {"name": None}, {"name": ["site"]}, {"name": True},
    {}, {"nom": "site"}, {"name": "site", "secret": "mine"},
    [], "site", None,
])
def test_add_publisher_refuses_invalid_names(api, body):
    expect_error(api.request("POST", "/admin/v1/publishers", json.dumps(body), admin=ADMIN_TOKEN), 400)
    assert expect(api.admin("GET", "/admin/v1/publishers"), 200) == {"publishers": []}


@pytest.mark.parametrize("body", [b"", b"{", b"name=site", b"\xff", b"[" * 50_000])
def test_add_publisher_refuses_malformed_bodies(api, body):
    expect_error(api.request("POST", "/admin/v1/publishers", body, admin=ADMIN_TOKEN), 400)
    assert expect(api.admin("GET", "/admin/v1/publishers"), 200) == {"publishers": []}


@pytest.mark.parametrize("name", ["a", "0", "x" * 64, "site-1_b", "9lives"])
def test_add_publisher_accepts_valid_names(api, name):
    assert expect(api.admin("POST", "/admin/v1/publishers", {"name": name}), 201)["name"] == name


def test_list_publishers_counts_centers_and_never_shows_secrets(api):
    beta = api.add_publisher("beta")
    api.clock.advance(3)
    alpha = api.add_publisher("alpha")
    expect(api.put_center(beta, "one"), 201)
    expect(api.put_center(beta, "two"), 201)
    expect(api.put_center(alpha, "one"), 201)
    answer = api.admin("GET", "/admin/v1/publishers")
    body = expect(answer, 200)
    assert set(body) == {"publishers"}
    by_name = {p["name"]: p for p in body["publishers"]}
    apps = {name: by_name[name].pop("pusher") for name in by_name}
    assert by_name == {
        "alpha": {"name": "alpha", "created": START + 3, "centers": 1},
        "beta": {"name": "beta", "created": START, "centers": 2},
    }
    assert apps["beta"]["app_id"] != apps["alpha"]["app_id"] and apps["beta"]["key"] != apps["alpha"]["key"]
    for _, secret in (alpha, beta):
        assert secret.encode() not in answer.body
    assert b"secret" not in answer.body


def test_rotate_replaces_the_secret_at_once(api, site):
    name, old = site
    expect(api.put_center(site, "news"), 201)
    # a request with the old secret warms the publishers' cache
    assert expect(api.request("GET", "/api/v1/centers/news", auth=site), 200)
    body = expect(api.admin("POST", "/admin/v1/publishers/site/rotate"), 200)
    assert set(body) == {"name", "secret"}
    assert body["name"] == "site"
    new = body["secret"]
    assert new != old and len(new) >= 43 and URL_SAFE.match(new)
    # no time passes: the cache must not keep the old secret alive
    expect_error(api.request("GET", "/api/v1/centers/news", auth=site), 401)
    expect_error(api.publish(site, "news", "x"), 401)
    assert expect(api.request("GET", "/api/v1/centers/news", auth=(name, new)), 200)["name"] == "news"
    expect(api.publish((name, new), "news", "x"), 201)
    # still only one publisher, with its center
    listed = expect(api.admin("GET", "/admin/v1/publishers"), 200)["publishers"]
    assert [(p["name"], p["centers"], p["created"]) for p in listed] == [("site", 1, START)]


def test_rotate_an_unknown_publisher_is_404(api, site):
    expect_error(api.admin("POST", "/admin/v1/publishers/ghost/rotate"), 404, "no_such_publisher")
    expect(api.request("GET", "/api/v1/centers", auth=site), 200)


def test_a_secret_changed_in_the_store_applies_once_the_cache_expires(api, site):
    """What the offline CLI does: the daemon sees it within PUBLISHER_TTL."""
    name, old = site
    assert expect(api.request("GET", "/api/v1/centers", auth=site), 200)
    assert result_of(Deferred.fromCoroutine(api.store.set_secret(name, "changed-offline")))
    api.clock.advance(PUBLISHER_TTL + 0.01)
    expect_error(api.request("GET", "/api/v1/centers", auth=site), 401)
    assert expect(api.request("GET", "/api/v1/centers", auth=(name, "changed-offline")), 200)


def test_delete_publisher_removes_it_and_its_centers(api, site):
    other = api.add_publisher("other")
    expect(api.put_center(site, "news"), 201)
    expect(api.put_center(other, "news"), 201)
    subscriber, bystander = Recorder(), Recorder()
    api.hub("site", "news").subscribe(subscriber)
    api.hub("other", "news").subscribe(bystander)
    assert expect(api.request("GET", "/api/v1/centers", auth=site), 200)  # warms the cache

    answer = api.admin("DELETE", "/admin/v1/publishers/site")
    assert answer.status == 204 and answer.body == b""
    assert subscriber.closed == ["deleted"]
    assert bystander.closed == []
    expect_error(api.request("GET", "/api/v1/centers", auth=site), 401)
    expect_error(api.publish(site, "news", "x"), 401)
    listed = expect(api.admin("GET", "/admin/v1/publishers"), 200)["publishers"]
    assert [(p["name"], p["centers"]) for p in listed] == [("other", 1)]
    expect_error(api.admin("DELETE", "/admin/v1/publishers/site"), 404, "no_such_publisher")

    # a publisher of the same name starts from nothing
    again = api.add_publisher("site")
    assert again[1] != site[1]
    assert expect(api.request("GET", "/api/v1/centers", auth=again), 200) == {"centers": []}
    expect_error(api.publish(again, "news", "x"), 404)
    assert expect(api.request("GET", "/api/v1/centers/news", auth=other), 200)["path"] == "other/news"


def test_delete_an_unknown_publisher_is_404(api, site):
    expect_error(api.admin("DELETE", "/admin/v1/publishers/ghost"), 404, "no_such_publisher")
    expect(api.request("GET", "/api/v1/centers", auth=site), 200)


# every publisher is a Pusher app


def test_every_publisher_is_a_pusher_app_with_an_app_id_and_key_of_its_own(api):
    added = expect(api.admin("POST", "/admin/v1/publishers", {"name": "site"}), 201)
    app = added["pusher"]
    assert set(app) == {"app_id", "key", "client_events"}
    assert APP_ID.match(app["app_id"]) and APP_KEY.match(app["key"]), app
    assert app["client_events"] is False  # [pusher] client_events, by default
    other = expect(api.admin("POST", "/admin/v1/publishers", {"name": "other"}), 201)["pusher"]
    assert int(other["app_id"]) > int(app["app_id"]) and other["key"] != app["key"]

    answer = api.admin("GET", "/admin/v1/publishers/site")
    assert expect(answer, 200) == {"name": "site", "created": START, "centers": 0, "pusher": app}
    assert added["secret"].encode() not in answer.body and b"secret" not in answer.body
    listed = expect(api.admin("GET", "/admin/v1/publishers"), 200)["publishers"]
    assert [(p["name"], p["pusher"]) for p in listed] == [("other", other), ("site", app)]

    # a rotated secret keeps them, and the publisher is found by them as it is now
    rotated = expect(api.admin("POST", "/admin/v1/publishers/site/rotate"), 200)["secret"]
    assert expect(api.admin("GET", "/admin/v1/publishers/site"), 200)["pusher"] == app
    found = result_of(Deferred.fromCoroutine(api.publishers.by_key(app["key"])))
    assert (found.name, found.secret) == ("site", rotated)
    assert result_of(Deferred.fromCoroutine(api.publishers.by_app_id(app["app_id"]))) == found

    # removed, it is found by neither; made again, it is another app
    assert api.admin("DELETE", "/admin/v1/publishers/site").status == 204
    assert result_of(Deferred.fromCoroutine(api.publishers.by_key(app["key"]))) is None
    assert result_of(Deferred.fromCoroutine(api.publishers.by_app_id(app["app_id"]))) is None
    expect_error(api.admin("GET", "/admin/v1/publishers/site"), 404, "no_such_publisher")
    again = expect(api.admin("POST", "/admin/v1/publishers", {"name": "site"}), 201)["pusher"]
    assert int(again["app_id"]) > int(other["app_id"]) and again["key"] != app["key"]


def test_get_publisher_counts_its_centers_and_refuses_unknown_ones(api, site):
    expect(api.put_center(site, "news"), 201)
    expect(api.put_center(site, "chat"), 201)
    assert expect(api.admin("GET", "/admin/v1/publishers/site"), 200)["centers"] == 2
    for name in ("ghost", "SITE", "a%20b"):
        expect_error(api.admin("GET", f"/admin/v1/publishers/{name}"), 404, "no_such_publisher")


@pytest.mark.parametrize("default", [False, True])
def test_client_events_are_each_publisher_s_choice_or_the_server_s(default):
    api = Api(pusher={"client_events": default})
    api.add_publisher("site")
    api.add_publisher("other")

    def effective(name: str) -> bool:
        shown = expect(api.admin("GET", f"/admin/v1/publishers/{name}"), 200)["pusher"]["client_events"]
        listed = {p["name"]: p for p in expect(api.admin("GET", "/admin/v1/publishers"), 200)["publishers"]}
        assert listed[name]["pusher"]["client_events"] is shown
        return shown

    assert effective("site") is default
    for chosen in (not default, default, None, not default):
        answer = expect(api.admin("PATCH", "/admin/v1/publishers/site", {"pusher": {"client_events": chosen}}), 200)
        assert answer == expect(api.admin("GET", "/admin/v1/publishers/site"), 200)
        assert answer["pusher"]["client_events"] is (default if chosen is None else chosen)
        assert effective("site") is answer["pusher"]["client_events"]
        held = result_of(Deferred.fromCoroutine(api.publishers.by_key(answer["pusher"]["key"])))
        assert held.client_events is chosen  # seen at once, though the copy was held a moment ago
        assert effective("other") is default


def test_setting_client_events_closes_nothing_and_the_secret_still_works(api, site):
    expect(api.put_center(site, "room", {"private": True}), 201)
    subscriber = Recorder()
    api.hub("site", "room").subscribe(subscriber)
    expect(api.admin("PATCH", "/admin/v1/publishers/site", {"pusher": {"client_events": True}}), 200)
    assert subscriber.closed == []
    assert expect(api.request("GET", "/api/v1/centers", auth=site), 200)
    # as another node does when told of it
    api.node.events.control({"type": "publisher_changed", "publisher": "site", "change": "settings"})
    assert subscriber.closed == []
    # a change of its secret there closes what its tokens admitted
    api.node.events.control({"type": "publisher_changed", "publisher": "site"})
    assert subscriber.closed == ["revoked"]


def test_a_change_made_on_another_node_is_seen_once_announced(api, site):
    key = expect(api.admin("GET", "/admin/v1/publishers/site"), 200)["pusher"]["key"]
    assert result_of(Deferred.fromCoroutine(api.publishers.by_key(key))).client_events is None
    assert result_of(Deferred.fromCoroutine(api.store.set_client_events("site", True)))
    assert result_of(Deferred.fromCoroutine(api.publishers.by_key(key))).client_events is None  # held
    api.node.events.control({"type": "publisher_changed", "publisher": "site", "change": "settings"})
    assert result_of(Deferred.fromCoroutine(api.publishers.by_key(key))).client_events is True


@pytest.mark.parametrize(("body", "code"), [
    (b"", "invalid_json"), (b"{", "invalid_json"), (b"[]", "invalid_json"),
    (b"{}", "invalid_publisher"), (b'{"pusher": null}', "invalid_publisher"),
    (b'{"pusher": {}}', "invalid_publisher"), (b'{"pusher": []}', "invalid_publisher"),
    (b'{"pusher": ["client_events"]}', "invalid_publisher"),
    (b'{"pusher": {"client_events": 1}}', "invalid_publisher"),
    (b'{"pusher": {"client_events": 0}}', "invalid_publisher"),
    (b'{"pusher": {"client_events": "true"}}', "invalid_publisher"),
    (b'{"pusher": {"client_events": true, "key": "mine"}}', "invalid_publisher"),
    (b'{"pusher": {"app_id": "1"}}', "invalid_publisher"),
    (b'{"pusher": {"client_events": true}, "name": "other"}', "invalid_publisher"),
    (b'{"client_events": true}', "invalid_publisher"),
])
def test_patch_refuses_other_bodies_and_changes_nothing(api, site, body, code):
    before = expect(api.admin("GET", "/admin/v1/publishers/site"), 200)
    expect_error(api.request("PATCH", "/admin/v1/publishers/site", body, admin=ADMIN_TOKEN), 400, code)
    assert expect(api.admin("GET", "/admin/v1/publishers/site"), 200) == before


def test_patch_of_an_unknown_publisher_is_404(api, site):
    expect_error(api.admin("PATCH", "/admin/v1/publishers/ghost", {"pusher": {"client_events": True}}), 404,
                 "no_such_publisher")
    assert expect(api.admin("GET", "/admin/v1/publishers/site"), 200)["pusher"]["client_events"] is False


def test_stats(api, site):
    other = api.add_publisher("other")
    stats = expect(api.admin("GET", "/admin/v1/stats"), 200)
    assert stats["connections"] == {"websocket": 0, "sse": 0, "longpoll": 0, "pusher": 0}
    assert stats["centers"] == 0
    assert stats["messages_in"] == 0 and stats["messages_out"] == 0
    assert stats["uptime"] == 0

    expect(api.put_center(site, "news"), 201)
    expect(api.put_center(site, "quiet"), 201)
    expect(api.put_center(other, "news"), 201)
    hub = api.hub("site", "news")
    for transport in ("websocket", "websocket", "sse", "longpoll"):
        hub.subscribe(Recorder(transport))
    api.hub("other", "news").subscribe(Recorder("websocket"))
    expect(api.publish(site, "news", "a"), 201)
    expect(api.publish(site, "news", "b"), 201)
    expect(api.publish(other, "news", "c"), 201)
    api.clock.advance(42.5)

    stats = expect(api.admin("GET", "/admin/v1/stats"), 200)
    assert stats["connections"] == {"websocket": 3, "sse": 1, "longpoll": 1, "pusher": 0}
    assert stats["centers"] == 3
    assert stats["messages_in"] == 3
    assert stats["messages_out"] == 4 + 4 + 1
    assert stats["uptime"] == 42.5
    api.clock.advance(7.5)
    assert expect(api.admin("GET", "/admin/v1/stats"), 200)["uptime"] == 50


def _samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_are_prometheus_text(api, site):
    expect(api.put_center(site, "news"), 201)
    api.hub("site", "news").subscribe(Recorder("sse"))
    expect(api.publish(site, "news", "a"), 201)
    expect(api.publish(site, "news", "b"), 201)
    api.clock.advance(9)
    answer = api.request("GET", "/metrics", admin=ADMIN_TOKEN)
    assert answer.status == 200
    assert answer.content_type == "text/plain"
    text = answer.body.decode()
    assert re.search(r"^# TYPE notifier_messages_in(_total)? counter$", text, re.M)
    samples = _samples(text)
    assert samples['notifier_messages_in_total{publisher="site"}'] == 2
    assert samples['notifier_messages_out_total{publisher="site"}'] == 2
    assert samples['notifier_centers{publisher="site"}'] == 1
    assert samples['notifier_connections{publisher="site",transport="sse"}'] == 1
    assert samples["notifier_publishers"] == 1
    assert samples["notifier_uptime_seconds"] == 9
    assert site[1] not in text


# the api listener as the daemon serves it


def _raw_exchange(api: Api, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.0 exchange with the api listener's site over an in-memory transport."""
    site = api_site(api.app, api.config, api.clock, turn=api.turn)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8081))
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(request)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    channel.connectionLost(Failure(ConnectionError("done")))
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("content_type", [b"multipart/form-data; boundary=xyz", b"multipart/form-data"])
def test_a_malformed_multipart_body_is_a_json_415(api, site, content_type):
    expect(api.put_center(site, "news"), 201)
    body = b"not multipart at all"
    status, headers, answer = _raw_exchange(api, (
        b"POST /api/v1/centers/news/messages HTTP/1.0\r\nHost: 127.0.0.1\r\n"
        b"Authorization: " + basic(*site).encode() + b"\r\n"
        b"Content-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    ))
    assert status == 415
    assert headers["content-type"] == "application/json"
    assert json.loads(answer)["error"] == "unsupported_media_type"
    assert api.hub("site", "news").last_id is None


def test_the_served_site_publishes_a_body_without_content_type(api, site):
    expect(api.put_center(site, "news"), 201)
    status, headers, answer = _raw_exchange(api, (
        b"POST /api/v1/centers/news/messages HTTP/1.0\r\nHost: 127.0.0.1\r\n"
        b"Authorization: " + basic(*site).encode() + b"\r\nContent-Length: 5\r\n\r\nhello"
    ))
    assert status == 201, answer
    assert json.loads(answer)["id"] == api.hub("site", "news").last_id
    assert api.hub("site", "news").latest.data == "hello"
