"""The publishers: who they are, their secrets and webhooks, as the store
keeps them and as this node holds them a moment.

A publisher read from the store is held ``PUBLISHER_TTL`` seconds, so that
the offline CLI's changes reach a running daemon; a name found to be no
publisher's is held as long (notifier.domain.unknown_names). So is one
found by its Pusher app id or key (``by_app_id``, ``by_key``: asked at every
Pusher connection and HTTP API request), and an app id or key found to be
no publisher's. A change made here is announced through the broker; one
made here or elsewhere closes what this node holds of the publisher
(``forget_publisher``): its hubs, its webhook's outbox.

A publisher's app id is numbered by the store (``Store.next_app_id``: a
counter that only goes up, so that an id is never another publisher's,
not even one removed since), its key drawn at random (``new_key``); the
store refuses either if another publisher has it (a unique index).
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Awaitable, Callable
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
#: Names found to be no publisher's held at most (notifier.domain.unknown_names);
#: as many app ids, and as many keys.
MAX_UNKNOWN = 10_000
#: What a Pusher app id or key may be, looked up (``by_app_id``, ``by_key``):
#: anything else is no publisher's, and the store is not asked.
APP_ID = re.compile(r"[0-9]{1,20}\Z")
APP_KEY = re.compile(r"[A-Za-z0-9]{1,64}\Z")
#: What a key is made of (``new_key``).
KEY_ALPHABET = string.ascii_lowercase + string.digits
KEY_LENGTH = 20
#: Times a publisher is made again when the store finds its app id or key
#: another's (never, but for a store numbering from an old counter).
ADD_ATTEMPTS = 5


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_key() -> str:
    """A publisher's Pusher key: public, so random only to be unique (103 bits)."""
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


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


class AppChanges(Protocol):
    """What holds a publisher's connections as an app (notifier.pusher.face):
    told of every change, its settings included."""

    def publisher_changed(self, name: str, removed: bool) -> None:
        """*name* was *removed*, or changed (its secret, its settings)."""


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
    #: Told of every change, settings included (the Pusher face's open connections).
    apps: AppChanges | None = None
    make_secret: Callable[[], str] = new_secret
    make_key: Callable[[], str] = new_key
    _publishers: dict[str, tuple[Publisher, float]] = field(factory=dict)
    _unknown: UnknownNames = field(factory=lambda: UnknownNames(PUBLISHER_TTL, MAX_UNKNOWN))
    #: Publishers by Pusher app id, and by key, as read (``by_app_id``, ``by_key``).
    _by_app_id: dict[str, tuple[Publisher, float]] = field(factory=dict)
    _by_key: dict[str, tuple[Publisher, float]] = field(factory=dict)
    _unknown_app_ids: UnknownNames = field(factory=lambda: UnknownNames(PUBLISHER_TTL, MAX_UNKNOWN))
    _unknown_keys: UnknownNames = field(factory=lambda: UnknownNames(PUBLISHER_TTL, MAX_UNKNOWN))
    #: Publishers added so far, as far as this node knows: a look-up begun
    #: before one must not remember its name as unknown.
    _added: int = 0
    #: Publishers forgotten so far: a look-up by app id or key begun before
    #: one must not hold what it read.
    _forgotten: int = 0

    async def add_publisher(self, name: str) -> Publisher:
        """Add publisher *name*, with a new secret, app id and key.

        Made again, with another app id and key, if the store refuses them
        while the name is free (another publisher has them). That never
        happens with the store's counter and a random key, but it is the
        store, not luck, that keeps them unique."""
        check_publisher_name(name)
        for _ in range(ADD_ATTEMPTS):
            publisher = Publisher(name, self.make_secret(), self.clock.seconds(), await self.store.next_app_id(),
                                  self.make_key())
            if await self.store.add_publisher(publisher):
                break
            if await self.store.get_publisher(name) is not None:
                raise Conflict(f"publisher {name!r} exists", code="publisher_exists")
        else:
            raise RuntimeError(f"no free app id and key for publisher {name!r} in {ADD_ATTEMPTS} attempts")
        self.publisher_added(name)
        await self.broker.announce({"type": "publisher_added", "publisher": name})
        return publisher

    async def described(self, name: str) -> tuple[Publisher, int]:
        """Publisher *name* as the store has it now, with its number of
        centers (what an operator is shown); ``NotFound`` if there is none."""
        publisher = await self.store.get_publisher(name)
        if publisher is None:
            raise self._no_publisher(name)
        _, count = await self.store.page_centers(name, "", None, 0)
        return publisher, count

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

    async def set_client_events(self, name: str, client_events: bool | None) -> Publisher:
        """Whether Pusher client events are relayed for *name* (``None``: as
        the server's ``[pusher] client_events`` says). Every node drops the
        copy it holds; nothing else of the publisher changes, so nothing of
        it is closed."""
        if not await self.store.set_client_events(name, client_events):
            raise self._no_publisher(name)
        self.forget_publisher(name, secret=False)
        await self.broker.announce({"type": "publisher_changed", "publisher": name, "change": "settings"})
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

    def forget_publisher(self, name: str, removed: bool = False, secret: bool = True) -> None:
        """Drop what this node holds of a publisher changed elsewhere (or
        here): its hubs if it was removed; else (its secret changed) the
        subscriptions of its private centers, whose tokens the new secret
        no longer admits. With *secret* false (neither its secret nor its
        existence changed, only its settings), only the copies held here."""
        self._publishers.pop(name, None)
        self._forgotten += 1
        for held in (self._by_app_id, self._by_key):
            # As many entries as publishers found on this node, and a rare event.
            for value in [value for value, (publisher, _) in held.items() if publisher.name == name]:
                del held[value]
        if self.apps is not None:
            self.apps.publisher_changed(name, removed)
        if not (removed or secret):
            return
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

    async def by_app_id(self, app_id: str) -> Publisher | None:
        """The publisher whose Pusher app id is *app_id*, held as one by
        name is (``publisher``); ``None`` for one that is not 1 to 20
        digits, without asking the store."""
        return await self._pusher_app(app_id, APP_ID, self._by_app_id, self._unknown_app_ids,
                                      self.store.get_publisher_by_app_id)

    async def by_key(self, key: str) -> Publisher | None:
        """The publisher whose Pusher key is *key*, held as one by name is
        (``publisher``); ``None`` for one that is not 1 to 64 of
        ``[A-Za-z0-9]``, without asking the store."""
        return await self._pusher_app(key, APP_KEY, self._by_key, self._unknown_keys,
                                      self.store.get_publisher_by_key)

    async def _pusher_app(self, value: str, form: re.Pattern[str], held: dict[str, tuple[Publisher, float]],
                          unknown: UnknownNames,
                          read: Callable[[str], Awaitable[Publisher | None]]) -> Publisher | None:
        now = self.clock.seconds()
        cached = held.get(value)
        if cached is not None and now - cached[1] < PUBLISHER_TTL:
            return cached[0]
        if not form.match(value):
            return None
        if cached is None and unknown.holds(value, now):
            return None
        added, forgotten = self._added, self._forgotten
        publisher = await read(value)
        if publisher is None:
            held.pop(value, None)
            if added == self._added:
                unknown.add(value, now)
        elif forgotten == self._forgotten:
            held[value] = (publisher, now)
            unknown.discard(value)
        return publisher

    def publisher_added(self, name: str | None) -> None:
        """Forget that *name* (``None``: any name) was no publisher's, and
        that any app id or key was (the announcement names none)."""
        self._added += 1
        if name is None:
            self._unknown.clear()
        else:
            self._unknown.discard(name)
        self._unknown_app_ids.clear()
        self._unknown_keys.clear()

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
        # Read again at their next look-up: held by app id or key only, a
        # publisher is not compared here.
        self._by_app_id.clear()
        self._by_key.clear()
        self._forgotten += 1
        live = self.hubs.live_publishers() if self.hubs is not None else set()
        for name in sorted(live | set(self._publishers)):
            cached = self._publishers.get(name)
            self._compare(name, cached, await self.store.get_publisher(name))
        return True

    @staticmethod
    def _no_publisher(name: str) -> NotFound:
        return NotFound(f"no publisher {name!r}", code="no_such_publisher")
