import pytest_twisted

from tests.browser import Browser
from tests.redis_server import RedisServer
from tests.support import start_daemon


@pytest_twisted.async_yield_fixture
async def daemon(tmp_path):
    """A daemon on free loopback ports with its SQLite store in a temporary
    folder, and the store's defaults: history kept in the file too."""
    running = await start_daemon(f"sqlite:{tmp_path / 'notifier.db'}")
    yield running
    if running.service.running:
        await running.service.stopService()


@pytest_twisted.async_yield_fixture(scope="module")
async def chromium():
    """Headless Chromium, one for the tests of a module."""
    browser = Browser()
    await browser.start()
    yield browser
    await browser.stop()


@pytest_twisted.async_yield_fixture
async def redis(tmp_path):
    """A redis-server of the test's own, started and stopped by it."""
    server = RedisServer(tmp_path / "redis")
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
