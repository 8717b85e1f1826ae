#!/usr/bin/env python3
"""How long a daemon keeping its history in the file (``[store] durable =
true``) takes to be ready again after a restart, with many centers.

Writes an SQLite store of --centers centers of one publisher, each with
--messages retained messages of --size bytes, straight into the file (the
schema is the daemon's own), then starts ``twistd -n notifier`` on it and
measures, from the spawn:

- ready: ``/healthz`` answers 200 on both listeners;
- resumed: a long-poll resuming the middle of a center answers with
  ``recovered: true`` and the messages after it (the first use of a center
  reads its history from the journal);
- then the time of resuming --probes other centers, one after another.

    .venv/bin/python bench/restart.py [--centers 10000] [--messages 100]

Loopback only; the daemon is stopped with SIGTERM at the end. Needs the
project importable (run it with the project's virtualenv).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from notifier.backends.sqlite import CHANGE_TRIGGERS, SCHEMA

ADMIN = "restart-bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(path: Path, centers: int, messages: int, size: int) -> str:
    """The store: publisher "bench", *centers* centers with *messages* each."""
    secret = secrets.token_urlsafe(32)
    now = time.time()
    data = "x" * size
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.executescript(SCHEMA + CHANGE_TRIGGERS)
        db.execute("INSERT INTO publishers (name, secret, created) VALUES ('bench', ?, ?)", (secret, now))
        db.executemany(
            "INSERT INTO centers (publisher, name, private, history, ttl, created, epoch, presence)"
            " VALUES ('bench', ?, 0, NULL, NULL, ?, ?, 0)",
            ((f"c{i}", now, f"{i:08x}") for i in range(centers)))
        db.executemany("INSERT INTO streams (id, publisher, center, epoch) VALUES (?, 'bench', ?, ?)",
                       ((i + 1, f"c{i}", f"{i:08x}") for i in range(centers)))
        # interleaved, as publishes to many centers arrive
        db.executemany("INSERT INTO log (stream, seq, ts, data) VALUES (?, ?, ?, ?)",
                       ((i + 1, seq, now, data) for seq in range(1, messages + 1) for i in range(centers)))
    return secret


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def resume(public: int, center: int, messages: int) -> None:
    since = f"{center:08x}-{messages // 2}"
    status, body = get(f"http://127.0.0.1:{public}/sub/bench/c{center}?since={since}&timeout=0")
    answer = json.loads(body)
    assert status == 200 and answer["recovered"] is True, answer
    assert len(answer["messages"]) == messages - messages // 2, len(answer["messages"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--centers", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--probes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notifier-restart-") as folder:
        path = Path(folder) / "n.db"
        started = time.monotonic()
        fill(path, args.centers, args.messages, args.size)
        megabytes = sum(f.stat().st_size for f in Path(folder).iterdir()) / 2**20
        print(f"store: {args.centers} centers x {args.messages} messages of {args.size} bytes, "
              f"{megabytes:.0f} MiB, written in {time.monotonic() - started:.1f} s")
        public, api = free_port(), free_port()
        config = Path(folder) / "notifier.toml"
        config.write_text(
            f'[public]\nendpoint = "tcp:{public}:interface=127.0.0.1"\n'
            f'[api]\nendpoint = "tcp:{api}:interface=127.0.0.1"\nadmin_token = "{ADMIN}"\n'
            f'[store]\nurl = "sqlite:{path}"\ndurable = true\n', encoding="utf-8")
        twistd = Path(sys.executable).parent / "twistd"
        spawned = time.monotonic()
        daemon = subprocess.Popen([str(twistd), "-n", "--pidfile=", "notifier", "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            while (get(f"http://127.0.0.1:{api}/healthz")[0] != 200
                   or get(f"http://127.0.0.1:{public}/healthz")[0] != 200):
                if daemon.poll() is not None or time.monotonic() - spawned > 120:
                    print("the daemon did not start")
                    return 1
                time.sleep(0.01)
            ready = time.monotonic() - spawned
            resume(public, args.centers // 2, args.messages)
            resumed = time.monotonic() - spawned
            probes = random.Random(1).sample(range(args.centers), min(args.probes, args.centers))
            before = time.monotonic()
            for center in probes:
                resume(public, center, args.messages)
            each = (time.monotonic() - before) / len(probes)
            print(f"ready (healthz) {ready:.2f} s after the spawn; first center resumed at {resumed:.2f} s; "
                  f"then {each * 1000:.1f} ms per center resumed (its first use)")
            print("RESULT " + json.dumps({"centers": args.centers, "messages": args.messages, "size": args.size,
                                          "store_mib": round(megabytes), "ready_s": round(ready, 3),
                                          "first_resume_s": round(resumed, 3),
                                          "resume_ms": round(each * 1000, 2)}))
        finally:
            daemon.terminate()
            daemon.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
