"""Presence for every node sharing one Redis (notifier.domain.presence.Directory).

Per center (``P`` = ``notifier:``, then the center's path): ``P
members:{path}`` a sorted set of ``uid\\nnode`` by expiry, one entry per
node holding the uid; ``P uids:{path}`` a hash uid → how many nodes hold
it; ``P info:{path}`` a hash uid → its info as JSON; ``P
occupants:{path}`` a sorted set of the nodes with subscribers, by expiry;
``P occupied:{path}`` set while the center is occupied. ``P presence`` is
the set of paths that have any of these.

Every change is one Lua script, so exactly one node sees a uid become new
(or gone) to a center, or a center become occupied (or vacated): that node
reports it. Each node says again what it holds every ``REFRESH`` seconds;
what a node has not said for ``NODE_TTL`` seconds (it died, or lost Redis
that long) is swept out by whichever node sweeps first, which reports
what thereby left.

After Redis was out of reach (or the Sentinels moved its master), every
entry may look expired while its node is about to say it again: a node
sweeps only once it has been connected again for ``settle()`` seconds, so
that live nodes' members are not reported left (and joined again).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from twisted.internet.interfaces import IReactorTime

from notifier.backends.redis.client import RETRY_MAX, Redis, Script
from notifier.backends.redis.keys import PREFIX, Keys
from notifier.domain.presence import Info

#: Seconds a node's entries live unless it says them again.
NODE_TTL = 15.0
#: Seconds between two refreshes (and sweeps) of a node.
REFRESH = 5.0


def settle() -> float:
    """Seconds a node waits after reaching Redis again before it sweeps: a
    live node says again what it holds within ``REFRESH`` (after its own
    reconnection); never longer than its entries live."""
    return min(NODE_TTL, REFRESH + RETRY_MAX + 1)


JOIN = Script.named("presence_join")
LEAVE = Script.named("presence_leave")
OCCUPY = Script.named("presence_occupy")
VACATE = Script.named("presence_vacate")
SWEEP = Script.named("presence_sweep")


class RedisDirectory:
    def __init__(self, redis: Redis, keys: Keys, clock: IReactorTime, node: str) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.node = node

    def _expiry(self) -> float:
        return self.clock.seconds() + NODE_TTL

    def _member_keys(self, path: str) -> list[str]:
        return [self.keys.presence_members(path), self.keys.presence_uids(path), self.keys.presence_info(path)]

    async def join(self, path: str, uid: str, info: Info) -> bool:
        keys = [*self._member_keys(path), self.keys.presence]
        args = [uid, self.node, json.dumps(info, ensure_ascii=False), repr(self._expiry()), path]
        return int(await self.redis.script(JOIN, keys, args)) == 1

    async def leave(self, path: str, uid: str) -> bool:
        return int(await self.redis.script(LEAVE, self._member_keys(path), [uid, self.node])) == 1

    async def members(self, path: str) -> list[tuple[str, Info]]:
        found: dict[str, str] = await self.redis.call("hgetall", self.keys.presence_info(path))
        return [(uid, json.loads(found[uid])) for uid in sorted(found)]

    async def occupy(self, path: str) -> bool:
        keys = [self.keys.presence_occupants(path), self.keys.presence_occupied(path), self.keys.presence]
        return int(await self.redis.script(OCCUPY, keys, [self.node, repr(self._expiry()), path])) == 1

    async def vacate(self, path: str) -> bool:
        keys = [self.keys.presence_occupants(path), self.keys.presence_occupied(path)]
        return int(await self.redis.script(VACATE, keys, [self.node, repr(self.clock.seconds())])) == 1

    async def refresh(self, held: dict[str, dict[str, Info]],
                      occupied: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
        rejoined = [(path, uid) for path, members in held.items() for uid, info in members.items()
                    if await self.join(path, uid, info)]
        reoccupied = [path for path in occupied if await self.occupy(path)]
        return rejoined, reoccupied

    async def sweep(self) -> tuple[list[tuple[str, str]], list[str]]:
        if self.redis.up_for() < settle():
            return [], []
        left, vacated = await self.redis.script(SWEEP, [self.keys.presence],
                                                [repr(self.clock.seconds()), PREFIX])
        left = list(left or [])
        return list(zip(left[::2], left[1::2], strict=True)), list(vacated or [])
