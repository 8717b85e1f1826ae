"""The stock JavaScript clients, pinned in tests/js/package-lock.json and
installed by ``make test`` (``npm ci --prefix tests/js``), and the Node.js
processes that run them (driver scripts tests/js/*.mjs).

A driver is a Node process that reads commands as JSON lines on its stdin
and writes what happens as JSON lines on its stdout; the test awaits the
lines it expects, each wait bounded, while the daemon runs on the reactor.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, protocol, reactor

from tests.support import WAIT, bounded

#: Where the stock clients are pinned and installed.
JS = Path(__file__).resolve().parent.parent / "js"
NODE_MODULES = JS / "node_modules"
#: The packages the tests load, as package.json pins them.
PACKAGES = ("pusher-js", "laravel-echo", "pusher")


def node_modules() -> Path:
    """tests/js/node_modules with the pinned versions installed, or a
    failure (not a skip) that says how to get them."""
    pinned = json.loads((JS / "package.json").read_text())["dependencies"]
    for name in PACKAGES:
        installed = NODE_MODULES / name / "package.json"
        if not installed.exists():
            pytest.fail(f"{NODE_MODULES} lacks {name}: run `make test` "
                        "(it installs the pinned clients with `npm ci --prefix tests/js`)", pytrace=False)
        version = json.loads(installed.read_text())["version"]
        if version != pinned[name]:
            pytest.fail(f"{name} {version} is installed in {NODE_MODULES}, {pinned[name]} is pinned: "
                        "run `make test` to install the pinned clients again", pytrace=False)
    return NODE_MODULES


def node() -> str:
    """The ``node`` executable."""
    path = shutil.which("node") or shutil.which("nodejs")
    if path is None:
        pytest.fail("Node.js is required: `make test` installs Debian's nodejs", pytrace=False)
    return path


class Driver(protocol.ProcessProtocol):
    """A driver script running in Node: commands in, JSON lines out."""

    def __init__(self, script: str, config: dict[str, Any]) -> None:
        self.script = script
        self.config = config
        #: Every line it wrote, parsed, in order.
        self.lines: list[dict[str, Any]] = []
        self._taken: set[int] = set()
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], defer.Deferred[dict[str, Any]]]] = []
        self._partial = b""
        self.stderr = b""
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self.exit_code: int | None = None
        self._ids = 0
        #: A client's socket id, once connected (set by the test).
        self.socket_id = ""

    @classmethod
    def start(cls, script: str, **config: Any) -> Driver:
        """Run tests/js/*script* with *config* (JSON) as its argument."""
        node_modules()
        executable = node()
        driver = cls(script, config)
        reactor.spawnProcess(driver, executable, [executable, str(JS / script), json.dumps(config)],
                             env=dict(os.environ), path=str(JS))
        return driver

    # what it writes

    def outReceived(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"type": "unparsed", "text": raw.decode("utf-8", "replace")}
            self.lines.append(line)
            self._hand_out(len(self.lines) - 1)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Any) -> None:
        self.exit_code = getattr(reason.value, "exitCode", None)
        for _, waiting in self._waiters:
            waiting.errback(AssertionError(f"{self.script} ended ({self.exit_code}) {self._story()}"))
        self._waiters = []
        self.ended.callback(self.exit_code)

    def _hand_out(self, index: int) -> None:
        line = self.lines[index]
        for waiter in self._waiters:
            accept, waiting = waiter
            if accept(line):
                self._taken.add(index)
                self._waiters.remove(waiter)
                waiting.callback(line)
                return

    def _story(self) -> str:
        lines = "\n".join(json.dumps(line) for line in self.lines[-40:])
        return f"having written:\n{lines}\nstderr:\n{self.stderr.decode('utf-8', 'replace')[-4000:]}"

    # what the test does

    def send(self, **command: Any) -> None:
        self.transport.write(json.dumps(command).encode() + b"\n")

    async def next(self, accept: Callable[[dict[str, Any]], bool], what: str = "a line",
                   timeout: float = WAIT) -> dict[str, Any]:
        """The first line not taken yet that *accept* accepts, waited for
        (at most *timeout* seconds) if there is none yet."""
        for index, line in enumerate(self.lines):
            if index not in self._taken and accept(line):
                self._taken.add(index)
                return line
        if self.ended.called:
            raise AssertionError(f"{self.script} ended ({self.exit_code}) before {what} {self._story()}")
        waiting: defer.Deferred[dict[str, Any]] = defer.Deferred()
        waiter = (accept, waiting)
        self._waiters.append(waiter)
        try:
            return await bounded(waiting, timeout)
        except defer.TimeoutError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise AssertionError(f"{self.script}: no {what} within {timeout} s, {self._story()}") from None

    async def of(self, kind: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        """The next line of type *kind* whose *fields* are as given."""
        def accept(line: dict[str, Any]) -> bool:
            return line.get("type") == kind and all(line.get(name) == value for name, value in fields.items())
        described = ", ".join(f"{name}={value!r}" for name, value in fields.items())
        return await self.next(accept, f"{kind!r} line ({described})", timeout)

    def seen(self, kind: str, **fields: Any) -> list[dict[str, Any]]:
        """Every line so far of type *kind* whose *fields* are as given."""
        return [line for line in self.lines if line.get("type") == kind
                and all(line.get(name) == value for name, value in fields.items())]

    async def call(self, method: str, *args: Any, **extra: Any) -> dict[str, Any]:
        """Have the driver call *method*; its answer line."""
        self._ids += 1
        ident = self._ids
        self.send(id=ident, call=method, args=list(args), **extra)
        return await self.next(lambda line: line.get("type") == "answer" and line.get("id") == ident,
                               f"answer to {method}")

    async def stop(self) -> int | None:
        """Close its stdin (it then ends by itself); kill it if it does not."""
        if not self.ended.called:
            self.transport.closeStdin()
            try:
                await bounded(defer.Deferred.fromCoroutine(self._ended()), 5)
            except defer.TimeoutError:
                self.transport.signalProcess("KILL")
                await bounded(defer.Deferred.fromCoroutine(self._ended()), 5)
        return self.exit_code

    async def _ended(self) -> None:
        d: defer.Deferred[int | None] = defer.Deferred()
        self.ended.addBoth(lambda result: (d.callback(None), result)[1])
        await d
