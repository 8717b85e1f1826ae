"""``python -m soak [--duration 30m] [--seed 1] [--out run/soak] [--short]``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from soak.run import Options, main


def seconds(text: str) -> float:
    """``90``, ``90s``, ``2m``, ``1h30m``: seconds."""
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (90, 90s, 2m, 1h)")
    hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + secs


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    parser.add_argument("--duration", type=seconds, default=None,
                        help="how long the load and the faults go on (default 30m; 2m with --short)")
    parser.add_argument("--seed", type=int, default=1, help="the seed of the fault schedule and of the load")
    parser.add_argument("--out", type=Path, default=Path("run/soak"), help="where the report is written")
    parser.add_argument("--short", action="store_true",
                        help="the short run: smaller load, every fault kind once, shorter holds")
    parser.add_argument("--clients", type=int, default=None, help="subscribers on the Redis daemons at once")
    parser.add_argument("--sqlite-clients", type=int, default=None, help="subscribers on the SQLite daemon at once")
    parser.add_argument("--rate", type=float, default=None, help="publishes a second through the Redis daemons")
    parser.add_argument("--sqlite-rate", type=float, default=None, help="publishes a second to the SQLite daemon")
    args = parser.parse_args(argv)
    short = args.short
    return Options(
        duration=args.duration if args.duration is not None else (120.0 if short else 1800.0),
        seed=args.seed, out=args.out, short=short,
        clients=args.clients if args.clients is not None else (150 if short else 1000),
        sqlite_clients=args.sqlite_clients if args.sqlite_clients is not None else (40 if short else 200),
        rate=args.rate if args.rate is not None else (12.0 if short else 10.0),
        sqlite_rate=args.sqlite_rate if args.sqlite_rate is not None else (6.0 if short else 5.0),
    )


if __name__ == "__main__":
    sys.exit(main(parse(sys.argv[1:])))
