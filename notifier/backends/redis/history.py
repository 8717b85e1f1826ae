"""The metrics history of every node sharing one Redis
(notifier.domain.history.ClusterHistory).

Each node writes its new samples once a second, in one script (one round
trip): ``P history:{node}:1`` keeps its latest 3,600 samples of every
second and lives an hour after its last write, ``P history:{node}:60`` its
latest 1,440 of every minute and lives a day; ``P history_nodes`` has each
node by the time of its latest sample, for a day. A sample is JSON ``[t,
websocket, sse, longpoll, pusher, messages_in, messages_out]``, under 50
bytes: a node's lists take at most about 260 KB of Redis's memory
(docs/protocol.rst: History).
"""

from __future__ import annotations

import json

from notifier.backends.redis.client import Redis, Script
from notifier.backends.redis.keys import Keys
from notifier.domain.history import CONNECTIONS, MINUTE, MINUTE_POINTS, SECOND_POINTS, SERIES, Entry

WRITE = Script.named("history_write")
READ = Script.named("history_read")

#: Seconds each list lives after a node's last write: what a range shows of it, and a minute.
SECONDS_TTL = SECOND_POINTS + 60
MINUTES_TTL = MINUTE_POINTS * MINUTE + 120


def encoded(t: int, sample: tuple[float, ...]) -> str:
    """A sample as it stands in Redis: its connections whole, its rates to the thousandth."""
    values = [int(value) if i < CONNECTIONS else round(value, 3) for i, value in enumerate(sample)]
    return json.dumps([t, *values], separators=(",", ":"))


def decoded(entry: str) -> Entry | None:
    """A sample from Redis; ``None`` if it is not one."""
    try:
        t, *values = json.loads(entry)
        return int(t), tuple(float(value) for value in values[:len(SERIES)])
    except (ValueError, TypeError):
        return None


class RedisHistory:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def write(self, node: str, latest: int, seconds: list[Entry], minutes: list[Entry]) -> None:
        keys = [self.keys.history(node, 1), self.keys.history(node, MINUTE), self.keys.history_nodes]
        args: list[object] = [node, latest, SECOND_POINTS, SECONDS_TTL, MINUTE_POINTS, MINUTES_TTL, len(seconds)]
        args += [encoded(t, sample) for t, sample in seconds]
        args += [encoded(t, sample) for t, sample in minutes]
        await self.redis.script(WRITE, keys, args)

    async def read(self, step: int, since: float, count: int) -> dict[str, tuple[int, list[Entry]]]:
        found = await self.redis.call("execute_command", "ZRANGEBYSCORE", self.keys.history_nodes,
                                      repr(since), "+inf", "WITHSCORES")
        nodes = [(str(node), int(float(score))) for node, score in zip(found[::2], found[1::2], strict=True)]
        if not nodes:
            return {}
        lists = await self.redis.script(READ, [self.keys.history(node, step) for node, _ in nodes],
                                        [min(count, SECOND_POINTS if step == 1 else MINUTE_POINTS)])
        history = {}
        for (node, latest), entries in zip(nodes, lists, strict=True):
            samples = [sample for sample in map(decoded, entries or ()) if sample is not None]
            history[node] = latest, samples
        return history
