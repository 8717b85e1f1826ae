"""The faults of a soak, on a schedule drawn from the seed.

Three tracks run side by side, each one fault at a time (the next begins
once the previous is over and its gap has passed, never before its planned
time):

* the Redis cluster: ``daemon-kill9`` (SIGKILL of a daemon, started again a
  few seconds later), ``daemon-sigterm`` (a deploy: drained, then started
  again at once), ``redis-master-kill`` (SIGKILL of the master: Sentinel
  fails it over; it comes back later as a replica), ``redis-replica-kill``
  (SIGKILL of a replica, back later), ``redis-net-cut`` (one daemon cut
  from Redis and the Sentinels, then restored);
* the SQLite daemon: ``sqlite-kill-mid-batch`` (SIGKILL while a large batch
  is being written, started again) and ``sqlite-disk-full`` (its file
  system filled, then emptied);
* the site: ``webhook-down`` (the webhook receiver refuses connections).

The first daemon (``redis-a``) is never killed nor restarted, so that its
memory and descriptors are seen over the whole run.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet import defer, reactor

from soak.topology import children_of, fill, in_thread, limit_file_size, unfill
from tests.support import sleep

CLUSTER = ["daemon-kill9", "daemon-sigterm", "redis-master-kill", "redis-replica-kill", "redis-net-cut"]
SQLITE = ["sqlite-kill-mid-batch", "sqlite-disk-full"]
SITE = ["webhook-down"]
#: Seconds after a fault is over during which what happens is still its doing.
AFTERMATH = 5.0


@attrs.define
class Fault:
    at: float           # planned, seconds from the start of the load
    kind: str
    target: str
    hold: float         # seconds the fault lasts
    started: float | None = None
    ended: float | None = None
    notes: list[str] = attrs.Factory(list)


def _holds(short: bool) -> dict[str, tuple[float, float]]:
    if short:
        return {"daemon-kill9": (1, 3), "daemon-sigterm": (0, 0), "redis-master-kill": (2, 5),
                "redis-replica-kill": (3, 6), "redis-net-cut": (4, 7), "sqlite-kill-mid-batch": (1, 2),
                "sqlite-disk-full": (6, 10), "webhook-down": (15, 15)}
    return {"daemon-kill9": (1, 5), "daemon-sigterm": (0, 0), "redis-master-kill": (5, 20),
            "redis-replica-kill": (5, 30), "redis-net-cut": (5, 30), "sqlite-kill-mid-batch": (1, 5),
            "sqlite-disk-full": (10, 40), "webhook-down": (60, 60)}


def schedule(seed: int, duration: float, short: bool) -> list[Fault]:
    """The planned faults of a run of *duration* seconds, from *seed*."""
    rng = random.Random(f"soak-faults-{seed}")
    holds = _holds(short)
    warmup = 10.0 if short else 120.0
    # How long before the end of the load the last fault of a track must be
    # over (the webhook retries of a site that was down take their time).
    tails = {"cluster": 15.0, "sqlite": 15.0, "site": 45.0} if short else \
        {"cluster": 90.0, "sqlite": 90.0, "site": 240.0}
    gaps = {"cluster": (3, 6) if short else (30, 90), "sqlite": (8, 15) if short else (60, 150),
            "site": (20, 30) if short else (240, 420)}
    # Rough seconds a fault takes besides its hold (recovery), to plan the next.
    costs = {"cluster": 5.0 if short else 10.0, "sqlite": 3.0, "site": 1.0}
    faults = []
    for track, kinds in (("cluster", CLUSTER), ("sqlite", SQLITE), ("site", SITE)):
        at = warmup + (rng.uniform(0, 5) if short else rng.uniform(0, 60))
        bag: list[str] = []
        while True:
            if not bag:
                bag = list(kinds)
                rng.shuffle(bag)
            kind = bag.pop()
            hold = rng.uniform(*holds[kind])
            if at + hold > duration - tails[track]:
                break
            if kind in ("daemon-kill9", "daemon-sigterm"):
                target = rng.choice(["redis-b", "redis-c"])
            elif kind == "redis-net-cut":
                target = rng.choice(["redis-a", "redis-b", "redis-c"])
            elif kind == "redis-replica-kill":
                target = f"replica {rng.randint(0, 1)}"
            elif kind == "redis-master-kill":
                target = "master"
            elif kind.startswith("sqlite"):
                target = "sqlite"
            else:
                target = "receiver"
            faults.append(Fault(round(at, 1), kind, target, round(hold, 1)))
            at += hold + costs[track] + rng.uniform(*gaps[track])
    return sorted(faults, key=lambda f: f.at)


def track_of(kind: str) -> str:
    return "cluster" if kind in CLUSTER else "sqlite" if kind in SQLITE else "site"


class Faults:
    """Carries out the schedule on a running soak (``soak``: the harness,
    which has ``cluster``, ``daemons``, ``sqlite``, ``receiver``,
    ``sqlite_publisher``, ``small_fs``, ``sqlite_folder`` and ``t0``)."""

    def __init__(self, soak: Any, planned: list[Fault]) -> None:
        self.soak = soak
        self.planned = planned
        self.done: list[Fault] = []
        self.stopping = False
        self.tracks: list[defer.Deferred[None]] = []
        self.rng = random.Random(f"soak-fault-acts-{soak.seed}")

    def start(self) -> None:
        for track in ("cluster", "sqlite", "site"):
            mine = [f for f in self.planned if track_of(f.kind) == track]
            self.tracks.append(defer.Deferred.fromCoroutine(self._track(mine)))

    async def stop(self) -> None:
        """No new fault; wait for the one going on to be over."""
        self.stopping = True
        await defer.DeferredList(self.tracks, consumeErrors=True)

    def windows(self) -> list[tuple[float, float, str]]:
        """``(start, end, kind)`` of each fault carried out, its aftermath included."""
        now = reactor.seconds()
        return [(f.started, (f.ended or now) + AFTERMATH, f.kind) for f in self.done if f.started is not None]

    def kind_at(self, t: float) -> str | None:
        for start, end, kind in self.windows():
            if start <= t <= end:
                return kind
        return None

    async def _track(self, faults: list[Fault]) -> None:
        for fault in faults:
            while not self.stopping and reactor.seconds() < self.soak.t0 + fault.at:
                await sleep(min(1.0, self.soak.t0 + fault.at - reactor.seconds()))
            if self.stopping:
                return
            fault.started = reactor.seconds()
            self.done.append(fault)
            self.soak.say(f"fault {fault.kind} on {fault.target} for {fault.hold:.1f} s")
            action: Callable[[Fault], Awaitable[None]] = getattr(self, "_" + fault.kind.replace("-", "_"))
            try:
                await action(fault)
            except Exception as e:
                fault.notes.append(f"failed: {e!r}")
                self.soak.say(f"fault {fault.kind} failed: {e!r}")
            fault.ended = reactor.seconds()
            self.soak.say(f"fault {fault.kind} over after {fault.ended - fault.started:.1f} s"
                          + (f" ({'; '.join(fault.notes)})" if fault.notes else ""))

    # the cluster

    def _daemon(self, name: str) -> Any:
        return next(d for d in self.soak.daemons if d.name == name)

    async def _daemon_kill9(self, fault: Fault) -> None:
        daemon = self._daemon(fault.target)
        await daemon.kill()
        await sleep(fault.hold)
        await daemon.start()

    async def _daemon_sigterm(self, fault: Fault) -> None:
        daemon = self._daemon(fault.target)
        began = reactor.seconds()
        reason = await daemon.terminate()
        fault.notes.append(f"drained in {reactor.seconds() - began:.1f} s ({type(reason).__name__})")
        await daemon.start()

    async def _redis_master_kill(self, fault: Fault) -> None:
        cluster = self.soak.cluster
        old = await cluster.master()
        await cluster.server(old).kill()
        began = reactor.seconds()
        new = await cluster.failed_over(old)
        fault.notes.append(f"{cluster.name(old)} -> {cluster.name(new)} in {reactor.seconds() - began:.1f} s")
        await sleep(fault.hold)
        await cluster.restart_as_replica(cluster.server(old))

    async def _redis_replica_kill(self, fault: Fault) -> None:
        cluster = self.soak.cluster
        master = await cluster.master()
        replicas = [s for s in cluster.servers if s.port != master]
        victim = replicas[int(fault.target.split()[-1]) % len(replicas)]
        fault.notes.append(cluster.name(victim.port))
        await victim.kill()
        await sleep(fault.hold)
        await cluster.restart_as_replica(victim)

    async def _redis_net_cut(self, fault: Fault) -> None:
        daemon = self._daemon(fault.target)
        relays = self.soak.relays[daemon.name]
        for relay in relays:
            await relay.cut()
        killed = 0
        # Twice: a connection being made at the first pass is caught by the second.
        for _ in range(2):
            if daemon.pid is not None:
                killed += await in_thread(self.soak.cluster.kill_connections_of, daemon.pid)
            await sleep(0.5)
        fault.notes.append(f"{killed} Redis connections closed")
        await sleep(max(0.0, fault.hold - 1.0))
        for relay in relays:
            await relay.restore()

    # the SQLite daemon

    async def _sqlite_kill_mid_batch(self, fault: Fault) -> None:
        daemon = self.soak.sqlite
        await self.soak.sqlite_publisher.batch_now(500)
        await sleep(self.rng.uniform(0.002, 0.03))
        await daemon.kill()
        await sleep(fault.hold)
        await daemon.start()

    async def _sqlite_disk_full(self, fault: Fault) -> None:
        daemon = self.soak.sqlite
        if self.soak.small_fs:
            try:
                taken = await in_thread(fill, self.soak.sqlite_folder)
                fault.notes.append(f"file system filled ({taken >> 20} MiB)")
                await sleep(fault.hold)
            finally:
                await in_thread(unfill, self.soak.sqlite_folder)
            return
        # The stand-in: the journal may not grow any file (RLIMIT_FSIZE).
        journals = await in_thread(children_of, daemon.pid) if daemon.pid else []
        for pid in journals:
            await in_thread(limit_file_size, pid, 0)
        fault.notes.append(f"RLIMIT_FSIZE 0 on {len(journals)} journal process(es)")
        try:
            await sleep(fault.hold)
        finally:
            for pid in journals:
                await in_thread(limit_file_size, pid, None)

    # the site

    async def _webhook_down(self, fault: Fault) -> None:
        await self.soak.receiver.down()
        try:
            await sleep(fault.hold)
        finally:
            await self.soak.receiver.up()
