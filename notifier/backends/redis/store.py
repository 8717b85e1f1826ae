"""Publishers and centers in Redis, shared by every daemon that uses it.

A center's epoch is kept with it, so that ids stay valid across daemons and
restarts, and change when it is deleted and made again. Every change is
announced to the daemons by the node that makes it (through the
broker), so ``changed`` has nothing to tell.
"""

from __future__ import annotations

import json

from notifier.backends.redis.client import Redis, Script
from notifier.backends.redis.keys import Keys
from notifier.domain.model import Center, Publisher, Webhook

ADD_CENTER = Script.named("add_center")
REMOVE_CENTER = Script.named("remove_center")
REMOVE_PUBLISHER = Script.named("remove_publisher")
SET_SECRET = Script.named("set_secret")
SET_WEBHOOK = Script.named("set_webhook")


def _center(publisher: str, name: str, record: str) -> Center:
    fields = json.loads(record)
    return Center(publisher, name, fields["private"], fields["history"], fields["ttl"], fields["created"],
                  fields["epoch"], fields.get("presence", False))


class RedisStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def open(self) -> None:
        await self.redis.ready()

    async def close(self) -> None:
        await self.redis.stop()

    async def changed(self) -> bool:
        return False

    async def add_publisher(self, publisher: Publisher) -> bool:
        record = json.dumps({"secret": publisher.secret, "created": publisher.created})
        return int(await self.redis.call("hsetnx", self.keys.publishers, publisher.name, record)) == 1

    async def get_publisher(self, name: str) -> Publisher | None:
        record = await self.redis.call("hget", self.keys.publishers, name)
        if record is None:
            return None
        fields = json.loads(record)
        return Publisher(name, fields["secret"], fields["created"])

    async def list_publishers(self) -> list[tuple[Publisher, int]]:
        records: dict[str, str] = await self.redis.call("hgetall", self.keys.publishers)
        listed = []
        for name in sorted(records):
            fields = json.loads(records[name])
            count = int(await self.redis.call("hlen", self.keys.centers(name)))
            listed.append((Publisher(name, fields["secret"], fields["created"]), count))
        return listed

    async def set_secret(self, name: str, secret: str) -> bool:
        return int(await self.redis.script(SET_SECRET, [self.keys.publishers], [name, secret])) == 1

    async def remove_publisher(self, name: str) -> bool:
        keys = [self.keys.publishers, self.keys.centers(name), self.keys.deadlines, self.keys.webhooks]
        paths = f"{name}/"
        args = [name, self.keys.seq(paths), self.keys.log(paths), paths, self.keys.idempotency(name, "*")]
        return int(await self.redis.script(REMOVE_PUBLISHER, keys, args)) == 1

    async def add_center(self, center: Center, limit: int = 0) -> tuple[Center, bool] | None:
        if not center.epoch:
            raise ValueError("a center is stored with its epoch")
        record = json.dumps({
            "private": center.private, "history": center.history, "ttl": center.ttl,
            "created": center.created, "epoch": center.epoch, "presence": center.presence,
        })
        created, stored = await self.redis.script(
            ADD_CENTER, [self.keys.centers(center.publisher)], [center.name, record, limit])
        if int(created) == -1:
            return None
        return _center(center.publisher, center.name, stored), int(created) == 1

    async def get_center(self, publisher: str, name: str) -> Center | None:
        record = await self.redis.call("hget", self.keys.centers(publisher), name)
        return None if record is None else _center(publisher, name, record)

    async def list_centers(self, publisher: str) -> list[Center]:
        records: dict[str, str] = await self.redis.call("hgetall", self.keys.centers(publisher))
        return [_center(publisher, name, records[name]) for name in sorted(records)]

    async def all_centers(self) -> list[Center]:
        centers = []
        for publisher in sorted(await self.redis.call("hkeys", self.keys.publishers)):
            centers.extend(await self.list_centers(publisher))
        return centers

    async def remove_center(self, publisher: str, name: str) -> bool:
        path = f"{publisher}/{name}"
        keys = [self.keys.centers(publisher), self.keys.seq(path), self.keys.log(path), self.keys.deadlines]
        return int(await self.redis.script(REMOVE_CENTER, keys, [name, path])) == 1

    async def set_webhook(self, publisher: str, webhook: Webhook) -> bool:
        record = json.dumps({"url": webhook.url, "events": list(webhook.events)})
        stored = await self.redis.script(SET_WEBHOOK, [self.keys.publishers, self.keys.webhooks], [publisher, record])
        return int(stored) == 1

    async def get_webhook(self, publisher: str) -> Webhook | None:
        record = await self.redis.call("hget", self.keys.webhooks, publisher)
        if record is None:
            return None
        fields = json.loads(record)
        return Webhook(fields["url"], tuple(fields["events"]))

    async def remove_webhook(self, publisher: str) -> bool:
        return int(await self.redis.call("hdel", self.keys.webhooks, publisher)) == 1
