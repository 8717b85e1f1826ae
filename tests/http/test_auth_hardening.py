"""Credentials that tell nothing: store URLs in configuration errors, the
look-up of a publisher that does not exist, subscriber tokens that never
expire, signed requests sent again; and empty messages and the order of
presence members, as docs/protocol.rst states them.

In memory where it can be (``tests.support.Api``, a Clock); the daemon over
sockets only where the wire itself is the point.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote, unquote

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

import notifier.domain.credentials
from notifier.backends.local import LocalBroker
from notifier.backends.redis.addresses import REDIS_FORM, SENTINEL_FORM
from notifier.backends.redis.keys import Keys
from notifier.backends.redis.presence import RedisDirectory
from notifier.config import ConfigError, parse_config
from notifier.domain.credentials import subscriber_claims
from notifier.domain.errors import Unauthorized
from notifier.domain.hub import Hub
from notifier.domain.model import Center, Publisher
from notifier.domain.presence import LocalDirectory, Presence
from notifier.domain.publishers import MAX_UNKNOWN, PUBLISHER_TTL
from notifier.domain.unknown_names import UnknownNames
from notifier.http.listeners import public_site
from notifier.http.public import PublicApp
from notifier.transports.websocket import websocket_factory
from tests.memory_store import MemoryStore
from tests.support import (
    TEXT,
    Api,
    Node,
    Told,
    call,
    event_source,
    expect_json_error,
    result_of,
    setup_site,
    sign,
    signature_header,
    signed_headers,
)
from tests.support.memory import SiteTreq

# 1. A store URL in a configuration error: its scheme and hosts, nothing else

#: URL forms, each wrong somewhere else than in its password, and the
#: scheme and hosts an error may name.
FORMS = [
    ("redis://:{}@localhost/zero", "redis://localhost"),
    ("redis://:{}@localhost:notaport/0", "redis://localhost"),
    ("redis://user:{}@cache.internal:6380/x", "redis://cache.internal:6380"),
    ("redis://cache.internal/zero?password={}", "redis://cache.internal"),
    ("rediss://:{}@cache.internal:6380/0", "rediss://cache.internal:6380"),
    ("redis+sentinel://:{}@s1,s2:26380,[::1]:26381/bad name/0", "redis+sentinel://s1,s2:26380,[::1]:26381"),
    ("redis+sentinel://:{}@s1,s2:26380/main/zero", "redis+sentinel://s1,s2:26380"),
    ("redis+sentinel://user:{}@s1,s2/main", "redis+sentinel://s1,s2"),
    ("redis+sentinel://:{}@s1:99999,s2/main", "redis+sentinel://s1:99999,s2"),
    ("redis+sentinel://s1,s2/main/zero?password={}", "redis+sentinel://s1,s2"),
    ("unix://:{}@/run/redis/redis.sock?db=0", "unix://"),
    ("unix:///run/redis/redis.sock?db=0&password={}", "unix://"),
    ("redis+unix://:{}@/run/redis/redis.sock", "redis+unix://"),
]

#: Passwords of characters that break a URL (none of them an English word,
#: which an error's own sentence may hold).
PASSWORDS = [
    "hQnt3r2", "hQnt/3r2", "pQ/sX/wZ/rK", "pQ@sX@wZ", "uQ:eX:pZ", "Zq7%2FXw%40Kv", "sQx%2fLvw", "/Qxv", "Qxv/",
    "aQ/oX@tZ:aK%2FoJ", "@Qxv", "Qxv@", "Xq,Zw,Kv", "HQ#Tg7", "QQ?tX7", "SQ cX dZ", 'QZ"t\'Zq', "BQ\\sX",
    "Qnïcé/пароль", "%%%Zq", "[BQk]Xs", "::1]:26381@", "s1,s2@Xq",
]


def _refused(url: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[store]\nurl = {json.dumps(url)}\n")
    return str(caught.value)


def _leaks(message: str, password: str, allowed: str) -> list[str]:
    """The 3-character pieces of *password* (as written, encoded or
    decoded) in *message* that are not in *allowed* (the scheme and hosts),
    nor in the forms of a URL the message states."""
    for form in (REDIS_FORM, SENTINEL_FORM):
        message = message.replace(form, "")
    leaked = []
    for form in {password, quote(password, safe=""), unquote(password)}:
        leaked += [form[i:i + 3] for i in range(len(form) - 2)
                   if form[i:i + 3] in message and form[i:i + 3] not in allowed]
    return leaked


@pytest.mark.parametrize("form, allowed", FORMS)
@pytest.mark.parametrize("password", PASSWORDS)
def test_a_store_url_error_never_shows_any_of_the_password(form, allowed, password):
    for written in (password, quote(password, safe="")):
        message = _refused(form.format(written))
        assert message.startswith("store.url: ")
        assert password not in message and written not in message, message
        assert _leaks(message, password, allowed) == [], message


@settings(max_examples=300, deadline=None)
@given(form=st.sampled_from(FORMS),
       password=st.lists(st.sampled_from(["/", "@", ":", "%2F", "%40", "%", "?", "#", ",", "=", "&", "!", "~",
                                          "[", "]", "+", "$", "*", ";", "Zq", "Xw", "Kv", "7", "9"]),
                         min_size=2, max_size=12).map("".join))
def test_no_password_of_any_shape_shows_in_a_store_url_error(form, password):
    template, allowed = form
    try:
        parse_config(f"[store]\nurl = {json.dumps(template.format(password))}\n")
    except ConfigError as e:
        assert _leaks(str(e), password, allowed) == [], str(e)
    # else it broke the URL into another that holds (a query begun in the password, say)


def test_a_store_url_error_still_says_what_is_wrong_and_where():
    assert _refused("redis+sentinel://:secret@s1,s2:26380/main/zero") == \
        "store.url: the database must be a number, got a redis+sentinel: URL for s1,s2:26380"
    # A password that breaks the URL may be anywhere in it: the hosts are not named either.
    message = _refused("redis+sentinel://:se/cret@s1,s2:26380/main/zero")
    assert message.startswith("store.url: expected redis+sentinel://") and "percent-encoded" in message
    assert message.endswith("got a redis+sentinel: URL")
    assert _refused("redis://:secret@cache:6380/zero") == \
        "store.url: the database must be a number, got a redis: URL for cache:6380"
    assert _refused("mysql://localhost/notifier").endswith("got a mysql: URL for localhost")
    assert _refused("notifier.db").endswith("got a value without a scheme")
    # Percent-encoded, a password holds anything.
    assert parse_config('[store]\nurl = "redis://:a%2Fb%40c%3Fd%23e%25f@h/1"\n').store.url.endswith("@h/1")


# 2. A publisher that does not exist costs what one that does costs


class CountingStore(MemoryStore):
    """A MemoryStore that counts the look-ups of each publisher."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: dict[str, int] = {}
        self.pending: dict[str, Deferred[None]] = {}

    async def get_publisher(self, name: str) -> Publisher | None:
        self.asked[name] = self.asked.get(name, 0) + 1
        found = await super().get_publisher(name)
        if name in self.pending:  # what it read comes later
            await self.pending.pop(name)
        return found


def _counting_api() -> tuple[Api, CountingStore]:
    api = Api()
    store = CountingStore()
    api.store = api.publishers.store = api.centers.store = store
    return api, store


def _signed(api: Api, publisher: str, secret: str, method: str, target: str, body: bytes = b"",
            **headers: str) -> dict[str, str]:
    timestamp = int(api.clock.seconds())
    return {"Authorization": signature_header(publisher, timestamp, sign(secret, method, target, timestamp, body)),
            **headers}


def test_an_unknown_publisher_is_looked_up_once_in_a_while_not_on_every_request():
    api, store = _counting_api()
    for _ in range(5):
        expect_json_error(*api.request("GET", "/api/v1/centers", auth=("ghost", "x" * 43)).decoded(),
                          401, "bad_credentials")
        headers = _signed(api, "ghost", "x" * 43, "GET", "/api/v1/centers")
        expect_json_error(*api.request("GET", "/api/v1/centers", headers=headers).decoded(), 401, "bad_credentials")
    assert store.asked == {"ghost": 1}
    api.clock.advance(PUBLISHER_TTL)
    api.request("GET", "/api/v1/centers", auth=("ghost", "x" * 43))
    assert store.asked == {"ghost": 2}
    # A name that cannot be a publisher's is never looked up.
    for name in ("Ghost", "g" * 65, "-ghost"):
        expect_json_error(*api.request("GET", "/api/v1/centers", auth=(name, "x")).decoded(), 401, "bad_credentials")
    assert store.asked == {"ghost": 2}


def test_a_publisher_added_is_known_at_once_though_its_name_was_unknown_a_moment_before():
    api, store = _counting_api()
    assert api.request("PUT", "/api/v1/centers/news", auth=("late", "x" * 43)).status == 401
    auth = api.add_publisher("late")
    assert api.request("PUT", "/api/v1/centers/news", auth=auth).status == 201
    headers = _signed(api, *auth, "GET", "/api/v1/centers/news")
    assert api.request("GET", "/api/v1/centers/news", headers=headers).status == 200


def test_a_look_up_begun_before_a_publisher_was_added_does_not_make_it_unknown():
    clock = Clock()
    store = CountingStore()
    node = Node(store, LocalBroker(clock), clock)
    gate = store.pending["late"] = Deferred()
    looked_up = Deferred.fromCoroutine(node.publishers.publisher("late"))
    added = result_of(Deferred.fromCoroutine(node.publishers.add_publisher("late")))
    gate.callback(None)
    assert result_of(looked_up) is None  # it read the store before the publisher was there
    assert result_of(Deferred.fromCoroutine(node.publishers.publisher("late"))) == added


def test_a_publisher_added_by_another_node_or_process_is_known_at_once():
    clock = Clock()
    store = CountingStore()
    node = Node(store, LocalBroker(clock), clock)
    assert result_of(Deferred.fromCoroutine(node.publishers.publisher("elsewhere"))) is None
    result_of(Deferred.fromCoroutine(store.add_publisher(Publisher("elsewhere", "s" * 43, 0.0, "1", "k" * 20))))
    assert result_of(Deferred.fromCoroutine(node.publishers.publisher("elsewhere"))) is None  # still held unknown
    node.events.control({"type": "publisher_added", "publisher": "elsewhere"})  # another node's announcement
    assert result_of(Deferred.fromCoroutine(node.publishers.publisher("elsewhere"))).name == "elsewhere"
    assert result_of(Deferred.fromCoroutine(node.publishers.publisher("offline"))) is None
    result_of(Deferred.fromCoroutine(store.add_publisher(Publisher("offline", "s" * 43, 0.0, "2", "l" * 20))))
    result_of(Deferred.fromCoroutine(node.publishers.notice_changes()))  # the offline command's, seen by the sweep
    assert result_of(Deferred.fromCoroutine(node.publishers.publisher("offline"))).name == "offline"


def test_names_held_unknown_are_bounded_in_number_and_in_time():
    names = UnknownNames(ttl=2.0, limit=3)
    for i, name in enumerate("abcde"):
        names.add(name, 100.0 + i * 0.1)
    assert len(names) == 3 and "a" not in names and "b" not in names
    assert names.holds("e", 101.9) and not names.holds("e", 102.4)
    names.add("f", 102.5)  # the others are too old by now: dropped
    assert len(names) == 1 and names.holds("f", 102.5)
    names.discard("f")
    assert not names.holds("f", 102.5)
    assert MAX_UNKNOWN >= 1000


class _Spy:
    """Counts the signatures computed, with which key, and the comparisons."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[str] = []
        self.compared = 0
        signature, compare = notifier.domain.credentials.signature, notifier.domain.credentials.hmac.compare_digest

        def signed(secret: str, *args: Any) -> str:
            self.keys.append(secret)
            return signature(secret, *args)

        def compared(a: Any, b: Any) -> bool:
            self.compared += 1
            return compare(a, b)

        monkeypatch.setattr(notifier.domain.credentials, "signature", signed)
        monkeypatch.setattr(notifier.domain.credentials.hmac, "compare_digest", compared)


def test_a_signature_naming_no_publisher_is_computed_and_compared_as_a_wrong_one_is(monkeypatch):
    api = Api()
    name, secret = api.add_publisher("site")
    spy = _Spy(monkeypatch)
    for publisher, key in (("ghost", "x" * 43), ("site", "wrong" * 9)):
        body = b"hello"
        headers = _signed(api, publisher, key, "POST", "/api/v1/centers/news/messages", body, **TEXT)
        answer = api.request("POST", "/api/v1/centers/news/messages", body, headers=headers)
        expect_json_error(*answer.decoded(), 401, "bad_credentials")
    # One HMAC each, with a key as long as a real secret, and one constant-time comparison each.
    assert len(spy.keys) == 2 and spy.compared == 2
    assert spy.keys[1] == secret and len(spy.keys[0]) == len(secret) and spy.keys[0] != secret


# 3. A subscriber token's exp is a finite number


def _raw_token(secret: str, payload: str) -> str:
    """A JWT whose payload is *payload* as written (JSON as Python reads it)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(payload.encode())
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + part(mac)


NOW = 1_700_000_000.0
PUBLISHER = Publisher("site", "s" * 43, 0.0, "1", "k" * 20)

NOT_TIMES = ["Infinity", "-Infinity", "NaN", "1e309", "-1e309", "1" + "0" * 400, '"1800000000"', "true", "null",
             "[1800000000]"]


@pytest.mark.parametrize("exp", NOT_TIMES)
def test_a_token_whose_exp_is_not_a_finite_number_is_invalid(exp):
    with pytest.raises(Unauthorized) as caught:
        subscriber_claims(_raw_token(PUBLISHER.secret, f'{{"sub": "news", "exp": {exp}}}'), PUBLISHER, NOW)
    assert caught.value.code == "invalid_token"


@pytest.mark.parametrize("nbf", NOT_TIMES)
def test_a_token_whose_nbf_is_not_a_finite_number_is_invalid(nbf):
    token = _raw_token(PUBLISHER.secret, f'{{"sub": "news", "exp": 1800000000, "nbf": {nbf}}}')
    with pytest.raises(Unauthorized) as caught:
        subscriber_claims(token, PUBLISHER, NOW)
    assert caught.value.code == "invalid_token"


def test_a_token_without_exp_is_invalid_and_one_with_a_finite_exp_holds():
    with pytest.raises(Unauthorized) as caught:
        subscriber_claims(_raw_token(PUBLISHER.secret, '{"sub": "news"}'), PUBLISHER, NOW)
    assert caught.value.code == "invalid_token"
    for exp in ("1800000000", "1800000000.5", "1.8e9"):
        claims = subscriber_claims(_raw_token(PUBLISHER.secret, f'{{"sub": "news", "exp": {exp}}}'), PUBLISHER, NOW)
        assert claims["exp"] == float(exp)
    with pytest.raises(Unauthorized) as caught:
        subscriber_claims(_raw_token(PUBLISHER.secret, '{"sub": "news", "exp": 1600000000}'), PUBLISHER, NOW)
    assert caught.value.code == "expired_token"


class Listener:
    """The public listener over the centers of an in-memory Api."""

    def __init__(self) -> None:
        self.api = Api()
        self.auth = self.api.add_publisher("site")
        factory = websocket_factory(65536, self.api.centers.dropped)
        app = PublicApp(self.api.publishers, self.api.centers, self.api.config, self.api.clock, factory)
        self.http = SiteTreq(public_site(app, self.api.config, self.api.clock, turn=self.api.turn), self.api.clock)

    def get(self, path: str) -> tuple[int, Any]:
        d = self.http.get("http://127.0.0.1:8080" + path)
        self.http.flush()
        response = result_of(d)
        content = self.http.content(response)
        self.http.flush()
        return response.code, json.loads(result_of(content))


@pytest.mark.parametrize("exp", ["Infinity", "1e309", "NaN"])
def test_a_private_center_refuses_a_token_that_would_never_expire(exp):
    listener = Listener()
    assert listener.api.put_center(listener.auth, "private", {"private": True}).status == 201
    token = _raw_token(listener.auth[1], f'{{"sub": "private", "exp": {exp}}}')
    expect_json_error(*listener.get(f"/sub/site/private?timeout=0&token={token}"), 401, "invalid_token")
    finite = _raw_token(listener.auth[1], f'{{"sub": "private", "exp": {int(NOW) + 10**6}}}')
    assert listener.get(f"/sub/site/private?timeout=0&token={finite}")[0] == 200


# 4. Signed requests: a POST is accepted once, an idempotent request again


def test_the_same_signed_put_get_and_delete_are_answered_again():
    api = Api()
    auth = api.add_publisher("site")
    put = _signed(api, *auth, "PUT", "/api/v1/centers/news")
    assert api.request("PUT", "/api/v1/centers/news", headers=put).status == 201
    assert api.request("PUT", "/api/v1/centers/news", headers=put).status == 200  # it exists: unchanged
    get = _signed(api, *auth, "GET", "/api/v1/centers/news")
    for _ in range(2):
        assert api.request("GET", "/api/v1/centers/news", headers=get).status == 200
    head = _signed(api, *auth, "HEAD", "/api/v1/centers")
    for _ in range(2):
        assert api.request("HEAD", "/api/v1/centers", headers=head).status == 200
    delete = _signed(api, *auth, "DELETE", "/api/v1/centers/news")
    assert api.request("DELETE", "/api/v1/centers/news", headers=delete).status == 204
    expect_json_error(*api.request("DELETE", "/api/v1/centers/news", headers=delete).decoded(),
                      404, "no_such_center")  # answered as it would be anew


def test_the_same_signed_post_is_refused_the_second_time():
    api = Api()
    auth = api.add_publisher("site")
    assert api.put_center(auth, "news").status == 201
    target = "/api/v1/centers/news/messages"
    post = _signed(api, *auth, "POST", target, b"once", **TEXT)
    assert api.request("POST", target, b"once", headers=post).status == 201
    expect_json_error(*api.request("POST", target, b"once", headers=post).decoded(), 401, "replayed_signature")
    batch = json.dumps({"messages": [{"center": "news", "data": "once"}]}).encode()
    post = _signed(api, *auth, "POST", "/api/v1/messages", batch, **{"Content-Type": "application/json"})
    assert api.request("POST", "/api/v1/messages", batch, headers=post).status == 201
    expect_json_error(*api.request("POST", "/api/v1/messages", batch, headers=post).decoded(),
                      401, "replayed_signature")
    assert [m.data for m in api.retained("site", "news", "0-0")[0]] == ["once", "once"]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_on_the_wire_a_site_may_put_a_center_twice_in_a_second_but_not_publish_twice(daemon):
    secret = await daemon.add_publisher("site")
    put = signed_headers("site", secret, "PUT", "/api/v1/centers/news")
    statuses = [(await call("PUT", daemon.api + "/api/v1/centers/news", headers=put))[0] for _ in range(2)]
    assert statuses == [201, 200]
    target = "/api/v1/centers/news/messages"
    post = signed_headers("site", secret, "POST", target, b"once", **TEXT)
    status, body = await call("POST", daemon.api + target, raw=b"once", headers=post)
    assert status == 201, body
    expect_json_error(*await call("POST", daemon.api + target, raw=b"once", headers=post), 401, "replayed_signature")


# 5. Empty messages, and the order of presence members


def test_an_empty_message_is_published_and_delivered_empty():
    listener = Listener()
    assert listener.api.put_center(listener.auth, "news").status == 201
    answer = listener.api.publish(listener.auth, "news", b"")
    assert answer.status == 201, answer
    batch = json.dumps({"messages": [{"center": "news", "data": ""}]})
    assert listener.api.request("POST", "/api/v1/messages", batch, auth=listener.auth,
                                headers={"Content-Type": "application/json"}).status == 201
    status, body = listener.get("/sub/site/news?since=0-0")
    assert status == 200 and [m["data"] for m in body["messages"]] == ["", ""], body


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_an_empty_message_reaches_an_event_stream_as_an_empty_event(daemon):
    auth = await setup_site(daemon)
    stream = await event_source(daemon.public_port, "/sub/site/news")
    assert stream.status == 200
    status, body = await call("POST", f"{daemon.api}/api/v1/centers/news/messages", raw=b"", auth=auth,
                              headers=TEXT)
    assert status == 201, body
    event = await stream.next()
    while "data" not in event or event.get("event", "message") != "message":
        event = await stream.next()
    assert event["data"] == "" and event["id"] == body["id"]
    stream.close()


UIDS = ["mia", "10", "Zoe", "ann", "9", "éva"]


def test_presence_members_are_sorted_by_uid_whatever_the_order_they_came_in():
    clock = Clock()
    hubs: dict[tuple[str, str], Hub] = {}
    presence = Presence(LocalDirectory(), clock, 5.0, lambda p, c: hubs.get((p, c)), lambda event: None,
                        lambda publisher, name, center, fields: None, "n1")
    hub = hubs["site", "room"] = Hub(Center("site", "room", True, None, None, 0.0, "e", True), "e", 10,
                                     clock.seconds, watcher=presence)
    for uid in UIDS:
        hub.subscribe(Told(), (uid, None))
    newcomer = Told()
    hub.subscribe(newcomer, ("bob", None))
    clock.advance(0)
    assert [m["uid"] for m in newcomer.items[0]["members"]] == sorted([*UIDS, "bob"])
    assert [uid for uid, _ in result_of(Deferred.fromCoroutine(presence.members("site/room")))] == \
        sorted([*UIDS, "bob"])


class _Hashes:
    """A Redis that answers HGETALL with its fields in the order given."""

    async def call(self, command: str, *args: Any) -> Any:
        assert command == "hgetall"
        return {uid: "null" for uid in UIDS}


def test_presence_members_in_redis_are_sorted_the_same_way():
    directory = RedisDirectory(_Hashes(), Keys(0), Clock(), "n1")  # type: ignore[arg-type]
    members = result_of(Deferred.fromCoroutine(directory.members("site/room")))
    assert [uid for uid, _ in members] == sorted(UIDS) == ["10", "9", "Zoe", "ann", "mia", "éva"]
