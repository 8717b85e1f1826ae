"""The centers and their live hubs on this node.

A center's hub is loaded where the broker says its stream stands, once,
whoever asks meanwhile; what the broker reports arriving is applied to it,
each message once and in order; a hub that sees a gap in its numbers, or
another epoch, catches up from where the broker says its stream stands.
Each publisher's live hubs retain within one bound together
(notifier.domain.retention). Fan-out steps run at the end of the reactor's turn,
through the ``Steps`` the service gives.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from notifier.backends.interfaces import Arrival, Broker, LiveCenter, Store
from notifier.config import CentersConfig
from notifier.domain.errors import BadRequest, Forbidden, NotFound, Unavailable
from notifier.domain.hub import Hub, Subscriber, Watcher, parse_id
from notifier.domain.model import Center
from notifier.domain.names import CENTER_NAME, check_center_name, matches
from notifier.domain.publishers import Publishers
from notifier.domain.retention import Retention
from notifier.domain.stats import Stats

log = Logger()


#: Seconds a subscriber resuming waits at most for what its node caught up
#: with to be fanned out (a slice of a large center's subscribers a turn).
CATCH_UP_SECONDS = 5.0


def new_epoch() -> str:
    return secrets.token_hex(4)


class Steps(Protocol):
    """Runs the hubs' fan-out steps at the end of the reactor's turn, after
    the HTTP answers written in it (notifier.end_of_turn.EndOfTurn): the reactor's
    queue of delayed calls is a heap, dear to keep long."""

    def step(self, call: Callable[[], object]) -> None: ...


#: The hubs live on this node, by ``(publisher, center)``: the centers'
#: to fill, presence's to look in (it is every hub's watcher).
LiveHubs = dict[tuple[str, str], Hub]


@define(slots=True, eq=False)
class Centers:
    """Center CRUD and limits, auto-create, the live hubs of this node and
    their retention accounts, and what arrives for them from the broker."""

    store: Store
    broker: Broker
    config: CentersConfig
    clock: IReactorTime
    stats: Stats
    #: Where the hubs' fan-out steps wait for the end of the turn.
    steps: Steps
    #: Told by every hub of subscribers coming and going (notifier.domain.presence).
    watcher: Watcher | None = None
    make_epoch: Callable[[], str] = new_epoch
    _hubs: LiveHubs = field(factory=dict, kw_only=True)
    #: Hubs being loaded: who else waits for each.
    _loading: dict[tuple[str, str], list[Deferred[Hub]]] = field(factory=dict)
    #: Hubs being loaded or caught up: what arrives for them meanwhile.
    _pending: dict[tuple[str, str], list[Arrival]] = field(factory=dict)
    #: Hubs catching up with the broker: fires with whether it answered.
    _catching: dict[tuple[str, str], Deferred[bool]] = field(factory=dict)
    #: What each publisher's live hubs retain together (notifier.domain.retention).
    _retention: dict[str, Retention] = field(factory=dict)
    #: ``steps.step``, bound once: every hub schedules its fan-out with it.
    _schedule: Callable[[Callable[[], object]], None] = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._schedule = self.steps.step

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

    async def publishable(self, publisher: str, name: str) -> Hub:
        """The live hub of ``publisher/name``, made if ``[centers]
        auto_create`` allows; ``NotFound`` else."""
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
        hub = self._hubs[key] = Hub(center, epoch, history, self.clock.seconds, ttl, self._schedule,
                                    watcher=self.watcher, max_bytes=self.config.max_retained_bytes,
                                    account=account, tally=self.stats.subscribed)
        account.hubs[center.name] = hub
        if stream is not None:
            hub.restore(stream.epoch, stream.seq, list(stream.retained))
        for arrival in arrived:
            self._apply(hub, arrival)
        for waiter in waiting:
            waiter.callback(hub)
        return hub

    def _ttl(self, center: Center) -> int:
        return self.config.idle_ttl if center.ttl is None else center.ttl

    async def load_expiring(self) -> None:
        """Load every center that can expire, so that its idle time counts from now."""
        for center in await self.store.all_centers():
            if self._ttl(center):
                await self._loaded(center)

    async def notice_changes(self) -> None:
        """Close the hubs of centers another process (the offline command)
        deleted, or deleted and made again, in the store."""
        for name in sorted(self.live_publishers()):
            live = [(key, hub) for key, hub in self._hubs.items() if key[0] == name]
            if not live:
                continue
            stored = {center.name: center for center in await self.store.list_centers(name)}
            for key, hub in live:
                kept = stored.get(key[1])
                if (kept is None or kept.epoch != hub.center.epoch) and self._hubs.get(key) is hub:
                    self.drop_hub(*key)

    async def expire_idle(self) -> list[tuple[str, str]]:
        """Remove the centers idle past their ``ttl``, closing them as a delete does."""
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
        """The bytes *publisher*'s live hubs retain on this node (notifier.domain.retention)."""
        account = self._retention.get(publisher)
        return 0 if account is None else account.bytes

    def dropped(self, hub: Hub) -> None:
        """Count a subscriber of *hub* dropped as too slow."""
        self.stats.drops[hub.center.publisher] += 1

    # publishers (notifier.domain.publishers.PublisherHubs)

    def live_publishers(self) -> set[str]:
        return {name for name, _ in self._hubs}

    def publisher_changed(self, name: str, removed: bool) -> None:
        for key in [key for key in self._hubs if key[0] == name]:
            if removed:
                self._unload(key).close("deleted")
            elif self._hubs[key].center.private:
                self._hubs[key].close("revoked", observers=False)

    # what the broker reports

    def message_arrived(self, arrival: Arrival) -> None:
        """A message published to a center, on any node: applied to its hub here, if live."""
        key = (arrival.publisher, arrival.center)
        pending = self._pending.get(key)
        if pending is not None:
            pending.append(arrival)
            return
        hub = self._hubs.get(key)
        if hub is not None:
            self._apply(hub, arrival)

    def reconnected(self) -> None:
        """The broker's feed is back: every live hub catches up."""
        for hub in self.hubs():
            self._catch_up(hub)

    def _apply(self, hub: Hub, arrival: Arrival) -> None:
        if arrival.epoch != hub.epoch:
            # Another incarnation of the center: this hub may be the stale
            # one (its deletion was missed), which the broker tells.
            self._catch_up(hub)
        elif arrival.seq == hub.seq + 1:
            hub.deliver(hub.append(arrival.data, arrival.seq, arrival.ts, arrival.event, arrival.exclude))
        elif arrival.seq > hub.seq:
            self._catch_up(hub)  # some went missing on the way: the broker has them
        # else had already

    async def caught_up(self, hub: Hub, cursor: str) -> None:
        """Bring *hub* up to *cursor*, a position of its epoch past what it
        has sent, which a subscriber resuming was given by another node
        (``Hub.ahead``): what the broker has that this node has not seen
        yet is applied first (joining a catch-up going on, which the
        subscriber leaving does not stop), then fanned out, a slice a turn.
        A position the broker has not reached either is left as it is (a
        resume from the future); a broker out of reach, that could not
        tell, fails as unavailable."""
        key = (hub.center.publisher, hub.center.name)
        parsed = parse_id(cursor)
        if parsed is None or parsed[0] != hub.epoch:
            return
        seq = parsed[1]
        if seq > hub.seq:
            waiter: Deferred[bool] = Deferred()

            def told(fetched: bool) -> bool:
                if not waiter.called:  # (cancelled when the subscriber left)
                    waiter.callback(fetched)
                return fetched

            self._catch_up(hub).addCallback(told)
            if not await waiter and seq > hub.seq and self._hubs.get(key) is hub:
                raise Unavailable("the state store is unreachable: this node cannot tell where the center stands",
                                  code="store_unavailable")
        deadline = self.clock.seconds() + CATCH_UP_SECONDS
        while hub.sent < seq <= hub.seq and self._hubs.get(key) is hub and self.clock.seconds() < deadline:
            await deferLater(self.clock, 0, lambda: None)

    def _catch_up(self, hub: Hub) -> Deferred[bool]:
        """Catch *hub* up with the broker, in the background: fires with
        whether the broker answered (the one going on, if there is one)."""
        key = (hub.center.publisher, hub.center.name)
        going = self._catching.get(key)
        if going is not None:
            return going
        done: Deferred[bool] = Deferred()
        if key in self._pending:  # being loaded: it is as new as it gets
            done.callback(True)
            return done
        self._pending[key] = []
        self._catching[key] = done

        def failed(failure: Failure) -> bool:
            if failure.check(Unavailable):  # cut off from the broker: the reconnection catches up
                log.warn("catching up {path}: {reason}", path=hub.center.path, reason=failure.getErrorMessage())
            else:
                log.failure("catching up {path} failed", failure, path=hub.center.path)
            return False

        def finished(fetched: bool) -> None:
            del self._catching[key]
            done.callback(fetched)

        Deferred.fromCoroutine(self._fetch_missed(hub)).addCallbacks(lambda _: True, failed).addCallback(finished)
        return done

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
            # As retained, with their events; without what each was to
            # skip, which a stream does not keep: a connection skipping
            # one of these is sent it.
            for entry in missed:
                hub.deliver(hub.append_retained(entry))
        for arrival in arrived:
            self._apply(hub, arrival)

    # the whole node

    def hubs(self) -> Iterator[Hub]:
        return iter(tuple(self._hubs.values()))

    def subscribers(self) -> Iterator[Subscriber]:
        """Every subscriber of this node, once (a multiplexed one is a
        subscriber of each of its hubs)."""
        return iter(dict.fromkeys(subscriber for hub in self.hubs() for subscriber in tuple(hub.subscribers)))


async def sweep(publishers: Publishers, centers: Centers) -> list[tuple[str, str]]:
    """The periodic sweep: act on what another process changed in the
    store (publishers removed or given a new secret, centers deleted or
    made again), then remove the centers idle past their ``ttl``."""
    if await publishers.notice_changes():
        await centers.notice_changes()
    return await centers.expire_idle()
