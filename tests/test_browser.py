"""notifier.js in real headless Chromium, on a page of another origin.

The page is served by the test on its own port, so it reaches the daemon
cross-origin (CORS, WebSocket Origin) as a Drupal site would. Connections
are cut by a relay between browser and daemon (Chromium's offline emulation
does not close an open WebSocket).
"""

from __future__ import annotations

import time

import jwt
import pytest
import pytest_twisted
import treq
from twisted.internet import endpoints, reactor
from twisted.web import resource, server, static

from tests.browser import Browser
from tests.relay import Relay
from tests.support import call, sleep, start_daemon

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>notifier test page</title></head><body>
<script src="%(script)s"></script>
<script>
window.received = [];
window.statuses = [];
window.start = function (url, options) {
  options.onMessage = function (data, message) { window.received.push({id: message.id, data: data}); };
  options.onStatus = function (status, detail) { window.statuses.push([status, detail.transport]); };
  window.subscription = Notifier.subscribe(url, options);
};
</script></body></html>
"""

TRANSPORTS = ["websocket", "sse", "longpoll"]


@pytest_twisted.async_yield_fixture(scope="module")
async def browser():
    chromium = Browser()
    await chromium.start()
    yield chromium
    await chromium.stop()


@pytest_twisted.async_yield_fixture
async def site(tmp_path):
    """A daemon that allows only the page's origin, a page server, a center."""
    page = resource.Resource()
    page_port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        server.Site(page))
    origin = f"http://127.0.0.1:{page_port.getHost().port}"
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}", public={"allowed_origins": [origin]})
    page.putChild(b"page.html", static.Data(
        (PAGE % {"script": f"{daemon.public}/notifier.js"}).encode(), "text/html; charset=utf-8"))
    secret = await daemon.add_publisher("drupal")
    status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=("drupal", secret))
    assert status == 201
    yield Site(daemon, secret, f"{origin}/page.html")
    await daemon.service.stopService()
    await page_port.stopListening()


class Site:
    def __init__(self, daemon, secret, page):
        self.daemon, self.secret, self.page = daemon, secret, page

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


@pytest_twisted.ensureDeferred
async def test_falls_back_to_sse_when_websockets_are_refused(browser, site):
    relay = Relay(site.daemon.public_port, block=(b"upgrade: websocket",))
    port = await relay.start()
    try:
        await _subscribe(browser, site, f"http://127.0.0.1:{port}/sub/drupal/news")
        await _connected(browser)
        assert await browser.evaluate("window.subscription.transport") == "sse"
        ids = [await site.publish(f"m{i}") for i in range(3)]
        assert [m["id"] for m in await _received(browser, 3)] == ids
        assert relay.refused >= 1
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_falls_back_to_long_poll_when_streams_are_refused(browser, site):
    relay = Relay(site.daemon.public_port, block=(b"upgrade: websocket", b"accept: text/event-stream"))
    port = await relay.start()
    try:
        await _subscribe(browser, site, f"http://127.0.0.1:{port}/sub/drupal/news")
        await _connected(browser)
        assert await browser.evaluate("window.subscription.transport") == "longpoll"
        ids = [await site.publish(f"m{i}") for i in range(3)]
        assert [m["id"] for m in await _received(browser, 3)] == ids
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
