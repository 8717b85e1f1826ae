"""A closed connection leaves no reference cycle behind, on any transport.

The daemon runs with a young generation collected seldom (notifier.tap),
so a connection freed only by the cycle collector is kept for long, and
under churn promoted to where it is collected last. Here collection is
off while connections of every kind open and close; then one collection
must find nothing of the daemon's to free: every closed connection went
by reference counting alone.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_twisted
import treq

from tests.pusher.support import connected, pusher_app
from tests.support import (
    event_source,
    make_center,
    opened,
    sleep,
    start_daemon,
    subscriber_token,
    until,
    websocket,
)

ROUNDS = 10


def _daemon_garbage() -> Counter[str]:
    """What one collection frees of the daemon's own (and its HTTP parser)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    return Counter({kind: n for kind, n in found.items() if kind.startswith(("notifier.", "httptools."))})


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_connections_of_every_transport_are_freed_without_the_cycle_collector(tmp_path):
    daemon = await start_daemon(f"sqlite:{tmp_path / 'n.db'}")
    try:
        app = await pusher_app(daemon)
        auth = ("site", app.secret)
        await make_center(daemon, auth, "news")
        await make_center(daemon, auth, "private-room", private=True)
        token = subscriber_token(app.secret, centers=["private-room"], lifetime=3600)

        async def ws() -> None:
            (await websocket(f"{daemon.ws}/sub/site/news", daemon.public_port)).close()

        async def ws_json_private() -> None:
            socket = await websocket(f"{daemon.ws}/sub/site/private-room,news?format=json&token={token}",
                                     daemon.public_port)
            await opened(socket)
            socket.close()

        async def sse() -> None:
            (await event_source(daemon.public_port, "/sub/site/news")).close()

        async def longpoll() -> None:
            response = await treq.get(f"{daemon.public}/sub/site/news?timeout=0.05", persistent=False)
            await response.content()

        async def pusher() -> None:
            socket = await connected(daemon, app)
            await socket.subscribe("news")
            socket.close()

        kinds: dict[str, Callable[[], Awaitable[None]]] = {
            "websocket": ws, "websocket json, private, two centers": ws_json_private, "sse": sse,
            "long-poll": longpoll, "pusher": pusher}
        node = daemon.service
        for name, connect in kinds.items():
            gc.collect()
            gc.disable()
            try:
                for _ in range(ROUNDS):
                    await connect()
                await until(lambda: not any(hub.subscribers for hub in node.centers.hubs()), 5,
                            f"the {name} connections to close")
                await sleep(0.2)  # their last turns
                left: Any = _daemon_garbage()
            finally:
                gc.enable()
            assert left == Counter(), f"{name}: {left}"
    finally:
        await daemon.service.stopService()
