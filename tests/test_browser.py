"""notifier.js in real headless Chromium, on a page of another origin.

The page is served by the test on its own port, so it reaches the daemon
cross-origin (CORS, WebSocket Origin) as a Drupal site would. Connections
are cut by a relay between browser and daemon (Chromium's offline emulation
does not close an open WebSocket). The page's server also mints subscriber
tokens at ``/token``, as the site would for a token function.
"""

from __future__ import annotations

import time

import jwt
import pytest
import pytest_twisted
import treq
from twisted.web import resource

from tests.browser import page_beside_daemon
from tests.relay import Relay
from tests.support import call, sleep

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>notifier test page</title></head><body>
<script src="%(script)s"></script>
<script>
window.received = [];
window.statuses = [];
window.details = [];
window.tokenCalls = 0;
window.start = function (url, options) {
  if (options.tokenUrl) {
    var tokenUrl = options.tokenUrl;
    delete options.tokenUrl;
    options.token = function () {
      window.tokenCalls += 1;
      return fetch(tokenUrl, {cache: "no-store"}).then(function (response) {
        if (!response.ok) throw new Error("token: HTTP " + response.status);
        return response.text();
      });
    };
  }
  options.onMessage = function (data, message) { window.received.push({id: message.id, data: data}); };
  options.onStatus = function (status, detail) {
    window.statuses.push([status, detail.transport]);
    window.details.push({status: status, delay: detail.delay, error: detail.error, code: detail.status});
  };
  window.subscription = Notifier.subscribe(url, options);
};
</script></body></html>
"""

TRANSPORTS = ["websocket", "sse", "longpoll"]


@pytest.fixture
def browser(chromium):
    """The module's Chromium (tests/conftest.py), as these tests call it."""
    return chromium


@pytest_twisted.async_yield_fixture
async def site(tmp_path):
    """A daemon that allows only the page's origin, a page server, a center."""
    daemon, page, origin, page_port = await page_beside_daemon(tmp_path, PAGE)
    secret = await daemon.add_publisher("drupal")
    tokens = TokenMinter(secret)
    page.putChild(b"token", tokens)
    status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=("drupal", secret))
    assert status == 201
    yield Site(daemon, secret, f"{origin}/page.html", tokens, f"{origin}/token")
    await daemon.service.stopService()
    await page_port.stopListening()


class TokenMinter(resource.Resource):
    """The site's side of a token function: a fresh subscriber token per GET,
    valid for ``lifetime`` seconds; the first ``failures`` GETs answer 503."""

    isLeaf = True

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.lifetime = 600
        self.failures = 0
        self.expiries: list[int] = []  # the exp of each token minted

    def render_GET(self, request):
        request.setHeader(b"cache-control", b"no-store")
        if self.failures > 0:
            self.failures -= 1
            request.setResponseCode(503)
            return b"try again"
        exp = int(time.time()) + self.lifetime
        self.expiries.append(exp)
        request.setHeader(b"content-type", b"text/plain")
        return jwt.encode({"centers": ["user.17.*"], "exp": exp}, self.secret.encode(),
                          algorithm="HS256").encode()


class Site:
    def __init__(self, daemon, secret, page, tokens, token_url):
        self.daemon, self.secret, self.page = daemon, secret, page
        self.tokens, self.token_url = tokens, token_url

    async def private_center(self, name: str = "user.17.inbox") -> str:
        status, _ = await call("PUT", f"{self.daemon.api}/api/v1/centers/{name}", {"private": True},
                               auth=("drupal", self.secret))
        assert status == 201
        return name

    async def publish(self, text: str, center: str = "news") -> str:
        status, body = await call("POST", f"{self.daemon.api}/api/v1/centers/{center}/messages",
                                  raw=text.encode(), auth=("drupal", self.secret),
                                  headers={"Content-Type": "text/plain"})
        assert status == 201, body
        return body["id"]


async def _subscribe(browser, site, url, **options):
    await browser.goto(site.page)
    await browser.evaluate("([url, options]) => start(url, options)", [url, options])


async def _connected(browser, count=1):
    await browser.wait_for(
        "n => window.statuses.filter(s => s[0] === 'connected').length >= n", count)


async def _received(browser, count):
    await browser.wait_for("n => window.received.length >= n", count)
    await sleep(0.2)  # time for any duplicate to show up
    return await browser.evaluate("window.received")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_each_transport_delivers_cross_origin(browser, site, transport):
    await _subscribe(browser, site, f"{site.daemon.public}/sub/drupal/news", transports=[transport])
    await _connected(browser)
    texts = ["one", "two\nlines", "ünïcode ✓", '{"json": true}', "five"]
    ids = [await site.publish(text) for text in texts]
    received = await _received(browser, len(texts))
    assert [m["data"] for m in received] == texts
    assert [m["id"] for m in received] == ids
    assert await browser.evaluate("window.subscription.transport") == transport


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_resumes_after_the_connection_is_cut(browser, site, transport):
    relay = Relay(site.daemon.public_port)
    port = await relay.start()
    try:
        await _subscribe(browser, site, f"http://127.0.0.1:{port}/sub/drupal/news", transports=[transport])
        await _connected(browser)
        before = [await site.publish(f"before {i}") for i in range(2)]
        await _received(browser, 2)
        await relay.cut()
        during = [await site.publish(f"during {i}") for i in range(3)]
        await browser.wait_for("() => window.statuses.some(s => s[0] === 'reconnecting')")
        await sleep(1.0)  # refused for a while: the client backs off and retries
        await relay.restore()
        await _connected(browser, 2)
        after = [await site.publish("after")]
        received = await _received(browser, 6)
        assert [m["id"] for m in received] == before + during + after
        statuses = [s[0] for s in await browser.evaluate("window.statuses")]
        assert "lost" not in statuses
    finally:
        await relay.stop()


@pytest.mark.parametrize("refused, fallback", [
    ((b"upgrade: websocket",), "sse"),
    ((b"upgrade: websocket", b"accept: text/event-stream"), "longpoll"),
], ids=["sse-when-websockets-are-refused", "long-poll-when-streams-are-refused"])
@pytest_twisted.ensureDeferred
async def test_falls_back_to_the_next_transport(browser, site, refused, fallback):
    relay = Relay(site.daemon.public_port, block=refused)
    port = await relay.start()
    try:
        await _subscribe(browser, site, f"http://127.0.0.1:{port}/sub/drupal/news")
        await _connected(browser)
        assert await browser.evaluate("window.subscription.transport") == fallback
        ids = [await site.publish(f"m{i}") for i in range(3)]
        assert [m["id"] for m in await _received(browser, 3)] == ids
        assert relay.refused >= 1
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_private_center_with_a_token(browser, site):
    daemon = site.daemon
    status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/user.17.inbox", {"private": True},
                           auth=("drupal", site.secret))
    assert status == 201
    token = jwt.encode({"centers": ["user.17.*"], "exp": int(time.time()) + 600},
                       site.secret.encode(), algorithm="HS256")
    for transport in TRANSPORTS:
        await _subscribe(browser, site, f"{daemon.public}/sub/drupal/user.17.inbox",
                         token=token, transports=[transport])
        await _connected(browser)
        message_id = await site.publish(f"for you over {transport}", center="user.17.inbox")
        [received] = await _received(browser, 1)
        assert received == {"id": message_id, "data": f"for you over {transport}"}
        await browser.evaluate("window.subscription.close()")


@pytest_twisted.ensureDeferred
async def test_a_refused_subscription_fails_instead_of_retrying(browser, site):
    await _subscribe(browser, site, f"{site.daemon.public}/sub/drupal/nothing-here")
    failed = await browser.wait_for(
        "() => window.statuses.find(s => s[0] === 'failed') || null")
    assert failed == ["failed", "longpoll"]  # websocket and sse gave way, long-poll was told 404


@pytest_twisted.ensureDeferred
async def test_tells_the_page_when_messages_were_lost(browser, site):
    await _subscribe(browser, site, f"{site.daemon.public}/sub/drupal/news",
                     since="gone-42", transports=["websocket"])
    await browser.wait_for("() => window.statuses.some(s => s[0] === 'lost')")


@pytest_twisted.ensureDeferred
async def test_the_script_is_served_with_caching_headers(site):
    response = await treq.get(f"{site.daemon.public}/notifier.js", persistent=False)
    assert response.code == 200
    assert b"Notifier" in await response.content()
    headers = response.headers
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"application/javascript")
    etag = headers.getRawHeaders(b"etag")[0]
    again = await treq.get(f"{site.daemon.public}/notifier.js", headers={"If-None-Match": etag},
                           persistent=False)
    assert again.code == 304
    assert await again.content() == b""


async def _statuses(browser):
    return [s[0] for s in await browser.evaluate("window.statuses")]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_a_token_function_is_called_for_each_connection(browser, site, transport):
    center = await site.private_center()
    relay = Relay(site.daemon.public_port)
    port = await relay.start()
    try:
        await _subscribe(browser, site, f"http://127.0.0.1:{port}/sub/drupal/{center}",
                         tokenUrl=site.token_url, transports=[transport])
        await _connected(browser)
        before = [await site.publish(f"before {i}", center=center) for i in range(2)]
        await _received(browser, 2)
        assert await browser.evaluate("window.tokenCalls") == 1
        assert len(site.tokens.expiries) == 1
        await relay.cut()
        during = [await site.publish(f"during {i}", center=center) for i in range(3)]
        await browser.wait_for("() => window.statuses.some(s => s[0] === 'reconnecting')")
        await sleep(1.0)  # refused for a while: each new attempt asks for a token
        await relay.restore()
        await _connected(browser, 2)
        after = [await site.publish("after", center=center)]
        received = await _received(browser, 6)
        assert [m["id"] for m in received] == before + during + after
        assert [m["data"] for m in received] == [
            "before 0", "before 1", "during 0", "during 1", "during 2", "after"]
        statuses = await _statuses(browser)
        calls = await browser.evaluate("window.tokenCalls")
        assert calls >= 2
        assert calls == statuses.count("connecting")  # once per connection attempt
        assert "failed" not in statuses and "lost" not in statuses
        assert await browser.evaluate("window.subscription.transport") == transport
    finally:
        await relay.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_an_expired_token_is_renewed_without_loss(browser, site, transport):
    """WebSockets are closed with 4401 and event streams ended when their
    token expires, a long-poll is answered 401: the page gets a fresh token
    from its function and resumes where it was."""
    center = await site.private_center()
    site.tokens.lifetime = 5  # every token minted: 4 to 5 seconds left
    await _subscribe(browser, site, f"{site.daemon.public}/sub/drupal/{center}",
                     tokenUrl=site.token_url, transports=[transport])
    await _connected(browser)
    [first_expiry] = site.tokens.expiries
    before = [await site.publish(f"before {i}", center=center) for i in range(2)]
    await _received(browser, 2)
    await sleep(max(0.0, first_expiry - time.time()) + 0.3)  # the first token has expired
    at_expiry = [await site.publish("at expiry", center=center)]
    await browser.wait_for("() => window.tokenCalls >= 2", timeout=10)
    await _connected(browser, 2)
    after = [await site.publish(f"after {i}", center=center) for i in range(2)]
    received = await _received(browser, 5)
    assert [m["id"] for m in received] == before + at_expiry + after
    assert [m["data"] for m in received] == ["before 0", "before 1", "at expiry", "after 0", "after 1"]
    assert await browser.evaluate("window.tokenCalls") >= 2
    assert len(site.tokens.expiries) >= 2
    statuses = await _statuses(browser)
    assert "failed" not in statuses and "lost" not in statuses
    # Renewed promptly: a short random delay, not a backoff after failures.
    details = await browser.evaluate("window.details")
    renewal = next(d for d in details if d["status"] == "reconnecting")
    assert 0 < renewal["delay"] <= 1000
    assert await browser.evaluate("window.subscription.transport") == transport


@pytest_twisted.ensureDeferred
async def test_an_expired_string_token_fails_instead_of_looping(browser, site):
    center = await site.private_center()
    token = jwt.encode({"centers": ["user.17.*"], "exp": int(time.time()) + 3},
                       site.secret.encode(), algorithm="HS256")
    await _subscribe(browser, site, f"{site.daemon.public}/sub/drupal/{center}",
                     token=token, transports=["websocket"])
    await _connected(browser)
    message_id = await site.publish("while it lasts", center=center)
    assert [m["id"] for m in await _received(browser, 1)] == [message_id]
    failed = await browser.wait_for(
        "() => window.details.find(d => d.status === 'failed') || null", timeout=10)
    assert failed["code"] == 401
    statuses = await _statuses(browser)
    assert statuses == ["connecting", "connected", "failed", "closed"]  # never retried


@pytest_twisted.ensureDeferred
async def test_a_failing_token_function_is_retried_with_backoff(browser, site):
    center = await site.private_center()
    site.tokens.failures = 2
    await _subscribe(browser, site, f"{site.daemon.public}/sub/drupal/{center}",
                     tokenUrl=site.token_url)
    await _connected(browser)
    details = await browser.evaluate("window.details")
    retries = [d for d in details if d["status"] == "reconnecting"]
    assert [d["error"] for d in retries] == ["token: HTTP 503"] * 2
    assert retries[0]["delay"] <= 500 < retries[1]["delay"] <= 1000  # exponential backoff
    assert await browser.evaluate("window.tokenCalls") == 3
    # A token that could not be had is no reason to give the transport up.
    assert await browser.evaluate("window.subscription.transport") == "websocket"
    message_id = await site.publish("at last", center=center)
    assert [m["id"] for m in await _received(browser, 1)] == [message_id]
