"""Fan-out through Redis, for several daemons serving the same centers.

A publish is one Lua script: it checks every center, gives each message the
next number of its center (``INCR``), retains it (``RPUSH`` + ``LTRIM``),
moves the center's expiry deadline, ``PUBLISH``es it, and remembers the
``Idempotency-Key`` — all or nothing, and acknowledged only once Redis has
it. Every daemon, the publishing one included, delivers what arrives on the
channel. A hub loaded on a node starts from what Redis retains; messages
arriving while it loads wait, so none is missed or doubled. A gap in the
numbers (the channel was cut) makes the hub catch up from Redis, as does
every reconnection; when Redis no longer holds all that was missed, or no
longer holds the center, the hub's subscribers are closed so that they come
back and are told (``recovered: false``, or 404).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from notifier.auth import SIGNATURE_WINDOW
from notifier.errors import NotFound
from notifier.hub import Hub
from notifier.redis import Redis
from notifier.store.redis import RedisStore

if TYPE_CHECKING:
    from notifier.registry import HubRegistry

log = Logger()

#: How long a publish's Idempotency-Key is remembered (README.rst: Retries: 10 minutes).
KEY_TTL = 600
#: How long a reconnected listener waits for the command connections before
#: catching hubs up (they reconnect with a backoff of their own).
CATCH_UP_WAIT = 60.0

# ARGV: prefix, channel, idempotency key or '', ts, n, then n times:
# publisher, center, data, history, ttl
PUBLISH = """
local prefix, channel, idem, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n = tonumber(ARGV[5])
if idem ~= '' then
  local prior = redis.call('GET', idem)
  if prior then return {0, prior} end
end
local epochs = {}
for i = 0, n - 1 do
  local at = 6 + i * 5
  local record = redis.call('HGET', prefix .. 'centers:' .. ARGV[at], ARGV[at + 1])
  if not record then return {-1, ARGV[at + 1]} end
  epochs[i] = cjson.decode(record)['epoch']
end
local ids = {}
for i = 0, n - 1 do
  local at = 6 + i * 5
  local publisher, center, data = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local history, ttl = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local path = publisher .. '/' .. center
  local seq = redis.call('INCR', prefix .. 'seq:' .. path)
  if history > 0 then
    local log = prefix .. 'log:' .. path
    redis.call('RPUSH', log, cjson.encode({seq, ts, data}))
    redis.call('LTRIM', log, -history, -1)
  end
  if ttl > 0 then redis.call('ZADD', prefix .. 'deadlines', tonumber(ts) + ttl, path) end
  redis.call('PUBLISH', channel, cjson.encode({publisher, center, epochs[i], seq, ts, data}))
  ids[#ids + 1] = epochs[i] .. '-' .. seq
end
local encoded = cjson.encode(ids)
if idem ~= '' then redis.call('SET', idem, encoded, 'EX', tonumber(ARGV[#ARGV])) end
return {1, encoded}
"""

# ARGV: prefix, publisher, center
LOAD = """
local record = redis.call('HGET', ARGV[1] .. 'centers:' .. ARGV[2], ARGV[3])
if not record then return {0} end
local path = ARGV[2] .. '/' .. ARGV[3]
local seq = redis.call('GET', ARGV[1] .. 'seq:' .. path) or '0'
return {1, record, seq, redis.call('LRANGE', ARGV[1] .. 'log:' .. path, 0, -1)}
"""

Arrival = tuple[str, int, float, str]  # epoch, seq, ts, data


class RedisBroker:
    def __init__(self, redis: Redis, store: RedisStore) -> None:
        self.redis = redis
        self.store = store
        self.messages = redis.channel_prefix + "messages"
        self.control = redis.channel_prefix + "control"
        self.registry: HubRegistry | None = None
        #: Hubs being loaded or caught up: what arrives for them meanwhile.
        self._pending: dict[str, list[Arrival]] = {}
        self._refreshed: dict[str, float] = {}

    def bind(self, registry: HubRegistry) -> None:
        self.registry = registry

    async def start(self) -> None:
        self.redis.listen([self.messages, self.control], self._received, self._subscribed)

    async def stop(self) -> None:
        pass  # the store closes the connections they share

    # loading and catching up

    async def _state(self, hub: Hub) -> tuple[str, int, list[tuple[int, float, str]]] | None:
        found = await self.redis.script(LOAD, [], [self.redis.prefix, hub.center.publisher, hub.center.name])
        if int(found[0]) == 0:
            return None
        retained = []
        for entry in found[3] or []:
            seq, ts, data = json.loads(entry)
            retained.append((int(seq), float(ts), data))
        return json.loads(found[1])["epoch"], int(found[2]), retained

    async def load(self, hub: Hub) -> None:
        path = hub.center.path
        self._pending[path] = []
        try:
            state = await self._state(hub)
            if state is None:
                raise NotFound(f"no center {hub.center.name!r}", code="no_such_center")
            hub.restore(*state)
        finally:
            arrived = self._pending.pop(path)
        for arrival in arrived:
            self._apply(hub, *arrival)
        if hub.ttl:
            now = hub.clock()
            await self.redis.call("execute_command", "ZADD", self.redis.prefix + "deadlines", "NX", now + hub.ttl, path)

    def _catch_up(self, hub: Hub) -> None:
        path = hub.center.path
        if path in self._pending:
            return  # already catching up
        self._pending[path] = []
        Deferred.fromCoroutine(self._fetch_missed(hub)).addErrback(
            lambda f: log.failure("catching up {path} from Redis failed", f, path=path))

    async def _fetch_missed(self, hub: Hub) -> None:
        path = hub.center.path
        try:
            state = await self._state(hub)
        except BaseException:
            self._pending.pop(path, None)  # the next reconnection catches up again
            raise
        arrived = self._pending.pop(path, [])
        registry = self.registry
        if state is None or state[0] != hub.epoch:
            # Deleted, or made again, while this node was not listening (or
            # Redis lost it): close the hub as a deletion does, so that its
            # subscribers come back to what Redis holds now.
            if registry is not None and registry.loaded(hub.center.publisher, hub.center.name) is hub:
                registry.drop_hub(hub.center.publisher, hub.center.name)
            return
        missed = [entry for entry in state[2] if entry[0] > hub.seq]
        if state[1] > hub.seq and (not missed or missed[0][0] != hub.seq + 1):
            # More was published meanwhile than Redis retains: a stream with
            # a hole in it must not pass for whole. Closed as on a shutdown,
            # the subscribers come back with their cursors and are told.
            if registry is not None and registry.loaded(hub.center.publisher, hub.center.name) is hub:
                registry.drop_hub(hub.center.publisher, hub.center.name, "shutdown")
            return
        for seq, ts, data in missed:
            hub.deliver(hub.append(data, seq, ts))
        for arrival in arrived:
            self._apply(hub, *arrival)

    def _subscribed(self) -> None:
        """(Re)connected to the channels: catch every live hub up."""
        Deferred.fromCoroutine(self._catch_up_all()).addErrback(
            lambda f: log.failure("catching up from Redis failed", f))

    async def _catch_up_all(self) -> None:
        # The command connections come back on their own schedule, maybe
        # after this one: reading what was missed needs them.
        await self.redis.ready(CATCH_UP_WAIT)
        if self.registry is not None:
            for hub in self.registry.hubs():
                self._catch_up(hub)

    # receiving

    def _received(self, channel: str, raw: str) -> None:
        try:
            payload = json.loads(raw)
            if channel == self.control:
                self._changed(payload)
                return
            publisher, center, epoch, seq, ts, data = payload
        except (ValueError, TypeError):
            log.warn("ignoring a malformed message on {channel}", channel=channel)
            return
        arrival = (epoch, int(seq), float(ts), data)
        pending = self._pending.get(f"{publisher}/{center}")
        if pending is not None:
            pending.append(arrival)
            return
        hub = self.registry.loaded(publisher, center) if self.registry is not None else None
        if hub is not None:
            self._apply(hub, *arrival)

    def _apply(self, hub: Hub, epoch: str, seq: int, ts: float, data: str) -> None:
        if epoch != hub.epoch:
            # Another incarnation of the center: this hub may be the stale
            # one (its deletion was missed), which Redis tells.
            self._catch_up(hub)
            return
        if seq <= hub.seq:
            return  # had already
        if seq == hub.seq + 1:
            hub.deliver(hub.append(data, seq, ts))
        else:
            self._catch_up(hub)  # some went missing on the way: Redis has them

    def _changed(self, event: dict[str, Any]) -> None:
        registry = self.registry
        if registry is None:
            return
        kind, publisher = event.get("type"), event.get("publisher", "")
        if kind == "center_deleted":
            registry.drop_hub(publisher, event.get("center", ""))
        elif kind in ("publisher_changed", "publisher_removed"):
            registry.forget_publisher(publisher, removed=kind == "publisher_removed")

    # the Broker's other duties

    async def publish(self, publisher: str, entries: list[tuple[Hub, str]],
                      key: str | None) -> tuple[list[str], int, bool]:
        assert self.registry is not None
        idempotency = f"{self.redis.prefix}idem:{publisher}:{key}" if key is not None else ""
        args: list[Any] = [self.redis.prefix, self.messages, idempotency,
                           repr(self.registry.clock.seconds()), len(entries)]
        for hub, data in entries:
            args += [hub.center.publisher, hub.center.name, data, hub.history, hub.ttl]
        args.append(KEY_TTL)
        status, payload = await self.redis.script(PUBLISH, [], args)
        status = int(status)
        if status == -1:
            raise NotFound(f"no center {payload!r}", code="no_such_center")
        fresh = status == 1
        reached = sum(len(hub.subscribers) for hub, _ in entries) if fresh else 0
        return json.loads(payload), reached, fresh

    async def announce(self, event: dict[str, str]) -> None:
        await self.redis.call("publish", self.control, json.dumps(event))

    async def first_use(self, publisher: str, signature: str, timestamp: int) -> bool:
        # Remembered by every node's Redis until the timestamp is out of the
        # window (and a second more, for the clocks' rounding).
        assert self.registry is not None
        ttl = max(1, int(timestamp + SIGNATURE_WINDOW - self.registry.clock.seconds()) + 1)
        stored = await self.redis.call("execute_command", "SET", f"{self.redis.prefix}sig:{publisher}:{signature}",
                                       "1", "NX", "EX", ttl)
        return stored is not None

    async def due(self, now: float) -> list[tuple[str, str]]:
        assert self.registry is not None
        deadlines = self.redis.prefix + "deadlines"
        for hub in self.registry.hubs():
            # A center with subscribers here is in use: push its deadline on.
            path = hub.center.path
            if hub.ttl and hub.subscribers and now - self._refreshed.get(path, 0) >= hub.ttl / 3:
                self._refreshed[path] = now
                await self.redis.call("zadd", deadlines, now + hub.ttl, path)
        due = await self.redis.call("execute_command", "ZRANGEBYSCORE", deadlines, "-inf", now,
                                    "LIMIT", 0, 100)
        return [tuple(path.split("/", 1)) for path in due]  # type: ignore[misc]
