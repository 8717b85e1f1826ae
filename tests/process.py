"""The real daemon as a process: ``twistd -n notifier`` spawned and watched
through the reactor, stopped with SIGTERM, and the offline ``notifier``
command. Every wait is bounded."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.utils import getProcessOutputAndValue

from tests.support import ADMIN_TOKEN, call, config_text, free_port, sleep

BIN = Path(sys.executable).parent
TWISTD = BIN / "twistd"
NOTIFIER = BIN / "notifier"
#: How long the daemon may take to answer /healthz after it was spawned.
START_SECONDS = 30.0
#: How long a daemon written by ``write_config`` drains its subscribers.
DRAIN = 1.0


def write_config(folder: Path, **sections: dict[str, Any]) -> tuple[Path, int, int]:
    """A configuration in *folder*, its SQLite store beside it, on two free
    loopback ports (and *sections* merged in): its path, the public port
    and the api port."""
    public, api = free_port(), free_port()
    while api == public:
        api = free_port()
    path = folder / "notifier.toml"
    path.write_text(config_text(
        f"sqlite:{folder / 'n.db'}",
        public={"endpoint": f"tcp:{public}:interface=127.0.0.1"},
        api={"endpoint": f"tcp:{api}:interface=127.0.0.1", "admin_token": ADMIN_TOKEN},
        subscribers={"drain_seconds": DRAIN},
        **sections,
    ), encoding="utf-8")
    return path, public, api


class Process(ProcessProtocol):
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
            status, body = await call("GET", f"{self.api}/healthz")
            assert status == 200 and body == {"status": "ok"}, body
            status, body = await call("GET", f"{self.public}/healthz")
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
        return await call(method, self.api + path, body, admin=ADMIN_TOKEN)


def clean_exit(reason: Exception) -> bool:
    """Status 0, or killed by SIGTERM as twistd re-raises it after a clean stop."""
    if isinstance(reason, ProcessDone):
        return True
    return isinstance(reason, ProcessTerminated) and (
        reason.exitCode == 0 or reason.signal == signal.SIGTERM
    )


async def command(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run the ``notifier`` command through the reactor: exit code, stdout, stderr."""
    running = getProcessOutputAndValue(str(NOTIFIER), args, env=dict(os.environ), path=str(cwd))
    running.addTimeout(60, reactor)
    out, err, code = await running
    return code, out.decode(), err.decode()
