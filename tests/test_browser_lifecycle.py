"""notifier.js in real headless Chromium: tabs that share a connection when
the browser freezes the leading tab, or when it navigates away and may be
kept in the back/forward cache.

The leading tab gives up leadership on ``freeze`` and ``pagehide``: another
takes over at once and resumes from the last message any tab saw; the old
leader, resumed or shown again, follows. Tabs are pages of one browser
context (one Chromium with its back/forward cache on), the page served by
the test on its own port; every page logs its lifecycle events and its
statuses, with the time, on a BroadcastChannel of its own that every page
records, so that the order of events across tabs can be checked.

Headless Chromium given CDP's Page.setWebLifecycleState "frozen" neither
fires ``freeze`` nor stops the page, so a frozen tab is made one by the
test (its ``freeze`` event, then its main thread kept busy until it is
resumed); navigation and the back/forward cache are the browser's own.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web import static

from tests.browser import Browser, page_beside_daemon
from tests.support import call, eventually, sleep, subscriber_count

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>notifier lifecycle test page</title></head><body>
<script src="%(script)s"></script>
<script>
window.received = [];
window.log = [];
var logChannel;
function listen() {  // closed while hidden: a message would evict the page from the cache
  logChannel = new BroadcastChannel("lifecycle-log");
  logChannel.onmessage = function (event) { window.log.push(event.data); };
}
listen();
function note(what, detail, at) {
  var entry = {tab: window.tab, what: what, at: at || Date.now(), detail: detail};
  window.log.push(entry);
  if (logChannel) logChannel.postMessage(entry);
}
// Before the subscription's own listeners: when each event began.
var began = {};
["freeze", "resume"].forEach(function (type) {
  document.addEventListener(type, function () { began[type] = Date.now(); });
});
["pagehide", "pageshow"].forEach(function (type) {
  window.addEventListener(type, function () { began[type] = Date.now(); });
});
window.start = function (tab, url, options) {
  window.tab = tab;
  options.onMessage = function (data, message) { window.received.push({id: message.id, data: data}); };
  options.onStatus = function (status, detail) { note("status", [status, !!detail.leader]); };
  window.subscription = Notifier.subscribe(url, options);
  // After the subscription's own listeners: whether it still leads.
  ["freeze", "resume"].forEach(function (type) {
    document.addEventListener(type, function () { note(type, window.subscription.leader, began[type]); });
  });
  window.addEventListener("pagehide", function (event) {
    note("pagehide", [window.subscription.leader, event.persisted], began.pagehide);
    logChannel.close();
    logChannel = null;
  });
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) listen();
    note("pageshow", [window.subscription.leader, event.persisted], began.pageshow);
  });
};
</script></body></html>
"""

OTHER = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>another page of the site</title></head><body>
<p>elsewhere</p></body></html>
"""

PUBLISHER = "drupal"
CENTER = "news"


@pytest_twisted.async_yield_fixture(scope="module")
async def chromium():
    """Headless Chromium with its back/forward cache, one for the module."""
    browser = Browser(back_forward_cache=True)
    await browser.start()
    yield browser
    await browser.stop()


class Tab:
    """A page of a browser context, driven on the browser's thread."""

    def __init__(self, chromium: Browser, page: Any, name: str) -> None:
        self.chromium, self.page, self.name = chromium, page, name
        self.session: Any = None
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        return await self.chromium.run(lambda: self.page.evaluate(script, arg))

    async def wait_for(self, condition: str, arg: Any = None, timeout: float = 15) -> Any:
        return await self.chromium.run(lambda: self.page.wait_for_function(
            condition, arg=arg, timeout=timeout * 1000).json_value())

    async def subscribe(self, url: str, **options: Any) -> None:
        await self.evaluate("([tab, url, options]) => start(tab, url, options)", [self.name, url, options])

    async def received(self) -> list[dict]:
        return await self.evaluate("window.received")

    async def log(self) -> list[dict]:
        return await self.evaluate("window.log")

    async def leader(self) -> bool:
        return await self.evaluate("window.subscription.leader")

    async def lifecycle(self, state: str) -> None:
        """Set the page's lifecycle state ("frozen" or "active") through CDP."""
        def send() -> None:
            if self.session is None:  # kept: the state would not outlive it
                self.session = self.page.context.new_cdp_session(self.page)
            self.session.send("Page.setWebLifecycleState", {"state": state})

        await self.chromium.run(send)

    async def freeze(self, seconds: float) -> None:
        """Freeze the page for *seconds*, as the browser does a tab in the
        background. Headless Chromium given CDP's "frozen" neither fires
        ``freeze`` nor stops the page, so the test does what a freeze does:
        the ``freeze`` event, then nothing runs (the main thread kept busy:
        no timers, no events) until it resumes."""
        await self.evaluate("""ms => {
            document.dispatchEvent(new Event("freeze"));
            setTimeout(() => { const end = Date.now() + ms; while (Date.now() < end); });
        }""", seconds * 1000)
        await self.lifecycle("frozen")

    async def resume(self) -> None:
        """Unfreeze the page (once the time given to freeze() is over): the
        ``resume`` event, then it runs again."""
        await self.lifecycle("active")
        await self.evaluate("""() => { document.dispatchEvent(new Event("resume")); }""")

    async def close(self) -> None:
        await self.chromium.run(lambda: self.page.close())

    async def goto(self, url: str) -> None:
        await self.chromium.run(lambda: self.page.goto(url))

    async def back(self) -> None:
        # A page restored from the back/forward cache fires no "load".
        await self.chromium.run(lambda: self.page.go_back(wait_until="commit"))


class Site:
    def __init__(self, daemon: Any, secret: str, origin: str) -> None:
        self.daemon, self.origin = daemon, origin
        self.auth = (PUBLISHER, secret)
        self.url = f"{daemon.public}/sub/{PUBLISHER}/{CENTER}"

    async def publish(self, text: str) -> dict:
        status, body = await call("POST", f"{self.daemon.api}/api/v1/centers/{CENTER}/messages",
                                  raw=text.encode(), auth=self.auth, headers={"Content-Type": "text/plain"})
        assert status == 201, body
        return {"id": body["id"], "data": text}

    async def publish_many(self, label: str, count: int, every: float = 0.02) -> list[dict]:
        published = []
        for i in range(count):
            published.append(await self.publish(f"{label} {i}"))
            await sleep(every)
        return published

    async def subscribers(self) -> int:
        return await subscriber_count(self.daemon, self.auth, CENTER)


@pytest_twisted.async_yield_fixture
async def site(tmp_path):
    """A daemon that allows only the page's origin, a page server, a center."""
    daemon, root, origin, page_port = await page_beside_daemon(tmp_path, PAGE)
    root.putChild(b"other.html", static.Data(OTHER, "text/html; charset=utf-8"))
    root.putChild(b"favicon.ico", static.Data(b"", "image/x-icon"))  # no 404 on the console
    secret = await daemon.add_publisher(PUBLISHER)
    status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/{CENTER}", auth=(PUBLISHER, secret))
    assert status == 201
    yield Site(daemon, secret, origin)
    await daemon.service.stopService()
    await page_port.stopListening()


class Tabs:
    """Pages of a browser context of their own (so that they share)."""

    def __init__(self, chromium: Browser, context: Any, site: Site) -> None:
        self.chromium, self.context, self.site = chromium, context, site
        self.opened: list[Tab] = []

    async def open(self, names: str) -> list[Tab]:
        """Tabs named by the letters of *names*, subscribed in turn; the first leads."""
        tabs: list[Tab] = []
        for name in names:
            def open_page() -> Any:
                page = self.context.new_page()
                page.goto(f"{self.site.origin}/page.html")
                return page

            tab = Tab(self.chromium, await self.chromium.run(open_page), name)
            self.opened.append(tab)
            await tab.subscribe(self.site.url)
            await tab.wait_for("leader => window.log.some(e => e.tab === window.tab && e.what === 'status'"
                               " && e.detail[0] === 'connected' && e.detail[1] === leader)", not tabs)
            tabs.append(tab)
        return tabs


@pytest_twisted.async_yield_fixture
async def tabs(chromium, site):
    context = await chromium.run(lambda: chromium._browser.new_context())
    opened = Tabs(chromium, context, site)
    yield opened
    await chromium.run(lambda: context.close())
    assert {tab.name: tab.errors for tab in opened.opened if tab.errors} == {}  # nothing on the console


async def _received(tab: Tab, count: int, timeout: float = 15) -> list[dict]:
    await tab.wait_for("n => window.received.length >= n", count, timeout=timeout)
    await sleep(0.3)  # time for any duplicate to show up
    return await tab.received()


async def _leaders(tabs: list[Tab]) -> list[str]:
    return [tab.name for tab in tabs if await tab.leader()]


def _events(log: list[dict], tab: str, what: str) -> list[dict]:
    return [e for e in log if e["tab"] == tab and e["what"] == what]


def _took_over(log: list[dict], tab: str) -> dict:
    """The first status *tab* reported as the leader."""
    return next(e for e in _events(log, tab, "status") if e["detail"][1])


@pytest_twisted.ensureDeferred
async def test_a_frozen_leader_hands_over_and_follows_once_resumed(tabs, site):
    """The leading tab frozen: it gives up leadership at once, another tab
    resumes from the last message they saw, and every message published
    meanwhile reaches the other tabs once, in order. Unfrozen, the old
    leader follows and catches up: every tab gets every message once."""
    first, second, third = every = await tabs.open("abc")
    before = await site.publish_many("before", 3)
    for tab in every:
        assert await _received(tab, len(before)) == before

    frozen = 8.0
    await first.freeze(frozen)
    frozen_until = reactor.seconds() + frozen
    during = await site.publish_many("while frozen", 30)
    for tab in (second, third):
        assert await _received(tab, len(before + during)) == before + during
    assert reactor.seconds() < frozen_until  # all of them while the leader is frozen
    log = await second.log()
    freeze = _events(log, "a", "freeze")
    assert freeze and not [e for e in freeze if e["detail"]], log  # leadership given up as it froze
    new = [name for name in "bc" if any(e["detail"][1] for e in _events(log, name, "status"))]
    assert len(new) == 1, log
    took_over = _took_over(log, new[0])
    assert freeze[0]["at"] <= took_over["at"] < freeze[0]["at"] + 3000, log  # not the 3 s of a silent leader

    await sleep(frozen_until - reactor.seconds() + 0.2)
    await first.resume()
    await first.wait_for("() => window.log.some(e => e.tab === 'a' && e.what === 'resume')")
    after = await site.publish_many("after", 6)
    published = before + during + after
    for tab in every:
        assert await _received(tab, len(published)) == published
    assert await _leaders(every) == new
    await eventually(site.subscribers, lambda n: n == 1)
    assert [e["detail"] for e in _events(await first.log(), "a", "resume")][-1] is False
    for tab in every:
        statuses = [e["detail"][0] for e in _events(await tab.log(), tab.name, "status")]
        assert not {"lost", "failed", "closed"} & set(statuses), statuses


@pytest_twisted.ensureDeferred
async def test_a_leader_that_navigates_away_hands_over_at_once(tabs, site):
    """The leading tab navigates to another page of the site: on pagehide it
    gives up leadership, the other tab takes over and resumes from the last
    message; back again (from the back/forward cache), it follows."""
    first, second = every = await tabs.open("ab")
    before = await site.publish_many("before", 3)
    for tab in every:
        assert await _received(tab, len(before)) == before

    await first.goto(f"{site.origin}/other.html")
    during = await site.publish_many("after navigating", 10)
    assert await _received(second, len(before + during)) == before + during
    assert await second.leader() is True
    log = await second.log()
    pagehide = _events(log, "a", "pagehide")
    assert [e["detail"] for e in pagehide] == [[False, True]]  # given up as the page went into the cache
    took_over = _took_over(log, "b")
    assert pagehide[0]["at"] <= took_over["at"] < pagehide[0]["at"] + 3000, log  # not held by the cached page
    await eventually(site.subscribers, lambda n: n == 1)

    await first.back()
    await first.wait_for("() => document.readyState === 'complete' && (window.tab === undefined"
                         " || window.log.some(e => e.tab === 'a' && e.what === 'pageshow'))")
    shown = await first.evaluate("window.log.filter(e => e.tab === 'a' && e.what === 'pageshow')")
    why = await first.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0].notRestoredReasons)")
    assert shown and shown[-1]["detail"][1], why  # from the cache: nothing posted to it evicted it
    assert shown[-1]["detail"][0] is False
    after = await site.publish_many("back again", 4)
    published = before + during + after
    for tab in every:
        assert await _received(tab, len(published)) == published
    assert await _leaders(every) == ["b"]
    await eventually(site.subscribers, lambda n: n == 1)


@pytest_twisted.ensureDeferred
async def test_a_frozen_tab_does_not_wait_for_the_lock(tabs, site):
    """A frozen follower withdraws its lock request: when the leader closes,
    the next tab that runs takes over at once, not the frozen one; resumed,
    the frozen tab catches up and follows."""
    first, second, third = every = await tabs.open("abc")
    before = await site.publish_many("before", 3)
    for tab in every:
        assert await _received(tab, len(before)) == before

    frozen = 8.0
    await second.freeze(frozen)  # first in line for the lock
    frozen_until = reactor.seconds() + frozen
    await first.close()
    during = await site.publish_many("after the leader closed", 10)
    assert await _received(third, len(before + during)) == before + during
    assert reactor.seconds() < frozen_until
    log = await third.log()
    closed = _events(log, "a", "pagehide")
    assert len(closed) == 1, log
    assert closed[0]["at"] <= _took_over(log, "c")["at"] < closed[0]["at"] + 3000, log
    assert closed[0]["detail"] == [False, False]  # given up as the page went away

    await sleep(frozen_until - reactor.seconds() + 0.2)
    await second.resume()
    after = await site.publish_many("after", 4)
    published = before + during + after
    for tab in (second, third):
        assert await _received(tab, len(published)) == published
    assert await _leaders([second, third]) == ["c"]
    await eventually(site.subscribers, lambda n: n == 1)
