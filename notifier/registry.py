"""The hub registry: publishers, their centers, and the live hubs of both.

Everything the HTTP handlers do goes through here: ownership (a publisher
only ever reaches ``{its name}/{center}``), auto-create, and the store. It
is the broker's ``BrokerHandler``: what arrives is applied to the hubs here,
each message once and in order; a hub that sees a gap in its numbers, or
another epoch, catches up from where the broker says its stream stands.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from notifier.backends.interfaces import Arrival, Broker, LiveCenter, Publication, Store
from notifier.config import CentersConfig
from notifier.errors import BadRequest, Conflict, Forbidden, NotFound
from notifier.hub import Hub, Subscriber
from notifier.model import Center, Publisher, Webhook
from notifier.names import CENTER_NAME, PUBLISHER_NAME, check_center_name, check_publisher_name, matches
from notifier.presence import Presence
from notifier.retention import Retention
from notifier.stats import Stats
from notifier.turns import end_of_turn
from notifier.unknown import UnknownNames
from notifier.webhooks import Webhooks

log = Logger()

#: How long a publisher read from the store is trusted before it is read
#: again, so that the offline CLI's changes reach a running daemon; a name
#: found to be no publisher's is trusted as long.
PUBLISHER_TTL = 2.0
#: Names found to be no publisher's held at most (notifier.unknown).
MAX_UNKNOWN = 10_000


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
    _unknown: UnknownNames = field(factory=lambda: UnknownNames(PUBLISHER_TTL, MAX_UNKNOWN))
    #: Publishers added so far, as far as this node knows: a look-up begun
    #: before one must not remember its name as unknown.
    _added: int = 0
    #: Hubs being loaded: who else waits for each.
    _loading: dict[tuple[str, str], list[Deferred[Hub]]] = field(factory=dict)
    #: Hubs being loaded or caught up: what arrives for them meanwhile.
    _pending: dict[tuple[str, str], list[Arrival]] = field(factory=dict)
    #: What each publisher's live hubs retain together (notifier.retention).
    _retention: dict[str, Retention] = field(factory=dict)
    #: Occupancy and members (notifier.presence), told by every hub; set by the service.
    presence: Presence | None = None
    #: The publishers' webhooks (notifier.webhooks); set by the service.
    webhooks: Webhooks | None = None

    @stats.default
    def _stats(self) -> Stats:
        return Stats(started=self.clock.seconds())

    # publishers

    async def add_publisher(self, name: str) -> Publisher:
        check_publisher_name(name)
        publisher = Publisher(name, self.make_secret(), self.clock.seconds())
        if not await self.store.add_publisher(publisher):
            raise Conflict(f"publisher {name!r} exists", code="publisher_exists")
        self._publisher_added(name)
        await self.broker.announce({"type": "publisher_added", "publisher": name})
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

    # webhooks

    async def set_webhook(self, publisher: str, webhook: Webhook) -> None:
        if not await self.store.set_webhook(publisher, webhook):
            raise self._no_publisher(publisher)
        await self._webhook_changed(publisher)

    async def get_webhook(self, publisher: str) -> Webhook | None:
        return await self.store.get_webhook(publisher)

    async def remove_webhook(self, publisher: str) -> None:
        await self.store.remove_webhook(publisher)
        await self._webhook_changed(publisher)

    async def _webhook_changed(self, publisher: str) -> None:
        if self.webhooks is not None:
            self.webhooks.changed(publisher)
        await self.broker.announce({"type": "webhook_changed", "publisher": publisher})

    async def webhook_destination(self, publisher: str) -> tuple[Webhook | None, Publisher | None]:
        """Where *publisher*'s webhook events go, and its secret (notifier.webhooks)."""
        return await self.store.get_webhook(publisher), await self.publisher(publisher)

    def forget_publisher(self, name: str, removed: bool = False) -> None:
        """Drop what this node holds of a publisher changed elsewhere (or
        here): its hubs if it was removed; else (its secret changed) the
        subscriptions of its private centers, whose tokens the new secret
        no longer admits."""
        self._publishers.pop(name, None)
        if self.webhooks is not None:
            if removed:
                self.webhooks.removed(name)
            else:
                self.webhooks.changed(name)
        if removed:
            self.broker.forget(name)
        for key in [key for key in self._hubs if key[0] == name]:
            if removed:
                self._unload(key).close("deleted")
            elif self._hubs[key].center.private:
                self._hubs[key].close("revoked", observers=False)

    async def publisher(self, name: str) -> Publisher | None:
        """The publisher called *name*, read again from the store once the
        copy held is ``PUBLISHER_TTL`` old. That there is none is held as
        long (notifier.unknown): an unknown name costs what a known one does."""
        now = self.clock.seconds()
        cached = self._publishers.get(name)
        if cached is not None and now - cached[1] < PUBLISHER_TTL:
            return cached[0]
        if not PUBLISHER_NAME.match(name):
            return None  # never a publisher's (check_publisher_name)
        if cached is None and self._unknown.holds(name, now):
            return None
        added = self._added
        publisher = await self.store.get_publisher(name)
        if cached is not None:
            self._compare(name, cached, publisher)
        if publisher is None:
            self._publishers.pop(name, None)
            if added == self._added:
                self._unknown.add(name, now)
        else:
            self._publishers[name] = (publisher, now)
            self._unknown.discard(name)
        return publisher

    def _publisher_added(self, name: str | None) -> None:
        """Forget that *name* (``None``: any name) was no publisher's."""
        self._added += 1
        if name is None:
            self._unknown.clear()
        else:
            self._unknown.discard(name)

    def _compare(self, name: str, cached: tuple[Publisher, float] | None, found: Publisher | None) -> None:
        """Act on what another process did to publisher *name*: *found* is
        what the store holds now, *cached* the copy held when it was read."""
        if cached is not None and self._publishers.get(name) is not cached:
            return  # another read of it came first, and acted
        if found is None:
            self.forget_publisher(name, removed=True)
        elif cached is not None and found.secret != cached[0].secret:
            self.forget_publisher(name)

    async def notice_changes(self) -> None:
        """Close what another process (the offline command) removed from the
        store, or changed: the hubs of a removed publisher or of a deleted
        (or remade) center, the private subscriptions of a changed secret."""
        if not await self.store.changed():
            return
        self._publisher_added(None)  # one added there is known from now
        for name in sorted({name for name, _ in self._hubs} | set(self._publishers)):
            cached = self._publishers.get(name)
            publisher = await self.store.get_publisher(name)
            self._compare(name, cached, publisher)
            live = [(key, hub) for key, hub in self._hubs.items() if key[0] == name]
            if publisher is None or not live:
                continue
            stored = {center.name: center for center in await self.store.list_centers(name)}
            for key, hub in live:
                kept = stored.get(key[1])
                if (kept is None or kept.epoch != hub.center.epoch) and self._hubs.get(key) is hub:
                    self.drop_hub(*key)

    @staticmethod
    def _no_publisher(name: str) -> NotFound:
        return NotFound(f"no publisher {name!r}", code="no_such_publisher")

    # centers

    async def create_center(
        self, publisher: str, name: str, *, private: bool = False,
        history: int | None = None, ttl: int | None = None, presence: bool = False,
    ) -> tuple[Center, bool]:
        check_center_name(name)
        if presence and not private:
            raise BadRequest("a presence center is private: its members are the uids of its tokens",
                             code="presence_needs_private")
        center = Center(publisher, name, private, history, ttl, self.clock.seconds(), self.make_epoch(), presence)
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
        """The live hub of *center*, made (once) where the broker says its stream stands."""
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
        self._pending[key] = []
        ttl = self._ttl(center)
        try:
            stream = await self.broker.load(center, ttl)
        except BaseException as e:
            del self._loading[key]
            self._pending.pop(key, None)
            for waiter in waiting:
                waiter.errback(e)
            raise
        del self._loading[key]
        arrived = self._pending.pop(key, [])
        history = self.config.history if center.history is None else center.history
        # A broker keeping no stream: the hub's own begins now, in an epoch of its own.
        epoch = self.make_epoch() if stream is None else stream.epoch
        account = self._retention.get(center.publisher)
        if account is None:
            account = self._retention[center.publisher] = Retention(self.config.max_retained_bytes_per_publisher)
        hub = self._hubs[key] = Hub(center, epoch, history, self.clock.seconds, ttl, self._later,
                                    watcher=self.presence, max_bytes=self.config.max_retained_bytes,
                                    account=account)
        account.hubs[center.name] = hub
        if stream is not None:
            hub.restore(stream.epoch, stream.seq, list(stream.retained))
        for arrival in arrived:
            self._apply(hub, arrival)
        for waiter in waiting:
            waiter.callback(hub)
        return hub

    def _later(self, call: Callable[[], object]) -> None:
        # At the end of the turn, after the HTTP answers written in it, with
        # every other hub's step in one delayed call (notifier.turns): the
        # reactor's queue of delayed calls is a heap, dear to keep long.
        end_of_turn(self.clock).step(call)

    def _ttl(self, center: Center) -> int:
        return self.config.idle_ttl if center.ttl is None else center.ttl

    async def load_expiring(self) -> None:
        """Load every center that can expire, so that its idle time counts from now."""
        for center in await self.store.all_centers():
            if self._ttl(center):
                await self._loaded(center)

    async def expire_idle(self) -> list[tuple[str, str]]:
        """The periodic sweep: close what another process removed from the
        store (``notice_changes``), then remove the centers idle past their
        ``ttl``, closing them as a delete does."""
        await self.notice_changes()
        now = self.clock.seconds()
        live = [LiveCenter(hub.center.publisher, hub.center.name, hub.ttl, bool(hub.subscribers), hub.idle(now))
                for hub in self.hubs()]
        expired = []
        for publisher, name in await self.broker.due(now, live):
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
        if (publisher, name) in self._hubs:
            self._unload((publisher, name)).close(reason)

    def _unload(self, key: tuple[str, str]) -> Hub:
        """Take the hub of *key* off this node, freeing what it retains."""
        hub = self._hubs.pop(key)
        hub.release()
        account = self._retention.get(key[0])
        if account is not None and not account.hubs:
            del self._retention[key[0]]
        return hub

    def retained_bytes(self, publisher: str) -> int:
        """The bytes *publisher*'s live hubs retain on this node (notifier.retention)."""
        account = self._retention.get(publisher)
        return 0 if account is None else account.bytes

    # messages

    async def _publishable(self, publisher: str, name: str) -> Hub:
        try:
            return await self.hub(publisher, name)
        except NotFound:
            if not self.config.auto_create or not CENTER_NAME.match(name):
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
        publications = [Publication(hub.center.publisher, hub.center.name, data, hub.epoch, hub.seq,
                                    hub.history, hub.ttl) for hub, data in entries]
        published = await self.broker.publish(publisher, publications, key)
        for arrival in published.arrivals:
            self.message_arrived(arrival)
        if not published.fresh:
            return list(published.ids), 0, False
        reached = sum(len(hub.subscribers) for hub, _ in entries)
        self.stats.messages_in[publisher] += len(published.ids)
        self.stats.messages_out[publisher] += reached
        return list(published.ids), reached, True

    def dropped(self, hub: Hub) -> None:
        """Count a subscriber of *hub* dropped as too slow."""
        self.stats.drops[hub.center.publisher] += 1

    # what the broker reports (BrokerHandler)

    def message_arrived(self, arrival: Arrival) -> None:
        key = (arrival.publisher, arrival.center)
        pending = self._pending.get(key)
        if pending is not None:
            pending.append(arrival)
            return
        hub = self._hubs.get(key)
        if hub is not None:
            self._apply(hub, arrival)

    def control(self, event: dict[str, str]) -> None:
        kind, publisher = event.get("type"), event.get("publisher", "")
        if kind == "presence":
            if self.presence is not None:
                self.presence.remote(event)
        elif kind == "webhook_changed":
            if self.webhooks is not None:
                self.webhooks.changed(publisher)
        elif kind == "center_deleted":
            self.drop_hub(publisher, event.get("center", ""))
        elif kind in ("publisher_changed", "publisher_removed"):
            self.forget_publisher(publisher, removed=kind == "publisher_removed")
        elif kind == "publisher_added":
            self._publisher_added(publisher)

    def reconnected(self) -> None:
        for hub in self.hubs():
            self._catch_up(hub)

    def _apply(self, hub: Hub, arrival: Arrival) -> None:
        if arrival.epoch != hub.epoch:
            # Another incarnation of the center: this hub may be the stale
            # one (its deletion was missed), which the broker tells.
            self._catch_up(hub)
        elif arrival.seq == hub.seq + 1:
            hub.deliver(hub.append(arrival.data, arrival.seq, arrival.ts))
        elif arrival.seq > hub.seq:
            self._catch_up(hub)  # some went missing on the way: the broker has them
        # else had already

    def _catch_up(self, hub: Hub) -> None:
        key = (hub.center.publisher, hub.center.name)
        if key in self._pending:
            return  # already catching up
        self._pending[key] = []
        Deferred.fromCoroutine(self._fetch_missed(hub)).addErrback(
            lambda f: log.failure("catching up {path} failed", f, path=hub.center.path))

    async def _fetch_missed(self, hub: Hub) -> None:
        key = (hub.center.publisher, hub.center.name)
        try:
            stream = await self.broker.stream(hub.center)
        except NotFound:
            stream = None
            gone = True
        except BaseException:
            self._pending.pop(key, None)  # the next reconnection catches up again
            raise
        else:
            gone = stream is not None and stream.epoch != hub.epoch
        arrived = self._pending.pop(key, [])
        if self._hubs.get(key) is not hub:
            return  # dropped meanwhile
        if gone:
            # Deleted, or made again, while this node was not listening (or
            # the broker lost it): close the hub as a deletion does, so that
            # its subscribers come back to what there is now.
            self.drop_hub(*key)
            return
        if stream is not None:
            missed = [entry for entry in stream.retained if entry[0] > hub.seq]
            if stream.seq > hub.seq and (not missed or missed[0][0] != hub.seq + 1):
                # More was published meanwhile than the broker retains: a
                # stream with a hole in it must not pass for whole. Closed as
                # on a shutdown, the subscribers come back with their cursors
                # and are told.
                self.drop_hub(*key, "shutdown")
                return
            for seq, ts, data in missed:
                hub.deliver(hub.append(data, seq, ts))
        for arrival in arrived:
            self._apply(hub, arrival)

    # the whole node

    def hubs(self) -> Iterator[Hub]:
        return iter(tuple(self._hubs.values()))

    def subscribers(self) -> Iterator[Subscriber]:
        """Every subscriber of this node, once (a multiplexed one is a
        subscriber of each of its hubs)."""
        return iter(dict.fromkeys(subscriber for hub in self.hubs() for subscriber in tuple(hub.subscribers)))

