"""Publishers and centers in Redis, shared by every daemon that uses it.

Layout (``P`` = ``notifier:``): ``P publishers`` a hash name → JSON
``{"secret", "created"}``; ``P centers:{publisher}`` a hash center → JSON
``{"private", "history", "ttl", "created", "epoch"}``; per center
``P seq:{path}`` (the last sequence number) and ``P log:{path}`` (retained
messages, see notifier.broker.redis); ``P deadlines`` a sorted set of
``{path}`` by expiry time. A center's epoch is made when it is created, so
that ids stay valid across daemons and restarts, and change when it is
deleted and made again.
"""

from __future__ import annotations

import json
import secrets
from notifier.model import Center, Publisher
from notifier.redis import Redis

# KEYS: centers hash; ARGV: center, record, the most centers (0: no bound)
ADD_CENTER = """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {0, existing} end
local limit = tonumber(ARGV[3])
if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return {-1, ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, ARGV[2]}
"""

# KEYS: centers hash, seq, log, deadlines; ARGV: center, path
REMOVE_CENTER = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""

# KEYS: publishers hash, the publisher's centers hash, deadlines; ARGV: name, prefix
REMOVE_PUBLISHER = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for _, center in ipairs(redis.call('HKEYS', KEYS[2])) do
  local path = ARGV[1] .. '/' .. center
  redis.call('DEL', ARGV[2] .. 'seq:' .. path, ARGV[2] .. 'log:' .. path)
  redis.call('ZREM', KEYS[3], path)
end
redis.call('DEL', KEYS[2])
return 1
"""

SET_SECRET = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
local publisher = cjson.decode(record)
publisher['secret'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(publisher))
return 1
"""


def _center(publisher: str, name: str, record: str) -> Center:
    fields = json.loads(record)
    return Center(publisher, name, fields["private"], fields["history"], fields["ttl"], fields["created"])


class RedisStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        p = redis.prefix
        self._publishers = p + "publishers"
        self._deadlines = p + "deadlines"

    def _centers(self, publisher: str) -> str:
        return f"{self.redis.prefix}centers:{publisher}"

    def keys(self, path: str) -> tuple[str, str]:
        """The sequence and log keys of the center at *path*."""
        return f"{self.redis.prefix}seq:{path}", f"{self.redis.prefix}log:{path}"

    async def open(self) -> None:
        await self.redis.ready()

    async def close(self) -> None:
        await self.redis.stop()

    async def add_publisher(self, publisher: Publisher) -> bool:
        record = json.dumps({"secret": publisher.secret, "created": publisher.created})
        return int(await self.redis.call("hsetnx", self._publishers, publisher.name, record)) == 1

    async def get_publisher(self, name: str) -> Publisher | None:
        record = await self.redis.call("hget", self._publishers, name)
        if record is None:
            return None
        fields = json.loads(record)
        return Publisher(name, fields["secret"], fields["created"])

    async def list_publishers(self) -> list[tuple[Publisher, int]]:
        records: dict[str, str] = await self.redis.call("hgetall", self._publishers)
        listed = []
        for name in sorted(records):
            fields = json.loads(records[name])
            count = int(await self.redis.call("hlen", self._centers(name)))
            listed.append((Publisher(name, fields["secret"], fields["created"]), count))
        return listed

    async def set_secret(self, name: str, secret: str) -> bool:
        return int(await self.redis.script(SET_SECRET, [self._publishers], [name, secret])) == 1

    async def remove_publisher(self, name: str) -> bool:
        keys = [self._publishers, self._centers(name), self._deadlines]
        return int(await self.redis.script(REMOVE_PUBLISHER, keys, [name, self.redis.prefix])) == 1

    async def add_center(self, center: Center, limit: int = 0) -> tuple[Center, bool] | None:
        record = json.dumps({
            "private": center.private, "history": center.history, "ttl": center.ttl,
            "created": center.created, "epoch": secrets.token_hex(4),
        })
        created, stored = await self.redis.script(
            ADD_CENTER, [self._centers(center.publisher)], [center.name, record, limit])
        if int(created) == -1:
            return None
        return _center(center.publisher, center.name, stored), int(created) == 1

    async def get_center(self, publisher: str, name: str) -> Center | None:
        record = await self.redis.call("hget", self._centers(publisher), name)
        return None if record is None else _center(publisher, name, record)

    async def list_centers(self, publisher: str) -> list[Center]:
        records: dict[str, str] = await self.redis.call("hgetall", self._centers(publisher))
        return [_center(publisher, name, records[name]) for name in sorted(records)]

    async def all_centers(self) -> list[Center]:
        centers = []
        for publisher in sorted(await self.redis.call("hkeys", self._publishers)):
            centers.extend(await self.list_centers(publisher))
        return centers

    async def remove_center(self, publisher: str, name: str) -> bool:
        path = f"{publisher}/{name}"
        keys = [self._centers(publisher), *self.keys(path), self._deadlines]
        return int(await self.redis.script(REMOVE_CENTER, keys, [name, path])) == 1
