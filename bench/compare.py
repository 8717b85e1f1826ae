#!/usr/bin/env python3
"""`make bench`: notifier against Nchan (one nginx worker), goal by goal.

Runs the comparison scenarios with the benchmark's driver, bench/harness.py
(its load generator is bench/loadgen): `harness.py compare` (targets interleaved, each run on a
fresh server), the single-publish scenario with `harness.py run` per target
(Nchan and notifier with different message counts, interleaved by hand), and
batch publishing with bench/batch_publish.py; then reads every RESULT the
harness wrote (results.jsonl under --out) and prints one table: one row per
goal of the performance issue, with notifier's figure, Nchan's, the ratio, the
goal and whether it is met; then notifier's Pusher face (the pusher*
scenarios, notifier only, each right after its native counterpart with the
same counts) over its native WebSocket. See docs/performance.rst.

    python3 bench/compare.py [--repeat 3] [--scenarios ws1k,sse] [--pypy] [--out DIR]

PATH must lead to the project's virtualenv (`twistd`, `import notifier`):
`make bench` sets it. Standard library only (Python 3.11+).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HARNESS = os.path.join(HERE, "harness.py")
PYPY_PROFILE = os.path.join(HERE, "targets", "notifier-pypy.toml")
BASELINE = "nchan-1w"
DOCS_BEGIN = ".. bench-results-begin"
DOCS_END = ".. bench-results-end"


class Scenario:
    """A scenario: its loadgen arguments; native_of, for a scenario of
    notifier's Pusher face, is the native scenario it is compared with (it
    runs against notifier's targets only: Nchan does not speak Pusher)."""

    def __init__(self, key, kind, args, title, scale_flag="-m", native_of=None):
        self.key, self.kind, self.args, self.title = key, kind, args, title
        self.scale_flag = scale_flag
        self.native_of = native_of

    def loadgen_args(self, scale: float) -> list[str]:
        return scaled(self.args, self.scale_flag, scale)


def scaled(args: list[str], flag: str, scale: float) -> list[str]:
    """args with the value of flag multiplied by scale (at least 10)."""
    out = list(args)
    if scale != 1 and flag in out:
        i = out.index(flag) + 1
        out[i] = str(max(10, int(int(out[i]) * scale)))
    return out


# The scenarios, in the order they run; each Pusher one right after its
# native counterpart, with the same counts: only the subscribers' protocol
# differs (the loadgen's --transport pusher: /app/KEY, one public channel
# per center, published to through the same API).
PUSHER = ["--transport", "pusher"]
SCENARIOS = [
    Scenario("ws10k", "fanout", ["-n", "10000", "-m", "150"], "WebSocket fan-out, N=10,000"),
    Scenario(
        "pusher10k",
        "fanout",
        ["-n", "10000", "-m", "150", *PUSHER],
        "Pusher WebSocket fan-out, N=10,000 (notifier only)",
        native_of="ws10k",
    ),
    Scenario("ws1k", "fanout", ["-n", "1000", "-m", "1500"], "WebSocket fan-out, N=1,000"),
    Scenario(
        "pusher1k",
        "fanout",
        ["-n", "1000", "-m", "1500", *PUSHER],
        "Pusher WebSocket fan-out, N=1,000 (notifier only)",
        native_of="ws1k",
    ),
    Scenario(
        "rate",
        "fanout",
        ["-n", "1000", "-m", "500", "--rate", "50"],
        "Latency at 50k deliveries/s (N=1,000, --rate 50)",
    ),
    Scenario("sse", "fanout", ["-n", "1000", "-m", "1000", "--transport", "sse"], "SSE fan-out, N=1,000"),
    Scenario(
        "longpoll",
        "fanout",
        ["-n", "1000", "-m", "800", "--transport", "longpoll"],
        "Long-poll fan-out, N=1,000",
    ),
    Scenario("idle", "idle", ["-n", "10000", "--hold", "10s"], "Idle WebSocket memory, N=10,000"),
    Scenario(
        "pusher-idle",
        "idle",
        ["-n", "10000", "--hold", "10s", *PUSHER],
        "Idle Pusher connections' memory, N=10,000, each subscribed (notifier only)",
        native_of="idle",
    ),
    Scenario(
        "publish", "publish", ["--centers", "100", "-c", "8"], "Single publishes, 8 publishers, 100 centers"
    ),
    Scenario("batch", "batch", [], "Batch publishing, 8 connections, batches of 100"),
]
BY_KEY = {s.key: s for s in SCENARIOS}


def log(msg: str) -> None:
    print(f"[make bench] {msg}", flush=True)


# ---------------------------------------------------------------- results


def get(d, path, default=None):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def read_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def count_lines(path: str) -> int:
    return len(read_jsonl(path))


SLOT = re.compile(r"^\[(?:bench|batch)\] === (\S+) \S+ run \d+/\d+")


class Collected:
    """Results of one harness invocation, split into the runs the harness
    kept and every run it made (a run redone because a neighbour disturbed it
    is written to results.jsonl too, then replaced by its redo)."""

    def __init__(self):
        self.kept: list[dict] = []
        self.all: list[dict] = []
        self.failures: list[str] = []


def run_harness(cmd: list[str], jsonl: str, limit_s: float, collected: Collected) -> int:
    """Run one harness command, echo its output, and sort its results.

    A slot starts at each "=== TARGET SCENARIO run i/n" line; its results are
    the lines results.jsonl gained until the next slot. A slot that failed
    keeps none; otherwise the last one is the one the harness kept."""
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    start_lines = count_lines(jsonl)
    slots: list[dict] = []
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=ROOT
    )
    timer = threading.Timer(limit_s, stop_group, args=(proc, f"took more than {limit_s:.0f}s"))
    timer.daemon = True
    timer.start()
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            m = SLOT.match(line)
            if m:
                slots.append({"start": count_lines(jsonl), "failed": None})
            elif slots and ("] FAILED:" in line):
                slots[-1]["failed"] = line.split("FAILED:", 1)[1].strip()
        proc.wait()
    except KeyboardInterrupt:
        stop_group(proc, "interrupted")
        proc.wait()
        raise
    finally:
        timer.cancel()
    lines = read_jsonl(jsonl)
    collected.all.extend(lines[start_lines:])
    for i, slot in enumerate(slots):
        end = slots[i + 1]["start"] if i + 1 < len(slots) else len(lines)
        mine = lines[slot["start"] : end]
        if slot["failed"] is not None:
            collected.failures.append(slot["failed"][:300])
        elif mine:
            collected.kept.append(mine[-1])
    return proc.returncode


def stop_group(proc: subprocess.Popen, why: str) -> None:
    """SIGINT first (the harness then stops its server), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    log(f"stopping the harness: {why}")
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- ports


def profile_ports(path: str) -> list[int]:
    try:
        with open(path, "rb") as f:
            prof = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return []
    return [int(v) for k, v in prof.get("vars", {}).items() if k.endswith("port") and str(v).isdigit()]


def busy_ports(ports: list[int]) -> list[int]:
    busy = []
    for p in ports:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", p)) == 0:
                busy.append(p)
    return busy


def wait_ports_free(ports: list[int], max_wait: float) -> bool:
    """The profiles use fixed ports: a server already there (another
    benchmark on this machine) would be measured instead of ours."""
    deadline = time.monotonic() + max_wait
    busy = busy_ports(ports)
    said = False
    while busy and time.monotonic() < deadline:
        if not said:
            log(f"port(s) {busy} on 127.0.0.1 in use (another benchmark?); waiting up to {max_wait:.0f}s")
            said = True
        time.sleep(2)
        busy = busy_ports(ports)
    if busy:
        log(f"port(s) {busy} still in use: skipping")
        return False
    return True


# ---------------------------------------------------------------- machine


def sh(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
        return (r.stdout or r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info(pypy: bool) -> list[tuple[str, str]]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
            mem = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    debian = ""
    if os.path.isfile("/etc/debian_version"):
        with open("/etc/debian_version") as f:
            debian = "Debian " + f.read().strip()
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"])
    versions = sh(
        [
            sys.executable,
            "-c",
            (
                "import sys, twisted, autobahn, notifier; print(sys.version.split()[0], "
                "twisted.__version__, autobahn.__version__, notifier.__version__)"
            ),
        ]
    ).split()
    info = [
        ("CPU", f"{os.cpu_count()} × {cpu}" if cpu else str(os.cpu_count())),
        ("memory", mem),
        ("system", f"{debian}, Linux {platform.release()}".strip(", ")),
        (
            "notifier",
            (
                f"{versions[3]} ({sh(['git', 'rev-parse', '--short', 'HEAD'])}"
                f"{', uncommitted changes' if dirty else ''})"
                f" on CPython {versions[0]}, Twisted {versions[1]}, Autobahn {versions[2]}"
            )
            if len(versions) == 4
            else f"not importable by {sys.executable}",
        ),
        (
            "Nchan",
            (
                f"{sh(['dpkg-query', '-W', '-f', '${Version}', 'libnginx-mod-nchan']).split(':')[-1]} "
                f"(nginx {sh(['nginx', '-v']).split('/')[-1]}), 1 worker"
            ),
        ),
        ("loadgen", sh(["go", "version"]).replace("go version ", "built with ")),
    ]
    if pypy:
        info.append(
            (
                "PyPy",
                sh(
                    [
                        "/tmp/pypy-venv/bin/python",
                        "-c",
                        "import sys; print(sys.version.replace(chr(10), ' '))",
                    ]
                ),
            )
        )
    return info


# ---------------------------------------------------------------- goals


def median(results: list[dict], path: str) -> float | None:
    vals = [get(r, path) for r in results]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


class Goal:
    """One row: the figure at path in a scenario, its ratio to Nchan's, and
    the goal, either on the ratio ("ratio") or on notifier's own figure ("abs")."""

    def __init__(self, label, scenario, path, fmt, on, op, bound, goal_text, baseline=None):
        self.label, self.scenario, self.path, self.fmt = label, scenario, path, fmt
        self.on, self.op, self.bound, self.goal_text = on, op, bound, goal_text
        self.baseline = baseline or (scenario, path)  # Nchan's figure to divide by


GOALS = [
    Goal(
        "WS fan-out N=10,000, deliveries/s",
        "ws10k",
        "deliveries_per_s",
        "{:,.0f}",
        "ratio",
        ">=",
        0.8,
        "≥ 0.8×",
    ),
    Goal(
        "WS fan-out N=10,000, vs the Go service (0.87× Nchan)",
        "ws10k",
        "deliveries_per_s",
        "{:,.0f}",
        "ratio",
        ">=",
        0.87,
        "≥ 0.87×",
    ),
    Goal(
        "WebSocket connections opened/s, N=10,000",
        "ws10k",
        "connects_per_s",
        "{:,.0f}",
        "ratio",
        ">=",
        0.5,
        "≥ 0.5×",
    ),
    Goal(
        "WS fan-out N=10,000, server CPU µs/delivery",
        "ws10k",
        "server.cpu_us_per_delivery",
        "{:.2f}",
        "ratio",
        "<=",
        1.5,
        "≤ 1.5×",
    ),
    Goal(
        "WS fan-out N=1,000, deliveries/s",
        "ws1k",
        "deliveries_per_s",
        "{:,.0f}",
        "ratio",
        ">=",
        1.0,
        "≥ 1.0×",
    ),
    Goal(
        "WS fan-out N=1,000, vs the Go service (0.67× Nchan)",
        "ws1k",
        "deliveries_per_s",
        "{:,.0f}",
        "ratio",
        ">=",
        0.67,
        "≥ 0.67×",
    ),
    Goal(
        "WS fan-out N=1,000, server CPU µs/delivery",
        "ws1k",
        "server.cpu_us_per_delivery",
        "{:.2f}",
        "ratio",
        "<=",
        1.5,
        "≤ 1.5×",
    ),
    Goal(
        "p99 latency ms at 50k deliveries/s",
        "rate",
        "latency_ms.p99",
        "{:.2f}",
        "ratio",
        "<=",
        1.5,
        "≤ 1.5×",
    ),
    Goal(
        "SSE fan-out N=1,000, deliveries/s",
        "sse",
        "deliveries_per_s",
        "{:,.0f}",
        "ratio",
        ">=",
        0.6,
        "≥ 0.6×",
    ),
    Goal(
        "Long-poll fan-out N=1,000, deliveries/s",
        "longpoll",
        "deliveries_per_s",
        "{:,.0f}",
        "ratio",
        ">=",
        0.6,
        "≥ 0.6×",
    ),
    Goal(
        "Idle WebSocket memory, KiB/conn (PSS)",
        "idle",
        "server.pss_per_conn_kib",
        "{:.2f}",
        "abs",
        "<=",
        12.0,
        "≤ 12 KiB",
    ),
    Goal(
        "Single publishes/s, 8 publishers",
        "publish",
        "publishes_per_s",
        "{:,.0f}",
        "abs",
        ">=",
        10_000,
        "≥ 10,000/s",
    ),
    Goal(
        "Single publishes/s, 8 publishers, vs Nchan",
        "publish",
        "publishes_per_s",
        "{:,.0f}",
        "ratio",
        ">=",
        0.3,
        "≥ 0.3×",
    ),
    Goal(
        "Batch publishing, messages/s (vs Nchan single)",
        "batch",
        "messages_per_s",
        "{:,.0f}",
        "ratio",
        ">=",
        1.0,
        "≥ 1×",
        baseline=("publish", "publishes_per_s"),
    ),
]


class PusherGoal:
    """One row of the Pusher table: the figure at path in a Pusher scenario
    over the same figure of its native counterpart (Scenario.native_of),
    for the same target in the same run; op None: shown, no goal."""

    def __init__(self, label, scenario, path, fmt, op, bound, goal_text, summary=""):
        self.label, self.scenario, self.path, self.fmt = label, scenario, path, fmt
        self.op, self.bound, self.goal_text, self.summary = op, bound, goal_text, summary


PUSHER_GOALS = [
    PusherGoal(
        "Pusher fan-out N=10,000, deliveries/s",
        "pusher10k",
        "deliveries_per_s",
        "{:,.0f}",
        ">=",
        0.9,
        "≥ 0.9×",
        "Pusher fan-out to 10k",
    ),
    PusherGoal(
        "Pusher fan-out N=10,000, server CPU µs/delivery",
        "pusher10k",
        "server.cpu_us_per_delivery",
        "{:.2f}",
        None,
        None,
        "",
    ),
    PusherGoal(
        "Pusher connections opened/s, N=10,000 (with subscribe)",
        "pusher10k",
        "connects_per_s",
        "{:,.0f}",
        None,
        None,
        "",
    ),
    PusherGoal(
        "Pusher fan-out N=1,000, deliveries/s",
        "pusher1k",
        "deliveries_per_s",
        "{:,.0f}",
        ">=",
        0.9,
        "≥ 0.9×",
        "Pusher fan-out to 1k",
    ),
    PusherGoal(
        "Pusher fan-out N=1,000, server CPU µs/delivery",
        "pusher1k",
        "server.cpu_us_per_delivery",
        "{:.2f}",
        None,
        None,
        "",
    ),
    PusherGoal(
        "Idle Pusher memory, KiB/conn (PSS)",
        "pusher-idle",
        "server.pss_per_conn_kib",
        "{:.2f}",
        "<=",
        1.2,
        "≤ 1.2×",
        "Pusher idle memory",
    ),
]


def is_pusher(result: dict) -> bool:
    return result.get("transport") == "pusher"


def loss_counts(runs: list[dict]) -> tuple[int, int]:
    return (sum(int(r.get("lost") or 0) for r in runs), sum(int(r.get("duplicated") or 0) for r in runs))


def pusher_rows(
    results: dict[str, Collected], targets: list[str]
) -> tuple[list[list[str]], list[str], list[dict]]:
    """The Pusher table (notifier's Pusher face over its native WebSocket,
    target by target), its summary lines, and a machine-readable copy."""
    rows, lines, data = [], [], []
    notifiers = [t for t in targets if t != BASELINE]
    for g in PUSHER_GOALS:
        if g.scenario not in results:
            continue
        native_key = BY_KEY[g.scenario].native_of
        for t in notifiers:
            v = median([r for r in results[g.scenario].kept if r.get("target") == t], g.path)
            base = median([r for r in results.get(native_key, Collected()).kept if r.get("target") == t], g.path)
            ratio = v / base if v is not None and base else None
            errors = scenario_errors(results[g.scenario], t)
            if g.op is None and v is None:
                continue  # a figure shown only: none here
            if g.op is None:
                met = ""
            elif v is None:
                met = "no data"
            elif ratio is None:
                met = f"no native figure ({native_key})"
            else:
                met = "met" if check(g.op, ratio, g.bound) else "NOT MET"
            if met == "met" and errors:
                met = "NOT MET (errors)"
            suffix = f" [{t}]" if len(notifiers) > 1 else ""
            rows.append([g.label + suffix, fmt(g.fmt, v), fmt(g.fmt, base), fmt("{:.2f}×", ratio), g.goal_text, met])
            if g.summary:
                per = " per connection" if g.scenario.endswith("idle") else ""
                told = f"{ratio:.2f}× native{per}" if ratio is not None else "no ratio"
                lines.append(f"{g.summary}{suffix}: {told} (goal {g.goal_text}: {met})")
            data.append(
                {
                    "goal": g.label,
                    "target": t,
                    "scenario": g.scenario,
                    "native_scenario": native_key,
                    "figure": g.path,
                    "value": v,
                    "native": base,
                    "ratio": ratio,
                    "op": g.op,
                    "bound": g.bound,
                    "result": met,
                    "errors": errors,
                }
            )
    # zero loss and duplicates in every Pusher fan-out run, as for the native ones
    for t in notifiers:
        runs = [
            r
            for c in results.values()
            for r in c.all
            if r.get("target") == t and r.get("scenario") == "fanout" and is_pusher(r)
        ]
        if not runs:
            continue
        native = [
            r
            for c in results.values()
            for r in c.all
            if r.get("target") == t and r.get("scenario") == "fanout" and not is_pusher(r)
        ]
        lost, dup = loss_counts(runs)
        nlost, ndup = loss_counts(native)
        met = "met" if lost == 0 and dup == 0 else "NOT MET"
        suffix = f" [{t}]" if len(notifiers) > 1 else ""
        rows.append(
            [
                "Lost / duplicated deliveries, all runs" + suffix,
                f"{lost} / {dup} ({len(runs)} runs)",
                f"{nlost} / {ndup} ({len(native)} runs)",
                "",
                "0 / 0",
                met,
            ]
        )
        lines.append(f"Pusher lost / duplicated deliveries{suffix}: {lost} / {dup} in {len(runs)} runs ({met})")
        data.append(
            {
                "goal": "Pusher: zero loss and duplicates",
                "target": t,
                "lost": lost,
                "duplicated": dup,
                "runs": len(runs),
                "result": met,
            }
        )
    return rows, lines, data


def check(op: str, value: float, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def goal_rows(results: dict[str, Collected], targets: list[str]) -> tuple[list[list[str]], list[dict]]:
    """Table rows and a machine-readable copy."""
    rows, data = [], []
    notifiers = [t for t in targets if t != BASELINE]
    for g in GOALS:
        if g.scenario not in results:
            continue
        base_sc, base_path = g.baseline
        base = median(
            [r for r in results.get(base_sc, Collected()).kept if r.get("target") == BASELINE], base_path
        )
        for t in notifiers:
            mine = [r for r in results[g.scenario].kept if r.get("target") == t]
            v = median(mine, g.path)
            ratio = v / base if v is not None and base else None
            errors = scenario_errors(results[g.scenario], t)
            if v is None:
                met = "no data"
            elif g.on == "abs":
                met = "met" if check(g.op, v, g.bound) else "NOT MET"
            elif ratio is None:
                met = "no Nchan figure"
            else:
                met = "met" if check(g.op, ratio, g.bound) else "NOT MET"
            if met == "met" and errors:
                met = "NOT MET (errors)"
            label = g.label + (f" [{t}]" if len(notifiers) > 1 else "")
            rows.append([label, fmt(g.fmt, v), fmt(g.fmt, base), fmt("{:.2f}×", ratio), g.goal_text, met])
            data.append(
                {
                    "goal": g.label.strip(),
                    "target": t,
                    "scenario": g.scenario,
                    "figure": g.path,
                    "value": v,
                    "nchan": base,
                    "ratio": ratio,
                    "goal_on": g.on,
                    "op": g.op,
                    "bound": g.bound,
                    "result": met,
                    "runs": len(mine),
                    "errors": errors,
                }
            )
    # zero loss and zero duplicates in every run (redone runs included)
    for t in notifiers:
        runs = [
            r
            for c in results.values()
            for r in c.all
            if r.get("target") == t and r.get("scenario") == "fanout" and not is_pusher(r)
        ]
        base_runs = [
            r
            for c in results.values()
            for r in c.all
            if r.get("target") == BASELINE and r.get("scenario") == "fanout"
        ]
        if not runs:
            continue
        lost = sum(int(r.get("lost") or 0) for r in runs)
        dup = sum(int(r.get("duplicated") or 0) for r in runs)
        blost = sum(int(r.get("lost") or 0) for r in base_runs)
        bdup = sum(int(r.get("duplicated") or 0) for r in base_runs)
        met = "met" if lost == 0 and dup == 0 else "NOT MET"
        label = "Lost / duplicated deliveries, all runs" + (f" [{t}]" if len(notifiers) > 1 else "")
        rows.append(
            [
                label,
                f"{lost} / {dup} ({len(runs)} runs)",
                f"{blost} / {bdup} ({len(base_runs)} runs)",
                "",
                "0 / 0",
                met,
            ]
        )
        data.append(
            {
                "goal": "zero loss and duplicates",
                "target": t,
                "lost": lost,
                "duplicated": dup,
                "runs": len(runs),
                "nchan_lost": blost,
                "nchan_duplicated": bdup,
                "result": met,
            }
        )
    return rows, data


def scenario_errors(c: Collected, target: str) -> int:
    """Failed requests in the kept runs of target: publish errors, non-201 batch answers."""
    n = 0
    for r in c.kept:
        if r.get("target") != target:
            continue
        n += int(r.get("publish_errors") or 0)
        if r.get("scenario") == "batch" and not r.get("all_201", False):
            n += max(1, sum((r.get("errors") or {}).values()))
    return n


def fmt(f: str, v) -> str:
    return "–" if v is None else f.format(v)


def rst_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)

    def line(r):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()

    return "\n".join([rule, line(header), rule] + [line(r) for r in rows] + [rule])


def notes(results: dict[str, Collected], args) -> list[str]:
    out = []
    for key, c in results.items():
        for f in c.failures:
            out.append(f"{key}: a run failed: {f}")
        for r in c.kept:
            other = r.get("other_cpu_pct")
            if isinstance(other, (int, float)) and other > args.max_other_note:
                out.append(
                    f"{key}: {r.get('target')} run kept with {other:.0f}% of a core used by other processes"
                )
            if int(r.get("publish_errors") or 0):
                out.append(f"{key}: {r.get('target')}: {r['publish_errors']} publish error(s)")
            if int(r.get("unexpected") or 0):
                out.append(f"{key}: {r.get('target')}: {r['unexpected']} unexpected deliveries")
            if r.get("drain_timed_out"):
                out.append(
                    f"{key}: {r.get('target')}: deliveries stopped before all arrived (drain timed out)"
                )
    return out


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--repeat",
        type=int,
        default=int(os.environ.get("REPEAT") or 3),
        help="runs per target and scenario (default 3)",
    )
    ap.add_argument(
        "--scenarios",
        default="",
        help="comma- or space-separated subset of: " + ", ".join(BY_KEY) + " (default: all)",
    )
    ap.add_argument(
        "--pypy", action="store_true", help="add notifier on PyPy (bench/targets/notifier-pypy.toml)"
    )
    ap.add_argument(
        "--out", default="", help="results folder (default: a fresh /tmp/notifier-bench-* folder)"
    )
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every message count by this (a quick check of the set-up: "
        "figures from scaled runs are not comparable with the documented ones)",
    )
    ap.add_argument(
        "--publish-m-nchan", type=int, default=600_000, help="-m of the publish scenario for Nchan"
    )
    ap.add_argument(
        "--publish-m-notifier",
        type=int,
        default=100_000,
        help="-m of the publish scenario for notifier (smaller: its runs would be long)",
    )
    ap.add_argument("--batch-messages", type=int, default=500_000, help="messages per batch-publishing run")
    ap.add_argument(
        "--bench-opts",
        default=os.environ.get("BENCH_OPTS", ""),
        help="extra options for harness.py run/compare, e.g. '--quiet-wait 30 --retries 1'",
    )
    ap.add_argument(
        "--port-wait", type=float, default=300, help="longest wait for the profiles' ports, seconds"
    )
    ap.add_argument(
        "--max-other-note",
        type=float,
        default=25.0,
        help="note kept runs in which other processes used more than this %% of a core",
    )
    ap.add_argument(
        "--update-docs",
        default="",
        metavar="RST",
        help=f"replace the block between '{DOCS_BEGIN}' and '{DOCS_END}' in RST with the results",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.repeat <= 50:
        ap.error("--repeat: 1 to 50")
    if not 0 < args.scale <= 10:
        ap.error("--scale: more than 0, at most 10")

    chosen = [s for s in re.split(r"[,\s]+", args.scenarios) if s] or list(BY_KEY)
    unknown = [s for s in chosen if s not in BY_KEY]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; known: {', '.join(BY_KEY)}")
    scenarios = [s for s in SCENARIOS if s.key in chosen]
    for sc in scenarios:
        if sc.native_of and sc.native_of not in chosen:
            log(
                f"note: {sc.key} is compared with notifier's figures from {sc.native_of}, "
                "which is not selected: its rows will have no ratio"
            )
    if "batch" in chosen and "publish" not in chosen:
        log(
            "note: batch publishing is compared with Nchan's figure from the publish scenario, "
            "which is not selected: its row will have no ratio"
        )

    bench_py = HARNESS
    if shutil.which("twistd") is None:
        log("WARNING: no twistd on PATH: the notifier runs will fail (run through `make bench`)")

    targets = [BASELINE, "notifier"] + ([PYPY_PROFILE] if args.pypy else [])
    names = {BASELINE: BASELINE, "notifier": "notifier", PYPY_PROFILE: "notifier-pypy"}
    ports = sorted(
        {
            p
            for t in targets
            for p in profile_ports(t if os.sep in t else os.path.join(HERE, "targets", t + ".toml"))
        }
    )

    out = args.out or tempfile.mkdtemp(prefix="notifier-bench-", dir="/tmp")
    os.makedirs(out, exist_ok=True)
    bench_opts = shlex.split(args.bench_opts)
    started = datetime.datetime.now().astimezone()
    log(
        f"results in {out}; repeat {args.repeat}; scenarios {', '.join(s.key for s in scenarios)}"
        + (f"; SCALE {args.scale} (smoke run)" if args.scale != 1 else "")
    )

    results: dict[str, Collected] = {}
    # a bound on each harness invocation: runs are bounded themselves, this catches the rest
    per_run_limit = 900.0
    try:
        for sc in scenarios:
            c = results.setdefault(sc.key, Collected())
            sub = os.path.join(out, sc.key)
            os.makedirs(sub, exist_ok=True)
            log(f"=== {sc.key}: {sc.title}")
            if sc.kind in ("fanout", "idle"):
                if not wait_ports_free(ports, args.port_wait):
                    c.failures.append("ports in use")
                    continue
                # a Pusher scenario: notifier's targets only (Nchan has no Pusher face)
                run_targets = targets[1:] if sc.native_of else targets
                cmd = [
                    sys.executable,
                    bench_py,
                    "compare",
                    sc.kind,
                    "--targets",
                    ",".join(run_targets),
                    "--repeat",
                    str(args.repeat),
                    "--out",
                    sub,
                    *bench_opts,
                    "--",
                    *sc.loadgen_args(args.scale),
                ]
                run_harness(
                    cmd, os.path.join(sub, "results.jsonl"), per_run_limit * args.repeat * len(run_targets), c
                )
            elif sc.kind == "publish":
                # different -m per target, so `harness.py run` per target, interleaved like compare does
                for rep in range(args.repeat):
                    for t in targets:
                        m = args.publish_m_nchan if names[t] == BASELINE else args.publish_m_notifier
                        if not wait_ports_free(ports, args.port_wait):
                            c.failures.append("ports in use")
                            continue
                        cmd = [
                            sys.executable,
                            bench_py,
                            "run",
                            t,
                            "publish",
                            "--repeat",
                            "1",
                            "--out",
                            sub,
                            *bench_opts,
                            "--",
                            *scaled(sc.args + ["-m", str(m)], "-m", args.scale),
                        ]
                        run_harness(cmd, os.path.join(sub, "results.jsonl"), per_run_limit, c)
                    log(f"publish: round {rep + 1}/{args.repeat} done")
            elif sc.kind == "batch":
                for t in targets[1:]:
                    cmd = [
                        sys.executable,
                        os.path.join(HERE, "batch_publish.py"),
                        "--target",
                        t,
                        "--repeat",
                        str(args.repeat),
                        "--out",
                        sub,
                        "--messages",
                        str(max(1000, int(args.batch_messages * args.scale))),
                    ]
                    run_harness(cmd, os.path.join(sub, "batch.jsonl"), per_run_limit * args.repeat, c)
    except KeyboardInterrupt:
        log("interrupted: the table covers what ran")

    rows, data = goal_rows(results, [names[t] for t in targets])
    prows, plines, pdata = pusher_rows(results, [names[t] for t in targets])
    info = machine_info(args.pypy)
    header = ["Goal", "notifier", "Nchan 1w", "ratio", "goal", "result"]
    table = rst_table(header, rows) if rows else "(no results)"
    pheader = ["Pusher face vs native WebSocket", "Pusher", "native", "ratio", "goal", "result"]
    extra = notes(results, args)
    stamp = started.strftime("%Y-%m-%d %H:%M %Z")
    block = [
        f"Run of {stamp}, ``make bench REPEAT={args.repeat}``"
        + (f" (SCALE={args.scale}: a smoke run, not comparable)" if args.scale != 1 else "")
        + ": medians over runs.",
        "",
    ]
    block += [f"- {k}: {v}" for k, v in info] + [""]
    block += [table, ""]
    if prows:
        block += [
            "notifier's Pusher face (``/app/{key}``, protocol 7) against its native WebSocket, "
            "same target, counts and run:",
            "",
        ]
        block += [f"- {line}" for line in plines] + [""]
        block += [rst_table(pheader, prows), ""]
    block += ["Notes:", ""] + [f"- {n}" for n in extra] + [""] if extra else []

    print()
    print("\n".join(block).replace("`", ""))
    with open(os.path.join(out, "summary.rst"), "w") as f:
        f.write("\n".join(block) + "\n")
    with open(os.path.join(out, "goals.json"), "w") as f:
        json.dump(
            {
                "started": started.isoformat(),
                "repeat": args.repeat,
                "scale": args.scale,
                "machine": dict(info),
                "goals": data,
                "pusher": pdata,
                "notes": extra,
            },
            f,
            indent=1,
        )
    raw = sorted(
        os.path.join(out, key, name)
        for key in results
        for name in ("results.jsonl", "batch.jsonl")
        if os.path.isfile(os.path.join(out, key, name))
    )
    log(f"raw results: {', '.join(raw) or 'none'}; table: {out}/summary.rst")

    if args.update_docs:
        update_docs(args.update_docs, "\n".join(block))
    # the goals are reported, not enforced: exit 0 whenever there is a table
    return 0 if rows or prows else 2


def update_docs(path: str, block: str) -> None:
    with open(path) as f:
        text = f.read()
    i, j = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if i < 0 or j < i:
        log(f"{path}: no '{DOCS_BEGIN}' … '{DOCS_END}' block; not updated")
        return
    i = text.index("\n", i) + 1
    new = text[:i] + "\n" + block.rstrip() + "\n\n" + text[j:]
    with open(path, "w") as f:
        f.write(new)
    log(f"{path}: results block replaced")


if __name__ == "__main__":
    sys.exit(main())
