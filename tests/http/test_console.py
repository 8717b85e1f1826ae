"""The operator console (docs/console.rst) in real headless Chromium.

The page is the daemon's own, on its api listener at ``/console/``, over a
daemon running in this process: signing in and out, publishers and their
secrets, the overview's figures and its charts of the server's history, a
publisher's centers searched, sorted and paged, a center's page (its
settings, subscribers, members, what it retains and what follows live),
where the page says what, every control named for assistive technology,
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

from notifier.domain.centers import new_epoch
from notifier.domain.model import Center
from notifier.http.console import HEADERS
from tests.browser import Browser
from tests.pusher.support import PusherSocket, pusher_app
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
            self.context = self.chromium._browser.new_context(viewport=self.viewport, locale="en-US")
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

    async def press(self, selector: str, key: str) -> None:
        await self.run(lambda page: page.locator(selector).press(key))

    async def reload(self) -> None:
        await self.run(lambda page: page.reload())

    async def aria(self, selector: str = "body") -> str:
        """The accessibility tree Chromium makes of *selector*, as Playwright writes it (YAML)."""
        return await self.run(lambda page: page.locator(selector).aria_snapshot())

    async def requests(self) -> list[str]:
        """The URLs the page asks for from now on, as it asks for them (a list that grows)."""
        asked: list[str] = []
        await self.run(lambda page: page.on("request", lambda request: asked.append(request.url)))
        return asked

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

    async def screenshot(self, name: str, height: int | None = None) -> None:
        """Take the screenshot *name* (a PNG) of the page as it is now (on
        a screen *height* pixels high, when given)."""
        SHOTS.mkdir(exist_ok=True)
        path = SHOTS / name
        path.unlink(missing_ok=True)

        def take(page: Any) -> None:
            if height is not None:
                page.set_viewport_size({"width": self.viewport["width"], "height": height})
            page.screenshot(path=str(path))
            page.set_viewport_size(self.viewport)

        await self.run(take)
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


async def _stored_centers(daemon, publisher: str, names: list[str]) -> None:
    """Centers of *publisher* written straight into the store of the daemon
    under test, as fast as it takes them: thousands, without an HTTP call each."""
    store = daemon.service.centers.store
    created = time.time()
    for name in names:
        added = await store.add_center(Center(publisher, name, False, None, None, created, new_epoch()))
        assert added is not None and added[1], name


def _shown(text: str) -> str:
    """A message's text as the console shows it: a JSON object or array pretty-printed."""
    if text.strip()[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    return text


async def _entries(console: Console) -> list[dict[str, str]]:
    """The entries of a center's list (messages, presence items, notes), oldest first."""
    entries = await console.evaluate("""() => [...document.querySelectorAll('#tail-list > li.entry')].map(li => ({
        kind: li.dataset.kind, id: li.dataset.id || '', uid: li.dataset.uid || '', source: li.dataset.source || '',
        data: li.querySelector('.entry-data').textContent}))""")
    return list(reversed(entries))


async def _messages(console: Console) -> list[dict[str, str]]:
    return [e for e in await _entries(console) if e["kind"] == "message"]


async def _count(console: Console, n: int) -> None:
    """Until the center's list has *n* messages."""
    await console.wait_for("n => document.querySelectorAll('#tail-list > li[data-kind=message]').length === n", n)


async def _live(console: Console) -> None:
    await console.wait_for("document.getElementById('tail-dot').dataset.state === 'live'")


async def _rows(console: Console, table: str = "centers") -> list[str]:
    """The names in the table of *table* ("centers" or "publishers"), top to bottom."""
    return await console.evaluate(
        "kind => [...document.querySelectorAll(`#${kind}-body > tr`)].map(tr => tr.dataset[kind.slice(0, -1)])",
        table)


async def _page_of(console: Console, text: str) -> None:
    """Until the centers' count says *text* ("1–50 of 111")."""
    await console.wait_for("text => document.getElementById('centers-count').textContent === text", text)


async def _facts(console: Console, list_id: str) -> dict[str, str]:
    """The terms and descriptions of a <dl> of the center's page."""
    return await console.evaluate("""id => Object.fromEntries([...document.querySelectorAll(`#${id} .fact`)]
        .map(f => [f.querySelector('dt').textContent, f.querySelector('dd').textContent]))""", list_id)


#: The roles of what is operated with a keyboard or a pointer: each needs a name.
CONTROLS = ("button", "link", "textbox", "searchbox", "combobox", "checkbox", "radio", "spinbutton",
            "switch", "slider", "listbox", "tab", "menuitem")
_CONTROL = re.compile(r"^\s*- (" + "|".join(CONTROLS) + r")\b(.*)$")


async def _controls(console: Console, selector: str = "body") -> tuple[list[str], list[str]]:
    """The controls in Chromium's accessibility tree of *selector*: those
    with a name (``button "Sign out"``), and those without one."""
    named, unnamed = [], []
    for line in (await console.aria(selector)).splitlines():
        found = _CONTROL.match(line)
        if found:
            (named if found.group(2).startswith(' "') else unnamed).append(line.strip()[2:])
    return named, unnamed


# signing in


@pytest_twisted.ensureDeferred
async def test_only_the_admin_token_signs_in_and_it_stays_out_of_urls_cookies_and_storage(console):
    await console.visible("#view-signin")
    assert await console.evaluate("document.getElementById('nav').hidden")

    await console.fill("#signin-token", "not-the-admin-token")
    await console.click("#signin-submit")
    await console.wait_for("document.getElementById('signin-token-error').textContent !== ''")
    assert "not this server's admin token" in await console.text("#signin-token-error")
    assert await console.evaluate("document.getElementById('signin-token').getAttribute('aria-invalid')") == "true"
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
    await console.reload()
    await console.visible("#view-publishers")

    await console.click("#sign-out")
    await console.visible("#view-signin")
    assert await console.token_kept() is None
    assert await console.evaluate("sessionStorage.length") == 0
    assert await console.evaluate("document.getElementById('nav').hidden")
    # the mistake made before is not shown again
    assert await console.text("#signin-token-error") == ""

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

    # a name taken already is refused, and said so at the name, not in the banner
    await console.fill("#add-publisher-name", "intranet")
    await console.click("#add-publisher button[type=submit]")
    await console.wait_for("document.getElementById('add-publisher-name-error').textContent !== ''")
    assert "already" in await console.text("#add-publisher-name-error")
    assert await console.evaluate("document.getElementById('status').hidden")
    await console.fill("#add-publisher-name", "")

    # the filter box narrows the table
    await console.fill("#publishers-filter", "shop")
    await console.wait_for("document.querySelectorAll('#publishers-body > tr').length === 1")
    assert await _rows(console, "publishers") == ["shop"]
    assert await console.text("#publishers-count") == "1 of 3 publishers"
    await console.fill("#publishers-filter", "")
    await console.wait_for("document.querySelectorAll('#publishers-body > tr').length === 3")

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
    await console.press("#remove-typed", "Enter")   # no way round it
    assert await console.evaluate("document.getElementById('remove-dialog').open")
    await console.fill("#remove-typed", "drupal-main")
    assert not await console.evaluate("document.getElementById('remove-confirm').disabled")
    await console.click("#remove-confirm")
    await console.hidden("tr[data-publisher=drupal-main]")
    assert "drupal-main removed" in await console.text("#publishers-note")
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
    app = await pusher_app(daemon, "chat")
    await console.sign_in()
    await console.wait_for("document.getElementById('tile-websocket').dataset.value === '0'")
    await console.wait_for("document.querySelector('#chart-connections canvas') !== null")
    points = int(await console.evaluate("document.getElementById('chart-connections').dataset.points"))
    assert await console.tile("publishers") == "4" and await console.tile("centers") == "5"
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
    # Pusher's connections are a transport of their own, charted with the others
    chat = await PusherSocket.open(daemon, app.key)
    await chat.established()
    await console.wait_for("document.getElementById('tile-pusher').dataset.value === '1'")
    await console.wait_for(
        "JSON.parse(document.getElementById('chart-connections').dataset.last || '{}').pusher === 1")

    # messages in and out per second, from the cumulative counters
    running = [True]
    load = defer.ensureDeferred(_steady_load(daemon, site, running))
    await console.wait_for("+document.getElementById('tile-in-rate').dataset.value > 0")
    await console.wait_for("+document.getElementById('tile-out-rate').dataset.value > 0")
    await console.wait_for("JSON.parse(document.getElementById('chart-messages').dataset.last || '{}').out > 0")
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
    chat.close()


@pytest_twisted.ensureDeferred
async def test_the_charts_are_the_server_s_history_a_reload_shows_the_past_and_the_range_can_change(
        console, daemon):
    site = await _publisher(daemon, "drupal-main", "news")
    sockets = [await websocket(f"{daemon.ws}/sub/drupal-main/news", daemon.public_port) for _ in range(2)]
    await console.sign_in()
    await console.wait_for("JSON.parse(document.getElementById('chart-connections').dataset.last || '{}')"
                           ".websocket === 2")
    for n in range(20):
        await published(daemon, site, f"before the reload {n}")
    await console.wait_for("document.getElementById('chart-messages').dataset.active !== ''")
    reloaded = await console.evaluate("Date.now() / 1000")
    await sleep(1.5)

    # a reload starts the charts from the server's history, not from nothing
    asked = await console.requests()
    await console.reload()
    await console.visible("#view-overview")
    await console.wait_for("document.getElementById('chart-messages').dataset.active !== ''")
    messages = await console.evaluate("({...document.getElementById('chart-messages').dataset})")
    connections = await console.evaluate("({...document.getElementById('chart-connections').dataset})")
    assert float(messages["active"]) < reloaded, (messages, reloaded)   # the burst before the reload
    assert float(connections["first"]) < reloaded - 1, (connections, reloaded)
    assert int(connections["points"]) >= 3 and json.loads(connections["last"])["websocket"] == 2, connections
    assert (connections["range"], connections["step"]) == ("5m", "1")
    # the caption says what is shown: this daemon has not run for 5 minutes
    caption = await console.text("#chart-connections-range")
    assert re.fullmatch(r"since \d\d:\d\d:\d\d [AP]M, per second", caption), caption
    # the tiles still come from this node's figures
    await console.wait_for("document.getElementById('tile-websocket').dataset.value === '2'")
    # then it goes on from the last sample it has, a second at a time
    await console.wait_for("n => +document.getElementById('chart-connections').dataset.points > n + 1",
                           int(connections["points"]))
    history = [url for url in asked if "/admin/v1/history" in url]
    assert history[0].endswith("/admin/v1/history?range=5m"), history
    assert any("range=5m&after=" in url for url in history[1:]), history

    # the range picker: a pointer on "1 h", the keyboard to "24 h"
    await console.click("label[for=range-1h]")
    await console.wait_for("document.getElementById('chart-connections').dataset.range === '1h'")
    assert (await console.evaluate("location.hash")).endswith("?range=1h")
    assert any(url.endswith("/admin/v1/history?range=1h") for url in asked)
    await console.press("#range-1h", "ArrowRight")
    await console.wait_for("document.getElementById('chart-connections').dataset.range === '24h'")
    assert await console.evaluate("document.getElementById('range-24h').checked")
    assert await console.evaluate("document.getElementById('chart-messages').dataset.step") == "60"
    assert "per minute" in await console.text("#chart-messages-range")
    assert any(url.endswith("/admin/v1/history?range=24h") for url in asked)
    # a minute's samples (once this young daemon has a whole minute), aligned to the minute
    last = await console.evaluate("document.getElementById('chart-connections').dataset.lastT")
    assert last == "" or float(last) % 60 == 0, last
    # and the range stays across a reload
    await console.reload()
    await console.wait_for("document.getElementById('chart-connections').dataset.range === '24h'")
    assert await console.evaluate("document.getElementById('range-24h').checked")
    for ws in sockets:
        ws.close()


# a publisher's centers, at scale


@pytest_twisted.ensureDeferred
async def test_ten_thousand_centers_are_searched_by_prefix_sorted_and_paged_a_page_at_a_time(console, daemon):
    site = ("big", await daemon.add_publisher("big"))
    names = [f"user.{n}" for n in range(10_000)]
    await _stored_centers(daemon, "big", names)
    everyone = sorted(names)
    matching = sorted(name for name in names if name.startswith("user.12"))
    assert len(matching) == 111
    # subscribers on three of them
    subscribed = {"user.1205": 3, "user.1290": 2, "user.12": 1}
    sockets = [await websocket(f"{daemon.ws}/sub/big/{name}", daemon.public_port)
               for name, n in subscribed.items() for _ in range(n)]
    # and messages to two others, the latest last
    await published(daemon, site, "earlier", "user.1233")
    await sleep(0.05)
    await published(daemon, site, "latest", "user.1207")

    await console.sign_in()
    asked = await console.requests()
    await console.go("#/publishers/big", "centers")
    await _page_of(console, "1–50 of 10,000")
    assert await _rows(console) == everyone[:50]
    assert await console.evaluate("document.getElementById('centers-prev').disabled")

    # typed a letter at a time, searched once typing pauses
    await console.run(lambda page: page.locator("#centers-prefix").press_sequentially("user.12", delay=40))
    await _page_of(console, "1–50 of 111")
    assert await _rows(console) == matching[:50]
    assert (await console.evaluate("location.hash")).endswith("/publishers/big?prefix=user.12")
    await console.click("#centers-next")
    await _page_of(console, "51–100 of 111")
    assert await _rows(console) == matching[50:100]
    await console.click("#centers-next")
    await _page_of(console, "101–111 of 111")
    assert await _rows(console) == matching[100:]
    assert await console.evaluate("document.getElementById('centers-next').disabled")
    # the focus is not lost with the button: it goes to the one that still leads somewhere
    assert await console.evaluate("document.activeElement.id") == "centers-prev"
    await console.click("#centers-prev")
    await _page_of(console, "51–100 of 111")
    assert await _rows(console) == matching[50:100]
    await console.click("#centers-prev")
    await _page_of(console, "1–50 of 111")
    assert await _rows(console) == matching[:50]
    assert await console.evaluate("document.getElementById('centers-prev').disabled")

    # sorted by subscribers: the most first, then the others by name
    await console.run(lambda page: page.locator("#centers-sort").select_option("subscribers"))
    ranked = list(subscribed)
    await console.wait_for("first => document.querySelector('#centers-body > tr')?.dataset.center === first",
                           ranked[0])
    await _page_of(console, "1–50 of 111")
    assert await _rows(console) == ranked + [name for name in matching if name not in subscribed][:47]
    counts = await console.evaluate(
        "[...document.querySelectorAll('#centers-body > tr td.subscribers')].slice(0, 4).map(td => td.textContent)")
    assert counts == ["3", "2", "1", "0"], counts
    await console.wait_for("document.getElementById('centers-note').textContent === ''")
    await console.screenshot("console-centers.png", height=1000)
    await console.click("#centers-next")
    await _page_of(console, "51–100 of 111")
    assert await _rows(console) == [name for name in matching if name not in subscribed][47:97]

    # never the whole list: every page asked for is of 50, and the search went once, typed whole
    listings = [url for url in asked if "/admin/v1/publishers/big/centers?" in url]
    assert listings and all("limit=50" in url for url in listings), listings
    prefixes = {re.search(r"prefix=([^&]*)", url).group(1) for url in listings if "prefix=" in url}
    assert prefixes == {"user.12"}, prefixes

    # the search and the sort are in the address: a reload keeps them
    await console.reload()
    await _page_of(console, "1–50 of 111")
    assert await console.evaluate("document.getElementById('centers-sort').value") == "subscribers"
    assert await console.evaluate("document.getElementById('centers-prefix').value") == "user.12"
    assert (await _rows(console))[:3] == ranked

    # sorted by their latest message: the latest first, then those with none by name
    await console.run(lambda page: page.locator("#centers-sort").select_option("activity"))
    await console.wait_for("document.querySelector('#centers-body > tr')?.dataset.center === 'user.1207'")
    active = ["user.1207", "user.1233"]
    assert await _rows(console) == active + [name for name in matching if name not in active][:48]
    for ws in sockets:
        ws.close()


# a center's page


def _member_token(secret: str, uid: str, info: Any) -> str:
    return subscriber_token(secret, centers=["room.*"], uid=uid, info=info)


@pytest_twisted.ensureDeferred
async def test_a_center_s_page_shows_its_settings_subscribers_members_and_history_then_what_follows_live(
        console, daemon):
    site = await _publisher(daemon, "drupal-main", "room.1", private=True, presence=True)
    member = await websocket(
        f"{daemon.ws}/sub/drupal-main/room.1?format=json&token={_member_token(site[1], '17', {'name': 'Ann'})}",
        daemon.public_port)
    await opened(member)
    stream = await event_source(
        daemon.public_port, f"/sub/drupal-main/room.1?token={_member_token(site[1], '18', {'name': 'Bob'})}")
    texts = [f"Comment {n} on “Spring fair”" for n in range(57)]
    texts += ['{"event": "edit", "node": 5, "by": "Bob", "tags": ["fair", "spring"]}',
              "<b>not bold</b> & <img src=x onerror=\"window.pwned = 1\">", "Bob is typing…"]
    ids = [await published(daemon, site, text, "room.1") for text in texts]

    await console.sign_in()
    await console.go("#/publishers/drupal-main", "centers")
    await console.click("tr[data-center='room.1'] th.name a")
    await console.visible("#view-center")
    assert (await console.evaluate("location.hash")).endswith("#/publishers/drupal-main/centers/room.1")
    await _live(console)

    # its settings, its subscribers by transport, who is there
    await console.wait_for("document.querySelector('#center-settings .fact') !== null")
    settings = await _facts(console, "center-settings")
    assert settings["Access"].startswith("Private") and settings["Presence"].startswith("On"), settings
    assert settings["History"] == "Last 100 messages" and settings["Expires"] == "Never"
    created = await console.evaluate("document.querySelector('#center-settings time').title")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \(UTC\)", created), created
    await console.wait_for("document.querySelector('#center-transports [data-transport=sse]').textContent === '1'")
    transports = await _facts(console, "center-transports")
    assert transports == {"WebSocket": "1", "SSE": "1", "Long-poll": "0", "Pusher": "0", "Total": "2"}, transports
    members = await console.evaluate("""[...document.querySelectorAll('#center-members-body > tr')]
        .map(tr => [tr.dataset.uid, tr.querySelector('td').textContent])""")
    assert sorted(members) == [["17", '{"name":"Ann"}'], ["18", '{"name":"Bob"}']], members

    # what it retains, newest first, 50 at a time
    await _count(console, 50)
    shown = list(reversed(await _messages(console)))
    assert [e["id"] for e in shown] == ids[::-1][:50]
    assert {e["source"] for e in shown} == {"history"}
    assert [e["data"] for e in shown[:3]] == [_shown(t) for t in texts[::-1][:3]]
    # JSON pretty-printed, and every text as text, never markup
    assert "\n  \"tags\": [\n" in shown[2]["data"]
    assert await console.evaluate("document.querySelector('#tail-list pre *') === null")
    assert await console.evaluate("window.pwned === undefined")
    await console.click("#center-older")
    await _count(console, 60)
    assert [e["id"] for e in await _messages(console)] == ids
    await console.hidden("#center-older")
    assert await console.text("#center-history-note") == "No older message retained (60 messages retained in all)."

    # then what is published comes on top as it goes out, in order, after the last retained
    live = ["Ann commented on “Spring fair”", '{"event": "comment", "node": 5, "by": "Cem"}', "Cem is typing…"]
    ids += [await published(daemon, site, text, "room.1") for text in live]
    await _count(console, 63)
    messages = await _messages(console)
    assert [e["id"] for e in messages] == ids and len(set(ids)) == 63
    assert [(e["source"], e["data"]) for e in messages[-3:]] == [("live", _shown(t)) for t in live]
    state = await console.text("#tail-state")
    assert re.fullmatch(r"Live · 3 messages since \d\d:\d\d:\d\d [AP]M", state), state
    await sleep(1.5)   # the highlight of new entries has faded
    await console.run(lambda page: page.evaluate("window.scrollTo(0, 0)"))
    await console.screenshot("console-center.png", height=1200)

    # a member leaving shows in the list and in the members
    member.close()
    await member.closed
    await console.wait_for("document.querySelector('#tail-list > li[data-kind=leave][data-uid=\"17\"]') !== null")
    await console.wait_for("document.querySelectorAll('#center-members-body > tr').length === 1")
    stream.close()


@pytest_twisted.ensureDeferred
async def test_what_is_published_between_the_history_and_the_tail_or_while_it_reconnects_shows_once(
        console, daemon):
    site = await _publisher(daemon, "drupal-main", "news")
    ids = [await published(daemon, site, f"retained {n}") for n in range(3)]
    await console.sign_in()
    held: list[Any] = []

    def hold_the_tail(page: Any) -> None:
        page.route("**/tail*", lambda route: held.append(route))

    def until_held(page: Any) -> str:
        deadline = time.monotonic() + 15
        while not held:
            assert time.monotonic() < deadline, "the tail was not asked for"
            page.wait_for_timeout(50)
        return held[0].request.url

    await console.run(hold_the_tail)
    await console.go("#/publishers/drupal-main/centers/news", "center")
    await _count(console, 3)
    url = await console.run(until_held)
    assert url.endswith(f"/tail?since={ids[-1]}"), url   # from where the history stands
    # published after the history was read, before the tail began: kept by the center, sent by the tail
    ids += [await published(daemon, site, f"meanwhile {n}") for n in range(2)]
    await console.run(lambda page: (held[0].continue_(), page.unroute("**/tail*")))
    await _live(console)
    ids.append(await published(daemon, site, "live"))
    await _count(console, 6)
    assert [e["id"] for e in await _messages(console)] == ids
    assert [e["source"] for e in await _messages(console)] == ["history"] * 3 + ["live"] * 3

    # a tail cut by the server is taken up again from the last message it showed
    hub = daemon.service.centers.loaded("drupal-main", "news")
    for observer in list(hub.observers):
        observer.close("slow")
    await console.wait_for("document.getElementById('tail-state').textContent === 'Reconnecting…'")
    ids += [await published(daemon, site, f"while cut {n}") for n in range(2)]
    await _live(console)
    await _count(console, 8)
    assert [e["id"] for e in await _messages(console)] == ids
    assert re.fullmatch(r"Live · 5 messages since .*", await console.text("#tail-state"))


@pytest_twisted.ensureDeferred
async def test_the_center_s_page_holds_what_arrives_while_paused_and_shows_presence(console, daemon):
    site = await _publisher(daemon, "drupal-main", "room.1", private=True, presence=True)
    await console.sign_in()
    await console.go("#/publishers/drupal-main", "centers")
    await console.visible("tr[data-center='room.1']")
    await console.click("tr[data-center='room.1'] th.name a")
    await console.visible("#view-center")
    await _live(console)
    assert "room.1" in await console.text("#center-name")
    await console.wait_for("document.querySelector('#tail-list > li[data-kind=members]') !== null")
    assert await console.evaluate("document.getElementById('tail-empty').hidden")

    texts = ["Ann commented on “Spring fair”", '{"event": "edit", "node": 5, "by": "Bob"}', "Bob is typing…"]
    ids = [await published(daemon, site, text, "room.1") for text in texts]
    await _count(console, 3)
    assert [(e["id"], e["data"]) for e in await _messages(console)] == list(zip(ids, map(_shown, texts), strict=True))

    # paused: what arrives is counted and held; on resume it is all there, in order
    await console.click("#tail-pause")
    assert await console.evaluate("document.getElementById('tail-pause').getAttribute('aria-pressed')") == "true"
    held = ['{"event": "comment", "node": 5, "by": "Cem"}', "3 new replies on “Spring fair”"]
    ids += [await published(daemon, site, text, "room.1") for text in held]
    await console.wait_for("document.getElementById('tail-pending').dataset.count === '2'")
    assert "2 new" in await console.text("#tail-pending")
    assert (await console.text("#tail-state")).startswith("Paused · 2 items held · ")
    assert len(await _messages(console)) == 3
    await console.click("#tail-pause")
    await _count(console, 5)
    messages = await _messages(console)
    assert [(e["id"], e["data"]) for e in messages] == list(zip(ids, map(_shown, texts + held), strict=True))
    assert await console.evaluate("document.getElementById('tail-pending').hidden")
    assert (await console.text("#tail-state")).startswith("Live · 5 messages")

    # a member joins the presence center
    member = await websocket(
        f"{daemon.ws}/sub/drupal-main/room.1?format=json&token={_member_token(site[1], '17', {'name': 'Ann'})}",
        daemon.public_port)
    await opened(member)
    await console.wait_for("document.querySelector('#tail-list > li[data-kind=join][data-uid=\"17\"]') !== null")
    join = [e for e in await _entries(console) if e["kind"] == "join"]
    assert join == [{"kind": "join", "id": "", "uid": "17", "source": "", "data": '17 {"name":"Ann"} joined'}], join
    await console.wait_for("document.querySelector('#center-members-body > tr[data-uid=\"17\"]') !== null")

    # Clear empties the list; what was retained can be shown again, once each
    await console.click("#tail-clear")
    assert await console.evaluate("document.querySelectorAll('#tail-list > li').length") == 0
    await published(daemon, site, "after clearing", "room.1")
    await _count(console, 1)
    await console.click("#center-older")
    await _count(console, 6)
    assert [e["data"] for e in await _messages(console)] == list(map(_shown, texts + held)) + ["after clearing"]

    # leaving the page ends its stream: the daemon forgets the observer
    hub = daemon.service.centers.loaded("drupal-main", "room.1")
    assert len(hub.observers) == 1
    await console.click("#center-publisher-link")
    await console.visible("#view-centers")
    await until(lambda: len(hub.observers) == 0, what="the tail's stream is closed")
    member.close()
    await member.closed


@pytest_twisted.ensureDeferred
async def test_a_message_published_from_the_center_s_page_reaches_a_subscriber_and_the_page_as_text(
        console, daemon):
    site = await _publisher(daemon, "drupal-main", "news")
    subscriber = await websocket(f"{daemon.ws}/sub/drupal-main/news?format=json", daemon.public_port)
    await opened(subscriber)
    await console.sign_in()
    await console.go("#/publishers/drupal-main/centers/news", "center")
    await _live(console)

    text = 'Hello <img src=x onerror="window.pwned = 1"> & <b>all</b>'
    await console.fill("#tail-publish-text", text)
    await console.click("#tail-publish button[type=submit]")
    received = json.loads(await subscriber.next())
    assert received["data"] == text and received["center"] == "news", received
    await _count(console, 1)
    [entry] = await _entries(console)
    assert (entry["id"], entry["data"]) == (received["id"], text)
    await console.wait_for("document.getElementById('tail-publish-result').textContent !== ''")
    assert await console.text("#tail-publish-result") == "Sent to 1 subscriber."
    assert await console.evaluate("document.getElementById('tail-publish-result').dataset.id") == received["id"]
    # the text is shown as text, never as markup
    assert await console.evaluate("document.querySelector('#tail-list img, #tail-list b') === null")
    assert await console.evaluate("window.pwned === undefined")
    assert await console.evaluate("document.getElementById('tail-publish-text').value") == ""
    # the result goes after a few seconds
    await console.wait_for("document.getElementById('tail-publish-result').textContent === ''", timeout=8)

    # Ctrl+Enter in the text publishes too; and what the publisher sends shows up between
    await published(daemon, site, "from the site", "news")
    await console.fill("#tail-publish-text", "second, by keyboard")
    await console.press("#tail-publish-text", "Control+Enter")
    assert json.loads(await subscriber.next())["data"] == "from the site"
    assert json.loads(await subscriber.next())["data"] == "second, by keyboard"
    await _count(console, 3)
    assert [e["data"] for e in await _entries(console)] == [text, "from the site", "second, by keyboard"]

    # with no subscriber, the page says that it is none
    subscriber.close()
    await subscriber.closed
    await until(lambda: not daemon.service.centers.loaded("drupal-main", "news").subscribers,
                what="the subscriber is gone")
    await console.fill("#tail-publish-text", "to nobody")
    await console.click("#tail-publish button[type=submit]")
    await console.wait_for("document.getElementById('tail-publish-result').textContent.startsWith('Sent to 0')")
    assert await console.text("#tail-publish-result") == \
        "Sent to 0 subscribers (this page watches without subscribing)."

    # deleting the center ends the tail, saying why
    status, _ = await call("DELETE", f"{daemon.api}/api/v1/centers/news", auth=site)
    assert status == 204
    await console.wait_for("document.getElementById('tail-dot').dataset.state === 'ended'")
    assert "deleted" in await console.text("#tail-state")


@pytest_twisted.ensureDeferred
async def test_the_older_address_of_the_tail_leads_to_the_center_s_page_which_shows_each_message_s_event(
        console, daemon):
    site = await _publisher(daemon, "drupal-main", "news")
    await console.sign_in()
    await console.go("#/tail/drupal-main/news", "center")
    assert (await console.evaluate("location.hash")) == "#/publishers/drupal-main/centers/news"
    await _live(console)
    ids = []
    for text, event in (("A-1 is 12.50", "price"), ("plain", None)):
        headers = {"Content-Type": "text/plain", **({"Notifier-Event": event} if event else {})}
        status, body = await call("POST", f"{daemon.api}/api/v1/centers/news/messages", raw=text.encode(),
                                  auth=site, headers=headers)
        assert status == 201, body
        ids.append(body["id"])
    await _count(console, 2)
    assert [(e["id"], e["data"]) for e in await _entries(console)] == [(ids[0], "A-1 is 12.50"), (ids[1], "plain")]
    # A message of an event of its own shows it after its id; one of the default, its id alone.
    labels = await console.evaluate("""() => [...document.querySelectorAll('#tail-list > li[data-kind=message]')]
        .reverse().map(li => [li.dataset.event || null, li.querySelector('.entry-id').textContent])""")
    assert labels == [["price", f"{ids[0]} price"], [None, ids[1]]]


# where the page says what


@pytest_twisted.ensureDeferred
async def test_mistakes_are_said_at_their_field_and_the_banner_is_for_trouble_and_goes_with_the_view(
        console, daemon):
    await _publisher(daemon, "demo", "news")
    await _publisher(daemon, "shop", "orders")
    await console.sign_in()

    async def error_of(field: str) -> tuple[str, str | None, str]:
        return tuple(await console.evaluate("""id => {
            const field = document.getElementById(id);
            return [document.getElementById(`${id}-error`).textContent, field.getAttribute('aria-invalid'),
                    field.getAttribute('aria-describedby') || ''];
        }""", field))

    # a name the server refuses: at the field, described by it, gone at the first keystroke
    await console.go("#/publishers", "publishers")
    await console.fill("#add-publisher-name", "demo")
    await console.click("#add-publisher button[type=submit]")
    await console.wait_for("document.getElementById('add-publisher-name-error').textContent !== ''")
    text, invalid, described = await error_of("add-publisher-name")
    assert text == "There is a publisher named demo already." and invalid == "true", (text, invalid)
    assert "add-publisher-name-error" in described.split()
    assert await console.evaluate("document.activeElement.id") == "add-publisher-name"
    assert await console.evaluate("document.getElementById('status').hidden")
    await console.press("#add-publisher-name", "2")
    assert await error_of("add-publisher-name") == ("", None, described)
    # one the page refuses itself, the same way
    await console.fill("#add-publisher-name", "Not A Name")
    await console.press("#add-publisher-name", "Enter")
    assert (await error_of("add-publisher-name"))[:2] == (
        "A publisher's name is 1 to 64 of a-z, 0-9, _ and -, starting with a letter or digit.", "true")
    # and it is not there on another publisher's page, nor when coming back
    await console.go("#/publishers/shop", "centers")
    await console.go("#/publishers", "publishers")
    assert await error_of("add-publisher-name") == ("", None, described)

    # a center's history that is not a whole number
    await console.go("#/publishers/shop", "centers")
    await console.click("#add-center-box > summary")
    await console.fill("#add-center-name", "news")
    await console.fill("#add-center-history", "-1")
    await console.click("#add-center button[type=submit]")
    text, invalid, _ = await error_of("add-center-history")
    assert invalid == "true" and "whole number" in text, text
    await console.fill("#add-center-history", "20")
    assert (await error_of("add-center-history"))[:2] == ("", None)
    await console.click("#add-center button[type=submit]")
    await console.wait_for("document.getElementById('centers-note').textContent === 'Center news created.'")
    await console.visible("tr[data-center=news]")
    # what an action did goes by itself after a few seconds
    await console.wait_for("document.getElementById('centers-note').textContent === ''", timeout=8)

    # publishing nothing: said at the text, gone once something is typed
    await console.go("#/publishers/shop/centers/news", "center")
    await _live(console)
    await console.click("#tail-publish button[type=submit]")
    text, invalid, described = await error_of("tail-publish-text")
    assert (text, invalid) == ("Write the text to publish first.", "true")
    assert "tail-publish-text-error" in described.split()
    await console.press("#tail-publish-text", "x")
    assert (await error_of("tail-publish-text"))[:2] == ("", None)
    assert await console.evaluate("document.getElementById('status').hidden")

    # the server's trouble goes to the banner, which is about the view it came in: it goes with it
    await console.go("#/publishers/nobody", "centers")
    await console.visible("#status")
    assert "no_such_publisher" in await console.text("#status-text")
    assert await console.evaluate("document.getElementById('status').dataset.kind") == "error"
    await console.go("#/overview", "overview")
    await console.hidden("#status")
    assert await console.text("#status-text") == ""
    await console.wait_for("+document.getElementById('chart-connections').dataset.points >= 2")
    assert await console.evaluate("document.getElementById('status').hidden")


# assistive technology


@pytest_twisted.ensureDeferred
async def test_every_control_of_every_view_has_a_name_tables_have_scopes_and_the_focus_shows(console, daemon):
    site = await _publisher(daemon, "drupal-main", "news", "room.1", private=True, presence=True)
    member = await websocket(
        f"{daemon.ws}/sub/drupal-main/room.1?format=json&token={_member_token(site[1], '17', {'name': 'Ann'})}",
        daemon.public_port)
    await opened(member)
    await published(daemon, site, '{"a": 1}', "room.1")
    seen: dict[str, list[str]] = {}

    async def check(view: str, selector: str = "body") -> None:
        named, unnamed = await _controls(console, selector)
        assert unnamed == [], (view, unnamed)
        # as Playwright writes them: `button "Remove intranet": Remove` (its name, then its text)
        seen[view] = [line.split('":')[0] + '"' if '":' in line else line for line in named]
        unscoped = await console.evaluate("""() => [...document.querySelectorAll('th')]
            .filter(th => th.offsetParent !== null && !th.closest('[role=img]') && !th.getAttribute('scope'))
            .map(th => th.outerHTML)""")
        assert unscoped == [], (view, unscoped)

    await check("sign-in")
    await console.sign_in()
    await console.wait_for("document.querySelector('#chart-connections canvas') !== null")
    await check("overview")
    assert {'radio "5 min" [checked]', 'radio "1 h"', 'radio "24 h"'} <= set(seen["overview"])
    assert await console.evaluate("document.getElementById('range-picker').querySelector('legend').textContent") \
        == "Charts show"

    await console.go("#/publishers", "publishers")
    await console.fill("#add-publisher-name", "intranet")
    await console.click("#add-publisher button[type=submit]")
    await console.visible("#secret-box")
    await console.visible("tr[data-publisher=intranet]")
    await check("publishers")
    assert {'button "Rotate secret of drupal-main"', 'button "Remove drupal-main"'} <= set(seen["publishers"])
    assert 'searchbox "Filter by name"' in seen["publishers"]
    await console.click("tr[data-publisher=intranet] >> text=Remove")
    await check("remove dialog", "#remove-dialog")
    assert 'textbox "Type intranet to confirm"' in seen["remove dialog"]
    await console.click("#remove-dialog [data-close]")

    await console.go("#/publishers/drupal-main", "centers")
    await console.visible("tr[data-center=news]")
    await console.click("#add-center-box > summary")
    await check("centers")
    assert {'searchbox "Name starts with"', 'combobox "Sort by"', 'button "Delete news"',
            'spinbutton "History"', 'checkbox "Presence"'} <= set(seen["centers"]), seen["centers"]

    # the keyboard goes from the search to the sort, the pages (here one: no page to go to), then
    # the centers; and shows where it is
    await console.click("#centers-prefix")
    order = []
    for _ in range(3):
        await console.run(lambda page: page.keyboard.press("Tab"))
        order.append(await console.evaluate("""() => {
            const at = document.activeElement;
            const where = at.id || `${at.closest('tr')?.dataset.center} ${at.dataset.role}`;
            return [where, getComputedStyle(at).outlineStyle];
        }"""))
    assert order == [["centers-sort", "solid"], ["news open", "solid"], ["news delete", "solid"]], order

    await console.go("#/publishers/drupal-main/centers/room.1", "center")
    await _live(console)
    await console.wait_for("document.querySelector('#center-members-body > tr') !== null")
    await _count(console, 1)
    await check("center")
    assert {'textbox "Publish a test message"', 'button "Pause"', 'button "Clear"'} <= set(seen["center"])
    assert await console.evaluate("document.getElementById('tail-announce').getAttribute('role')") == "status"
    polite = await console.evaluate("""() => [...document.querySelectorAll('[aria-live]')]
        .map(el => el.getAttribute('aria-live'))""")
    assert set(polite) == {"polite"}, polite
    member.close()
    await member.closed


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
    await published(daemon, site, '{"retained": true}', "room.1")
    await console.sign_in()
    await console.wait_for("+document.getElementById('chart-connections').dataset.points >= 2")
    await console.click("label[for=range-1h]")
    await console.wait_for("document.getElementById('chart-connections').dataset.range === '1h'")
    await console.go("#/publishers", "publishers")
    await console.fill("#add-publisher-name", "intranet")
    await console.click("#add-publisher button[type=submit]")
    await console.visible("#secret-box")
    await console.fill("#publishers-filter", "in")
    await console.click("tr[data-publisher=intranet] >> text=Rotate secret")
    await console.click("#rotate-dialog [data-close]")
    await console.click("tr[data-publisher=drupal-main] >> text=Centers")
    await console.visible("tr[data-center='room.1']")
    await console.fill("#centers-prefix", "ro")
    await console.run(lambda page: page.locator("#centers-sort").select_option("activity"))
    await console.click("#add-center-box > summary")
    await console.fill("#add-center-name", "user.17")
    await console.click("#add-center-presence")
    await console.click("#add-center button[type=submit]")
    await console.fill("#centers-prefix", "")
    await console.visible("tr[data-center='user.17']")
    assert "private" in await console.text("tr[data-center='user.17']")
    await console.click("tr[data-center='user.17'] >> text=Delete")
    await console.click("#delete-center-confirm")
    await console.hidden("tr[data-center='user.17']")
    await console.click("tr[data-center='room.1'] th.name a")
    await _live(console)
    await published(daemon, site, "hello", "room.1")
    await _count(console, 2)
    await console.click("#tail-pause")
    await console.click("#tail-clear")
    await console.click("#tail-pause")
    await console.click("#center-older")
    await _count(console, 2)
    await console.go("#/overview", "overview")
    await sleep(1.2)

    assert await console.evaluate("window.__violations") == []
    assert [m for m in console.messages if m[0] in ("error", "warning")] == []


@pytest_twisted.ensureDeferred
async def test_on_a_phone_the_console_fits_the_screen(chromium, daemon):
    site = await _publisher(daemon, "drupal-main", "news", "user.17.notifications", "room.1",
                            private=True, presence=True)
    await _publisher(daemon, "intranet-with-a-rather-long-name", "news", "user.17.notifications", "alerts",
                     "user.18.notifications", "user.19.notifications", "orders", "stock")
    member = await websocket(
        f"{daemon.ws}/sub/drupal-main/room.1?format=json&token={_member_token(site[1], '17', {'name': 'Ann'})}",
        daemon.public_port)
    await opened(member)
    await published(daemon, site, json.dumps({"event": "comment", "node": 5, "text": "y" * 200}), "room.1")
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
        # seven centers stay short: three lines each, not a screen each
        await phone.go("#/publishers/intranet-with-a-rather-long-name", "centers")
        await phone.wait_for("document.querySelectorAll('#centers-body > tr').length === 7")
        assert await phone.fits()
        tall = await phone.evaluate("document.getElementById('centers-table').getBoundingClientRect().height")
        assert tall < 700, tall
        await phone.go("#/publishers/drupal-main/centers/room.1", "center")
        await _live(phone)
        await phone.wait_for("document.querySelector('#center-members-body > tr') !== null")
        await published(daemon, site, "x" * 300, "room.1")
        await _count(phone, 2)
        assert await phone.fits()
        # the list is part of the page: no scroll box of its own
        assert await phone.evaluate("getComputedStyle(document.getElementById('tail-list')).overflowY") == "visible"
        assert phone.errors == []
    finally:
        await phone.close()
        member.close()
