"""Headless Chromium (Debian's) driven by Playwright, from Twisted tests.

Playwright's sync API runs on one dedicated thread; the reactor thread only
awaits Deferreds for its results, so the daemon under test keeps running.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from twisted.internet import endpoints, reactor, threads
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool
from twisted.web import resource, server, static

from tests.support import Daemon, start_daemon

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Debian's chromium is required: `make test` installs it")
    return path


class Browser:
    def __init__(self, back_forward_cache: bool = False) -> None:
        # Playwright turns the back/forward cache off unless told otherwise.
        self._ignored = ["--disable-back-forward-cache"] if back_forward_cache else []
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="browser")
        self._pool.start()
        self._playwright: Any = None
        self._browser: Any = None
        self.page: Any = None

    def run(self, action: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """Run *action* on the browser's thread."""
        return threads.deferToThreadPool(reactor, self._pool, action, *args)

    async def start(self) -> None:
        def start() -> None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=chromium_path(), args=CHROMIUM_FLAGS,
                ignore_default_args=self._ignored)
            self.page = self._browser.new_page()

        await self.run(start)

    async def goto(self, url: str) -> None:
        await self.run(lambda: self.page.goto(url))

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        return await self.run(lambda: self.page.evaluate(script, arg))

    async def wait_for(self, condition: str, arg: Any = None, timeout: float = 15) -> Any:
        """Wait (in the browser, bounded) until the JS expression *condition* is truthy."""
        return await self.run(lambda: self.page.wait_for_function(
            condition, arg=arg, timeout=timeout * 1000).json_value())

    async def stop(self) -> None:
        def stop() -> None:
            if self._browser is not None:
                self._browser.close()
            if self._playwright is not None:
                self._playwright.stop()

        try:
            await self.run(stop)
        finally:
            self._pool.stop()


async def page_beside_daemon(folder: Any, template: str, **sections: dict[str, Any]) -> tuple[
        Daemon, resource.Resource, str, Any]:
    """A test page served on a port of its own (another origin than the
    daemon's), and a daemon, its store in *folder*, that allows only that
    origin: the daemon, the page server's root (``page.html`` is *template*
    with ``%(script)s`` the daemon's notifier.js), the page's origin and
    its listening port."""
    page = resource.Resource()
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(server.Site(page))
    origin = f"http://127.0.0.1:{port.getHost().port}"
    daemon = await start_daemon(f"sqlite:{folder / 'n.db'}", public={"allowed_origins": [origin]}, **sections)
    page.putChild(b"page.html", static.Data(
        (template % {"script": f"{daemon.public}/notifier.js"}).encode(), "text/html; charset=utf-8"))
    return daemon, page, origin, port
