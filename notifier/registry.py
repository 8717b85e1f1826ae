"""The hub registry: publishers, their centers, and the live hubs of both.

Everything the HTTP handlers do goes through here: ownership (a publisher
only ever reaches ``{its name}/{center}``), auto-create, and the store.
"""

from __future__ import annotations

import secrets
from typing import Callable, Iterator

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from notifier.broker import Broker
from notifier.config import CentersConfig
from notifier.errors import Conflict, Forbidden, NotFound
from notifier.hub import Hub, Subscriber
from notifier.model import Center, Publisher
from notifier.names import check_center_name, check_publisher_name, matches
from notifier.stats import Stats
from notifier.store import Store

#: How long a publisher read from the store is trusted before it is read
#: again, so that the offline CLI's changes reach a running daemon.
PUBLISHER_TTL = 2.0


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_epoch() -> str:
    return secrets.token_hex(4)


@define(slots=True, eq=False)
class HubRegistry:
    store: Store
    broker: Broker
    config: CentersConfig
    clock: IReactorTime
    stats: Stats = field()
    make_secret: Callable[[], str] = new_secret
    make_epoch: Callable[[], str] = new_epoch
    _hubs: dict[tuple[str, str], Hub] = field(factory=dict)
    _publishers: dict[str, tuple[Publisher, float]] = field(factory=dict)

    _loading: dict[tuple[str, str], list[Deferred[Hub]]] = field(factory=dict)

    @stats.default
    def _stats(self) -> Stats:
        return Stats(started=self.clock.seconds())

    def __attrs_post_init__(self) -> None:
        self.broker.bind(self)

    # publishers

    async def add_publisher(self, name: str) -> Publisher:
        check_publisher_name(name)
        publisher = Publisher(name, self.make_secret(), self.clock.seconds())
        if not await self.store.add_publisher(publisher):
            raise Conflict(f"publisher {name!r} exists", code="publisher_exists")
        return publisher

    async def list_publishers(self) -> list[tuple[Publisher, int]]:
        return await self.store.list_publishers()

    async def rotate_secret(self, name: str) -> Publisher:
        secret = self.make_secret()
        if not await self.store.set_secret(name, secret):
            raise self._no_publisher(name)
        self.forget_publisher(name)
        await self.broker.announce({"type": "publisher_changed", "publisher": name})
        publisher = await self.store.get_publisher(name)
        if publisher is None:
            raise self._no_publisher(name)
        return publisher

    async def remove_publisher(self, name: str) -> None:
        if not await self.store.remove_publisher(name):
            raise self._no_publisher(name)
        self.forget_publisher(name, removed=True)
        await self.broker.announce({"type": "publisher_removed", "publisher": name})

    def forget_publisher(self, name: str, removed: bool = False) -> None:
        """Drop what this node holds of a publisher changed elsewhere (or
        here): its hubs if it was removed; else (its secret changed) the
        subscriptions of its private centers, whose tokens the new secret
        no longer admits."""
        self._publishers.pop(name, None)
        for key in [key for key in self._hubs if key[0] == name]:
            if removed:
                self._hubs.pop(key).close("deleted")
            elif self._hubs[key].center.private:
                self._hubs[key].close("revoked")

    async def publisher(self, name: str) -> Publisher | None:
        """The publisher called *name*, read again from the store once the
        copy held is ``PUBLISHER_TTL`` old."""
        now = self.clock.seconds()
        cached = self._publishers.get(name)
        if cached is not None and now - cached[1] < PUBLISHER_TTL:
            return cached[0]
        publisher = await self.store.get_publisher(name)
        if publisher is None:
            self._publishers.pop(name, None)
        else:
            self._publishers[name] = (publisher, now)
        return publisher

    @staticmethod
    def _no_publisher(name: str) -> NotFound:
        return NotFound(f"no publisher {name!r}", code="no_such_publisher")

    # centers

    async def create_center(
        self, publisher: str, name: str, *, private: bool = False,
        history: int | None = None, ttl: int | None = None,
    ) -> tuple[Center, bool]:
        check_center_name(name)
        center = Center(publisher, name, private, history, ttl, self.clock.seconds())
        limit = self.config.max_per_publisher
        added = await self.store.add_center(center, limit)
        if added is None:
            raise Forbidden(f"a publisher has at most {limit} centers", code="too_many_centers")
        center, created = added
        if self._ttl(center):
            await self._loaded(center)  # its idle time counts from now
        return center, created

    async def list_centers(self, publisher: str) -> list[Center]:
        return await self.store.list_centers(publisher)

    def loaded(self, publisher: str, name: str) -> Hub | None:
        """The hub of a center if it is live on this node."""
        return self._hubs.get((publisher, name))

    async def hub(self, publisher: str, name: str) -> Hub:
        """The live hub of ``publisher/name``; ``NotFound`` if no such center."""
        hub = self._hubs.get((publisher, name))
        if hub is not None:
            return hub
        center = await self.store.get_center(publisher, name)
        if center is None:
            raise NotFound(f"no center {name!r}", code="no_such_center")
        return await self._loaded(center)

    async def _loaded(self, center: Center) -> Hub:
        """The live hub of *center*, made (once) and brought up to date by the broker."""
        key = (center.publisher, center.name)
        hub = self._hubs.get(key)
        if hub is not None:
            return hub
        waiting = self._loading.get(key)
        if waiting is not None:  # being loaded: wait for that
            waiter: Deferred[Hub] = Deferred()
            waiting.append(waiter)
            return await waiter
        waiting = self._loading[key] = []
        history = self.config.history if center.history is None else center.history
        hub = Hub(center, self.make_epoch(), history, self.clock.seconds, self._ttl(center), self._later)
        try:
            await self.broker.load(hub)
        except BaseException as e:
            del self._loading[key]
            for waiter in waiting:
                waiter.errback(e)
            raise
        del self._loading[key]
        self._hubs[key] = hub
        for waiter in waiting:
            waiter.callback(hub)
        return hub

    def _later(self, call: Callable[[], object]) -> None:
        self.clock.callLater(0, call)

    def _ttl(self, center: Center) -> int:
        return self.config.idle_ttl if center.ttl is None else center.ttl

    async def load_expiring(self) -> None:
        """Load every center that can expire, so that its idle time counts from now."""
        for center in await self.store.all_centers():
            if self._ttl(center):
                await self._loaded(center)

    async def expire_idle(self) -> list[tuple[str, str]]:
        """Remove the centers idle past their ``ttl``, closing them as a delete does."""
        expired = []
        for publisher, name in await self.broker.due(self.clock.seconds()):
            try:
                await self.delete_center(publisher, name)
            except NotFound:
                continue  # deleted meanwhile
            expired.append((publisher, name))
        return expired

    async def delete_center(self, publisher: str, name: str) -> None:
        if not await self.store.remove_center(publisher, name):
            raise NotFound(f"no center {name!r}", code="no_such_center")
        self.drop_hub(publisher, name)
        await self.broker.announce({"type": "center_deleted", "publisher": publisher, "center": name})

    def drop_hub(self, publisher: str, name: str, reason: str = "deleted") -> None:
        """Close this node's hub of a center deleted here or elsewhere (or,
        with ``"shutdown"``, one whose subscribers must come back to it)."""
        hub = self._hubs.pop((publisher, name), None)
        if hub is not None:
            hub.close(reason)

    # messages

    async def _publishable(self, publisher: str, name: str) -> Hub:
        try:
            return await self.hub(publisher, name)
        except NotFound:
            if not self.config.auto_create or not _valid_center(name):
                raise
            center, _ = await self.create_center(publisher, name, private=self._auto_private(name))
            return await self._loaded(center)

    def _auto_private(self, name: str) -> bool:
        """Whether an auto-created center is private: ``[centers] auto_create_private``."""
        return any(matches(pattern, name) for pattern in self.config.auto_create_private)

    async def publish(self, publisher: str, name: str, data: str,
                      key: str | None = None) -> tuple[str, int, bool]:
        """Publish *data* to ``publisher/name``: its id, how many it reached
        on this node, and whether it was published now (``False``: a retry
        of *key*, answered with the first id)."""
        hub = await self._publishable(publisher, name)
        ids, reached, fresh = await self._publish(publisher, [(hub, data)], key)
        return ids[0], reached, fresh

    async def publish_batch(self, publisher: str, batch: list[tuple[str, str]],
                            key: str | None = None) -> tuple[list[str], bool]:
        """Publish ``(center, data)`` pairs in order, or none if a center is missing."""
        hubs: dict[str, Hub] = {}
        for name, _ in batch:
            if name not in hubs:
                hubs[name] = await self._publishable(publisher, name)
        ids, _, fresh = await self._publish(publisher, [(hubs[name], data) for name, data in batch], key)
        return ids, fresh

    async def _publish(self, publisher: str, entries: list[tuple[Hub, str]],
                       key: str | None) -> tuple[list[str], int, bool]:
        ids, reached, fresh = await self.broker.publish(publisher, entries, key)
        if fresh:
            self.stats.messages_in[publisher] += len(ids)
            self.stats.messages_out[publisher] += reached
        return ids, reached, fresh

    def dropped(self, hub: Hub) -> None:
        """Count a subscriber of *hub* dropped as too slow."""
        self.stats.drops[hub.center.publisher] += 1

    # the whole node

    def hubs(self) -> Iterator[Hub]:
        return iter(tuple(self._hubs.values()))

    def subscribers(self) -> Iterator[Subscriber]:
        for hub in self.hubs():
            yield from tuple(hub.subscribers)


def _valid_center(name: str) -> bool:
    try:
        check_center_name(name)
    except Exception:
        return False
    return True
