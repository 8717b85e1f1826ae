"""notifier.js in real headless Chromium: several centers on one connection,
and one connection shared by the tabs of an origin.

As in test_browser.py, the page is served by the test on its own port and
reaches the daemon cross-origin; connections are cut by a relay. Tabs that
share are pages of one browser context (so that BroadcastChannel and Web
Locks span them); each test gets a context of its own.
"""

from __future__ import annotations

import time

import jwt
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from tests.browser import Browser, page_beside_daemon
from tests.relay import Relay
from tests.support import call, eventually, opened, sleep, subscriber_count, subscriber_token, websocket

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>notifier shared test page</title></head><body>
<script src="%(script)s"></script>
<script>
window.received = [];
window.statuses = [];
window.presence = [];
window.start = function (url, options) {
  options.onPresence = function (item) { window.presence.push(item); };
  options.onMessage = function (data, message) {
    window.received.push({id: message.id, center: message.center, data: data});
  };
  options.onStatus = function (status, detail) {
    window.statuses.push([status, detail.transport, !!detail.leader]);
  };
  window.subscription = Notifier.subscribe(url, options);
};
</script></body></html>
"""

TRANSPORTS = ["websocket", "sse", "longpoll"]
#: Seconds a presence member's last connection may be gone before it leaves.
GRACE = 0.5
CENTERS = ["news", "user.17", "node.5"]
PUBLISHER = "drupal"


class Tab:
    """A page of a browser context, driven on the browser's thread."""

    def __init__(self, chromium: Browser, context, page) -> None:
        self.chromium, self.context, self.page = chromium, context, page

    async def evaluate(self, script, arg=None):
        return await self.chromium.run(lambda: self.page.evaluate(script, arg))

    async def wait_for(self, condition, arg=None, timeout: float = 15):
        return await self.chromium.run(lambda: self.page.wait_for_function(
            condition, arg=arg, timeout=timeout * 1000).json_value())

    async def subscribe(self, url: str, **options) -> None:
        await self.evaluate("([url, options]) => start(url, options)", [url, options])

    async def received(self):
        return await self.evaluate("window.received")

    async def statuses(self):
        return await self.evaluate("window.statuses")

    async def leader(self) -> bool:
        return await self.evaluate("window.subscription.leader")

    async def close(self) -> None:
        await self.chromium.run(lambda: self.page.close())

    async def hang(self, seconds: float) -> None:
        """Keep the page's main thread busy for *seconds*, starting now (its
        timers and events wait; other tabs run in processes of their own).
        CDP's Page.setWebLifecycleState "frozen" does not stop the timers
        of a headless page, so a hung page stands for a frozen one."""
        await self.evaluate(
            "ms => { setTimeout(() => { const end = Date.now() + ms; while (Date.now() < end); }); }",
            seconds * 1000)


class Tabs:
    """Opens pages in one browser context."""

    def __init__(self, chromium: Browser, page_url: str) -> None:
        self.chromium, self.page_url = chromium, page_url
        self.context = None

    async def start(self) -> None:
        def start() -> None:
            self.context = self.chromium._browser.new_context()

        await self.chromium.run(start)

    async def open(self) -> Tab:
        def open_page():
            page = self.context.new_page()
            page.goto(self.page_url)
            return page

        return Tab(self.chromium, self.context, await self.chromium.run(open_page))

    async def stop(self) -> None:
        if self.context is not None:
            await self.chromium.run(lambda: self.context.close())


class Site:
    def __init__(self, daemon, secret: str, page: str) -> None:
        self.daemon, self.secret, self.page = daemon, secret, page
        self.auth = (PUBLISHER, secret)

    def url(self, *centers: str, port: int | None = None) -> str:
        base = f"http://127.0.0.1:{port}" if port is not None else self.daemon.public
        return f"{base}/sub/{PUBLISHER}/{','.join(centers or CENTERS)}"

    async def publish(self, text: str, center: str = "news") -> dict:
        status, body = await call("POST", f"{self.daemon.api}/api/v1/centers/{center}/messages",
                                  raw=text.encode(), auth=self.auth,
                                  headers={"Content-Type": "text/plain"})
        assert status == 201, body
        return {"id": body["id"], "center": center, "data": text}

    async def publish_round(self, label: str, centers=CENTERS) -> list[dict]:
        """One message to each of *centers*, in turn."""
        return [await self.publish(f"{label} {center}", center) for center in centers]

    async def subscribers(self, center: str = "news") -> int:
        return await subscriber_count(self.daemon, self.auth, center)


@pytest_twisted.async_yield_fixture
async def site(tmp_path):
    """A daemon that allows only the page's origin, a page server, three centers."""
    daemon, _, origin, page_port = await page_beside_daemon(tmp_path, PAGE, presence={"leave_grace": GRACE})
    secret = await daemon.add_publisher(PUBLISHER)
    for center in CENTERS:
        status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/{center}", auth=(PUBLISHER, secret))
        assert status == 201
    yield Site(daemon, secret, f"{origin}/page.html")
    await daemon.service.stopService()
    await page_port.stopListening()


@pytest_twisted.async_yield_fixture
async def tabs(chromium, site):
    opened = Tabs(chromium, site.page)
    await opened.start()
    yield opened
    await opened.stop()


async def _connected(tab: Tab, count: int = 1, leader: bool | None = None) -> None:
    await tab.wait_for(
        "([n, leader]) => window.statuses.filter(s => s[0] === 'connected'"
        " && (leader === null || s[2] === leader)).length >= n", [count, leader])


async def _received(tab: Tab, count: int, timeout: float = 15) -> list[dict]:
    await tab.wait_for("n => window.received.length >= n", count, timeout=timeout)
    await sleep(0.3)  # time for any duplicate to show up
    return await tab.received()


def _by_center(messages: list[dict]) -> dict[str, list[dict]]:
    return {center: [m for m in messages if m["center"] == center] for center in CENTERS}


def _assert_exactly(received: list[dict], published: list[dict]) -> None:
    """Every published message once, each center's in publish order."""
    assert len(received) == len(published), (received, published)
    assert _by_center(received) == _by_center(published)


def _cursor(published: list[dict]) -> str:
    """The compound cursor after *published* (which has a message on every center)."""
    last = {m["center"]: m["id"] for m in published}
    return ",".join(last[center] for center in CENTERS)


# several centers on one connection


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest_twisted.ensureDeferred
async def test_multiplexed_messages_carry_their_center_and_resume_after_a_cut(site, tabs, transport):
    relay = Relay(site.daemon.public_port)
    port = await relay.start()
    try:
        tab = await tabs.open()
        await tab.subscribe(site.url(port=port), transports=[transport])
        await _connected(tab)
        before = await site.publish_round("before")
        before.append(await site.publish("two\nlines ✓", "user.17"))
        before.append(await site.publish('{"json": true}', "news"))
        received = await _received(tab, len(before))
        assert received == before  # one connection: in publish order, each with its center
        assert await tab.evaluate("window.subscription.lastId") == _cursor(before)
        assert await tab.evaluate("window.subscription.transport") == transport
        assert await site.subscribers("node.5") == 1

        await relay.cut()
        during = await site.publish_round("during") + await site.publish_round("during again", CENTERS[::-1])
        await tab.wait_for("() => window.statuses.some(s => s[0] === 'reconnecting')")
        await sleep(1.0)  # refused for a while: the client backs off and retries
        await relay.restore()
        await _connected(tab, 2)
        after = await site.publish_round("after")
        received = await _received(tab, len(before + during + after))
        _assert_exactly(received, before + during + after)
        assert received[:len(before)] == before
        assert await tab.evaluate("window.subscription.lastId") == _cursor(before + during + after)
        assert "lost" not in [s[0] for s in await tab.statuses()]
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_multiplexed_resume_from_a_compound_since(site, tabs):
    """`since` is a compound cursor: each center resumes after its entry, and
    an empty entry is live only."""
    first = await site.publish_round("first")
    second = await site.publish_round("second")
    since = f"{first[0]['id']},{first[1]['id']},"  # node.5: live only
    tab = await tabs.open()
    await tab.subscribe(site.url(), since=since, transports=["sse"], shared=False)
    await _connected(tab)
    later = await site.publish_round("later")
    received = await _received(tab, 5)
    _assert_exactly(received, second[:2] + later)
    statuses = [s[0] for s in await tab.statuses()]
    assert "lost" not in statuses


# tabs sharing a connection


async def _publish_while(site: Site, action, centers=CENTERS, count: int = 24, every: float = 0.05,
                         act_after: int = 6) -> list[dict]:
    """Publish *count* messages round *centers*; after *act_after* of them,
    run *action* (concurrently: publishing goes on meanwhile)."""
    published: list[dict] = []
    acting = None
    for i in range(count):
        if i == act_after:
            acting = defer.ensureDeferred(action())
        published.append(await site.publish(f"m{i}", centers[i % len(centers)]))
        await sleep(every)
    await acting
    return published


async def _two_tabs(site: Site, tabs: Tabs, url: str, **options) -> tuple[Tab, Tab]:
    first = await tabs.open()
    await first.subscribe(url, **options)
    await _connected(first, leader=True)
    second = await tabs.open()
    await second.subscribe(url, **options)
    await _connected(second, leader=False)  # the follower is told the shared connection is up
    assert await first.leader() is True
    assert await second.leader() is False
    return first, second


@pytest.mark.parametrize("transport,centers", [
    ("websocket", CENTERS), ("sse", CENTERS), ("longpoll", CENTERS), ("websocket", ["news"]),
], ids=["websocket", "sse", "longpoll", "websocket-one-center"])
@pytest_twisted.ensureDeferred
async def test_tabs_share_one_connection_and_survive_the_leader_closing(site, tabs, transport, centers):
    url = site.url(*centers)
    first, second = await _two_tabs(site, tabs, url, transports=[transport])
    await eventually(site.subscribers, lambda n: n == 1)
    assert await site.subscribers() == 1  # two tabs, one subscriber
    together = [await site.publish(f"together {i}", centers[i % len(centers)]) for i in range(4)]
    for tab in (first, second):
        assert await _received(tab, len(together)) == together
    assert (await first.statuses())[:2] == [["connecting", transport, True], ["connected", transport, True]]
    assert (await second.statuses())[0] == ["connected", transport, False]

    async def close_the_leader() -> None:
        await first.close()

    published = together + await _publish_while(site, close_the_leader, centers, act_after=5)
    await second.wait_for("() => window.subscription.leader", timeout=5)
    received = await _received(second, len(published))
    if len(centers) == 1:
        assert received == published
    else:
        _assert_exactly(received, published)
    statuses = await second.statuses()
    assert ["connected", transport, True] in statuses  # it took over
    assert not [s for s in statuses if s[0] in ("lost", "failed", "closed")]
    await eventually(site.subscribers, lambda n: n == 1)


@pytest_twisted.ensureDeferred
async def test_a_hung_leader_is_taken_over(site, tabs):
    """A leader whose tab hangs (its main thread busy) posts no heartbeat and
    answers no ping: the follower steals the lock and connects; the old
    leader, once it runs again, finds its lock gone and follows."""
    first, second = await _two_tabs(site, tabs, site.url(), transports=["websocket"])
    before = await site.publish_round("before")
    for tab in (first, second):
        assert await _received(tab, 3) == before
    hang = 7.0
    await first.hang(hang)
    hung_at = reactor.seconds()
    during = []
    for i in range(8):
        during.append(await site.publish(f"while hung {i}", CENTERS[i % 3]))
        await sleep(0.25)
    await second.wait_for("() => window.subscription.leader", timeout=hang)
    took_over = reactor.seconds() - hung_at
    assert 3 <= took_over < hang, took_over  # no heartbeat for ~3 s, an unanswered ping, then the steal
    await _connected(second, leader=True)
    after = await site.publish_round("after")
    published = before + during + after
    _assert_exactly(await _received(second, len(published)), published)

    await sleep(hung_at + hang - reactor.seconds() + 0.2)
    await first.wait_for("() => !window.subscription.leader", timeout=5)
    await eventually(site.subscribers, lambda n: n == 1)  # the old leader's connection is closed
    last = await site.publish_round("last")
    published += last
    for tab in (first, second):
        _assert_exactly(await _received(tab, len(published)), published)
    assert await first.leader() is False and await second.leader() is True
    assert [s for s in await first.statuses() if s[0] in ("lost", "failed", "closed")] == []


@pytest_twisted.ensureDeferred
async def test_a_follower_that_closes_only_detaches(site, tabs):
    first, second = await _two_tabs(site, tabs, site.url())
    await second.evaluate("window.subscription.close()")
    published = await site.publish_round("after the follower left")
    assert await _received(first, 3) == published
    await sleep(0.3)
    assert await second.received() == []
    assert (await second.statuses())[-1][0] == "closed"
    assert await first.leader() is True
    assert await site.subscribers() == 1


@pytest_twisted.ensureDeferred
async def test_the_leader_closing_its_subscription_hands_over(site, tabs):
    first, second = await _two_tabs(site, tabs, site.url(), transports=["sse"])
    before = await site.publish_round("before")
    await _received(second, 3)
    await first.evaluate("window.subscription.close()")
    await second.wait_for("() => window.subscription.leader", timeout=5)
    after = await site.publish_round("after")
    _assert_exactly(await _received(second, 6), before + after)
    assert (await first.statuses())[-1] == ["closed", "sse", False]
    assert len(await first.received()) == 3
    await eventually(site.subscribers, lambda n: n == 1)


@pytest_twisted.ensureDeferred
async def test_a_tab_given_since_catches_up_then_follows(site, tabs):
    first = await tabs.open()
    await first.subscribe(site.url())
    await _connected(first, leader=True)
    published = await site.publish_round("one") + await site.publish_round("two")
    await _received(first, 6)
    second = await tabs.open()
    await second.subscribe(site.url(), since=_cursor(published[:3]))
    await second.wait_for("() => window.received.length >= 3")
    assert await second.leader() is False
    later = await site.publish_round("later")
    _assert_exactly(await _received(second, 6), published[3:] + later)
    assert await site.subscribers() == 1


@pytest_twisted.ensureDeferred
async def test_unshared_tabs_connect_each(site, tabs):
    url = site.url()
    first = await tabs.open()
    await first.subscribe(url, shared=False)
    second = await tabs.open()
    await second.subscribe(url, shared=False)
    for tab in (first, second):
        await _connected(tab)
        assert await tab.leader() is True
    await eventually(site.subscribers, lambda n: n == 2)
    published = await site.publish_round("each")
    for tab in (first, second):
        assert await _received(tab, 3) == published
    await first.close()
    await eventually(site.subscribers, lambda n: n == 1)


@pytest_twisted.ensureDeferred
async def test_each_tab_is_refused_on_its_own(site, tabs):
    """A leader refused for good reports "failed" and lets the next tab try
    with its own options; refused too, that tab reports it in turn."""
    status, _ = await call("PUT", f"{site.daemon.api}/api/v1/centers/user.17.inbox", {"private": True},
                           auth=site.auth)
    assert status == 201
    token = jwt.encode({"centers": ["user.17.*"], "exp": int(time.time()) + 3},
                       site.secret.encode(), algorithm="HS256")
    first, second = await _two_tabs(site, tabs, site.url("news", "user.17.inbox"), token=token)
    published = [await site.publish("while it lasts", "user.17.inbox")]
    for tab in (first, second):
        assert await _received(tab, 1) == published
    for tab in (first, second):
        await tab.wait_for("() => window.statuses.some(s => s[0] === 'closed')", timeout=15)
    first_statuses = [s[0] for s in await first.statuses()]
    assert first_statuses == ["connecting", "connected", "failed", "closed"]
    second_statuses = await second.statuses()
    assert second_statuses[0] == ["connected", "websocket", False]  # the shared connection
    assert ["connecting", "websocket", True] in second_statuses  # then its own attempt
    assert [s[0] for s in second_statuses[-2:]] == ["failed", "closed"]
    await eventually(site.subscribers, lambda n: n == 0)


@pytest_twisted.ensureDeferred
async def test_without_locks_a_tab_connects_on_its_own(site, tabs):
    """Where a lock request is refused (as in a sandboxed frame), the tab
    does not wait for one: it connects by itself."""
    tab = await tabs.open()
    await tab.evaluate("""() => { navigator.locks.request = function () {
        return Promise.reject(new DOMException("no locks here", "SecurityError")); }; }""")
    await tab.subscribe(site.url())
    await _connected(tab, leader=True)
    published = await site.publish_round("alone")
    assert await _received(tab, 3) == published
    await tab.evaluate("window.subscription.close()")
    assert (await tab.statuses())[-1][0] == "closed"
    await eventually(site.subscribers, lambda n: n == 0)


# presence


async def _presence_room(site: Site) -> None:
    status, body = await call("PUT", f"{site.daemon.api}/api/v1/centers/room",
                              {"private": True, "presence": True}, auth=site.auth)
    assert status == 201, body


def _member_token(site: Site, uid: str, info: dict | None = None) -> str:
    claims: dict = {"centers": ["room"], "uid": uid}
    if info is not None:
        claims["info"] = info
    return subscriber_token(site.secret, **claims)


async def _presence(tab: Tab, count: int) -> list[dict]:
    await tab.wait_for("n => window.presence.length >= n", count)
    await sleep(0.3)  # time for anything more to show up
    return await tab.evaluate("window.presence")


async def _visitor(site: Site, uid: str):
    """Another member of the room: a WebSocket of its own."""
    ws = await websocket(f"{site.daemon.ws}/sub/{PUBLISHER}/room?format=json&token={_member_token(site, uid)}",
                         site.daemon.public_port)
    await opened(ws)
    return ws


ANN = {"uid": "17", "info": {"name": "Ann"}}


@pytest.mark.parametrize("transport", ["websocket", "sse"])
@pytest_twisted.ensureDeferred
async def test_on_presence_tells_the_members_then_who_joins_and_leaves(site, tabs, transport):
    """A page subscribed to a presence center among others is told who is
    there (itself included), then each join and leave, with the center."""
    await _presence_room(site)
    tab = await tabs.open()
    await tab.subscribe(site.url("news", "room"), token=_member_token(site, "17", {"name": "Ann"}),
                        transports=[transport], shared=False)
    assert await _presence(tab, 1) == [{"presence": "members", "center": "room", "members": [ANN]}]
    visitor = await _visitor(site, "42")
    items = await _presence(tab, 2)
    assert items[1] == {"presence": "join", "center": "room", "uid": "42", "info": None}
    visitor.close()
    items = await _presence(tab, 3)
    assert items[2] == {"presence": "leave", "center": "room", "uid": "42"}
    published = [await site.publish("still here", "news")]
    assert await _received(tab, 1) == published  # messages go on beside presence
    assert len(await tab.evaluate("window.presence")) == 3


@pytest_twisted.ensureDeferred
async def test_long_poll_carries_no_presence(site, tabs):
    await _presence_room(site)
    tab = await tabs.open()
    await tab.subscribe(site.url("news", "room"), token=_member_token(site, "17"),
                        transports=["longpoll"], shared=False)
    await _connected(tab)
    # A member all the same, once its waiting poll is attached: the page is
    # connected when its first poll, answered at once, comes back.
    await eventually(lambda: call("GET", f"{site.daemon.api}/api/v1/centers/room/presence", auth=site.auth),
                     lambda answer: answer[0] == 200 and [m["uid"] for m in answer[1]["members"]] == ["17"])
    published = [await site.publish("polled", "room")]
    assert await _received(tab, 1) == published
    assert await tab.evaluate("window.presence") == []


@pytest_twisted.ensureDeferred
async def test_shared_tabs_are_told_who_is_there_and_a_new_leader_is_told_again(site, tabs):
    """A tab that joins a shared subscription is told the members the
    leading tab knows; both are told each join and leave; the tab that
    takes over is sent the members again by its own connection, and the
    handover is no leave and join of the tabs' own uid."""
    await _presence_room(site)
    token = _member_token(site, "17", {"name": "Ann"})
    url = site.url("news", "room")
    first = await tabs.open()
    await first.subscribe(url, token=token)
    await _connected(first, leader=True)
    members = {"presence": "members", "center": "room", "members": [ANN]}
    assert await _presence(first, 1) == [members]
    second = await tabs.open()
    await second.subscribe(url, token=token)
    assert await _presence(second, 1) == [members]  # from the leading tab
    assert await second.leader() is False
    visitor = await _visitor(site, "42")
    joined = {"presence": "join", "center": "room", "uid": "42", "info": None}
    for tab in (first, second):
        assert (await _presence(tab, 2))[1] == joined
    await first.close()
    await _connected(second, leader=True)
    both = {"presence": "members", "center": "room", "members": [ANN, {"uid": "42", "info": None}]}
    assert (await _presence(second, 3))[2] == both
    visitor.close()
    items = await _presence(second, 4)
    assert items[3] == {"presence": "leave", "center": "room", "uid": "42"}
    await sleep(GRACE * 2)
    assert len(await second.evaluate("window.presence")) == 4  # no leave of 17 for the handover
