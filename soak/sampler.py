"""Samples every few seconds: each daemon's RSS and open descriptors (from
/proc, its journal process's too), each Redis server's ``used_memory``,
publishes, acknowledgements and deliveries a second, delivery latency,
connections by transport, and the running count of losses and duplicates
(a provisional verdict on the subscribers that have left)."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor

from soak.topology import children_of, in_thread, process_figures
from tests.support import sleep


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _read(pids: dict[str, int | None]) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for name, pid in pids.items():
        rss, fds, cpu = process_figures(pid)
        entry: dict[str, Any] = {"pid": pid, "rss": rss, "fds": fds, "cpu_s": cpu}
        if name == "sqlite" and pid is not None:
            children = children_of(pid)
            entry["journal_rss"] = process_figures(children[0])[0] if children else None
        figures[name] = entry
    return figures


class Sampler:
    def __init__(self, soak: Any, every: float) -> None:
        self.soak = soak
        self.every = every
        self.samples: list[dict[str, Any]] = []
        self.running = False
        self.loop: defer.Deferred[None] | None = None
        self._last: tuple[float, int, int, int] | None = None
        self._provisional = {"lost": 0, "duplicates": 0}
        self._count = 0
        self._judged: set[int] = set()
        #: name -> (pid, CPU seconds, when) at the previous sample.
        self._cpu: dict[str, tuple[Any, Any, float]] = {}
        self._lost = 0
        self._stream_duplicates = 0

    def start(self) -> None:
        self.running = True
        self.loop = defer.Deferred.fromCoroutine(self._run())

    async def stop(self) -> None:
        self.running = False
        if self.loop is not None:
            await self.loop
        await self.sample()

    async def _run(self) -> None:
        while self.running:
            try:
                await self.sample()
            except Exception as e:
                self.soak.metrics.harness_errors.append(f"sampler: {e!r}")
            await sleep(self.every)

    async def sample(self) -> None:
        soak, metrics = self.soak, self.soak.metrics
        now = reactor.seconds()
        pids = {d.name: d.pid for d in [*soak.daemons, soak.sqlite]}
        pids["harness"] = os.getpid()
        figures = await in_thread(_read, pids)
        for name, entry in figures.items():
            before = self._cpu.get(name)
            entry["cpu"] = None
            if before is not None and entry["cpu_s"] is not None and before[0] == entry["pid"]:
                entry["cpu"] = round(100 * (entry["cpu_s"] - before[1]) / max(1e-6, now - before[2]), 1)
            self._cpu[name] = (entry["pid"], entry["cpu_s"], now)
        redis = await soak.cluster.used_memory()
        try:
            master = soak.cluster.name(await soak.cluster.master())
        except Exception:
            master = None
        latencies, metrics.latencies = metrics.latencies, []
        counts = (now, metrics.published, metrics.acked, metrics.handed)
        rates = {"published": None, "acked": None, "handed": None}
        if self._last is not None:
            dt = max(1e-6, now - self._last[0])
            rates = {"published": (counts[1] - self._last[1]) / dt, "acked": (counts[2] - self._last[2]) / dt,
                     "handed": (counts[3] - self._last[3]) / dt}
        self._last = counts
        self._count += 1
        every = max(1, int((10 if soak.options.short else 30) / self.every))
        if self._count % every == 0 and soak.ledger is not None:
            self._provisional = self._judge()
        faults = [kind for start, end, kind in (soak.faults.windows() if soak.faults else [])
                  if start <= now <= end]
        sample = {
            "t": round(now - soak.t0, 2), "daemons": figures, "redis": redis, "master": master,
            **{k: None if v is None else round(v, 2) for k, v in rates.items()},
            "p50": _ms(_percentile(latencies, 0.5)), "p99": _ms(_percentile(latencies, 0.99)),
            "max": _ms(max(latencies) if latencies else None), "deliveries": len(latencies),
            "connected": dict(metrics.connected), "clients": sum(metrics.clients.values()),
            "lost": self._provisional["lost"], "duplicates": self._provisional["duplicates"], "faults": faults,
        }
        self.samples.append(sample)
        if self._count % every == 0:
            rss = " ".join(f"{name} {_mib(f['rss'])}" for name, f in figures.items() if name != "harness")
            cpu = " ".join(f"{name} {f['cpu']}" for name, f in figures.items())
            soak.say(f"clients {sample['clients']} connected {sum(metrics.connected.values())} | "
                     f"published {metrics.published} acked {metrics.acked} handed {metrics.handed} | "
                     f"p99 {sample['p99']} ms | lost {sample['lost']} dup {sample['duplicates']} | "
                     f"RSS MiB {rss} | CPU % {cpu}" + (f" | fault: {', '.join(faults)}" if faults else ""))

    def _judge(self) -> dict[str, int]:
        """The verdict so far on the subscribers that have left, each judged
        once (late acknowledgements aside, the end's verdict is the same;
        it is the one that counts)."""
        soak = self.soak
        ledger = soak.ledger
        now = reactor.seconds()
        done = [s for s in ledger.streams if s.ended is not None and s.ended < now - 20 and id(s) not in self._judged]
        pusher = [s for s in ledger.pusher if s.ended is not None and s.ended < now - 20 and id(s) not in self._judged]
        self._judged.update(id(s) for s in done)
        self._judged.update(id(s) for s in pusher)
        windows = soak.faults.windows() if soak.faults else []

        def quiet(a: float, b: float) -> bool:
            return not any(start <= b and end >= a for start, end, _ in windows)

        verdict = ledger.judge(quiet, streams=done, pusher=pusher)
        self._lost += len(verdict.losses)
        self._stream_duplicates += sum(1 for d in verdict.duplicates if d["what"] != "published twice")
        return {"lost": self._lost,
                "duplicates": self._stream_duplicates + len(ledger.duplicate_ids) + len(ledger.conflicts)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1048576:.0f}"
