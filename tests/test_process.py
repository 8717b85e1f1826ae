"""The real daemon: ``twistd -n notifier`` as a process, stopped with SIGTERM.

Also the offline ``notifier publisher`` command against the store of a
running daemon. Nothing here blocks the reactor: processes are spawned and
watched through it, and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue

from tests.support import ADMIN_TOKEN, call, config_text, sleep, websocket

BIN = Path(sys.executable).parent
TWISTD = BIN / "twistd"
NOTIFIER = BIN / "notifier"
DRAIN = 1.0
#: How long the daemon may take to answer /healthz after it was spawned.
START_SECONDS = 30.0
#: How long a change made with the offline command may take to reach the daemon.
PROPAGATION_SECONDS = 8.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon(ProcessProtocol):
    """One ``twistd -n notifier`` process; ``reason`` is how it ended, once it has."""

    def __init__(self, config: Path, public: int, api: int) -> None:
        self.config = config
        self.public_port = public
        self.public = f"http://127.0.0.1:{public}"
        self.ws = f"ws://127.0.0.1:{public}"
        self.api = f"http://127.0.0.1:{api}"
        self.output = bytearray()
        self.reason: Exception | None = None
        self._waiting: list[defer.Deferred[Exception]] = []
        self.running = False

    def connectionMade(self) -> None:
        self.running = True
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.running = False
        self.reason = reason.value
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(reason.value)

    def log(self) -> str:
        return self.output.decode("utf-8", "replace")

    def spawn(self) -> None:
        argv = [str(TWISTD), "-n", "--pidfile=", "notifier", "--config", str(self.config)]
        reactor.spawnProcess(self, argv[0], argv, env=dict(os.environ), path=str(self.config.parent))

    async def healthy(self) -> None:
        """Wait until ``/healthz`` answers on the api listener (and the public one)."""
        for _ in range(int(START_SECONDS / 0.1)):
            if self.reason is not None:
                raise AssertionError(f"the daemon ended while starting ({self.reason!r}):\n{self.log()}")
            try:
                response = await treq.get(f"{self.api}/healthz", timeout=2, persistent=False)
                await response.content()
            except Exception:
                await sleep(0.1)
                continue
            status, body = await bounded(call("GET", f"{self.api}/healthz"))
            assert status == 200 and body == {"status": "ok"}, body
            status, body = await bounded(call("GET", f"{self.public}/healthz"))
            assert status == 200 and body == {"status": "ok"}, body
            return
        raise AssertionError(f"the daemon did not answer /healthz in {START_SECONDS} s:\n{self.log()}")

    async def start(self) -> None:
        self.output.clear()
        self.reason = None
        self.spawn()
        await self.healthy()

    def terminate(self) -> None:
        self.transport.signalProcess("TERM")

    async def stopped(self, seconds: float) -> Exception:
        """How the process ended, waiting at most *seconds*."""
        if self.reason is not None:
            return self.reason
        d: defer.Deferred[Exception] = defer.Deferred()
        self._waiting.append(d)
        d.addTimeout(max(seconds, 0.1), reactor)
        try:
            return await d
        except defer.TimeoutError:
            raise AssertionError(f"the daemon did not end within {seconds:.1f} s:\n{self.log()}") from None

    async def kill(self) -> None:
        """Make sure the process is gone (cleanup after a failed test)."""
        if self.running:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass
            try:
                await self.stopped(10)
            except AssertionError:
                pass

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await bounded(call(method, self.api + path, body, admin=ADMIN_TOKEN))


def bounded(coroutine: Any, seconds: float = 15) -> defer.Deferred[Any]:
    """Await *coroutine*, for at most *seconds*."""
    return defer.Deferred.fromCoroutine(coroutine).addTimeout(seconds, reactor)


def clean_exit(reason: Exception) -> bool:
    """Status 0, or killed by SIGTERM as twistd re-raises it after a clean stop."""
    if isinstance(reason, ProcessDone):
        return True
    return isinstance(reason, ProcessTerminated) and (
        reason.exitCode == 0 or reason.signal == signal.SIGTERM
    )


def write_config(folder: Path) -> tuple[Path, int, int]:
    public, api = free_port(), free_port()
    while api == public:
        api = free_port()
    path = folder / "notifier.toml"
    path.write_text(config_text(
        f"sqlite:{folder / 'n.db'}",
        public={"endpoint": f"tcp:{public}:interface=127.0.0.1"},
        api={"endpoint": f"tcp:{api}:interface=127.0.0.1", "admin_token": ADMIN_TOKEN},
        subscribers={"drain_seconds": DRAIN},
    ), encoding="utf-8")
    return path, public, api


async def command(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run the ``notifier`` command through the reactor: exit code, stdout, stderr."""
    running = getProcessOutputAndValue(str(NOTIFIER), args, env=dict(os.environ), path=str(cwd))
    running.addTimeout(60, reactor)
    out, err, code = await running
    return code, out.decode(), err.decode()


async def publish(daemon: Daemon, auth: tuple[str, str], text: str, center: str = "news") -> tuple[int, Any]:
    return await bounded(call("POST", f"{daemon.api}/api/v1/centers/{center}/messages", raw=text.encode(),
                              auth=auth, headers={"Content-Type": "text/plain; charset=utf-8"}))


async def eventually(attempt, accept, seconds: float = PROPAGATION_SECONDS) -> Any:
    """Call ``attempt()`` until ``accept(result)``, for at most *seconds*; the last result."""
    result = None
    for _ in range(int(seconds / 0.2)):
        result = await attempt()
        if accept(result):
            return result
        await sleep(0.2)
    raise AssertionError(f"not reached within {seconds} s; last: {result!r}")


async def settle_subscribers(daemon: Daemon, auth: tuple[str, str], count: int) -> None:
    """Give the daemon a moment to register subscribers (long-polls may not count)."""
    for _ in range(20):
        status, body = await bounded(call("GET", f"{daemon.api}/api/v1/centers/news", auth=auth))
        if status == 200 and body["subscribers"] >= count:
            return
        await sleep(0.05)


@pytest_twisted.ensureDeferred
async def test_sigterm_drains_and_exits_and_state_survives_a_restart(tmp_path):
    config, public, api = write_config(tmp_path)
    daemon = Daemon(config, public, api)
    try:
        await daemon.start()
        status, body = await daemon.admin("POST", "/admin/v1/publishers", {"name": "site"})
        assert status == 201, body
        auth = ("site", body["secret"])
        status, body = await bounded(call("PUT", f"{daemon.api}/api/v1/centers/news", auth=auth))
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
        status, body = await bounded(call("GET", f"{daemon.api}/api/v1/centers/news", auth=auth))
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
    daemon = Daemon(config, public, api)
    try:
        await daemon.start()

        code, out, err = await command("publisher", "add", "offline", "--config", str(config), cwd=tmp_path)
        assert code == 0, err
        name, secret = out.split()
        assert name == "offline"
        auth = ("offline", secret)

        # The daemon accepts the new publisher within a few seconds.
        status, body = await eventually(
            lambda: bounded(call("PUT", f"{daemon.api}/api/v1/centers/news", auth=auth)),
            lambda result: result[0] in (200, 201),
        )
        ws = await websocket(f"{daemon.ws}/sub/offline/news", public)
        status, body = await eventually(lambda: publish(daemon, auth, "from offline"),
                                        lambda result: result[0] == 201)
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
                                        lambda result: result[0] == 401)
        assert body["error"]
        status, body = await eventually(lambda: publish(daemon, ("offline", rotated), "new secret"),
                                        lambda result: result[0] == 201)
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
                         lambda result: result[0] == 401)

        sent = reactor.seconds()
        daemon.terminate()
        reason = await daemon.stopped(DRAIN + 5)
        assert reactor.seconds() - sent <= DRAIN + 5
        assert clean_exit(reason), f"{reason!r}\n{daemon.log()}"
    finally:
        await daemon.kill()
