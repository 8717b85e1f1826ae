#!/usr/bin/env python3
"""The benchmark's driver: starts a server from its profile, runs the load
generator (bench/loadgen) against it, and keeps what it measured.

    python3 bench/harness.py list
    python3 bench/harness.py run TARGET SCENARIO [--repeat N] [--out DIR] [-- LOADGEN FLAGS]
    python3 bench/harness.py compare SCENARIO --targets A,B[,C] [--repeat N] [--out DIR] [-- LOADGEN FLAGS]

TARGET is a profile: a name in bench/targets/ (``notifier``, ``nchan-1w``)
or the path of a ``.toml`` file. A profile says how to start the server
(``[server] cmd``, ``ready_url``, ``stop_signal``), which configuration files
to render into the run's directory (``[files]``, templates with ``${var}``),
which HTTP calls to make once it answers (``[[setup]]``, e.g. creating a
publisher and capturing its secret and its Pusher app's key: ``capture``
maps a variable to a field of the JSON answer, a dotted path for a nested
one, ``pusher.key``) and which URLs the load generator uses
(``[loadgen] args``). Variables: the profile's ``[vars]``, ``run`` (a fresh
directory per run), ``dir`` (the profile's own), ``bench`` (this folder),
``nofile`` (the file limit), and what ``[[setup]]`` captured.

Each run starts a fresh server in its own process group, raises the file
limit to its hard limit (inherited by server and load generator), runs the
load generator with ``--server-pid`` (it samples the server's CPU and
memory, children included) and stops the server (its stop signal, then
SIGKILL of the group). The load generator's ``RESULT`` line, with
``target`` and ``run`` added, is appended to ``OUT/results.jsonl``.
``compare`` interleaves the targets (A B A B ...) so that whatever else the
machine does hits them alike, and prints medians and ratios to the first.

Only the standard library (Python 3.11: tomllib).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
TARGETS = os.path.join(BENCH, "targets")
LOADGEN_DIR = os.path.join(BENCH, "loadgen")
LOADGEN = os.environ.get("BENCH_LOADGEN") or os.path.join(LOADGEN_DIR, "bin", "loadgen")
VAR = re.compile(r"\$\{(\w+)\}")
#: Seconds a server has to answer its ready_url, and to stop.
READY_SECONDS = 30.0
STOP_SECONDS = 15.0
#: What each scenario's summary shows: (heading, field, format).
COLUMNS = {
    "fanout": [
        ("deliveries/s", "deliveries_per_s", "{:,.0f}"),
        ("p50 ms", "latency_ms.p50", "{:.2f}"),
        ("p99 ms", "latency_ms.p99", "{:.2f}"),
        ("srv µs/deliv", "server.cpu_us_per_delivery", "{:.2f}"),
        ("srv cpu %", "server.cpu_pct", "{:.0f}"),
        ("conn/s", "connects_per_s", "{:,.0f}"),
        ("lost", "lost", "{:,.0f}"),
        ("dup", "duplicated", "{:,.0f}"),
    ],
    "publish": [
        ("publishes/s", "publishes_per_s", "{:,.0f}"),
        ("p99 ms", "publish_latency_ms.p99", "{:.2f}"),
        ("srv µs/publish", "server.cpu_us_per_publish", "{:.2f}"),
        ("errors", "publish_errors", "{:,.0f}"),
    ],
    "idle": [
        ("KiB/conn pss", "server.pss_per_conn_kib", "{:.2f}"),
        ("KiB/conn rss", "server.rss_per_conn_kib", "{:.2f}"),
        ("connected", "subscribers_connected", "{:,.0f}"),
        ("conn/s", "connects_per_s", "{:,.0f}"),
    ],
}
HEADLINE = {"fanout": "deliveries_per_s", "publish": "publishes_per_s", "idle": "server.pss_per_conn_kib"}


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# ---------------------------------------------------------------- profiles


def load_profile(target: str) -> dict[str, Any]:
    """The profile *target* names (a name in bench/targets/ or a path)."""
    path = target if (os.sep in target or target.endswith(".toml")) else os.path.join(TARGETS, target + ".toml")
    if not os.path.isfile(path):
        known = ", ".join(sorted(n[:-5] for n in os.listdir(TARGETS) if n.endswith(".toml")))
        raise SystemExit(f"bench: no profile {target!r} (known: {known})")
    with open(path, "rb") as f:
        profile = tomllib.load(f)
    profile["_dir"] = os.path.dirname(os.path.abspath(path))
    profile.setdefault("name", os.path.basename(path)[:-5])
    return profile


def check_requirements(profile: dict[str, Any]) -> None:
    """Raise RuntimeError, with the profile's hint, when what it needs is missing."""
    missing = [c for c in profile.get("requires", []) if shutil.which(c) is None]
    missing += [f for f in profile.get("requires_files", []) if not os.path.exists(f)]
    for check in profile.get("requires_check", []):
        try:
            subprocess.run(check, check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            missing.append(" ".join(check))
    if missing:
        hint = profile.get("install_hint", "")
        raise RuntimeError(f"{profile['name']}: missing {', '.join(missing)}" + (f" ({hint})" if hint else ""))


def raise_nofile() -> int:
    """Raise the open file limit to the hard limit (inherited by children)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def substitute(value: Any, env: dict[str, str]) -> Any:
    """*value* (a string, or lists and tables of them) with ``${var}`` replaced."""
    if isinstance(value, str):
        def one(match: re.Match[str]) -> str:
            if match.group(1) not in env:
                raise RuntimeError(f"unknown variable ${{{match.group(1)}}} in {value!r}")
            return env[match.group(1)]
        return VAR.sub(one, value)
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, env) for k, v in value.items()}
    return value


def http(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | str | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    """One HTTP request: its status and body (0 and the reason when it could not be made)."""
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (OSError, ValueError) as e:
        return 0, str(e).encode()


class Server:
    """A server started from *profile* with the variables *env* (``run`` its directory)."""

    def __init__(self, profile: dict[str, Any], env: dict[str, str]) -> None:
        self.profile = profile
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        run = self.env["run"]
        for name, template in self.profile.get("files", {}).items():
            with open(os.path.join(self.profile["_dir"], template)) as f:
                text = substitute(f.read(), self.env)
            with open(os.path.join(run, name), "w") as f:
                f.write(text)
        server = self.profile["server"]
        cmd = substitute(server["cmd"], self.env)
        self.log = open(os.path.join(run, "server.log"), "wb")
        try:
            self.proc = subprocess.Popen(cmd, cwd=run, stdout=self.log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            self.log.close()
            raise
        ready = substitute(server["ready_url"], self.env)
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.profile['name']} ended at start (exit {self.proc.returncode}); "
                                   f"log: {os.path.join(run, 'server.log')}:\n{self.tail()}")
            status, _ = http("GET", ready, timeout=2)
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.profile['name']}: {ready} not ready within {READY_SECONDS:.0f}s")
            time.sleep(0.1)
        for step in self.profile.get("setup", []):
            step = substitute(step, self.env)
            status, body = http(step.get("method", "GET"), step["url"], step.get("headers"), step.get("body"))
            if status not in (200, 201, 204):
                raise RuntimeError(f"set-up {step.get('method', 'GET')} {step['url']} -> {status}: {body[:200]!r}")
            if step.get("capture"):
                answer = json.loads(body)
                for var, field in step["capture"].items():
                    value = get(answer, field)  # a dotted path: "pusher.key"
                    if value is None:
                        raise RuntimeError(f"set-up {step['url']}: no {field!r} in the answer {body[:200]!r}")
                    self.env[var] = str(value)

    def tail(self, lines: int = 15) -> str:
        try:
            with open(os.path.join(self.env["run"], "server.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            stop = getattr(signal, "SIG" + self.profile["server"].get("stop_signal", "TERM"))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, stop)
            try:
                proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                say(f"{self.profile['name']} did not stop within {STOP_SECONDS:.0f}s: killed")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group is left
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.log.close()


# ---------------------------------------------------------------- runs


def build_loadgen() -> None:
    if os.environ.get("BENCH_LOADGEN"):
        return
    subprocess.run([os.path.join(LOADGEN_DIR, "build.sh")], check=True)


def get(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def machine_ticks() -> tuple[int, int]:
    """Busy and total ticks of all processors since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def wait_quiet(busy_pct: float, longest: float) -> None:
    """Wait, at most *longest* seconds, until the machine is at most *busy_pct* busy."""
    deadline = time.monotonic() + longest
    while True:
        b0, t0 = machine_ticks()
        time.sleep(1.0)
        b1, t1 = machine_ticks()
        busy = 100.0 * (b1 - b0) / max(1, t1 - t0)
        if busy <= busy_pct:
            return
        if time.monotonic() > deadline:
            say(f"the machine is still {busy:.0f}% busy after {longest:.0f}s: running anyway")
            return


def run_once(target: str, scenario: str, flags: list[str], out: str, index: int, count: int,
             timeout: float, redo: bool = False) -> dict[str, Any] | None:
    """One run of *scenario* on a fresh server of *target*: its result, or None."""
    profile = load_profile(target)
    if not redo:
        say(f"=== {profile['name']} {scenario} run {index}/{count}")
    try:
        check_requirements(profile)
    except RuntimeError as e:
        say(f"FAILED: {e}")
        return None
    nofile = raise_nofile()
    run = tempfile.mkdtemp(prefix=f"bench-{profile['name']}-", dir="/tmp")
    env = {"run": run, "dir": profile["_dir"], "bench": BENCH, "nofile": str(nofile)}
    env.update({k: str(v) for k, v in profile.get("vars", {}).items()})
    server = Server(profile, env)
    result = None
    try:
        server.start()
        assert server.proc is not None
        cmd = [LOADGEN, scenario, *substitute(profile.get("loadgen", {}).get("args", []), env), *flags,
               "--server-pid", str(server.proc.pid), "--label", profile["name"]]
        say("$ " + " ".join(shlex.quote(c) for c in cmd))
        loadgen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        expired = threading.Event()

        def expire() -> None:  # a load generator silent or not
            expired.set()
            loadgen.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            assert loadgen.stdout is not None
            for line in loadgen.stdout:
                if line.startswith("RESULT "):
                    with contextlib.suppress(ValueError):
                        result = json.loads(line[len("RESULT "):])
                else:
                    print("    " + line, end="", flush=True)
            loadgen.wait()
        finally:
            timer.cancel()
            if loadgen.poll() is None:
                loadgen.kill()
                loadgen.wait()
        if expired.is_set():
            say(f"FAILED: the load generator took more than {timeout:.0f}s")
            result = None
        elif result is None:
            say(f"FAILED: the load generator gave no result (exit {loadgen.returncode})")
        elif server.proc.poll() is not None:
            say(f"FAILED: {profile['name']} ended during the run (exit {server.proc.returncode}):\n{server.tail()}")
            result = None
    except Exception as e:  # a run that fails, whatever the reason, is reported and the next goes on
        say(f"FAILED: {type(e).__name__}: {e}")
        result = None
    finally:
        server.stop()
        if not os.environ.get("BENCH_KEEP_RUN_DIR"):
            shutil.rmtree(run, ignore_errors=True)
    if result is not None:
        connected, seconds = result.get("subscribers_connected"), result.get("connect_time_s")
        if connected and seconds:
            result["connects_per_s"] = connected / seconds
        result.update({"target": profile["name"], "run": index,
                       "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "results.jsonl"), "a") as f:
            f.write(json.dumps(result) + "\n")
        say(summary_line(scenario, result))
    return result


def summary_line(scenario: str, result: dict[str, Any]) -> str:
    cells = []
    for heading, path, fmt in COLUMNS.get(scenario, []):
        value = get(result, path)
        cells.append(f"{heading} {fmt.format(value) if isinstance(value, (int, float)) else '-'}")
    return f"{result.get('target')}: " + ", ".join(cells)


def table(scenario: str, results: list[dict[str, Any]], targets: list[str]) -> str:
    """Medians (min-max) per target, and the headline's ratio to the first target."""
    headline = HEADLINE.get(scenario)
    rows = [["target", "runs"] + [h for h, _, _ in COLUMNS.get(scenario, [])] + ["ratio"]]
    base = None
    for target in targets:
        mine = [r for r in results if r.get("target") == target]
        row = [target, str(len(mine))]
        for _, path, fmt in COLUMNS.get(scenario, []):
            values = [v for v in (get(r, path) for r in mine) if isinstance(v, (int, float))]
            if not values:
                row.append("-")
                continue
            middle = fmt.format(statistics.median(values))
            spread = f" ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else ""
            row.append(middle + spread)
        values = [v for v in (get(r, headline) for r in mine) if isinstance(v, (int, float))] if headline else []
        figure = statistics.median(values) if values else None
        if target == targets[0]:
            base = figure  # ratios are to the first target only
        row.append(f"{figure / base:.2f}×" if figure is not None and base else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


# ---------------------------------------------------------------- command line


def main(argv: list[str]) -> int:
    flags: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, flags = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="harness.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the profiles")
    run = commands.add_parser("run", help="runs of one target")
    run.add_argument("target")
    run.add_argument("scenario", choices=sorted(COLUMNS))
    compare = commands.add_parser("compare", help="runs of several targets, interleaved")
    compare.add_argument("scenario", choices=sorted(COLUMNS))
    compare.add_argument("--targets", required=True, help="comma-separated profiles; ratios are to the first")
    for sub in (run, compare):
        sub.add_argument("--repeat", type=int, default=int(os.environ.get("REPEAT") or 3))
        sub.add_argument("--out", default="/tmp/bench-results", help="results.jsonl goes there")
        sub.add_argument("--pause", type=float, default=2.0, help="seconds between runs")
        sub.add_argument("--timeout", type=float, default=600.0, help="bound on one run, seconds")
        sub.add_argument("--quiet-pct", type=float, default=10.0,
                         help="before each run, wait until the machine is at most this busy (percent)")
        sub.add_argument("--quiet-wait", type=float, default=120.0, help="longest wait for that, seconds")
        sub.add_argument("--max-other", type=float, default=25.0,
                         help="redo a run in which other processes took more than this share of a core (percent)")
        sub.add_argument("--retries", type=int, default=2, help="redone at most this many times")
    args, unknown = parser.parse_known_args(argv)
    flags = unknown + flags
    if args.command == "list":
        for name in sorted(n[:-5] for n in os.listdir(TARGETS) if n.endswith(".toml")):
            print(f"{name:24} {load_profile(name).get('description', '')}")
        return 0
    build_loadgen()
    targets = [args.target] if args.command == "run" else [t for t in args.targets.split(",") if t]
    names = [load_profile(t)["name"] for t in targets]
    results = []
    failed = 0
    for index in range(1, args.repeat + 1):
        for target in targets:
            if results or failed:
                time.sleep(args.pause)
            wait_quiet(args.quiet_pct, args.quiet_wait)
            result = run_once(target, args.scenario, flags, args.out, index, args.repeat, args.timeout)
            for _ in range(args.retries):
                other = result.get("other_cpu_pct") if result is not None else None
                if not isinstance(other, (int, float)) or other <= args.max_other:
                    break
                say(f"other processes took {other:.0f}% of a core during that run: redone")
                time.sleep(args.pause)
                wait_quiet(args.quiet_pct, args.quiet_wait)
                result = run_once(target, args.scenario, flags, args.out, index, args.repeat, args.timeout,
                                  redo=True)
            if result is None:
                failed += 1
            else:
                results.append(result)
    print(table(args.scenario, results, names), flush=True)
    return 1 if failed else 0


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the run's server is stopped on the way out


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGHUP, _interrupted)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
