"""notifier.js in real headless Chromium and the events of messages: on
every transport, one center or several, every message reaches
``onMessage``, its event in ``message.event`` (``"message"`` for the
default), whatever name its publisher gave it (over SSE the script asks
for ``format=json``: an ``EventSource`` hears a named event only by its
name)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.browser import page_beside_daemon
from tests.support import call, sleep

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>notifier events page</title></head><body>
<script src="%(script)s"></script>
<script>
window.received = [];
window.statuses = [];
window.start = function (url, options) {
  options.onMessage = function (data, message) {
    window.received.push({id: message.id, center: message.center, data: data, event: message.event});
  };
  options.onStatus = function (status) { window.statuses.push(status); };
  window.subscription = Notifier.subscribe(url, options);
};
</script></body></html>
"""


@pytest_twisted.async_yield_fixture
async def site(tmp_path):
    daemon, _, origin, page_port = await page_beside_daemon(tmp_path, PAGE)
    secret = await daemon.add_publisher("drupal")
    for center in ("news", "alerts"):
        status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/{center}", auth=("drupal", secret))
        assert status == 201
    yield daemon, ("drupal", secret), f"{origin}/page.html"
    await daemon.service.stopService()
    await page_port.stopListening()


async def _publish(daemon: Any, auth: tuple[str, str], text: str, event: str | None = None,
                   center: str = "news") -> str:
    headers = {"Content-Type": "text/plain", **({"Notifier-Event": event} if event else {})}
    status, body = await call("POST", f"{daemon.api}/api/v1/centers/{center}/messages", raw=text.encode(),
                              auth=auth, headers=headers)
    assert status == 201, body
    return str(body["id"])


@pytest.mark.parametrize("centers", ["news", "news,alerts"], ids=["one-center", "two-centers"])
@pytest.mark.parametrize("transport", ["websocket", "sse", "longpoll"])
@pytest_twisted.ensureDeferred
async def test_every_transport_hands_the_page_each_message_with_its_event(chromium, site, transport, centers):
    daemon, auth, page = site
    await chromium.goto(page)
    await chromium.evaluate("([url, options]) => start(url, options)",
                            [f"{daemon.public}/sub/drupal/{centers}", {"transports": [transport]}])
    await chromium.wait_for("() => window.statuses.includes('connected')")
    sent = [(await _publish(daemon, auth, "A-1 is 12.50", "price"), "price"),
            (await _publish(daemon, auth, "plain"), "message"),
            (await _publish(daemon, auth, "ünïcode ✓", "événement ✓"), "événement ✓")]
    await chromium.wait_for("n => window.received.length >= n", len(sent))
    await sleep(0.2)  # time for any duplicate to show up
    received = await chromium.evaluate("window.received")
    assert [(m["id"], m["event"]) for m in received] == sent
    assert [m["data"] for m in received] == ["A-1 is 12.50", "plain", "ünïcode ✓"]
    assert {m["center"] for m in received} == {"news"}
