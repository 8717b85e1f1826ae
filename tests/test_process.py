"""The real daemon: ``twistd -n notifier`` as a process, stopped with SIGTERM.

Also the offline ``notifier publisher`` command against the store of a
running daemon. Nothing here blocks the reactor: processes are spawned and
watched through it, and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from tests.process import DRAIN, Process, clean_exit, command, write_config
from tests.support import call, eventually, publish, sleep, websocket

pytestmark = pytest.mark.integration

#: How long a change made with the offline command may take to reach the daemon.
PROPAGATION_SECONDS = 8.0


async def settle_subscribers(daemon: Process, auth: tuple[str, str], count: int) -> None:
    """Give the daemon a moment to register subscribers (long-polls may not count)."""
    for _ in range(20):
        status, body = await call("GET", f"{daemon.api}/api/v1/centers/news", auth=auth)
        if status == 200 and body["subscribers"] >= count:
            return
        await sleep(0.05)


@pytest_twisted.ensureDeferred
async def test_sigterm_drains_and_exits_and_state_survives_a_restart(tmp_path):
    config, public, api = write_config(tmp_path)
    daemon = Process(config, public, api)
    try:
        await daemon.start()
        status, body = await daemon.admin("POST", "/admin/v1/publishers", {"name": "site"})
        assert status == 201, body
        auth = ("site", body["secret"])
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=auth)
        assert status == 201, body
        status, first = await publish(daemon, auth, "before")
        assert status == 201, first

        # A WebSocket and a long-poll at the same time, both given the next message.
        ws = await websocket(f"{daemon.ws}/sub/site/news", public)
        poll = treq.get(f"{daemon.public}/sub/site/news?timeout=30&since={first['id']}", persistent=False)
        await settle_subscribers(daemon, auth, 2)
        status, published = await publish(daemon, auth, "hello, world")
        assert status == 201, published
        assert await ws.next() == "hello, world"
        response = await poll.addTimeout(10, reactor)
        assert response.code == 200
        body = json.loads(await response.content())
        assert [m["data"] for m in body["messages"]] == ["hello, world"]
        assert body["messages"][0]["id"] == published["id"]

        # A long-poll still waiting when SIGTERM comes.
        pending = treq.get(f"{daemon.public}/sub/site/news?timeout=60", persistent=False)
        await settle_subscribers(daemon, auth, 2)

        sent = reactor.seconds()
        daemon.terminate()
        closed = ws.closed.addTimeout(DRAIN + 5, reactor)
        code, _ = await closed
        assert code == 1001
        response = await pending.addTimeout(DRAIN + 5, reactor)
        assert response.code == 200
        assert json.loads(await response.content())["messages"] == []
        reason = await daemon.stopped(DRAIN + 5 - (reactor.seconds() - sent))
        assert reactor.seconds() - sent <= DRAIN + 5
        assert clean_exit(reason), f"{reason!r}\n{daemon.log()}"
        assert "Traceback" not in daemon.log()

        # The state file is its owner's only (it holds the secrets).
        database = tmp_path / "n.db"
        assert stat.S_IMODE(os.stat(database).st_mode) == 0o600
        for extra in tmp_path.glob("n.db-*"):
            assert stat.S_IMODE(os.stat(extra).st_mode) == 0o600, extra
        # The store was closed: SQLite folds its write-ahead log back when the last connection closes.
        assert not (tmp_path / "n.db-wal").exists()

        # State survives a restart on the same file.
        await daemon.start()
        status, body = await daemon.admin("GET", "/admin/v1/publishers")
        assert status == 200, body
        assert [(p["name"], p["centers"]) for p in body["publishers"]] == [("site", 1)]
        status, body = await call("GET", f"{daemon.api}/api/v1/centers/news", auth=auth)
        assert status == 200, body
        assert body["path"] == "site/news"
        ws = await websocket(f"{daemon.ws}/sub/site/news", public)
        status, published = await publish(daemon, auth, "after the restart")
        assert status == 201, published
        assert published["subscribers"] == 1
        assert await ws.next() == "after the restart"

        sent = reactor.seconds()
        daemon.terminate()
        code, _ = await ws.closed.addTimeout(DRAIN + 5, reactor)
        assert code == 1001
        reason = await daemon.stopped(DRAIN + 5 - (reactor.seconds() - sent))
        assert clean_exit(reason), f"{reason!r}\n{daemon.log()}"
    finally:
        await daemon.kill()


@pytest_twisted.ensureDeferred
async def test_the_offline_command_changes_a_running_daemon_without_a_restart(tmp_path):
    config, public, api = write_config(tmp_path)
    daemon = Process(config, public, api)
    try:
        await daemon.start()

        code, out, err = await command("publisher", "add", "offline", "--config", str(config), cwd=tmp_path)
        assert code == 0, err
        name, secret = out.splitlines()[0].split()  # then its Pusher app id and key
        assert name == "offline"
        auth = ("offline", secret)

        # The daemon accepts the new publisher within a few seconds.
        status, body = await eventually(
            lambda: call("PUT", f"{daemon.api}/api/v1/centers/news", auth=auth),
            lambda result: result[0] in (200, 201), seconds=PROPAGATION_SECONDS, every=0.2,
        )
        ws = await websocket(f"{daemon.ws}/sub/offline/news", public)
        status, body = await eventually(lambda: publish(daemon, auth, "from offline"),
                                        lambda result: result[0] == 201, seconds=PROPAGATION_SECONDS, every=0.2)
        assert body["subscribers"] == 1
        assert await ws.next() == "from offline"
        status, body = await daemon.admin("GET", "/admin/v1/publishers")
        assert [(p["name"], p["centers"]) for p in body["publishers"]] == [("offline", 1)]

        # The list, run while the daemon holds the file, shows it too.
        code, out, err = await command("publisher", "list", "--config", str(config), cwd=tmp_path)
        assert code == 0, err
        assert "offline" in out and secret not in out

        # Rotating: the old secret stops working within a few seconds, the new one works.
        status, _ = await publish(daemon, auth, "cached")
        assert status == 201
        code, out, err = await command("publisher", "rotate", "offline", "--config", str(config),
                                       cwd=tmp_path)
        assert code == 0, err
        name, rotated = out.split()
        assert name == "offline" and rotated != secret
        status, body = await eventually(lambda: publish(daemon, auth, "old secret"),
                                        lambda result: result[0] == 401, seconds=PROPAGATION_SECONDS, every=0.2)
        assert body["error"]
        status, body = await eventually(lambda: publish(daemon, ("offline", rotated), "new secret"),
                                        lambda result: result[0] == 201, seconds=PROPAGATION_SECONDS, every=0.2)
        # Before it, what the old secret published while it still worked.
        seen = [await ws.next() for _ in range(2)]
        while seen[-1] != "new secret" and len(seen) < 100:
            seen.append(await ws.next())
        assert seen[-1] == "new secret"
        assert set(seen[:-1]) <= {"cached", "old secret"} and seen[0] == "cached", seen

        # Removing: the publisher stops working within a few seconds.
        code, out, err = await command("publisher", "remove", "offline", "--config", str(config),
                                       cwd=tmp_path)
        assert code == 0, err
        await eventually(lambda: publish(daemon, ("offline", rotated), "removed"),
                         lambda result: result[0] == 401, seconds=PROPAGATION_SECONDS, every=0.2)

        sent = reactor.seconds()
        daemon.terminate()
        reason = await daemon.stopped(DRAIN + 5)
        assert reactor.seconds() - sent <= DRAIN + 5
        assert clean_exit(reason), f"{reason!r}\n{daemon.log()}"
    finally:
        await daemon.kill()
