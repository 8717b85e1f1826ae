"""The operator console (docs/console.rst) in real headless Chromium.

The page is the daemon's own, on its api listener at ``/console/``, over a
daemon running in this process: signing in and out, publishers and their
secrets, the overview's live figures, the live tail, publishing from it,
the page's security policy, and a phone-sized screen. The screenshots of
docs/console.rst (``docs/console-*.png``) are taken here, from real data.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from notifier.http.console import HEADERS
from tests.browser import Browser
from tests.support import (
    ADMIN_TOKEN,
    call,
    event_source,
    make_center,
    opened,
    published,
    sleep,
    start_daemon,
    subscriber_token,
    until,
    websocket,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent.parent
STATIC = ROOT / "notifier" / "static" / "console"
DOCS = ROOT / "docs"
#: Where the screenshots go: the documentation's own with
#: UPDATE_SCREENSHOTS=1 (``make screenshots``), else one folder that each run
#: overwrites.
SHOTS = DOCS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir()) / "notifier-console"
TOKEN_KEY = "notifier.console.token"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

#: Run in every page before its own scripts: Content-Security-Policy
#: violations, as the page's document reports them.
WATCH_POLICY = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push({directive: event.violatedDirective, blocked: event.blockedURI,
                            source: event.sourceFile, line: event.lineNumber, sample: event.sample});
});
"""


class Console:
    """The console in a browser context of its own, driven on the browser's thread."""

    def __init__(self, chromium: Browser, daemon: Any, viewport: dict[str, int] = DESKTOP) -> None:
        self.chromium, self.daemon, self.viewport = chromium, daemon, viewport
        self.context: Any = None
        self.page: Any = None
        self.messages: list[tuple[str, str]] = []   # (type, text) of the page's console
        self.errors: list[str] = []                 # uncaught exceptions of the page
        self.headers: dict[str, str] = {}           # of the answer that brought /console/

    async def open(self) -> Console:
        def open_page() -> dict[str, str]:
            self.context = self.chromium._browser.new_context(viewport=self.viewport)
            self.context.add_init_script(WATCH_POLICY)
            self.page = self.context.new_page()
            self.page.set_default_timeout(15_000)
            self.page.on("console", lambda message: self.messages.append((message.type, message.text)))
            self.page.on("pageerror", lambda error: self.errors.append(str(error)))
            response = self.page.goto(f"{self.daemon.api}/console/")
            assert response is not None and response.status == 200
            return response.headers

        self.headers = await self.chromium.run(open_page)
        return self

    async def run(self, action: Any) -> Any:
        """``action(page)`` on the browser's thread."""
        return await self.chromium.run(lambda: action(self.page))

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        return await self.run(lambda page: page.evaluate(script, arg))

    async def wait_for(self, condition: str, arg: Any = None, timeout: float = 15) -> Any:
        """Until the JS expression *condition* is truthy (bounded); its value.

        Polled with ``evaluate``: ``wait_for_function`` evaluates its
        predicate from a string inside the page, which the console's policy
        (no 'unsafe-eval') refuses, as it should.
        """
        def poll(page: Any) -> Any:
            deadline = time.monotonic() + timeout
            while True:
                value = page.evaluate(condition, arg)
                if value:
                    return value
                if time.monotonic() > deadline:
                    raise AssertionError(f"not within {timeout} s: {condition}")
                page.wait_for_timeout(50)

        return await self.run(poll)

    async def visible(self, selector: str) -> None:
        await self.run(lambda page: page.locator(selector).wait_for(state="visible"))

    async def hidden(self, selector: str) -> None:
        await self.run(lambda page: page.locator(selector).wait_for(state="hidden"))

    async def click(self, selector: str) -> None:
        await self.run(lambda page: page.locator(selector).click())

    async def fill(self, selector: str, text: str) -> None:
        await self.run(lambda page: page.locator(selector).fill(text))

    async def text(self, selector: str) -> str:
        return await self.run(lambda page: page.locator(selector).text_content())

    async def sign_in(self, token: str = ADMIN_TOKEN) -> None:
        await self.fill("#signin-token", token)
        await self.click("#signin-submit")
        await self.visible("#nav")
        await self.hidden("#view-signin")

    async def go(self, route: str, view: str) -> None:
        """Follow the hash route *route* (as a link does) to the view *view*."""
        await self.evaluate("route => { location.hash = route; }", route)
        await self.visible(f"#view-{view}")

    async def tile(self, name: str) -> str:
        return await self.evaluate("id => document.getElementById(id).dataset.value", f"tile-{name}")

    async def token_kept(self) -> str | None:
        return await self.evaluate("key => sessionStorage.getItem(key)", TOKEN_KEY)

    async def fits(self) -> bool:
        """Whether the page is no wider than the screen (no horizontal scrolling)."""
        return await self.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth"
            " && document.body.scrollWidth <= window.innerWidth")

    async def screenshot(self, name: str) -> None:
        """Take the screenshot *name* (a PNG) of the page as it is now."""
        SHOTS.mkdir(exist_ok=True)
        path = SHOTS / name
        path.unlink(missing_ok=True)
        await self.run(lambda page: page.screenshot(path=str(path)))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path

    async def close(self) -> None:
        if self.context is not None:
            await self.chromium.run(lambda: self.context.close())


@pytest_twisted.async_yield_fixture
async def daemon(tmp_path):
    running = await start_daemon(f"sqlite:{tmp_path / 'n.db'}", presence={"leave_grace": 0.5})
    yield running
    if running.service.running:
        await running.service.stopService()


@pytest_twisted.async_yield_fixture
async def console(chromium, daemon):
    page = Console(chromium, daemon)
    await page.open()
    yield page
    await page.close()
    assert page.errors == [], page.errors


async def _publisher(daemon, name: str, *centers: str, **options: Any) -> tuple[str, str]:
    """A publisher with *centers* (made with *options*); its credentials."""
    auth = (name, await daemon.add_publisher(name))
    for center in centers:
        await make_center(daemon, auth, center, **options)
    return auth


async def _entries(console: Console) -> list[dict[str, str]]:
    """The tail's entries, oldest first."""
    entries = await console.evaluate("""() => [...document.querySelectorAll('#tail-list > li')].map(li => ({
        kind: li.dataset.kind, id: li.dataset.id || '', uid: li.dataset.uid || '',
        data: li.querySelector('.entry-data').textContent}))""")
    return list(reversed(entries))


async def _live(console: Console) -> None:
    await console.wait_for("document.getElementById('tail-dot').dataset.state === 'live'")


# signing in


@pytest_twisted.ensureDeferred
async def test_only_the_admin_token_signs_in_and_it_stays_out_of_urls_cookies_and_storage(console):
    await console.visible("#view-signin")
    assert await console.evaluate("document.getElementById('nav').hidden")

    await console.fill("#signin-token", "not-the-admin-token")
    await console.click("#signin-submit")
    await console.visible("#signin-error")
    assert "not this server's admin token" in await console.text("#signin-error")
    assert await console.token_kept() is None
    assert await console.evaluate("document.getElementById('view-overview').hidden")

    await console.sign_in()
    await console.visible("#view-overview")
    assert await console.token_kept() == ADMIN_TOKEN
    await console.wait_for("document.getElementById('tile-uptime').dataset.value !== ''")
    await console.go("#/publishers", "publishers")
    url = await console.evaluate("location.href")
    assert ADMIN_TOKEN not in url and url.endswith("/console/#/publishers"), url
    assert await console.evaluate("document.cookie") == ""
    assert await console.evaluate("localStorage.length") == 0
    assert await console.evaluate("document.getElementById('signin-token').value") == ""

    # a reload of the tab keeps it signed in, where it was
    await console.run(lambda page: page.reload())
    await console.visible("#view-publishers")

    await console.click("#sign-out")
    await console.visible("#view-signin")
    assert await console.token_kept() is None
    assert await console.evaluate("sessionStorage.length") == 0
    assert await console.evaluate("document.getElementById('nav').hidden")

    # a token refused later (changed on the server) brings sign-in back, saying so
    await console.sign_in()
    await console.evaluate("key => sessionStorage.setItem(key, 'a token the server has not')", TOKEN_KEY)
    await console.visible("#view-signin")
    assert "refused the admin token" in await console.text("#status-text")
    assert await console.token_kept() is None


# publishers and their secrets


@pytest_twisted.ensureDeferred
async def test_a_publisher_s_secret_is_shown_once_works_rotates_and_the_publisher_is_removed(console, daemon):
    await _publisher(daemon, "intranet", "news")
    await _publisher(daemon, "shop", "orders", "stock", "user.17.cart")
    await console.sign_in()
    await console.click("nav a[data-nav=publishers]")
    await console.visible("tr[data-publisher=intranet]")

    await console.fill("#add-publisher-name", "drupal-main")
    await console.click("#add-publisher button[type=submit]")
    await console.visible("#secret-box")
    assert "will not be shown again" in await console.text("#secret-box")
    secret = await console.text("#secret-value")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret), secret
    await console.visible("tr[data-publisher=drupal-main]")
    # each publisher's Pusher app id and key, as the API gives them
    status, body = await daemon.admin("GET", "/admin/v1/publishers/drupal-main")
    assert status == 200, body
    assert await console.text("tr[data-publisher=drupal-main] td.app-id") == body["pusher"]["app_id"]
    assert await console.text("tr[data-publisher=drupal-main] td.app-key") == body["pusher"]["key"]
    status, body = await call("GET", f"{daemon.api}/api/v1/centers", auth=("drupal-main", secret))
    assert status == 200, body
    await make_center(daemon, ("drupal-main", secret), "news")
    await make_center(daemon, ("drupal-main", secret), "user.17", private=True)

    # a name taken already is refused, and said so
    await console.fill("#add-publisher-name", "intranet")
    await console.click("#add-publisher button[type=submit]")
    await console.wait_for("document.getElementById('status').dataset.kind === 'error'")
    assert "publisher_exists" in await console.text("#status-text")
    await console.fill("#add-publisher-name", "")

    # shown once: gone from the page once the operator has moved on
    await console.click("#secret-done")
    await console.hidden("#secret-box")
    assert secret not in await console.evaluate("document.documentElement.outerHTML")

    # rotating asks first, then shows the new secret the same way; the old one stops working
    await console.go("#/overview", "overview")
    await console.go("#/publishers", "publishers")
    await console.click("tr[data-publisher=drupal-main] >> text=Rotate secret")
    await console.visible("#rotate-dialog")
    await console.click("#rotate-confirm")
    await console.hidden("#rotate-dialog")
    await console.visible("#secret-box")
    rotated = await console.text("#secret-value")
    assert rotated != secret and len(rotated) == 43
    assert "drupal-main" in await console.text("#secret-publisher")
    status, _ = await call("GET", f"{daemon.api}/api/v1/centers", auth=("drupal-main", secret))
    assert status == 401
    status, body = await call("GET", f"{daemon.api}/api/v1/centers", auth=("drupal-main", rotated))
    assert status == 200 and {c["name"] for c in body["centers"]} == {"news", "user.17"}, body
    await console.wait_for(
        "document.querySelector('tr[data-publisher=\"drupal-main\"] td.num').textContent === '2'")
    await console.screenshot("console-publishers.png")

    # removing takes the publisher's name, typed
    await console.click("tr[data-publisher=drupal-main] >> text=Remove")
    await console.visible("#remove-dialog")
    assert "2 centers" in await console.text("#remove-dialog")
    assert await console.evaluate("document.getElementById('remove-confirm').disabled")
    await console.fill("#remove-typed", "drupal-mai")
    assert await console.evaluate("document.getElementById('remove-confirm').disabled")
    await console.run(lambda page: page.locator("#remove-typed").press("Enter"))   # no way round it
    assert await console.evaluate("document.getElementById('remove-dialog').open")
    await console.fill("#remove-typed", "drupal-main")
    assert not await console.evaluate("document.getElementById('remove-confirm').disabled")
    await console.click("#remove-confirm")
    await console.hidden("tr[data-publisher=drupal-main]")
    assert "drupal-main removed" in await console.text("#status-text")
    status, body = await daemon.admin("GET", "/admin/v1/publishers")
    assert status == 200 and [p["name"] for p in body["publishers"]] == ["intranet", "shop"], body
    status, _ = await call("GET", f"{daemon.api}/api/v1/centers", auth=("drupal-main", rotated))
    assert status == 401

    # cancelling removes nothing
    await console.click("tr[data-publisher=intranet] >> text=Remove")
    await console.fill("#remove-typed", "intranet")
    await console.click("#remove-dialog [data-close]")
    await console.hidden("#remove-dialog")
    status, body = await daemon.admin("GET", "/admin/v1/publishers")
    assert [p["name"] for p in body["publishers"]] == ["intranet", "shop"], body


# the overview


async def _steady_load(daemon, site: tuple[str, str], running: list[bool]) -> int:
    """Publish at a few different rates while *running* holds; how many were published."""
    count = 0
    while running[0]:
        for n in range(1 + count // 20 % 4):
            await published(daemon, site, json.dumps({"event": "comment", "node": 40 + n, "seq": count}))
            count += 1
        await sleep(0.15)
    return count


@pytest_twisted.ensureDeferred
async def test_the_overview_follows_connections_and_message_rates_as_they_change(console, daemon):
    site = await _publisher(daemon, "drupal-main", "news", "user.17")
    intranet = await _publisher(daemon, "intranet", "alerts")
    await _publisher(daemon, "shop", "orders", "stock")
    await console.sign_in()
    await console.wait_for("document.getElementById('tile-websocket').dataset.value === '0'")
    await console.wait_for("document.querySelector('#chart-connections canvas') !== null")
    points = int(await console.evaluate("document.getElementById('chart-connections').dataset.points"))
    assert await console.tile("publishers") == "3" and await console.tile("centers") == "5"
    assert "sqlite" in await console.text("#node-line")

    sockets = [await websocket(f"{daemon.ws}/sub/drupal-main/news", daemon.public_port) for _ in range(5)]
    await console.wait_for("document.getElementById('tile-websocket').dataset.value === '5'")
    # the chart has the same figure, and goes on gaining points
    await console.wait_for(
        "JSON.parse(document.getElementById('chart-connections').dataset.last || '{}').websocket === 5")
    await console.wait_for("n => +document.getElementById('chart-connections').dataset.points > n + 2", points)

    streams = [await event_source(daemon.public_port, "/sub/intranet/alerts") for _ in range(2)]
    waiting = defer.ensureDeferred(call("GET", f"{daemon.public}/sub/intranet/alerts?timeout=14"))
    await console.wait_for("document.getElementById('tile-sse').dataset.value === '2'")
    await console.wait_for("document.getElementById('tile-longpoll').dataset.value === '1'")

    # messages in and out per second, from the cumulative counters
    running = [True]
    load = defer.ensureDeferred(_steady_load(daemon, site, running))
    await console.wait_for("+document.getElementById('tile-in-rate').dataset.value > 0")
    await console.wait_for("+document.getElementById('tile-out-rate').dataset.value > 0")
    rates = json.loads(await console.evaluate("document.getElementById('chart-messages').dataset.last"))
    assert rates["out"] > 0, rates
    assert await console.tile("centers-live") == "2"

    # and back down as subscribers leave
    for ws in sockets[:2]:
        ws.close()
        await ws.closed
    await console.wait_for("document.getElementById('tile-websocket').dataset.value === '3'")
    await sleep(6)
    await console.screenshot("console-overview.png")
    running[0] = False
    assert await load > 0
    await published(daemon, intranet, "the long-poll's answer", "alerts")
    status, body = await waiting
    assert status == 200 and body["messages"][0]["data"] == "the long-poll's answer", body
    for ws in sockets[2:]:
        ws.close()
    for stream in streams:
        stream.close()


# the live tail


def _member_token(secret: str, uid: str, info: Any) -> str:
    return subscriber_token(secret, centers=["room.*"], uid=uid, info=info)


@pytest_twisted.ensureDeferred
async def test_the_tail_shows_messages_in_order_holds_them_while_paused_and_shows_presence(console, daemon):
    site = await _publisher(daemon, "drupal-main", "room.1", private=True, presence=True)
    await console.sign_in()
    await console.go("#/publishers/drupal-main", "centers")
    await console.visible("tr[data-center='room.1']")
    await console.click("tr[data-center='room.1'] >> text=Tail")
    await console.visible("#view-tail")
    await _live(console)
    assert "room.1" in await console.text("#tail-center")
    await console.wait_for("document.querySelector('#tail-list > li[data-kind=members]') !== null")

    texts = ["Ann commented on “Spring fair”", '{"event": "edit", "node": 5, "by": "Bob"}', "Bob is typing…"]
    ids = [await published(daemon, site, text, "room.1") for text in texts]
    await console.wait_for("document.querySelectorAll('#tail-list > li[data-kind=message]').length === 3")
    messages = [e for e in await _entries(console) if e["kind"] == "message"]
    assert [(e["id"], e["data"]) for e in messages] == list(zip(ids, texts, strict=True))

    # paused: what arrives is counted and held; on resume it is all there, in order
    await console.click("#tail-pause")
    assert await console.evaluate("document.getElementById('tail-pause').getAttribute('aria-pressed')") == "true"
    held = ['{"event": "comment", "node": 5, "by": "Cem"}', "3 new replies on “Spring fair”"]
    ids += [await published(daemon, site, text, "room.1") for text in held]
    await console.wait_for("document.getElementById('tail-pending').dataset.count === '2'")
    assert "2 new" in await console.text("#tail-pending")
    assert len([e for e in await _entries(console) if e["kind"] == "message"]) == 3
    await console.click("#tail-pause")
    await console.wait_for("document.querySelectorAll('#tail-list > li[data-kind=message]').length === 5")
    messages = [e for e in await _entries(console) if e["kind"] == "message"]
    assert [(e["id"], e["data"]) for e in messages] == list(zip(ids, texts + held, strict=True))
    assert await console.evaluate("document.getElementById('tail-pending').hidden")

    # a member joins the presence center
    member = await websocket(
        f"{daemon.ws}/sub/drupal-main/room.1?format=json&token={_member_token(site[1], '17', {'name': 'Ann'})}",
        daemon.public_port)
    await opened(member)
    await console.wait_for("document.querySelector('#tail-list > li[data-kind=join][data-uid=\"17\"]') !== null")
    join = [e for e in await _entries(console) if e["kind"] == "join"]
    assert join == [{"kind": "join", "id": "", "uid": "17", "data": '17 {"name":"Ann"} joined'}], join
    await published(daemon, site, "Ann is typing…", "room.1")
    await console.wait_for("document.querySelectorAll('#tail-list > li[data-kind=message]').length === 6")
    await sleep(1.5)   # the highlight of new entries has faded
    await console.screenshot("console-tail.png")

    # leaving the tail ends its stream: the daemon forgets the observer
    hub = daemon.service.centers.loaded("drupal-main", "room.1")
    assert len(hub.observers) == 1
    await console.click("#tail-publisher-link")
    await console.visible("#view-centers")
    await until(lambda: len(hub.observers) == 0, what="the tail's stream is closed")
    member.close()
    await member.closed


@pytest_twisted.ensureDeferred
async def test_a_message_published_from_the_tail_reaches_a_subscriber_and_the_tail_as_text(console, daemon):
    site = await _publisher(daemon, "drupal-main", "news")
    subscriber = await websocket(f"{daemon.ws}/sub/drupal-main/news?format=json", daemon.public_port)
    await opened(subscriber)
    await console.sign_in()
    await console.go("#/tail/drupal-main/news", "tail")
    await _live(console)

    text = 'Hello <img src=x onerror="window.pwned = 1"> & <b>all</b>'
    await console.fill("#tail-publish-text", text)
    await console.click("#tail-publish button[type=submit]")
    received = json.loads(await subscriber.next())
    assert received["data"] == text and received["center"] == "news", received
    await console.wait_for("document.querySelectorAll('#tail-list > li[data-kind=message]').length === 1")
    [entry] = await _entries(console)
    assert (entry["id"], entry["data"]) == (received["id"], text)
    assert f"Published {received['id']} to 1 subscriber" in await console.text("#status-text")
    # the text is shown as text, never as markup
    assert await console.evaluate("document.querySelector('#tail-list img, #tail-list b') === null")
    assert await console.evaluate("window.pwned === undefined")
    assert await console.evaluate("document.getElementById('tail-publish-text').value") == ""

    # Ctrl+Enter in the text publishes too; and what the publisher sends shows up between
    await published(daemon, site, "from the site", "news")
    await console.fill("#tail-publish-text", "second, by keyboard")
    await console.run(lambda page: page.locator("#tail-publish-text").press("Control+Enter"))
    assert json.loads(await subscriber.next())["data"] == "from the site"
    assert json.loads(await subscriber.next())["data"] == "second, by keyboard"
    await console.wait_for("document.querySelectorAll('#tail-list > li[data-kind=message]').length === 3")
    assert [e["data"] for e in await _entries(console)] == [text, "from the site", "second, by keyboard"]

    # deleting the center ends the tail, saying why
    status, _ = await call("DELETE", f"{daemon.api}/api/v1/centers/news", auth=site)
    assert status == 204
    await console.wait_for("document.getElementById('tail-dot').dataset.state === 'ended'")
    assert "deleted" in await console.text("#tail-state")
    subscriber.close()


# the page itself


class _Markup(HTMLParser):
    """Inline scripts, style elements and attributes, and event handler attributes of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{name}= on <{tag}>" for name in names if name == "style" or name.startswith("on")]


@pytest_twisted.ensureDeferred
async def test_the_console_keeps_to_its_security_policy_on_every_view(console, daemon):
    for name, value in HEADERS.items():
        assert console.headers.get(name.decode()) == value.decode(), name
    policy = console.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert console.headers["x-frame-options"] == "DENY"
    for path in ("console.js", "console.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
        status, _ = await call("GET", f"{daemon.api}/console/{path}")
        assert status == 200, path
    status, _ = await call("GET", f"{daemon.public}/console/")
    assert status == 404
    markup = _Markup()
    markup.feed((STATIC / "index.html").read_text())
    assert markup.inline == []

    site = await _publisher(daemon, "drupal-main", "news", "room.1", private=True, presence=True)
    await console.sign_in()
    await console.wait_for("+document.getElementById('chart-connections').dataset.points >= 2")
    await console.go("#/publishers", "publishers")
    await console.fill("#add-publisher-name", "intranet")
    await console.click("#add-publisher button[type=submit]")
    await console.visible("#secret-box")
    await console.click("tr[data-publisher=intranet] >> text=Rotate secret")
    await console.click("#rotate-dialog [data-close]")
    await console.click("tr[data-publisher=drupal-main] >> text=Centers")
    await console.visible("tr[data-center='room.1']")
    await console.fill("#add-center-name", "user.17")
    await console.click("#add-center-presence")
    await console.click("#add-center button[type=submit]")
    await console.visible("tr[data-center='user.17']")
    assert "private" in await console.text("tr[data-center='user.17']")
    await console.click("tr[data-center='user.17'] >> text=Delete")
    await console.click("#delete-center-confirm")
    await console.hidden("tr[data-center='user.17']")
    await console.click("tr[data-center='room.1'] >> text=Tail")
    await _live(console)
    await published(daemon, site, "hello", "room.1")
    await console.wait_for("document.querySelector('#tail-list > li[data-kind=message]') !== null")
    await console.click("#tail-pause")
    await console.click("#tail-clear")
    await console.click("#tail-pause")
    await console.go("#/overview", "overview")
    await sleep(1.2)

    assert await console.evaluate("window.__violations") == []
    assert [m for m in console.messages if m[0] in ("error", "warning")] == []


@pytest_twisted.ensureDeferred
async def test_on_a_phone_the_console_fits_the_screen(chromium, daemon):
    site = await _publisher(daemon, "drupal-main", "news", "user.17.notifications")
    await _publisher(daemon, "intranet-with-a-rather-long-name", "news", "user.17.notifications")
    phone = await Console(chromium, daemon, PHONE).open()
    try:
        await phone.visible("#view-signin")
        assert await phone.fits()
        await phone.sign_in()
        await phone.wait_for("document.querySelector('#chart-messages canvas') !== null")
        await phone.wait_for("+document.getElementById('chart-connections').dataset.points >= 2")
        assert await phone.fits()
        await phone.go("#/publishers", "publishers")
        await phone.visible("tr[data-publisher=drupal-main]")
        assert await phone.fits()
        await phone.go("#/publishers/intranet-with-a-rather-long-name", "centers")
        await phone.visible("tr[data-center='user.17.notifications']")
        assert await phone.fits()
        await phone.go("#/tail/drupal-main/user.17.notifications", "tail")
        await _live(phone)
        await published(daemon, site, "x" * 300, "user.17.notifications")
        await phone.wait_for("document.querySelector('#tail-list > li[data-kind=message]') !== null")
        assert await phone.fits()
        assert phone.errors == []
    finally:
        await phone.close()


@pytest_twisted.ensureDeferred
async def test_the_tail_shows_the_event_of_a_message_that_has_one(console, daemon):
    site = await _publisher(daemon, "drupal-main", "news")
    await console.sign_in()
    await console.go("#/tail/drupal-main/news", "tail")
    await _live(console)
    ids = []
    for text, event in (("A-1 is 12.50", "price"), ("plain", None)):
        headers = {"Content-Type": "text/plain", **({"Notifier-Event": event} if event else {})}
        status, body = await call("POST", f"{daemon.api}/api/v1/centers/news/messages", raw=text.encode(),
                                  auth=site, headers=headers)
        assert status == 201, body
        ids.append(body["id"])
    await console.wait_for("document.querySelectorAll('#tail-list > li[data-kind=message]').length === 2")
    assert [(e["id"], e["data"]) for e in await _entries(console)] == [(ids[0], "A-1 is 12.50"), (ids[1], "plain")]
    # A message of an event of its own shows it after its id; one of the default, its id alone.
    labels = await console.evaluate("""() => [...document.querySelectorAll('#tail-list > li[data-kind=message]')]
        .reverse().map(li => [li.dataset.event || null, li.querySelector('.entry-id').textContent])""")
    assert labels == [["price", f"{ids[0]} price"], [None, ids[1]]]
