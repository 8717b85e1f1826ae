"""Fan-out through Redis, for several daemons serving the same centers.

A publish is one Lua script (``lua/publish.lua``), acknowledged only once
Redis has it; with ``replicas_ack``, only once that many replicas have it
too (``WAIT`` on the connection that ran the script): its messages are then
published to the channel (``lua/release.lua``) only after, so that no
subscriber ever sees a message a failover could take back. Every daemon, the publishing one included, is handed what
arrives on the messages channel, and the changes announced on the control
channel. Where a center's stream stands (``stream``) is read from what
Redis retains, for a hub starting or catching up.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from notifier.backends.interfaces import (
    Arrival,
    BrokerHandler,
    LiveCenter,
    Publication,
    Published,
    Retained,
    Stream,
)
from notifier.backends.redis.client import Redis, Script
from notifier.backends.redis.keys import Keys
from notifier.backends.shielding import shielded
from notifier.domain.errors import NotFound, Unavailable
from notifier.domain.idempotency import fingerprint, reused, same
from notifier.domain.model import Center
from notifier.domain.signatures import SIGNATURE_WINDOW

log = Logger()

#: How long a publish's Idempotency-Key is remembered (docs/protocol.rst: Idempotency-Key: 10 minutes).
KEY_TTL = 600
#: How long a reconnected listener waits for the command connections before
#: telling that hubs must catch up (they reconnect with a backoff of their own).
CATCH_UP_WAIT = 60.0

PUBLISH = Script.named("publish")
LOAD = Script.named("load")
RELEASE = Script.named("release")


def _center_of(path: str) -> tuple[str, str]:
    publisher, center = path.split("/", 1)
    return publisher, center


def _no_center(name: str) -> NotFound:
    return NotFound(f"no center {name!r}", code="no_such_center")


class RedisBroker:
    def __init__(self, redis: Redis, keys: Keys, clock: IReactorTime,
                 replicas: int = 0, replicas_timeout_ms: int = 500) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        #: Replicas that must have a publish before it is acknowledged (``WAIT``).
        self.replicas = replicas
        self.replicas_timeout_ms = replicas_timeout_ms
        self._handler: BrokerHandler | None = None
        #: When this node last pushed on the deadline of a center it holds subscribers of.
        self._refreshed: dict[str, float] = {}

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self.redis.listen([self.keys.messages, self.keys.control], self._received, self._subscribed)

    async def stop(self) -> None:
        pass  # the store closes the connections they share

    # streams

    async def stream(self, center: Center) -> Stream:
        keys = [self.keys.centers(center.publisher), self.keys.seq(center.path), self.keys.log(center.path)]
        found = await self.redis.script(LOAD, keys, [center.name])
        if int(found[0]) == 0:
            raise _no_center(center.name)
        retained: list[Retained] = []
        for entry in found[3] or []:
            seq, ts, data, *named = json.loads(entry)  # [seq, ts, data] or, with its event, [..., event]
            retained.append((int(seq), float(ts), data) if not named else (int(seq), float(ts), data, named[0]))
        return Stream(json.loads(found[1])["epoch"], int(found[2]), tuple(retained))

    async def load(self, center: Center, ttl: int) -> Stream:
        stream = await self.stream(center)
        if ttl:  # its idle time counts from now, unless it is counting already
            await self.redis.call("execute_command", "ZADD", self.keys.deadlines, "NX",
                                  self.clock.seconds() + ttl, center.path)
        return stream

    # receiving

    def _subscribed(self) -> None:
        """(Re)connected to the channels: what was published meanwhile is missed."""
        Deferred.fromCoroutine(self._reconnected()).addErrback(
            lambda f: log.failure("catching up from Redis failed", f))

    async def _reconnected(self) -> None:
        # The command connections come back on their own schedule, maybe
        # after this one: catching up needs them.
        await self.redis.ready(CATCH_UP_WAIT)
        if self._handler is not None:
            self._handler.reconnected()

    def _received(self, channel: str, raw: str) -> None:
        if self._handler is None:
            return
        try:
            payload = json.loads(raw)
            if channel == self.keys.control:
                if not isinstance(payload, dict):
                    raise TypeError("an event is an object")
                self._handler.control(payload)
                return
            # [publisher, center, epoch, seq, ts, data], then its event and
            # the connection it skips when it has them (lua/publish.lua).
            publisher, center, epoch, seq, ts, data, *named = payload
            if not named:
                arrival = Arrival(publisher, center, epoch, int(seq), float(ts), data)
            else:
                event, exclude = named[0], named[1] if len(named) > 1 else None
                if not isinstance(event, str) or not (exclude is None or isinstance(exclude, str)):
                    raise TypeError("an event and a socket id are strings")
                arrival = Arrival(publisher, center, epoch, int(seq), float(ts), data, event, exclude)
        except (ValueError, TypeError):
            log.warn("ignoring a malformed message on {channel}", channel=channel)
            return
        self._handler.message_arrived(arrival)

    # the Broker's other duties

    async def publish(self, publisher: str, publications: list[Publication], key: str | None) -> Published:
        if self.replicas > 0:
            # Once the script has run, its messages are held until WAIT says
            # where they are, then released: a publisher leaving meanwhile
            # must not stop that half way (only its answer is not needed).
            return await shielded(Deferred.fromCoroutine(self._publish(publisher, publications, key)))
        return await self._publish(publisher, publications, key)

    async def _publish(self, publisher: str, publications: list[Publication], key: str | None) -> Published:
        held = self.replicas > 0
        keys = [self.keys.deadlines, self.keys.idempotency(publisher, key) if key is not None else "",
                self.keys.held(publisher, key) if held and key is not None else ""]
        asked = fingerprint((p.center, p.data, p.event) for p in publications) if key is not None else ""
        # Six arguments a message; eight, its event and the connection it
        # skips, when one of them has either.
        plain = all(publication.plain for publication in publications)
        args: list[Any] = [self.keys.messages, repr(self.clock.seconds()), len(publications), KEY_TTL,
                           "1" if held else "0", asked, 6 if plain else 8]
        for publication in publications:
            path = publication.path
            keys += [self.keys.centers(publication.publisher), self.keys.seq(path), self.keys.log(path)]
            args += [publication.publisher, publication.center, path, publication.data,
                     publication.history, publication.ttl]
            if not plain:
                args += [publication.event, publication.exclude or ""]
        if not held:
            status, payload = await self.redis.script(PUBLISH, keys, args)
        else:
            answer, reached = await self.redis.replicated(PUBLISH, keys, args, self.replicas,
                                                          self.replicas_timeout_ms)
            status, payload = answer[0], answer[1]
            if int(status) != -1:
                if reached < self.replicas:
                    # Kept by the master (and held for a retry with the same
                    # Idempotency-Key), but it could be lost with it.
                    raise Unavailable(f"{reached} of {self.replicas} replicas confirmed the publish "
                                      f"within {self.replicas_timeout_ms} ms", code="store_unavailable")
                if answer[2]:
                    await self.redis.script(RELEASE, [keys[2]], [self.keys.messages, *json.loads(answer[2])])
        status = int(status)
        if status == -1:
            raise _no_center(payload)
        if status == 0 and not payload.startswith("["):  # the first publish's fingerprint, then its ids
            kept, _, payload = payload.partition(" ")
            if not same(kept, asked):
                raise reused(key or "")
        return Published(tuple(json.loads(payload)), status == 1)

    async def announce(self, event: dict[str, str]) -> None:
        await self.redis.call("publish", self.keys.control, json.dumps(event))

    def forget(self, publisher: str) -> None:
        # Its keys are in Redis, gone within KEY_TTL.
        for path in [path for path in self._refreshed if path.startswith(publisher + "/")]:
            del self._refreshed[path]

    async def first_use(self, publisher: str, signature: str, timestamp: int) -> bool:
        # Remembered by every node's Redis until the timestamp is out of the
        # window (and a second more, for the clocks' rounding).
        ttl = max(1, int(timestamp + SIGNATURE_WINDOW - self.clock.seconds()) + 1)
        stored = await self.redis.call("execute_command", "SET", self.keys.signature(publisher, signature),
                                       "1", "NX", "EX", ttl)
        return stored is not None

    async def due(self, now: float, live: list[LiveCenter]) -> list[tuple[str, str]]:
        deadlines = self.keys.deadlines
        for center in live:
            # A center with subscribers here is in use: push its deadline on.
            path = center.path
            if center.ttl and center.subscribed and now - self._refreshed.get(path, 0) >= center.ttl / 3:
                self._refreshed[path] = now
                await self.redis.call("zadd", deadlines, now + center.ttl, path)
        held = {center.path for center in live}
        for gone in [path for path in self._refreshed if path not in held]:
            del self._refreshed[gone]
        due = await self.redis.call("execute_command", "ZRANGEBYSCORE", deadlines, "-inf", now,
                                    "LIMIT", 0, 100)
        return [_center_of(path) for path in due]
