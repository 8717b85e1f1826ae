"""A soak from start to end: the topology, the load, the faults, the
samples, the verdict and the report (docs/reliability.rst)."""

from __future__ import annotations

import math
import os
import random
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import attrs
from twisted.internet import defer, reactor, threads
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from soak import report
from soak.clients import Client, PusherClient, Site, Spec, Toggler, World
from soak.faults import AFTERMATH, CLUSTER, SQLITE, Faults, schedule
from soak.ledger import Ledger
from soak.metrics import Metrics
from soak.publishers import Publisher
from soak.sampler import Sampler
from soak.topology import Cluster, Daemon, Ports, Relay, mount_small_fs, unmount
from soak.webhooks import Receiver, WebhookLedger
from soak.webhooks import failures as webhook_failures
from tests.pusher.support import App
from tests.support import call, sleep

REDIS_CENTERS = [f"c{i}" for i in range(10)]
ROOMS = [f"presence-room{i}" for i in range(3)]
TOGGLES = [f"toggle{i}" for i in range(4)]
SQLITE_CENTERS = [f"d{i}" for i in range(5)]
EVENTS = ["center_occupied", "center_vacated", "member_joined", "member_left"]
LEAVE_GRACE = 2.0
#: uids of the presence clients: several clients share one, as tabs do.
UIDS = [f"u{i}" for i in range(24)]
#: The bound on a daemon's RSS growth after warm-up (MiB an hour).
RSS_BOUND = 20.0
#: MiB a daemon may keep, once every subscriber has left, over what it had
#: when its process started (docs/reliability.rst).
IDLE_BOUND = 16.0


@attrs.define
class Options:
    duration: float
    seed: int
    out: Path
    short: bool
    clients: int
    sqlite_clients: int
    rate: float
    sqlite_rate: float


def sections() -> dict[str, dict[str, Any]]:
    """The daemons' settings besides the listeners and the store
    (docs/reliability.rst, Topology, says why each differs from the default)."""
    return {
        "subscribers": {"ping_interval": 10, "send_buffer_bytes": 131072, "drain_seconds": 2},
        "presence": {"leave_grace": LEAVE_GRACE},
        "webhooks": {"batch_seconds": 1, "timeout": 3, "retry_for": 600},
    }


class Soak:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.seed = options.seed
        self.out = options.out.resolve()
        self.work = self.out / "work"
        self.rng = random.Random(f"soak-{options.seed}")
        self.metrics = Metrics()
        self.webhooks = WebhookLedger(LEAVE_GRACE)
        self.ledger: Ledger | None = None
        self.world: World | None = None
        self.daemons: list[Daemon] = []
        self.sqlite: Daemon | None = None
        self.relays: dict[str, list[Relay]] = {}
        self.cluster: Cluster | None = None
        self.receiver: Receiver | None = None
        self.sqlite_folder = self.work / "sqlite"
        self.small_fs = False
        self.started = time.time()
        self.t0 = reactor.seconds()
        self.clients: set[Any] = set()
        self.client_runs: list[defer.Deferred[None]] = []
        self.togglers: list[Toggler] = []
        self.toggler_runs: list[defer.Deferred[None]] = []
        self.deaths: list[dict[str, Any]] = []
        self.sites: dict[str, Site] = {}
        self.populations: list[defer.Deferred[None]] = []
        self.faults: Faults | None = None
        self.sampler: Sampler | None = None
        self.publishers: list[Publisher] = []
        self.sqlite_publisher: Publisher | None = None
        self.log: TextIO | None = None
        self.load_end = 0.0
        self.git = ""
        self.hooks_end = 0.0
        #: Seconds a publish is retried before it is given up.
        self.give_up = 45.0 if options.short else 120.0

    # output

    def say(self, line: str) -> None:
        text = f"[{reactor.seconds() - self.t0:7.1f} s] {line}"
        print(text, flush=True)
        if self.log is not None:
            self.log.write(text + "\n")
            self.log.flush()

    # the run

    async def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = (self.out / "soak.log").open("w")
        self._twisted_log = (self.out / "harness-warnings.log").open("w")
        globalLogBeginner.beginLoggingTo([FilteringLogObserver(
            textFileLogObserver(self._twisted_log), [LogLevelFilterPredicate(LogLevel.warn)])],
            redirectStandardIO=False)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        failed_setup = None
        self.git = await _git()
        try:
            await self.setup()
            await self.load()
            await self.drain()
        except Exception as e:
            failed_setup = e
            self.say(f"the soak could not go on: {e!r}")
        finally:
            await self.teardown()
        result = self.result(failed_setup)
        await threads.deferToThread(report.write, self.out, result)
        self.say(f"report: {self.out / 'report.txt'} and {self.out / 'report.html'}")
        print(report.text(result), flush=True)
        return 0 if not result["failures"] else 1

    async def setup(self) -> None:
        options = self.options
        if self.work.exists():
            await unmount(self.sqlite_folder)
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        ports = Ports()
        self.say(f"seed {self.seed}, {options.duration:.0f} s of load, output in {self.out}")
        self.cluster = Cluster(self.work / "redis", ports, down_ms=1500)
        await self.cluster.start()
        self.say("Redis: a master, two replicas, three Sentinels")
        self.receiver = Receiver(self.webhooks, random.Random(f"soak-hooks-{self.seed}"), ports.take())
        await self.receiver.up()
        for name in ("redis-a", "redis-b", "redis-c"):
            relays = []
            for sentinel in self.cluster.sentinels:
                relay = Relay(sentinel.port)
                relay.port_number = ports.take()
                await relay.start()
                relays.append(relay)
            self.relays[name] = relays
            listed = ",".join(f"127.0.0.1:{relay.port_number}" for relay in relays)
            store = {"url": f"redis+sentinel://{listed}/soak/0", "replicas_ack": 1, "replicas_timeout_ms": 500}
            self.daemons.append(Daemon(name, self.work / name, store, ports, sections(), self._died))
        self.small_fs = await mount_small_fs(self.sqlite_folder)
        self.say("SQLite file on a tmpfs of its own" if self.small_fs
                 else "no file system could be mounted: a full disk is RLIMIT_FSIZE on the journal")
        store = {"url": f"sqlite:{self.sqlite_folder / 'notifier.db'}", "durable": True}
        self.sqlite = Daemon("sqlite", self.work / "sqlite-daemon", store, ports, sections(), self._died)
        await defer.DeferredList([defer.Deferred.fromCoroutine(d.start()) for d in [*self.daemons, self.sqlite]],
                                 fireOnOneErrback=True, consumeErrors=True)
        self.say("daemons: redis-a, redis-b, redis-c (Sentinel, replicas_ack = 1), sqlite (durable)")
        history = {}
        redis_site = await self._site("redis", "soak", self.daemons[0], {
            **{c: {} for c in REDIS_CENTERS}, "bulk": {}, "tiny": {"history": 8},
            **{r: {"private": True, "presence": True} for r in ROOMS}, **{t: {} for t in TOGGLES}})
        sqlite_site = await self._site("sqlite", "durable", self.sqlite, {
            **{c: {} for c in SQLITE_CENTERS}, "dtiny": {"history": 8}, "dtoggle": {}})
        for site in (redis_site, sqlite_site):
            history.update({f"{site.store}/{c}": n for c, n in site.history.items()})
        self.ledger = Ledger(history)
        self.world = World(self.ledger, self.metrics, random.Random(f"soak-clients-{self.seed}"))
        self.faults = Faults(self, schedule(self.seed, options.duration, options.short))
        self.sampler = Sampler(self, every=2.0 if options.short else 5.0)
        # A webhook reaches every daemon within about 2 seconds.
        await sleep(3)

    async def _site(self, store: str, name: str, daemon: Daemon, centers: dict[str, dict[str, Any]]) -> Site:
        status, body = await daemon.admin("POST", "/admin/v1/publishers", {"name": name})
        if status != 201:
            raise RuntimeError(f"adding the publisher {name}: {status} {body}")
        secret = body["secret"]
        app = App(name, body["pusher"]["app_id"], body["pusher"]["key"], secret)
        history = {}
        for center, center_options in centers.items():
            status, made = await call("PUT", f"{daemon.api}/api/v1/centers/{center}", center_options or None,
                                      auth=(name, secret))
            if status != 201:
                raise RuntimeError(f"making the center {center}: {status} {made}")
            history[center] = made["history"]
        assert self.receiver is not None
        self.receiver.secrets[name] = secret
        status, hook = await call("PUT", f"{daemon.api}/api/v1/webhook",
                                  {"url": self.receiver.url(name), "events": EVENTS}, auth=(name, secret))
        if status != 200:
            raise RuntimeError(f"setting the webhook of {name}: {status} {hook}")
        daemons = self.daemons if store == "redis" else [daemon]
        site = Site(store, name, secret, app, daemons, history,
                    {c for c, o in centers.items() if o.get("private")})
        self.sites[store] = site
        return site

    def _died(self, daemon: Daemon, reason: Any) -> None:
        self.deaths.append({"t": reactor.seconds() - self.t0, "daemon": daemon.name, "reason": repr(reason)})
        self.say(f"daemon {daemon.name} ended by itself: {reason!r}; started again in 2 s (as systemd would)")

        async def again() -> None:
            if not daemon.process.running:
                try:
                    await daemon.start()
                except Exception as e:
                    self.say(f"daemon {daemon.name} could not be started again: {e!r}")

        reactor.callLater(2, lambda: defer.Deferred.fromCoroutine(again()))

    async def load(self) -> None:
        options = self.options
        assert self.world is not None and self.faults is not None and self.sampler is not None
        self.t0 = reactor.seconds()
        redis, sqlite = self.sites["redis"], self.sites["sqlite"]
        regular = {c: (1.0, 60, 300) for c in REDIS_CENTERS}
        self.publishers = [
            Publisher(self.world, redis, "R", {**regular, "bulk": (0.5, 4000, 8000), "tiny": (0.5, 60, 200),
                                               **{r: (0.3, 60, 200) for r in ROOMS}},
                      rate=options.rate, batch_share=0.1, batch_sizes=(2, 8), give_up=self.give_up),
            Publisher(self.world, sqlite, "S", {**{c: (1.0, 60, 300) for c in SQLITE_CENTERS},
                                                "dtiny": (0.5, 60, 200)},
                      rate=options.sqlite_rate, batch_share=0.15, batch_sizes=(2, 12), give_up=self.give_up),
        ]
        self.sqlite_publisher = self.publishers[1]
        for publisher in self.publishers:
            publisher.start()
        hold = (3.0, 8.0) if options.short else (5.0, 30.0)
        for site, centers in ((redis, TOGGLES), (sqlite, ["dtoggle"])):
            for center in centers:
                toggler = Toggler(self.world, site, center, LEAVE_GRACE, self.webhooks.occupied, hold)
                self.togglers.append(toggler)
                self.toggler_runs.append(defer.Deferred.fromCoroutine(toggler.run()))
        self.populations = [defer.Deferred.fromCoroutine(self._population(redis, options.clients)),
                            defer.Deferred.fromCoroutine(self._population(sqlite, options.sqlite_clients))]
        self.sampler.start()
        self.faults.start()
        self.say(f"load: {options.clients} + {options.sqlite_clients} subscribers, "
                 f"{options.rate:g} + {options.sqlite_rate:g} publishes a second; "
                 f"{len(self.faults.planned)} faults planned")
        while reactor.seconds() < self.t0 + options.duration:
            await sleep(min(1.0, self.t0 + options.duration - reactor.seconds()))
        self.load_end = reactor.seconds()

    def _spec(self, site: Site) -> Spec:
        rng = self.world.rng if self.world is not None else self.rng
        low, high = (3.0, 60.0) if self.options.short else (5.0, 300.0)
        lifetime = math.exp(rng.uniform(math.log(low), math.log(high)))
        if site.store == "redis":
            regular = REDIS_CENTERS
            kinds = {"ws": 20, "ws-multi": 10, "sse": 12, "sse-multi": 6, "lp": 6, "lp-multi": 4, "pusher": 18,
                     "presence": 10, "slow": 4, "sleeper": 4}
            tiny, extra = "tiny", ["bulk", "tiny"]
        else:
            regular = SQLITE_CENTERS
            kinds = {"ws": 25, "ws-multi": 12, "sse": 18, "sse-multi": 6, "lp": 12, "lp-multi": 6, "pusher": 10,
                     "sleeper": 6}
            tiny, extra = "dtiny", ["dtiny"]
        kind = rng.choices(list(kinds), list(kinds.values()))[0]
        transport = {"ws": "websocket", "sse": "sse", "lp": "longpoll"}.get(kind.split("-")[0], "websocket")

        def several() -> list[str]:
            pool = regular + extra
            return rng.sample(pool, rng.randint(2, 4))

        if kind == "pusher":
            centers = rng.sample(regular, rng.randint(1, 3))
            if site.store == "redis" and rng.random() < 0.3:
                centers.append(rng.choice(ROOMS))
            return Spec("pusher", centers, lifetime, uid=rng.choice(UIDS))
        if kind == "presence":
            centers = [rng.choice(ROOMS)] + (rng.sample(regular, 1) if rng.random() < 0.4 else [])
            return Spec(rng.choice(["websocket", "sse"]), centers, lifetime, uid=rng.choice(UIDS))
        if kind == "slow":
            return Spec("websocket", ["bulk", *rng.sample(regular, 1)], max(lifetime, 30.0), slow=True)
        if kind == "sleeper":
            return Spec(rng.choice(["websocket", "longpoll", "sse"]), [tiny], max(lifetime, 40.0), sleeper=True)
        if kind.endswith("-multi"):
            return Spec(transport, several(), lifetime)
        return Spec(transport, [rng.choice(regular)], lifetime)

    async def _population(self, site: Site, target: int) -> None:
        """Keeps *target* subscribers of *site* alive, each replaced when it leaves."""
        assert self.world is not None
        alive: set[Any] = set()
        made = 0
        while not self.world.ending:
            # At most 40 new ones a second (a ramp at the start, churn after).
            for _ in range(min(4, target - len(alive))):
                made += 1
                spec = self._spec(site)
                name = f"{site.store}-{spec.transport}-{made}"
                client = (PusherClient if spec.transport == "pusher" else Client)(self.world, site, spec, name)
                alive.add(client)
                self.clients.add(client)
                d = defer.Deferred.fromCoroutine(client.run())
                d.addBoth(self._gone, client, alive)
                self.client_runs.append(d)
            await sleep(0.1)
            self.client_runs = [d for d in self.client_runs if not d.called]

    def _gone(self, result: Any, client: Any, alive: set[Any]) -> Any:
        alive.discard(client)
        self.clients.discard(client)
        return result

    async def drain(self) -> None:
        assert self.faults is not None and self.world is not None and self.cluster is not None
        self.say("load over: no new fault; waiting for the one going on")
        await self.faults.stop()
        for daemon in [*self.daemons, self.sqlite]:
            if daemon is not None and not daemon.process.running:
                self.say(f"{daemon.name} is down at the end: started again")
                await daemon.start()
        for server in self.cluster.servers:
            if not server.running:
                await self.cluster.restart_as_replica(server)
        for toggler in self.togglers:
            toggler.stop()
        for publisher in self.publishers:
            await publisher.stop(self.give_up + 10)
        self.say("publishers stopped; subscribers leave, each with a final read")
        await sleep(2)
        self.world.ending = True
        for client in list(self.clients):
            client.leave_now()
        waiting = defer.DeferredList(list(self.client_runs) + list(self.populations) + list(self.toggler_runs),
                                     consumeErrors=True)
        left = reactor.seconds()
        while not waiting.called and reactor.seconds() - left < 180:
            await sleep(1)
            if reactor.seconds() - left > 5 and self.clients:
                kinds = sorted({type(c).__name__ + " " + c.spec.transport for c in self.clients})
                self.say(f"{len(self.clients)} subscribers still leaving: {', '.join(kinds)}")
        if not waiting.called:
            self.metrics.harness_errors.append("subscribers still leaving after 180 s")
        self.say("waiting for the last webhook requests")
        deadline = reactor.seconds() + (75 if self.options.short else 120)
        while reactor.seconds() < deadline:
            last = self.webhooks.requests[-1].t if self.webhooks.requests else 0
            pending = set(self.webhooks.first_seen) - set(self.webhooks.handled)
            # A request that failed comes again within 60 s (the longest
            # backoff), unless its daemon was stopped meanwhile.
            if reactor.seconds() - last > (65 if pending else LEAVE_GRACE + 6):
                break
            await sleep(1)
        self.hooks_end = reactor.seconds()
        if self.sampler is not None:
            # Samples of the daemons with no subscriber left (report.left_idle).
            gone = left + 2 * self.sampler.every + 1 - reactor.seconds()
            if gone > 0:
                await sleep(gone)
            await self.sampler.stop()

    async def teardown(self) -> None:
        for daemon in [*self.daemons, self.sqlite]:
            if daemon is None:
                continue
            try:
                if daemon.process.running:
                    await daemon.terminate(20)
            except Exception:
                await daemon.kill()
            daemon.close_log()
        for relays in self.relays.values():
            for relay in relays:
                await relay.stop()
        if self.cluster is not None:
            logs = self.cluster.logs()
            await self.cluster.stop()
            for name, text in logs.items():
                (self.work / "redis" / f"{name}.log").write_text(text)
        if self.receiver is not None:
            await self.receiver.down()
        if self.small_fs:
            db = self.sqlite_folder
            await unmount(db)

    # the verdict

    def result(self, failed: Exception | None) -> dict[str, Any]:
        options = self.options
        windows = self.faults.windows() if self.faults is not None else []

        def quiet(a: float, b: float) -> bool:
            return not any(start <= b and end >= a for start, end, _ in windows)

        verdict = self.ledger.judge(quiet) if self.ledger is not None else None
        sites = {"soak": set(CLUSTER), "durable": set(SQLITE)}
        hooks = self.webhooks.judge(windows, (self.hooks_end or reactor.seconds()) - LEAVE_GRACE - 3, sites, self.t0)
        samples = self.sampler.samples if self.sampler is not None else []
        warmup = 30.0 if options.short else 300.0
        flat = report.flatness([s for s in samples if s["t"] <= options.duration], warmup, RSS_BOUND,
                               judge_span=math.inf if options.short else 600.0)
        outages = report.outages(self.metrics.outages, windows, self.t0)
        delays = report.publish_delays(self.metrics.retried, windows, self.t0)
        logs = report.scan_logs([d.log_file for d in [*self.daemons, self.sqlite] if d is not None])
        failures: list[str] = []
        if failed is not None:
            failures.append(f"the soak could not run to its end: {failed!r}")
        if verdict is not None:
            failures += verdict.failures()
        failures += [f"webhooks: {f}" for f in webhook_failures(hooks)]
        if self.deaths:
            failures.append(f"{len(self.deaths)} daemon(s) ended by themselves")
        five_hundreds = [a for a in self.metrics.anomalies if a["what"].split()[0:1] != ["Pusher"]]
        if five_hundreds:
            failures.append(f"{len(five_hundreds)} answers no client should get (5xx other than 503, refusals)")
        if self.metrics.harness_errors:
            failures.append(f"{len(self.metrics.harness_errors)} errors of the harness itself")
        failures += [f"flatness: {f}" for f in flat["failures"]]
        idle = report.left_idle(samples, IDLE_BOUND)
        failures += [f"memory: {f}" for f in idle["failures"]]
        faults = [{"at": f.at, "kind": f.kind, "target": f.target, "hold": f.hold,
                   "started": None if f.started is None else f.started - self.t0,
                   "ended": None if f.ended is None else f.ended - self.t0, "notes": f.notes}
                  for f in (self.faults.done if self.faults is not None else [])]
        planned = len(self.faults.planned) if self.faults is not None else 0
        return {
            "seed": self.seed, "short": options.short, "duration": options.duration,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started)),
            "wall": time.time() - self.started, "git": self.git,
            "options": {"clients": options.clients, "sqlite_clients": options.sqlite_clients,
                        "rate": options.rate, "sqlite_rate": options.sqlite_rate,
                        "small_fs": self.small_fs},
            "failures": failures,
            "ledger": report.verdict_dict(verdict, self.t0) if verdict is not None else None,
            "webhooks": hooks, "faults": faults, "faults_planned": planned,
            "outages": outages, "publish_delays": delays,
            "attempts": dict(self.metrics.attempts), "ends": dict(self.metrics.ends),
            "anomalies": self.metrics.anomalies[:50], "anomaly_count": len(self.metrics.anomalies),
            "harness_errors": self.metrics.harness_errors[:50], "deaths": self.deaths,
            "final_reads_behind": self.metrics.final_reads_behind,
            "flatness": flat, "left_idle": idle, "logs": logs, "samples": samples, "aftermath": AFTERMATH,
            "webhook_events": [{**e, "ts": round(e["ts"] - self.t0, 3), "received": round(e["received"] - self.t0, 3)}
                               for e in self.webhooks.events],
            "occupancy": {center: [[round(a - self.t0, 3), round(b - self.t0, 3)] for a, b in spans]
                          for center, spans in self.webhooks.occupancy.items()},
        }


async def _git() -> str:
    """The commit, and whether notifier/ differs from it in the working tree."""
    try:
        rev, _, _ = await getProcessOutputAndValue("git", ["rev-parse", "--short", "HEAD"], env=dict(os.environ))
        dirty, _, _ = await getProcessOutputAndValue("git", ["status", "--porcelain", "--", "notifier"],
                                                     env=dict(os.environ))
    except Exception:
        return "unknown"
    text = str(rev.decode().strip())
    return text + (" (notifier/ modified in the working tree)" if dirty.strip() else "")


def main(options: Options) -> int:
    """Run a soak on the reactor; its exit status."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    outcome: list[int] = []

    soak = Soak(options)

    async def go() -> None:
        outcome.append(await soak.run())

    def interrupted() -> Any:
        # Stopped before its end (Ctrl-C): its processes and mount go anyway.
        if not outcome:
            return defer.Deferred.fromCoroutine(soak.teardown())
        return None

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)

    def done(result: Any) -> None:
        if isinstance(result, Exception) or hasattr(result, "getTraceback"):
            print(result.getTraceback() if hasattr(result, "getTraceback") else result, file=sys.stderr)
            outcome.append(2)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(go()).addBoth(done))
    reactor.run()
    return outcome[0] if outcome else 2

