"""Stock Laravel Echo (``broadcaster: 'pusher'``, over pusher-js) in real
headless Chromium, against a daemon, on a page of another origin.

The page's server serves the pinned builds from tests/js/node_modules (no
CDN) and the site's auth endpoint, which signs with the official ``pusher``
Python library, as a site does; the site's triggers are that library's
too, run on a thread (it is synchronous; the daemon runs on the reactor in
this process). Several users are several pages, each in a browser context
of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pusher
import pytest
import pytest_twisted
from twisted.internet import threads
from twisted.web import resource, static

from tests.browser import page_beside_daemon
from tests.pusher.stock import node_modules
from tests.pusher.support import App, pusher_app
from tests.support import until

pytestmark = [pytest.mark.browser, pytest.mark.node]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Laravel Echo on notifier</title>
<style>
body { font: 15px/1.45 sans-serif; margin: 1.2em 1.6em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .4em; } h2 { font-size: 1.05em; margin: 1em 0 .2em; }
code { background: #eee; padding: 0 .3em; } .error { color: #b00020; font-weight: bold; }
</style></head><body>
<h1>Laravel Echo (pusher-js) on notifier</h1>
<p>User <b id="user">none</b>: connection <b id="state">not started</b>, socket id <code id="socket">none</code></p>
<h2>Members</h2><ul id="members"></ul>
<h2>Heard</h2><ol id="heard"></ol>
<script src="/pusher.min.js"></script>
<script src="/echo.iife.js"></script>
<script>
const LaravelEcho = window.Echo;
window.heard = [];
window.states = [];
window.members = [];
window.hear = function (channel, what, data) {
  window.heard.push({channel: channel, what: what, data: data === undefined ? null : data});
  const item = document.createElement('li');
  item.textContent = channel + ': ' + what + (data === undefined ? '' : ' ' + JSON.stringify(data));
  if (what === 'error') item.className = 'error';
  document.getElementById('heard').appendChild(item);
};
window.showMembers = function () {
  const list = document.getElementById('members');
  list.textContent = '';
  for (const member of window.members) {
    const item = document.createElement('li');
    item.textContent = member.name + ' (' + member.id + ')';
    list.appendChild(item);
  }
};
window.start = function (config) {
  document.getElementById('user').textContent = config.user;
  window.Echo = new LaravelEcho.default({
    broadcaster: 'pusher',
    key: config.key,
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: config.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    authEndpoint: '/auth',
    auth: {headers: {}, params: {user: config.user}},
  });
  const connection = window.Echo.connector.pusher.connection;
  connection.bind('state_change', function (states) {
    window.states.push({state: states.current, socket_id: connection.socket_id || null});
    document.getElementById('state').textContent = states.current;
    document.getElementById('socket').textContent = connection.socket_id || 'none';
  });
};
</script></body></html>
"""


class AuthEndpoint(resource.Resource):
    """The site's auth endpoint (``POST /auth``, form-encoded as pusher-js
    sends it): the library's ``authenticate``, presence channels joined as
    the page's ``user``; a channel in ``forged`` is signed with a wrong secret."""

    isLeaf = True

    def __init__(self, app: App) -> None:
        super().__init__()
        self.signer = pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret)
        self.forger = pusher.Pusher(app_id=app.app_id, key=app.key, secret="not-the-secret-" + app.secret)
        self.forged: set[str] = set()
        self.asked: list[tuple[str, str]] = []

    def render_POST(self, request: Any) -> bytes:
        def field(name: str) -> str:
            return request.args.get(name.encode(), [b""])[0].decode()

        channel, socket_id, user = field("channel_name"), field("socket_id"), field("user")
        self.asked.append((channel, socket_id))
        member = {"user_id": user, "user_info": {"id": user, "name": user.title()}} \
            if channel.startswith("presence-") else None
        signer = self.forger if channel in self.forged else self.signer
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(signer.authenticate(channel, socket_id, member)).encode()


class Tab:
    """A page in a browser context of its own, running Echo as *user*."""

    def __init__(self, browser: Any, page: Any, user: str) -> None:
        self.browser, self.page, self.user = browser, page, user

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        return await self.browser.run(lambda: self.page.evaluate(script, arg))

    async def wait_for(self, condition: str, arg: Any = None, timeout: float = 15) -> Any:
        return await self.browser.run(lambda: self.page.wait_for_function(
            condition, arg=arg, timeout=timeout * 1000).json_value())

    async def heard(self, channel: str, what: str, count: int = 1) -> list[dict[str, Any]]:
        """What the page heard of *what* on *channel*, once it heard *count* of them."""
        return await self.wait_for(
            """([channel, what, count]) => {
                 const found = heard.filter(h => h.channel === channel && h.what === what);
                 return found.length >= count && found;
               }""", [channel, what, count])

    async def socket_id(self) -> str:
        return await self.evaluate("Echo.socketId()")

    async def screenshot(self, path: Path) -> None:
        await self.browser.run(lambda: self.page.screenshot(path=str(path), full_page=True))

    async def close(self) -> None:
        await self.browser.run(lambda: self.page.close())


class Scene:
    def __init__(self, browser: Any, daemon: Any, app: App, page_url: str, auth: AuthEndpoint) -> None:
        self.browser, self.daemon, self.app, self.page_url, self.auth = browser, daemon, app, page_url, auth
        port = int(daemon.api.rsplit(":", 1)[1])
        self.site = pusher.Pusher(app_id=app.app_id, key=app.key, secret=app.secret, host="127.0.0.1",
                                  port=port, ssl=False, timeout=10)
        self.tabs: list[Tab] = []

    async def tab(self, user: str) -> Tab:
        """A new page of the site, Echo started on it as *user* and connected."""
        page = await self.browser.run(lambda: self.browser.page.context.browser.new_page())
        tab = Tab(self.browser, page, user)
        self.tabs.append(tab)
        await self.browser.run(lambda: page.goto(self.page_url))
        await tab.evaluate("config => start(config)",
                           {"key": self.app.key, "port": self.daemon.public_port, "user": user})
        await tab.wait_for("states.some(s => s.state === 'connected')")
        return tab

    async def trigger(self, channels: str | list[str], event: str, data: Any, **kwargs: Any) -> Any:
        """The site triggers *event* with the Python library (on a thread)."""
        return await threads.deferToThread(self.site.trigger, channels, event, data, **kwargs)


@pytest_twisted.async_yield_fixture
async def scene(chromium, tmp_path):
    """A daemon that allows only the page's origin, with client events on;
    the page's server, serving the pinned clients and the auth endpoint."""
    modules = node_modules()
    daemon, root, origin, page_port = await page_beside_daemon(
        tmp_path, PAGE, pusher={"client_events": True}, presence={"leave_grace": 0.1})
    app = await pusher_app(daemon)
    auth = AuthEndpoint(app)
    root.putChild(b"auth", auth)
    root.putChild(b"pusher.min.js", static.File(str(modules / "pusher-js/dist/web/pusher.min.js")))
    root.putChild(b"echo.iife.js", static.File(str(modules / "laravel-echo/dist/echo.iife.js")))
    made = Scene(chromium, daemon, app, f"{origin}/page.html", auth)
    yield made
    for tab in made.tabs:
        await tab.close()
    await daemon.service.stopService()
    await page_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_public_channel_hears_what_the_python_library_triggers(scene):
    tab = await scene.tab("ann")
    await tab.evaluate("""() => {
        Echo.channel('news')
            .subscribed(() => hear('news', 'subscribed'))
            .listen('.breaking', e => hear('news', 'breaking', e));
    }""")
    await tab.heard("news", "subscribed")
    assert await scene.trigger("news", "breaking", {"title": "Hello, world"}) == {}
    (heard,) = await tab.heard("news", "breaking")
    assert heard["data"] == {"title": "Hello, world"}
    assert scene.auth.asked == []  # a public channel asks the site nothing


@pytest_twisted.ensureDeferred
async def test_a_private_channel_is_authorized_by_the_site_and_hears_its_events(scene):
    tab = await scene.tab("ann")
    await tab.evaluate("""() => {
        Echo.private('orders')
            .subscribed(() => hear('private-orders', 'subscribed'))
            .error(e => hear('private-orders', 'error', e))
            .listen('.shipped', e => hear('private-orders', 'shipped', e));
    }""")
    await tab.heard("private-orders", "subscribed")
    assert scene.auth.asked == [("private-orders", await tab.socket_id())]
    await scene.trigger("private-orders", "shipped", {"order": 17})
    (heard,) = await tab.heard("private-orders", "shipped")
    assert heard["data"] == {"order": 17}
    assert not [h for h in await tab.evaluate("heard") if h["what"] == "error"]


@pytest_twisted.ensureDeferred
async def test_presence_here_joining_and_leaving_across_two_pages(scene, tmp_path):
    join = """() => {
        Echo.join('room')
            .here(users => { members = users; showMembers(); hear('presence-room', 'here', users); })
            .joining(user => { members.push(user); showMembers(); hear('presence-room', 'joining', user); })
            .leaving(user => {
                members = members.filter(m => m.id !== user.id); showMembers();
                hear('presence-room', 'leaving', user);
            })
            .listen('.said', e => hear('presence-room', 'said', e));
    }"""
    ann = await scene.tab("ann")
    await ann.evaluate(join)
    (here,) = await ann.heard("presence-room", "here")
    assert here["data"] == [{"id": "ann", "name": "Ann"}]
    bob = await scene.tab("bob")
    await bob.evaluate(join)
    (here,) = await bob.heard("presence-room", "here")
    assert sorted(here["data"], key=lambda m: m["id"]) == [{"id": "ann", "name": "Ann"}, {"id": "bob", "name": "Bob"}]
    (joining,) = await ann.heard("presence-room", "joining")
    assert joining["data"] == {"id": "bob", "name": "Bob"}
    await scene.trigger("presence-room", "said", {"text": "welcome"})
    for tab in (ann, bob):
        assert (await tab.heard("presence-room", "said"))[0]["data"] == {"text": "welcome"}

    shot = tmp_path / "presence.png"
    await ann.screenshot(shot)
    assert shot.stat().st_size > 0
    assert await ann.evaluate("[...document.querySelectorAll('#members li')].map(li => li.textContent)") == [
        "Ann (ann)", "Bob (bob)"]

    await bob.close()
    scene.tabs.remove(bob)
    (leaving,) = await ann.heard("presence-room", "leaving")
    assert leaving["data"] == {"id": "bob", "name": "Bob"}
    assert await ann.evaluate("members") == [{"id": "ann", "name": "Ann"}]


@pytest_twisted.ensureDeferred
async def test_whispers_reach_the_other_page_never_the_sender(scene):
    listen = """() => {
        Echo.private('chat')
            .subscribed(() => hear('private-chat', 'subscribed'))
            .listenForWhisper('typing', e => hear('private-chat', 'whisper', e));
    }"""
    ann, bob = await scene.tab("ann"), await scene.tab("bob")
    for tab in (ann, bob):
        await tab.evaluate(listen)
        await tab.heard("private-chat", "subscribed")
    await ann.evaluate("() => { Echo.private('chat').whisper('typing', {name: 'Ann'}); }")
    (whisper,) = await bob.heard("private-chat", "whisper")
    assert whisper["data"] == {"name": "Ann"}
    await bob.evaluate("() => { Echo.private('chat').whisper('typing', {name: 'Bob'}); }")
    (whisper,) = await ann.heard("private-chat", "whisper")
    # Ann hears Bob's whisper and not her own, sent before it.
    assert whisper["data"] == {"name": "Bob"}
    assert [h["data"] for h in await bob.evaluate("heard") if h["what"] == "whisper"] == [{"name": "Ann"}]


@pytest_twisted.ensureDeferred
async def test_a_forged_signature_is_refused_and_hears_nothing(scene):
    scene.auth.forged.add("private-vault")
    tab = await scene.tab("mallory")
    await tab.evaluate("""() => {
        Echo.private('vault')
            .subscribed(() => hear('private-vault', 'subscribed'))
            .error(e => hear('private-vault', 'error', e))
            .listen('.opened', e => hear('private-vault', 'opened', e));
        Echo.channel('news')
            .subscribed(() => hear('news', 'subscribed'))
            .listen('.breaking', e => hear('news', 'breaking', e));
    }""")
    (error,) = await tab.heard("private-vault", "error")
    assert error["data"] == {"type": "AuthError", "error": "invalid signature", "status": 401}
    assert scene.auth.asked == [("private-vault", await tab.socket_id())]
    await tab.heard("news", "subscribed")
    await scene.trigger("private-vault", "opened", {"secret": "gold"})
    await scene.trigger("news", "breaking", {"after": "the vault's event"})
    await tab.heard("news", "breaking")
    heard = {h["what"] for h in await tab.evaluate("heard")}
    assert heard == {"error", "subscribed", "breaking"}  # neither subscribed to the vault nor its event


@pytest_twisted.ensureDeferred
async def test_a_connection_killed_reconnects_by_itself_and_hears_the_next_event(scene):
    listen = """() => {
        Echo.channel('news')
            .subscribed(() => hear('news', 'subscribed'))
            .listen('.breaking', e => hear('news', 'breaking', e));
        Echo.private('orders')
            .subscribed(() => hear('private-orders', 'subscribed'))
            .listen('.shipped', e => hear('private-orders', 'shipped', e));
    }"""
    leader, follower = await scene.tab("ann"), await scene.tab("bob")
    for tab in (leader, follower):
        await tab.evaluate(listen)
        await tab.heard("news", "subscribed")
        await tab.heard("private-orders", "subscribed")
    face = scene.daemon.service.pusher
    killed, kept = await leader.socket_id(), await follower.socket_id()
    (connection,) = [c for c in face.connections if c.socket_id == killed]
    connection.transport.abortConnection()

    # pusher-js notices, connects again with a new socket id, subscribes again
    # (the private channel authorized again for it), all by itself.
    await leader.wait_for("states.filter(s => s.state === 'connected').length >= 2")
    await leader.heard("news", "subscribed", 2)
    await leader.heard("private-orders", "subscribed", 2)
    renewed = await leader.socket_id()
    assert renewed != killed
    assert ("private-orders", renewed) in scene.auth.asked
    await until(lambda: {c.socket_id for c in face.connections} == {renewed, kept}, what="the old connection let go")

    await scene.trigger("news", "breaking", {"n": 1})
    await scene.trigger("private-orders", "shipped", {"n": 2})
    for tab in (leader, follower):
        assert [h["data"] for h in await tab.heard("news", "breaking")] == [{"n": 1}]
        assert [h["data"] for h in await tab.heard("private-orders", "shipped")] == [{"n": 2}]
    assert await follower.socket_id() == kept
    assert [s["socket_id"] for s in await follower.evaluate("states") if s["state"] == "connected"] == [kept]
