#!/usr/bin/env python3
"""How fast the operator API pages through a publisher's many centers.

A site with a center per user has tens of thousands of them; the console
lists them a page at a time (docs/protocol.rst: A publisher's centers, a
page at a time). This benchmark starts notifier (``twistd -n notifier``)
on its defaults (SQLite, durable) with no bound on centers per publisher,
makes one publisher with --centers centers (``user.0`` … over keep-alive
connections, ``PUT /api/v1/centers/{name}``), puts subscribers on none, publishes
to a few (so that ``sort=activity`` has some to rank), then times, on one
keep-alive connection:

* every page of the whole listing by name, first to last (``limit`` 100);
* searches by prefix (``prefix=user.4``, ``user.42``, ``user.4242``), each
  a first page;
* the first pages sorted by activity and by subscribers.

The goal (docs/performance.rst) is every page under 200 ms. Prints lines,
then ``RESULT {json}``. Standard library only (Python 3.11+); run with the
project's virtualenv first on PATH (for ``twistd``):

    PATH=$PWD/.venv/bin:$PATH python3 bench/centers_page.py [--centers 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

LOOPBACK = "127.0.0.1"
TOKEN = "bench-centers-admin-token-5b1e0c9d"
GOAL_MS = 200.0

CONFIG = """
[public]
endpoint = "tcp:{public}:interface=127.0.0.1"

[api]
endpoint = "tcp:{api}:interface=127.0.0.1"
admin_token = "{token}"

[store]
url = "sqlite:{run}/notifier.sqlite"

[centers]
max_per_publisher = 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class Connection:
    """One keep-alive HTTP/1.1 connection (answers with Content-Length or chunked)."""

    def __init__(self, port: int, authorization: str) -> None:
        self.port, self.authorization = port, authorization
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", content_type: str = "") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(LOOPBACK, self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: {LOOPBACK}:{self.port}\r\n"
                f"Authorization: {self.authorization}\r\nContent-Length: {len(body)}\r\n")
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        self.writer.write((head + "\r\n").encode() + body)
        assert self.reader is not None
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split()[1])
        headers: dict[bytes, bytes] = {}
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            data = await self.reader.readexactly(int(headers[b"content-length"]))
        else:
            chunks = []
            while (size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)):
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
            data = b"".join(chunks)
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def make_centers(port: int, auth: str, names: list[str], concurrency: int) -> None:
    queue = iter(names)

    async def worker() -> None:
        connection = Connection(port, auth)
        for name in queue:
            status, body = await connection.request("PUT", f"/api/v1/centers/{name}")
            if status not in (200, 201):
                raise RuntimeError(f"PUT {name}: {status} {body[:200]!r}")
        connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def timed(connection: Connection, path: str) -> tuple[float, dict]:
    started = time.perf_counter()
    status, body = await connection.request("GET", path)
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
    return elapsed, json.loads(body)


async def measure(args: argparse.Namespace, api: int) -> dict:
    admin = Connection(api, f"Bearer {TOKEN}")
    status, body = await admin.request("POST", "/admin/v1/publishers", b'{"name": "site"}', "application/json")
    if status != 201:
        raise RuntimeError(f"adding the publisher: {status} {body!r}")
    secret = json.loads(body)["secret"]
    admin.close()  # idle meanwhile: the daemon would close it
    auth = "Basic " + base64.b64encode(f"site:{secret}".encode()).decode()
    names = [f"user.{n}" for n in range(args.centers)]
    started = time.monotonic()
    await make_centers(api, auth, names, args.concurrency)
    made_s = time.monotonic() - started
    print(f"    {args.centers} centers made in {made_s:.1f} s", flush=True)
    publisher = Connection(api, auth)
    for name in names[:: max(1, args.centers // 50)]:
        status, _ = await publisher.request("POST", f"/api/v1/centers/{name}/messages", b"hi", "text/plain")
        if status != 201:
            raise RuntimeError(f"publishing to {name}: {status}")
    publisher.close()

    base = "/admin/v1/publishers/site/centers"
    pages: list[float] = []
    listed = 0
    cursor = None
    while True:
        query = f"?limit={args.limit}" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        elapsed, answer = await timed(admin, base + query)
        pages.append(elapsed)
        listed += len(answer["centers"])
        cursor = answer["next"]
        if cursor is None:
            break
    if listed != args.centers:
        raise RuntimeError(f"paging listed {listed} centers of {args.centers}")
    searches = {}
    for prefix in ("user.4", "user.42", "user.4242"):
        elapsed, answer = await timed(admin, f"{base}?limit={args.limit}&prefix={prefix}")
        expected = sum(1 for name in names if name.startswith(prefix))
        if answer["total"] != expected:
            raise RuntimeError(f"prefix {prefix}: total {answer['total']}, not {expected}")
        searches[prefix] = round(elapsed, 2)
    sorted_pages = {}
    for sort in ("activity", "subscribers"):
        elapsed, answer = await timed(admin, f"{base}?limit={args.limit}&sort={sort}")
        sorted_pages[sort] = round(elapsed, 2)
    admin.close()
    worst = max([*pages, *searches.values(), *sorted_pages.values()])
    return {
        "centers": args.centers, "limit": args.limit, "made_s": round(made_s, 1),
        "pages": len(pages),
        "page_ms": {"p50": round(percentile(pages, 0.5), 2), "p99": round(percentile(pages, 0.99), 2),
                    "max": round(max(pages), 2), "first": round(pages[0], 2), "last": round(pages[-1], 2)},
        "search_ms": searches, "sorted_first_page_ms": sorted_pages,
        "worst_ms": round(worst, 2), "goal_ms": GOAL_MS, "met": worst < GOAL_MS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--centers", type=int, default=100_000, help="centers of the publisher (%(default)s)")
    parser.add_argument("--limit", type=int, default=100, help="centers per page (%(default)s)")
    parser.add_argument("-c", "--concurrency", type=int, default=8, help="connections making centers")
    args = parser.parse_args(argv)
    if not 1 <= args.centers <= 1_000_000 or not 1 <= args.limit <= 1000:
        parser.error("--centers is 1 to 1,000,000 and --limit 1 to 1,000")
    twistd = shutil.which("twistd")
    if twistd is None:
        parser.error("twistd is not on PATH: run with the project's virtualenv first (PATH=$PWD/.venv/bin:$PATH)")
    run = tempfile.mkdtemp(prefix="bench-centers-", dir="/tmp")
    public, api = free_port(), free_port()
    with open(os.path.join(run, "notifier.toml"), "w") as f:
        f.write(CONFIG.format(public=public, api=api, token=TOKEN, run=run))
    log = open(os.path.join(run, "twistd.log"), "wb")
    server = subprocess.Popen([twistd, "-n", "--pidfile=", "notifier", "--config", os.path.join(run, "notifier.toml")],
                              stdout=log, stderr=subprocess.STDOUT, cwd=run)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((LOOPBACK, api), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"notifier did not start: see {run}/twistd.log") from None
                time.sleep(0.1)
        print(f"[centers] notifier pid {server.pid}: {args.centers} centers, pages of {args.limit}", flush=True)
        result = asyncio.run(measure(args, api))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    pages = result["page_ms"]
    print(f"    {result['pages']} pages by name: p50 {pages['p50']} ms, p99 {pages['p99']} ms, "
          f"max {pages['max']} ms (first {pages['first']}, last {pages['last']})")
    print(f"    searches by prefix (ms): {result['search_ms']}; first pages sorted (ms): "
          f"{result['sorted_first_page_ms']}")
    print(f"    every page under {GOAL_MS:.0f} ms: {'yes' if result['met'] else 'NO'} (worst {result['worst_ms']} ms)")
    print("RESULT " + json.dumps(result), flush=True)
    shutil.rmtree(run, ignore_errors=True)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
