"""Publishers and centers in Redis, shared by every daemon that uses it.

A center's epoch is kept with it, so that ids stay valid across daemons and
restarts, and change when it is deleted and made again. Every change is
announced to the daemons by the node that makes it (through the
broker), so ``changed`` has nothing to tell.

A publisher's Pusher app id is the next number of ``last_app_id``
(``INCR``); two hashes, app id → name and key → name, find a publisher by
either and keep each unique (lua/add_publisher.lua). A publisher stored
before publishers had them (by a daemon of an earlier version) is given
them when the store is opened, or when it is read if it came later.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from notifier.backends.redis.client import Redis, Script
from notifier.backends.redis.keys import Keys
from notifier.domain.model import Center, Publisher, Webhook
from notifier.domain.publishers import new_key

ADD_CENTER = Script.named("add_center")
ADD_PUBLISHER = Script.named("add_publisher")
PAGE_CENTERS = Script.named("page_centers")
PUBLISHER_BY = Script.named("publisher_by")
REPLACE_PUBLISHER = Script.named("replace_publisher")
REMOVE_CENTER = Script.named("remove_center")
REMOVE_PUBLISHER = Script.named("remove_publisher")
SET_SECRET = Script.named("set_secret")
SET_WEBHOOK = Script.named("set_webhook")


#: Times a publisher's record is read again when it changed while being
#: replaced (``RedisStore._replace``).
REPLACE_ATTEMPTS = 10
#: What a publisher's record is changed with (``RedisStore._replace``): its
#: fields → the new fields, and the app id and key to index (``""``: none).
Changing = Callable[[dict[str, Any]], Awaitable[tuple[dict[str, Any], str, str]]]


def _publisher(name: str, fields: dict[str, Any]) -> Publisher:
    return Publisher(name, fields["secret"], fields["created"], fields["app_id"], fields["key"],
                     fields.get("client_events"))


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
        records: dict[str, str] = await self.redis.call("hgetall", self.keys.publishers)
        for name in sorted(records, key=lambda name: (json.loads(records[name])["created"], name)):
            await self._fields(name, records[name])  # one stored before app ids were kept gets one

    async def close(self) -> None:
        await self.redis.stop()

    async def changed(self) -> bool:
        return False

    @property
    def _publisher_keys(self) -> list[str]:
        """The keys of the scripts that change publishers."""
        return [self.keys.publishers, self.keys.publisher_apps, self.keys.publisher_keys]

    async def add_publisher(self, publisher: Publisher) -> bool:
        record = json.dumps({"secret": publisher.secret, "created": publisher.created, "app_id": publisher.app_id,
                             "key": publisher.key, "client_events": publisher.client_events})
        added = await self.redis.script(ADD_PUBLISHER, self._publisher_keys,
                                        [publisher.name, record, publisher.app_id, publisher.key])
        return int(added) == 1

    async def next_app_id(self) -> str:
        return str(await self.redis.call("incr", self.keys.last_app_id))

    async def get_publisher(self, name: str) -> Publisher | None:
        record = await self.redis.call("hget", self.keys.publishers, name)
        fields = None if record is None else await self._fields(name, record)
        return None if fields is None else _publisher(name, fields)

    async def get_publisher_by_app_id(self, app_id: str) -> Publisher | None:
        return await self._publisher_by(self.keys.publisher_apps, "app_id", app_id)

    async def get_publisher_by_key(self, key: str) -> Publisher | None:
        return await self._publisher_by(self.keys.publisher_keys, "key", key)

    async def _publisher_by(self, index: str, field: str, value: str) -> Publisher | None:
        found = await self.redis.script(PUBLISHER_BY, [index, self.keys.publishers], [value])
        if not found:
            return None
        name, record = found
        fields = json.loads(record)
        return _publisher(name, fields) if fields.get(field) == value else None

    async def _fields(self, name: str, record: str) -> dict[str, Any] | None:
        """The fields of publisher *name*'s *record*, given an app id and a
        key if it has none yet (stored before they were kept); ``None`` if
        it was removed meanwhile."""
        fields: dict[str, Any] = json.loads(record)
        if "app_id" in fields and "key" in fields:
            return fields
        return await self._replace(name, record, self._completed)

    async def _completed(self, fields: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
        """A publisher's *fields* with an app id and a key, and those to
        index (``""``: none, it had them already)."""
        if "app_id" in fields and "key" in fields:
            return fields, "", ""
        app_id = fields.get("app_id") or await self.next_app_id()
        key = fields.get("key") or new_key()
        return {**fields, "app_id": app_id, "key": key}, app_id, key

    async def _replace(self, name: str, record: str, change: Changing) -> dict[str, Any] | None:
        """Replace publisher *name*'s *record* by what *change* makes of its
        fields, made again from the record read again if it changed
        meanwhile (or the app id or key made is another's); the fields
        stored, or ``None`` if there is no such publisher."""
        for _ in range(REPLACE_ATTEMPTS):
            fields: dict[str, Any] = json.loads(record)
            changed, app_id, key = await change(fields)
            if changed == fields:
                return fields
            done = int(await self.redis.script(REPLACE_PUBLISHER, self._publisher_keys,
                                               [name, record, json.dumps(changed), app_id, key]))
            if done == 1:
                return changed
            if done == -1:
                return None
            record = await self.redis.call("hget", self.keys.publishers, name)
            if record is None:
                return None
        raise RuntimeError(f"publisher {name!r} kept changing while it was being changed")

    async def list_publishers(self) -> list[tuple[Publisher, int]]:
        records: dict[str, str] = await self.redis.call("hgetall", self.keys.publishers)
        listed = []
        for name in sorted(records):
            fields = await self._fields(name, records[name])
            if fields is None:
                continue  # removed meanwhile
            count = int(await self.redis.call("hlen", self.keys.centers(name)))
            listed.append((_publisher(name, fields), count))
        return listed

    async def set_secret(self, name: str, secret: str) -> bool:
        return int(await self.redis.script(SET_SECRET, [self.keys.publishers], [name, secret])) == 1

    async def set_client_events(self, name: str, client_events: bool | None) -> bool:
        record = await self.redis.call("hget", self.keys.publishers, name)
        if record is None:
            return False

        async def change(fields: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
            completed, app_id, key = await self._completed(fields)
            return {**completed, "client_events": client_events}, app_id, key

        return await self._replace(name, record, change) is not None

    async def remove_publisher(self, name: str) -> bool:
        keys = [self.keys.publishers, self.keys.centers(name), self.keys.deadlines, self.keys.webhooks,
                self.keys.publisher_apps, self.keys.publisher_keys, self.keys.center_names(name)]
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
            ADD_CENTER, [self.keys.centers(center.publisher), self.keys.center_names(center.publisher)],
            [center.name, record, limit])
        if int(created) == -1:
            return None
        return _center(center.publisher, center.name, stored), int(created) == 1

    async def get_center(self, publisher: str, name: str) -> Center | None:
        record = await self.redis.call("hget", self.keys.centers(publisher), name)
        return None if record is None else _center(publisher, name, record)

    async def list_centers(self, publisher: str) -> list[Center]:
        records: dict[str, str] = await self.redis.call("hgetall", self.keys.centers(publisher))
        return [_center(publisher, name, records[name]) for name in sorted(records)]

    async def page_centers(self, publisher: str, prefix: str = "", after: str | None = None,
                           limit: int = 100) -> tuple[list[Center], int]:
        # Names are ASCII below DEL: those starting with the prefix sort
        # in [prefix, prefix + DEL).
        low = f"({after}" if after is not None and after >= prefix else f"[{prefix}"
        answer = await self.redis.script(
            PAGE_CENTERS, [self.keys.centers(publisher), self.keys.center_names(publisher)],
            [low, f"({prefix}\x7f", f"[{prefix}", limit])
        found = iter(answer[1:])
        return [_center(publisher, name, record) for name, record in zip(found, found, strict=True)], int(answer[0])

    async def all_centers(self) -> list[Center]:
        centers = []
        for publisher in sorted(await self.redis.call("hkeys", self.keys.publishers)):
            centers.extend(await self.list_centers(publisher))
        return centers

    async def remove_center(self, publisher: str, name: str) -> bool:
        path = f"{publisher}/{name}"
        keys = [self.keys.centers(publisher), self.keys.seq(path), self.keys.log(path), self.keys.deadlines,
                self.keys.center_names(publisher)]
        return int(await self.redis.script(REMOVE_CENTER, keys, [name, path])) == 1

    async def set_webhook(self, publisher: str, webhook: Webhook) -> bool:
        record = json.dumps({"url": webhook.url, "events": list(webhook.events), "format": webhook.format})
        stored = await self.redis.script(SET_WEBHOOK, [self.keys.publishers, self.keys.webhooks], [publisher, record])
        return int(stored) == 1

    async def get_webhook(self, publisher: str) -> Webhook | None:
        record = await self.redis.call("hget", self.keys.webhooks, publisher)
        if record is None:
            return None
        fields = json.loads(record)
        return Webhook(fields["url"], tuple(fields["events"]), fields.get("format", "notifier"))

    async def remove_webhook(self, publisher: str) -> bool:
        return int(await self.redis.call("hdel", self.keys.webhooks, publisher)) == 1
