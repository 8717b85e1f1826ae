"""The publishers: who they are, their secrets and webhooks, as the store
keeps them and as this node holds them a moment.

A publisher read from the store is held ``PUBLISHER_TTL`` seconds, so that
the offline CLI's changes reach a running daemon; a name found to be no
publisher's is held as long (notifier.domain.unknown_names). A change made here is
announced through the broker; one made here or elsewhere closes what this
node holds of the publisher (``forget_publisher``): its hubs, its webhook's
outbox.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

from notifier.backends.interfaces import Broker, Store
from notifier.domain.errors import Conflict, NotFound
from notifier.domain.model import Publisher, Webhook
from notifier.domain.names import PUBLISHER_NAME, check_publisher_name
from notifier.domain.unknown_names import UnknownNames

#: How long a publisher read from the store is trusted before it is read
#: again, so that the offline CLI's changes reach a running daemon; a name
#: found to be no publisher's is trusted as long.
PUBLISHER_TTL = 2.0
#: Names found to be no publisher's held at most (notifier.domain.unknown_names).
MAX_UNKNOWN = 10_000


def new_secret() -> str:
    return secrets.token_urlsafe(32)


async def webhook_destination(store: Store, publisher: str) -> tuple[Webhook | None, Publisher | None]:
    """Where *publisher*'s webhook events go, and its secret, as the store
    has them now (``Webhooks.find``)."""
    return await store.get_webhook(publisher), await store.get_publisher(publisher)


class PublisherHubs(Protocol):
    """What this node's live hubs hold of publishers (notifier.domain.centers)."""

    def live_publishers(self) -> set[str]:
        """The publishers with a hub on this node."""

    def publisher_changed(self, name: str, removed: bool) -> None:
        """Close *name*'s hubs if it was *removed*; else (its secret
        changed) the subscriptions of its private centers."""


class Outboxes(Protocol):
    """The publishers' webhook outboxes on this node (notifier.webhooks)."""

    def changed(self, publisher: str) -> None: ...

    def removed(self, publisher: str) -> None: ...


@define(slots=True, eq=False)
class Publishers:
    """Publisher CRUD and secrets, webhooks CRUD, and the publishers this
    node holds (read again once ``PUBLISHER_TTL`` old)."""

    store: Store
    broker: Broker
    clock: IReactorTime
    #: Told when a publisher changes or goes (none for the offline CLI).
    hubs: PublisherHubs | None = None
    outboxes: Outboxes | None = None
    make_secret: Callable[[], str] = new_secret
    _publishers: dict[str, tuple[Publisher, float]] = field(factory=dict)
    _unknown: UnknownNames = field(factory=lambda: UnknownNames(PUBLISHER_TTL, MAX_UNKNOWN))
    #: Publishers added so far, as far as this node knows: a look-up begun
    #: before one must not remember its name as unknown.
    _added: int = 0

    async def add_publisher(self, name: str) -> Publisher:
        check_publisher_name(name)
        publisher = Publisher(name, self.make_secret(), self.clock.seconds())
        if not await self.store.add_publisher(publisher):
            raise Conflict(f"publisher {name!r} exists", code="publisher_exists")
        self.publisher_added(name)
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
        if self.outboxes is not None:
            self.outboxes.changed(publisher)
        await self.broker.announce({"type": "webhook_changed", "publisher": publisher})

    # what this node holds

    def forget_publisher(self, name: str, removed: bool = False) -> None:
        """Drop what this node holds of a publisher changed elsewhere (or
        here): its hubs if it was removed; else (its secret changed) the
        subscriptions of its private centers, whose tokens the new secret
        no longer admits."""
        self._publishers.pop(name, None)
        if self.outboxes is not None:
            if removed:
                self.outboxes.removed(name)
            else:
                self.outboxes.changed(name)
        if removed:
            self.broker.forget(name)
        if self.hubs is not None:
            self.hubs.publisher_changed(name, removed)

    async def publisher(self, name: str) -> Publisher | None:
        """The publisher called *name*, read again from the store once the
        copy held is ``PUBLISHER_TTL`` old. That there is none is held as
        long (notifier.domain.unknown_names): an unknown name costs what a known one does."""
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

    def publisher_added(self, name: str | None) -> None:
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

    async def notice_changes(self) -> bool:
        """Whether another process (the offline command) may have changed
        the store; if so, act on what it did to the publishers held here
        or with hubs here: removed, or given a new secret."""
        if not await self.store.changed():
            return False
        self.publisher_added(None)  # one added there is known from now
        live = self.hubs.live_publishers() if self.hubs is not None else set()
        for name in sorted(live | set(self._publishers)):
            cached = self._publishers.get(name)
            self._compare(name, cached, await self.store.get_publisher(name))
        return True

    @staticmethod
    def _no_publisher(name: str) -> NotFound:
        return NotFound(f"no publisher {name!r}", code="no_such_publisher")
