#!/usr/bin/env python3
"""Batch-publishing throughput of notifier: messages/s through POST /api/v1/messages.

The benchmark's load generator (bench/loadgen) publishes one message per
request only. This client measures the
batch endpoint (docs/protocol.rst: The publisher API) instead: it starts notifier exactly as
bench/harness.py does (the same
target profile, rendered configuration, readiness check and publisher set-up,
by importing it), creates the centers, then sends batches
over a few keep-alive HTTP/1.1 connections on 127.0.0.1 as fast as the server
answers:

    POST /api/v1/messages   Authorization: Basic <publisher:secret>
    {"messages": [{"center": "<center i>", "data": "<size bytes>"}, ...]}

Every answer must be 201 with as many ids as the batch had messages; any
other answer is counted as an error (and the run is not "ok"). Bounded: at most
--messages messages and --max-time seconds, each request at most
--req-timeout seconds, a failed connection is reopened at most
--max-reconnects times. Loopback only.

    python3 bench/batch_publish.py [--target notifier] [--messages 200000] [-c 8]

Prints human-readable lines, then `RESULT {json}` (also appended to
--out/batch.jsonl). messages_per_s = messages answered 201 / (last answer -
first request sent). Standard library only (Python 3.11+).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import os
import random
import resource
import shutil
import socket
import string
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOOPBACK = "127.0.0.1"


def load_harness():
    """Import bench/harness.py (its profile loader and Server)."""
    path = os.path.join(HERE, "harness.py")
    spec = importlib.util.spec_from_file_location("bench_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / clock_ticks()


def machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)


# ---------------------------------------------------------------- HTTP/1.1


class HttpError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response: (status, body, server wants to close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise HttpError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            headers[k.strip().lower()] = v.strip()
    close = headers.get(b"connection", b"").lower() == b"close"
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        for _ in range(1_000_000):  # bounded: a batch answer is a few chunks
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    else:
        body = await reader.read()  # until the server closes
        close = True
    return status, body, close


class Load:
    """Shared state of the publishing connections."""

    def __init__(self, args, port: int, auth: str, centers: list[str]):
        self.args = args
        self.port = port
        self.auth = auth
        self.centers = centers
        self.next_batch = 0
        self.batches_total = -(-args.messages // args.batch)
        self.ok_messages = 0
        self.ok_batches = 0
        self.errors: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self.first_send: float | None = None
        self.last_answer: float | None = None
        self.reconnects = 0
        self.deadline = 0.0
        self.template = self._template()

    def _template(self) -> bytes:
        """A batch body whose sequence field is the placeholder ########."""
        run = "".join(random.choices(string.ascii_lowercase, k=6))
        entries = []
        for i in range(self.args.batch):
            center = self.centers[i % len(self.centers)]
            data = f"~BP|{run}|########|{i:04d}|"
            data += "." * max(0, self.args.size - len(data))
            entries.append({"center": center, "data": data})
        return json.dumps({"messages": entries}, separators=(",", ":")).encode()

    def request(self, seq: int) -> bytes:
        body = self.template.replace(b"########", b"%08d" % seq)
        return (
            b"POST /api/v1/messages HTTP/1.1\r\n"
            b"Host: %s:%d\r\n"
            b"Authorization: Basic %s\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n"
            b"\r\n" % (LOOPBACK.encode(), self.port, self.auth.encode(), len(body))
        ) + body

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def take(self) -> int | None:
        if self.next_batch >= self.batches_total or time.monotonic() >= self.deadline:
            return None
        seq = self.next_batch
        self.next_batch += 1
        return seq


async def connection(load: Load) -> None:
    args = load.args
    reader = writer = None
    try:
        while True:
            if writer is None:
                if load.reconnects > args.max_reconnects:
                    load.error("too many reconnects")
                    return
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(LOOPBACK, load.port), args.req_timeout
                    )
                except (TimeoutError, OSError) as e:
                    load.error(f"connect: {type(e).__name__}")
                    load.reconnects += 1
                    await asyncio.sleep(0.1)
                    continue
            seq = load.take()
            if seq is None:
                return
            t0 = time.monotonic()
            if load.first_send is None:
                load.first_send = t0
            try:
                writer.write(load.request(seq))
                status, body, close = await asyncio.wait_for(read_response(reader), args.req_timeout)
            except (
                TimeoutError,
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                HttpError,
                ValueError,
            ) as e:
                load.error(f"request: {type(e).__name__}")
                writer.close()
                reader = writer = None
                load.reconnects += 1
                continue
            t1 = time.monotonic()
            load.statuses[status] = load.statuses.get(status, 0) + 1
            if status == 201:
                try:
                    n = len(json.loads(body)["ids"])
                except (ValueError, KeyError, TypeError):
                    n = -1
                if n == args.batch:
                    load.ok_batches += 1
                    load.ok_messages += n
                    load.last_answer = t1
                    load.latencies.append((t1 - t0) * 1000)
                else:
                    load.error("201 without one id per message")
            else:
                load.error(f"HTTP {status}: {body[:120].decode(errors='replace')}")
            if close:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def drive(load: Load) -> None:
    load.deadline = time.monotonic() + load.args.max_time
    tasks = [asyncio.create_task(connection(load)) for _ in range(load.args.concurrency)]
    # every connection stops by itself at the deadline; this bounds a stuck one
    done, pending = await asyncio.wait(tasks, timeout=load.args.max_time + load.args.req_timeout + 5)
    for t in pending:
        t.cancel()
        load.error("connection still busy after the time limit")
    for t in done:
        if t.exception() is not None:
            load.error(f"connection crashed: {t.exception()!r}")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# ---------------------------------------------------------------- run


def run(args) -> dict:
    harness = load_harness()
    prof = harness.load_profile(args.target)
    harness.check_requirements(prof)
    nofile = harness.raise_nofile()
    run_dir = tempfile.mkdtemp(prefix=f"bench-batch-{prof['name']}-", dir="/tmp")
    env = {"run": run_dir, "dir": prof["_dir"], "bench": harness.BENCH, "nofile": str(nofile)}
    env.update({k: str(v) for k, v in prof.get("vars", {}).items()})
    if not args.profile_ports:
        # own ports, so that a harness run going on elsewhere on the machine
        # (which uses the profile's fixed ports) is never hit by mistake
        for var in ("public_port", "api_port"):
            if var in env:
                env[var] = str(free_port())
    for var in ("api_port", "publisher"):
        if var not in env:
            raise RuntimeError(f"batch_publish: profile {prof['name']} has no ${{{var}}}")
    srv = harness.Server(prof, env)
    result: dict = {"scenario": "batch", "target": prof["name"], "label": prof["name"]}
    try:
        srv.start()
        if "secret" not in env:
            raise RuntimeError("batch_publish: the profile's set-up captured no ${secret}")
        port = int(env["api_port"])
        publisher = env["publisher"]
        auth = base64.b64encode(f"{publisher}:{env['secret']}".encode()).decode()
        run_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=6))
        centers = [f"batch-{run_id}-{i}" for i in range(args.centers)]
        for c in centers:
            st, body = harness.http(
                "PUT", f"http://{LOOPBACK}:{port}/api/v1/centers/{c}", {"Authorization": f"Basic {auth}"}
            )
            if st not in (200, 201):
                raise RuntimeError(f"batch_publish: creating center {c} -> HTTP {st}: {body[:200]!r}")
        print(
            f"    batch_publish: {prof['name']} pid {srv.proc.pid}, {args.centers} center(s), "
            f"{args.messages} message(s) of {args.size} bytes in batches of {args.batch}, "
            f"{args.concurrency} connection(s), at most {args.max_time:.0f}s",
            flush=True,
        )
        load = Load(args, port, auth, centers)
        cpu0, m0, ru0 = proc_cpu_s(srv.proc.pid), machine_ticks(), resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.monotonic()
        asyncio.run(drive(load))
        w1 = time.monotonic()
        cpu1, m1, ru1 = proc_cpu_s(srv.proc.pid), machine_ticks(), resource.getrusage(resource.RUSAGE_SELF)
        window = (load.last_answer - load.first_send) if load.first_send and load.last_answer else 0.0
        wall = max(w1 - w0, 1e-9)
        srv_cpu = (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None
        client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        busy = 100.0 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
        ncpu = os.cpu_count() or 1
        result.update(
            {
                "messages_requested": args.messages,
                "batch": args.batch,
                "centers": args.centers,
                "size": args.size,
                "concurrency": args.concurrency,
                "messages_ok": load.ok_messages,
                "batches_ok": load.ok_batches,
                "batches_sent": load.next_batch,
                "window_s": round(window, 4),
                "messages_per_s": load.ok_messages / window if window > 0 else 0.0,
                "batches_per_s": load.ok_batches / window if window > 0 else 0.0,
                "batch_latency_ms": {
                    "p50": percentile(load.latencies, 0.50),
                    "p99": percentile(load.latencies, 0.99),
                    "max": max(load.latencies) if load.latencies else None,
                },
                "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
                "errors": load.errors,
                "all_201": not load.errors and set(load.statuses) == {201},
                "complete": load.ok_messages >= args.messages,
                "server": {
                    "pid": srv.proc.pid,
                    "cpu_s": srv_cpu,
                    "cpu_pct": 100.0 * srv_cpu / wall if srv_cpu is not None else None,
                    "cpu_us_per_message": 1e6 * srv_cpu / load.ok_messages
                    if srv_cpu and load.ok_messages
                    else None,
                },
                "client_cpu_pct": 100.0 * client_cpu / wall,
                "machine_busy_pct": busy,
                "other_cpu_pct": max(0.0, busy * ncpu - 100.0 * ((srv_cpu or 0) + client_cpu) / wall),
            }
        )
        if srv.proc.poll() is not None:
            result["errors"]["server exited during the run"] = 1
            result["all_201"] = False
    finally:
        srv.stop()
        if os.environ.get("BENCH_KEEP_RUN_DIR"):
            print(f"    run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    return result


def report(r: dict) -> None:
    s = r["server"]
    lat = r["batch_latency_ms"]

    def fmt(v, f="{:.2f}"):
        return "-" if v is None else f.format(v)

    print(
        f"    published {r['messages_ok']}/{r['messages_requested']} message(s) "
        f"in {r['batches_ok']} batch(es) in {r['window_s']:.3f}s: "
        f"{r['messages_per_s']:,.0f} messages/s ({r['batches_per_s']:,.0f} batches/s)"
    )
    print(f"    batch request latency ms: p50 {fmt(lat['p50'])} p99 {fmt(lat['p99'])} max {fmt(lat['max'])}")
    print(f"    answers: {r['statuses']}; every answer 201 with one id per message: {r['all_201']}")
    if r["errors"]:
        print(f"    errors: {r['errors']}")
    print(
        f"    server cpu {fmt(s['cpu_s'])}s ({fmt(s['cpu_pct'], '{:.0f}')}% of one core), "
        f"{fmt(s['cpu_us_per_message'])} µs per message; client cpu {r['client_cpu_pct']:.0f}% of one core; "
        f"machine busy {r['machine_busy_pct']:.0f}% (all cores); other {r['other_cpu_pct']:.0f}% of one core"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="notifier", help="profile name or path (default %(default)s)")
    ap.add_argument("--messages", type=int, default=500_000, help="messages in all (default %(default)s)")
    ap.add_argument("--batch", type=int, default=100, help="messages per request (default %(default)s)")
    ap.add_argument(
        "--centers", type=int, default=100, help="centers the messages are spread over (default %(default)s)"
    )
    ap.add_argument("--size", type=int, default=128, help="bytes per message (default %(default)s)")
    ap.add_argument(
        "-c", "--concurrency", type=int, default=8, help="keep-alive connections (default %(default)s)"
    )
    ap.add_argument("--max-time", type=float, default=60.0, help="stop publishing after this many seconds")
    ap.add_argument("--req-timeout", type=float, default=10.0, help="bound on one request, seconds")
    ap.add_argument("--max-reconnects", type=int, default=50, help="connections reopened at most, in all")
    ap.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh server")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds between runs")
    ap.add_argument(
        "--profile-ports", action="store_true", help="use the profile's fixed ports instead of free ones"
    )
    ap.add_argument("--out", default=None, help="append each RESULT to OUT/batch.jsonl")
    args = ap.parse_args(argv)
    for name in ("messages", "batch", "centers", "size", "concurrency", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1")
    if args.repeat > 100 or args.max_time > 3600:
        ap.error("--repeat at most 100 and --max-time at most 3600")
    failures = 0
    for i in range(args.repeat):
        if i:
            time.sleep(args.pause)
        print(f"[batch] === {args.target} batch run {i + 1}/{args.repeat}", flush=True)
        try:
            r = run(args)
        except Exception as e:  # noqa: BLE001  the harness's BenchError and friends: report, go on
            print(f"[batch] FAILED: {e}", flush=True)
            failures += 1
            continue
        report(r)
        print("RESULT " + json.dumps(r), flush=True)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, "batch.jsonl"), "a") as f:
                f.write(json.dumps(r) + "\n")
        if not r["all_201"] or not r["complete"]:
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
