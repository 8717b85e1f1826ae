"""A real ``redis-server`` for the tests, on a free loopback port.

Spawned through the reactor (never blocking it), without persistence, in a
temporary folder; ``stop()`` and ``start()`` again keep the same port, so a
daemon using it sees Redis go away and come back (empty). Extra arguments
make it a replica (``--replicaof``); ``Sentinel`` is a ``redis-server
--sentinel`` watching a master, with a configuration written for it, and
``SentinelCluster`` a master, its replicas and three Sentinels.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol

from tests.support import free_port, sleep

#: How long redis-server may take to answer PING, or to end after SIGTERM.
START_SECONDS = 10.0
STOP_SECONDS = 10.0


def redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path is None and os.access("/usr/bin/redis-server", os.X_OK):
        path = "/usr/bin/redis-server"
    if path is None:
        raise RuntimeError("redis-server is not installed; `make test` installs it "
                           "(the Debian package redis-server)")
    return path


def _ping(port: int) -> bool:
    """Whether a Redis answers PING on *port* (a short, local, blocking exchange)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def raw_command(port: int, *args: str) -> bytes:
    """One command in the Redis protocol over a raw socket; the first reply line."""
    request = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(request)
        return s.recv(4096)


def _watch(d: defer.Deferred[Any], seconds: float) -> defer.Deferred[None]:
    """Fires when *d* does, or fails with TimeoutError after *seconds*; *d* is left alone."""
    watcher: defer.Deferred[None] = defer.Deferred()

    def fired(result: Any) -> Any:
        if not watcher.called:
            watcher.callback(None)
        return result

    d.addBoth(fired)
    return watcher.addTimeout(seconds, reactor)


class _Process(ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)


class RedisServer:
    """One ``redis-server`` child process; ``url`` for the daemons to use."""

    def __init__(self, folder: Path, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.args = args
        self.executable = redis_server_path()
        self._process: _Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.ended.called

    def log(self) -> str:
        return self._process.output.decode("utf-8", "replace") if self._process is not None else ""

    async def start(self) -> None:
        """Spawn it and wait (bounded) until it answers PING."""
        assert not self.running, "redis-server is running already"
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [*self._argv(), *self.args]
        process = self._process = _Process()
        reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ), path=str(self.folder))
        for _ in range(int(START_SECONDS / 0.05)):
            if process.ended.called:
                raise RuntimeError(f"redis-server ended while starting on port {self.port}:\n{self.log()}")
            if _ping(self.port):
                return
            await sleep(0.05)
        await self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {START_SECONDS} s:\n{self.log()}")

    def _argv(self) -> list[str]:
        return [self.executable, "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--bind", "127.0.0.1", "--dir", str(self.folder)]

    async def kill(self) -> None:
        """SIGKILL (as a crash would), and wait (bounded) until it has ended."""
        process = self._process
        if process is None or process.ended.called:
            return
        self.resume()
        try:
            process.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass
        await _watch(process.ended, STOP_SECONDS)

    async def stop(self) -> None:
        """SIGTERM, and wait (bounded) until it has ended; SIGKILL past that."""
        process = self._process
        if process is None or process.ended.called:
            return
        self.resume()  # a paused server would not act on SIGTERM
        for signal_name in ("TERM", "KILL"):
            try:
                process.transport.signalProcess(signal_name)
            except ProcessExitedAlready:
                pass
            try:
                await _watch(process.ended, STOP_SECONDS)
                return
            except defer.TimeoutError:
                continue
        raise RuntimeError(f"redis-server on port {self.port} did not end:\n{self.log()}")

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered, as in a network partition."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, number: int) -> None:
        if self.running:
            assert self._process is not None
            try:
                self._process.transport.signalProcess(number)
            except ProcessExitedAlready:
                pass

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def flush(self) -> None:
        """Empty every database (FLUSHALL)."""
        reply = raw_command(self.port, "FLUSHALL")
        assert reply.startswith(b"+OK"), reply


class Sentinel(RedisServer):
    """A ``redis-server --sentinel`` watching the master on *master_port* as
    *service*, quick to fail it over: ``down`` milliseconds of silence make
    it subjectively down, and *quorum* Sentinels agreeing objectively."""

    def __init__(self, folder: Path, service: str, master_port: int, quorum: int = 2,
                 down: int = 600, failover_timeout: int = 2000) -> None:
        super().__init__(folder)
        self.service = service
        self.settings = [
            f"port {self.port}", "bind 127.0.0.1", f"dir {folder}",
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {service} {down}",
            f"sentinel failover-timeout {service} {failover_timeout}",
            f"sentinel parallel-syncs {service} 1",
        ]

    def _argv(self) -> list[str]:
        # Sentinel rewrites its configuration file: one of its own.
        conf = self.folder / "sentinel.conf"
        if not conf.exists():
            conf.write_text("\n".join(self.settings) + "\n")
        return [self.executable, str(conf), "--sentinel"]


#: A replica's first sync at once (Redis waits 5 s by default for more replicas).
QUICK_SYNC = ("--repl-diskless-sync-delay", "0")


def info(port: int, section: str) -> dict[str, str]:
    """A section of ``INFO``, as a dict (a short, local, blocking exchange)."""
    text = command(port, "INFO", section)
    return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)


def _fields(flat: list[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class SentinelCluster:
    """A master, *replicas* replicas of it and three Sentinels (quorum 2)
    watching them as *service*. Every exchange with them runs in the
    reactor's thread pool, never on the reactor thread. *port* hands out
    the ports (a free one each, when not given)."""

    def __init__(self, folder: Path, service: str, replicas: int = 2, master_args: tuple[str, ...] = (), *,
                 port: Callable[[], int | None] = lambda: None, down: int = 600,
                 failover_timeout: int = 2000) -> None:
        self.service = service
        first = RedisServer(folder / "redis-0", port=port(), args=(*QUICK_SYNC, *master_args))
        self.servers = [first] + [
            RedisServer(folder / f"redis-{i}", port=port(),
                        args=(*QUICK_SYNC, "--replicaof", "127.0.0.1", str(first.port)))
            for i in range(1, replicas + 1)]
        self.sentinels = [Sentinel(folder / f"sentinel-{i}", service, first.port, down=down,
                                   failover_timeout=failover_timeout) for i in range(3)]

    @property
    def url(self) -> str:
        listed = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{listed}/{self.service}/0"

    def server(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def name(self, port: int) -> str:
        return next(f"redis-{i}" for i, s in enumerate(self.servers) if s.port == port)

    async def start(self) -> None:
        for server in [*self.servers, *self.sentinels]:
            await server.start()
        await self.settled(self.servers[0].port)

    async def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            await server.stop()

    async def master(self) -> int:
        """The master's port, as the Sentinels say (the first that answers)."""
        for sentinel in self.sentinels:
            try:
                reply = await threads.deferToThread(
                    command, sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                return int(reply[1])
            except (OSError, ValueError, TypeError):
                continue
        raise RuntimeError("no Sentinel names a master")

    def _ready(self, master: int, strict: bool) -> bool:
        for sentinel in self.sentinels:
            state = _fields(command(sentinel.port, "SENTINEL", "MASTER", self.service))
            if int(state["port"]) != master or "s_down" in state["flags"] or int(state["num-other-sentinels"]) != 2:
                return False
            if not strict:
                continue
            seen = [_fields(r) for r in command(sentinel.port, "SENTINEL", "REPLICAS", self.service)]
            up = [r for r in seen if "down" not in r["flags"] and "disconnected" not in r["flags"]
                  and r.get("master-link-status") == "ok"]
            if len(up) < len(self.servers) - 1:
                return False
        if command(master, "ROLE")[0] != "master":
            return False
        return all(info(s.port, "replication").get("master_link_status") == "up"
                   for s in self.servers if s.running and s.port != master)

    async def settled(self, master: int, seconds: float = 60, strict: bool = True) -> None:
        """Every Sentinel names *master* and knows the other two (and,
        *strict*, sees every replica up: Sentinel reads a replica's state
        every 10 s); every replica running is in sync."""
        deadline = reactor.seconds() + seconds
        while True:
            try:
                if await threads.deferToThread(self._ready, master, strict):
                    return
            except (OSError, KeyError, ValueError, TypeError, IndexError):
                pass
            if reactor.seconds() > deadline:
                raise RuntimeError(f"the Redis servers did not settle on {master} within {seconds} s")
            await sleep(0.1)

    def _moved(self, old: int) -> int | None:
        said = {int(command(s.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])
                for s in self.sentinels}
        if len(said) != 1 or old in said:
            return None
        [port] = said
        return port if command(port, "ROLE")[0] == "master" else None

    async def failed_over(self, old: int, seconds: float = 60) -> int:
        """The port of the master every Sentinel names instead of *old*,
        once it says it is the master."""
        deadline = reactor.seconds() + seconds
        while True:
            try:
                moved = await threads.deferToThread(self._moved, old)
            except (OSError, ValueError, TypeError, IndexError):
                moved = None
            if moved is not None:
                return int(moved)
            if reactor.seconds() > deadline:
                raise RuntimeError(f"no failover from {old} within {seconds} s")
            await sleep(0.1)


def command(port: int, *args: str, timeout: float = 2) -> Any:
    """One command over a raw socket (short, local, blocking): its reply,
    decoded (bulk strings as str, errors as RuntimeError instances)."""
    request = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        reader = s.makefile("rb")
        return _reply(reader)


def _reply(reader: Any) -> Any:
    line = reader.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        return RuntimeError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if int(rest) < 0:
            return None
        data = reader.read(int(rest) + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        if int(rest) < 0:
            return None
        return [_reply(reader) for _ in range(int(rest))]
    raise ValueError(f"not a Redis reply: {line!r}")
