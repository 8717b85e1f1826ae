"""The processes of a soak: Redis with Sentinel, the daemons, the relays.

Everything is a real process started here through the reactor, with the
tests' own building blocks: ``tests.redis_server`` (``RedisServer``,
``Sentinel``, ``command``), ``tests.process`` (a ``twistd -n notifier``
child) and ``tests.relay`` (a TCP relay that can be cut).

* Redis: one master and two replicas, three Sentinels (quorum 2). A server
  that was killed comes back as a replica of the master of the moment.
* Three daemons on it (``redis+sentinel://``, ``replicas_ack = 1``), each
  reaching the Sentinels through relays of its own, and one on a durable
  SQLite file, on a small file system of its own when the machine lets
  one be mounted.
* Ports are taken below the kernel's ephemeral range, so that a port left
  free while its process is down is never handed to one of the clients'
  outgoing connections meanwhile.

Blocking calls (the Redis ``command`` of the tests, reading ``/proc``)
run in the reactor's thread pool, never on the reactor thread.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import threads
from twisted.internet.utils import getProcessOutputAndValue

from tests.process import Process
from tests.redis_server import QUICK_SYNC, RedisServer, SentinelCluster, command, info
from tests.relay import Relay
from tests.support import ADMIN_TOKEN, config_text

SERVICE = "soak"
#: Size of the file system the SQLite daemon's file is on.
SQLITE_FS = "256m"


class Ports:
    """Free loopback ports below the ephemeral range, each handed out once."""

    def __init__(self, first: int = 20000) -> None:
        self.next = first
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            self.limit = int(f.read().split()[0])

    def take(self) -> int:
        while self.next < self.limit:
            port, self.next = self.next, self.next + 1
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise RuntimeError("no free port below the ephemeral range")


async def in_thread(f: Callable[..., Any], *args: Any) -> Any:
    return await threads.deferToThread(f, *args)


class Cluster(SentinelCluster):
    """A master, two replicas and three Sentinels watching them as ``soak``,
    on ports below the ephemeral range, Sentinels as quick as the soak
    wants its failovers."""

    def __init__(self, folder: Path, ports: Ports, down_ms: int) -> None:
        super().__init__(folder, SERVICE, 2, port=ports.take, down=down_ms,
                         failover_timeout=max(2000, 3 * down_ms))

    async def restart_as_replica(self, server: RedisServer) -> None:
        """Start *server* again as a replica of the master of the moment."""
        master = await self.master()
        server.args = (*QUICK_SYNC, "--replicaof", "127.0.0.1", str(master))
        await server.start()
        await self.settled(master, strict=False)

    async def used_memory(self) -> dict[str, int | None]:
        """``used_memory`` of each server (None when it is down)."""
        def read() -> dict[str, int | None]:
            result: dict[str, int | None] = {}
            for i, server in enumerate(self.servers):
                try:
                    result[f"redis-{i}"] = int(info(server.port, "memory")["used_memory"]) if server.running else None
                except (OSError, KeyError, ValueError):
                    result[f"redis-{i}"] = None
            return result
        used: dict[str, int | None] = await in_thread(read)
        return used

    def kill_connections_of(self, pid: int) -> int:
        """Close, from the server's side, every connection process *pid*
        has to a Redis server (``CLIENT KILL``); how many. Blocking."""
        ports = {s.port: s for s in self.servers if s.running}
        killed = 0
        for local, remote in sockets_of(pid):
            if remote in ports:
                try:
                    reply = command(remote, "CLIENT", "KILL", "ADDR", f"127.0.0.1:{local}")
                except OSError:
                    continue
                killed += reply if isinstance(reply, int) else reply == "OK"
        return killed

    async def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            try:
                await server.stop()
            except Exception:
                pass

    def logs(self) -> dict[str, str]:
        named = {f"redis-{i}": s for i, s in enumerate(self.servers)}
        named.update({f"sentinel-{i}": s for i, s in enumerate(self.sentinels)})
        return {name: server.log() for name, server in named.items()}


def sockets_of(pid: int) -> list[tuple[int, int]]:
    """``(local port, remote port)`` of each TCP socket of *pid* on loopback. Blocking."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    found = []
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[9] in inodes:
                found.append((int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)))
    return found


class SoakProcess(Process):
    """The tests' daemon process, telling when it ends."""

    def __init__(self, *args: Any, ended: Callable[[SoakProcess, Any], None]) -> None:
        super().__init__(*args)
        self._on_end = ended

    def processEnded(self, reason: Any) -> None:
        # Told first: whoever waits for the end may start it again at once.
        self._on_end(self, reason.value)
        super().processEnded(reason)


class Daemon:
    """One ``twistd -n notifier`` of the soak, restartable on the same ports."""

    def __init__(self, name: str, folder: Path, store: dict[str, Any], ports: Ports,
                 sections: dict[str, dict[str, Any]], died: Callable[[Daemon, Any], None]) -> None:
        self.name = name
        self.folder = folder
        self.public_port, self.api_port = ports.take(), ports.take()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "notifier.toml"
        self.config.write_text(config_text(
            store["url"],
            public={"endpoint": f"tcp:{self.public_port}:interface=127.0.0.1"},
            api={"endpoint": f"tcp:{self.api_port}:interface=127.0.0.1", "admin_token": ADMIN_TOKEN},
            store=store, **sections), encoding="utf-8")
        self.log_file = folder / "daemon.log"
        self.process = SoakProcess(self.config, self.public_port, self.api_port, ended=self._ended)
        self.public = f"http://127.0.0.1:{self.public_port}"
        self.api = f"http://127.0.0.1:{self.api_port}"
        #: Set while the harness itself stops or kills it.
        self.expected_end = False
        self.starts = 0
        self.up = False
        self._died = died

    @property
    def pid(self) -> int | None:
        transport = getattr(self.process, "transport", None)
        return getattr(transport, "pid", None) if self.process.running else None

    def _save_log(self) -> None:
        if self.process.output:
            with self.log_file.open("ab") as f:
                f.write(bytes(self.process.output))
            self.process.output.clear()

    def _ended(self, process: SoakProcess, reason: Any) -> None:
        self.up = False
        self._save_log()
        if not self.expected_end:
            self._died(self, reason)

    async def start(self) -> None:
        self._save_log()
        self.expected_end = False
        self.starts += 1
        await self.process.start()
        self.up = True

    async def kill(self) -> None:
        """SIGKILL, and wait until it has ended."""
        self.expected_end = True
        self.up = False
        await self.process.kill()

    async def terminate(self, seconds: float = 30) -> Any:
        """SIGTERM (a deploy), and wait until it has drained and ended."""
        self.expected_end = True
        self.up = False
        self.process.terminate()
        return await self.process.stopped(seconds)

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.process.admin(method, path, body)

    def close_log(self) -> None:
        self._save_log()


async def mount_small_fs(folder: Path) -> bool:
    """A tmpfs of ``SQLITE_FS`` on *folder*: whether it could be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(folder):
        await unmount(folder)
    if shutil.which("mount") is None:
        return False
    out, err, code = await getProcessOutputAndValue(
        "mount", ["-t", "tmpfs", "-o", f"size={SQLITE_FS},mode=0700", "soak-sqlite", str(folder)],
        env=dict(os.environ))
    return bool(code == 0)


async def unmount(folder: Path) -> None:
    if os.path.ismount(folder):
        await getProcessOutputAndValue("umount", [str(folder)], env=dict(os.environ))


def fill(folder: Path) -> int:
    """Fill the file system of *folder* with a file; the bytes taken. Blocking."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    taken = 0
    try:
        for size in (1 << 20, 65536, 4096, 512):
            chunk = b"\0" * size
            while True:
                try:
                    written = os.write(fd, chunk)
                except OSError as e:
                    if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                        raise
                    break
                taken += written
                if written < size:
                    break
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return taken


def unfill(folder: Path) -> None:
    try:
        (folder / "filler").unlink()
    except FileNotFoundError:
        pass


def children_of(pid: int) -> list[int]:
    """The processes whose parent is *pid*. Blocking."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def limit_file_size(pid: int, size: int | None) -> bool:
    """``RLIMIT_FSIZE`` of a running process (None: unlimited): the stand-in
    for a full disk where no file system can be mounted. Blocking."""
    try:
        value = resource.RLIM_INFINITY if size is None else size
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (value, resource.RLIM_INFINITY))
        return True
    except (OSError, ValueError):
        return False


TICKS = os.sysconf("SC_CLK_TCK")


def process_figures(pid: int | None) -> tuple[int | None, int | None, float | None]:
    """RSS (bytes), open file descriptors and CPU seconds used of *pid*,
    from /proc. Blocking."""
    if pid is None:
        return None, None, None
    rss = None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    break
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return None, None, None
    return rss, fds, cpu


__all__ = ["Cluster", "Daemon", "Ports", "Relay", "SERVICE", "children_of", "fill", "in_thread",
           "limit_file_size", "mount_small_fs", "process_figures", "sockets_of", "unfill", "unmount"]
