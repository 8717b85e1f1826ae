"""What the node needs of a backend, and what a broker tells it back.

A ``Store`` keeps publishers and centers; a ``Broker`` numbers published
messages and carries them (and changes) to every node. A broker reports
what arrives through a ``BrokerHandler`` (notifier.domain.publishing.BrokerEvents);
it never reaches into the centers or their hubs.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from attrs import frozen

from notifier.domain.model import MESSAGE_EVENT, Center, Publisher, Webhook

#: One retained message of a stream: ``(seq, ts, data)``, or ``(seq, ts,
#: data, event)`` for a message of an event of its own: a message of the
#: default event (``"message"``) is kept as it was before events were, at
#: no cost. What a message was to skip (``exclude``) is not kept: it names
#: a connection, and a subscriber given retained history is a connection
#: made since.
Retained = tuple[int, float, str] | tuple[int, float, str, str]


@frozen
class Stream:
    """Where a center's stream stands in a broker that keeps it: its epoch,
    the seq of its latest message, and what it retains, oldest first."""

    epoch: str
    seq: int
    retained: tuple[Retained, ...] = ()


class Publication(NamedTuple):
    """A message for a center live on this node, with what a broker needs
    of that center's hub: its position (epoch and latest seq), how many
    messages it retains, and after how many idle seconds it expires (0:
    never); then its event, and the connection it skips (``Message``). A
    tuple: one is made for every message published."""

    publisher: str
    center: str
    data: str
    epoch: str
    seq: int
    history: int
    ttl: int
    event: str = MESSAGE_EVENT
    exclude: str | None = None

    @property
    def plain(self) -> bool:
        """Whether it is of the default event and skips no connection: what
        a broker carries of it is then what it carried before events were."""
        return self.event == MESSAGE_EVENT and self.exclude is None

    @property
    def path(self) -> str:
        return f"{self.publisher}/{self.center}"


class Arrival(NamedTuple):
    """A message published to a center, numbered: what a node applies to
    its hub of that center, its event and the connection it skips
    included (``Message``). A tuple: one is made for every message."""

    publisher: str
    center: str
    epoch: str
    seq: int
    ts: float
    data: str
    event: str = MESSAGE_EVENT
    exclude: str | None = None

    @property
    def id(self) -> str:
        return f"{self.epoch}-{self.seq}"


@frozen
class Published:
    """A publish's outcome: the ids, whether it happened now (``False``: a
    retry, answered with the first publish's ids), and the messages this
    node applies to its hubs at once. A broker fanning out through a
    channel answers none: they arrive there, as on every other node; so
    does the durable one, which hands them to its handler itself once
    they are committed."""

    ids: tuple[str, ...]
    fresh: bool
    arrivals: tuple[Arrival, ...] = ()


@frozen
class LiveCenter:
    """A center with a hub on this node, as expiry sees it."""

    publisher: str
    center: str
    ttl: int
    #: Whether it has subscribers on this node.
    subscribed: bool
    #: Whether this node saw neither a publish nor a subscriber for ``ttl`` seconds.
    idle: bool

    @property
    def path(self) -> str:
        return f"{self.publisher}/{self.center}"


class Store(Protocol):
    async def open(self) -> None:
        """Make the store ready (create the schema)."""

    async def close(self) -> None:
        """Release the store; nothing is lost that was acknowledged."""

    async def changed(self) -> bool:
        """Whether another process may have changed the store since the
        last call (a store whose changes are all announced by its nodes'
        broker answers ``False``)."""

    async def add_publisher(self, publisher: Publisher) -> bool:
        """Add *publisher*; ``False`` (and nothing changed) if its name, its
        app id or its key is another publisher's."""

    async def next_app_id(self) -> str:
        """An app id for a publisher about to be added: the next number of
        a counter kept in the store, which only goes up, so that no two
        publishers are ever given the same one, even one removed since and
        one made after."""

    async def get_publisher(self, name: str) -> Publisher | None: ...

    async def get_publisher_by_app_id(self, app_id: str) -> Publisher | None:
        """The publisher whose app id is *app_id* (an index, not a scan)."""

    async def get_publisher_by_key(self, key: str) -> Publisher | None:
        """The publisher whose key is *key* (an index, not a scan)."""

    async def list_publishers(self) -> list[tuple[Publisher, int]]:
        """Every publisher by name, with its number of centers."""

    async def set_secret(self, name: str, secret: str) -> bool:
        """Replace the secret (the app id and key stay); ``False`` if there is no such publisher."""

    async def set_client_events(self, name: str, client_events: bool | None) -> bool:
        """Set ``Publisher.client_events``; ``False`` if there is no such publisher."""

    async def remove_publisher(self, name: str) -> bool:
        """Remove the publisher and its centers; ``False`` if unknown. Its
        app id and key no longer find it; its app id is never given again."""

    async def add_center(self, center: Center, limit: int = 0) -> tuple[Center, bool] | None:
        """Add *center* unless it exists; the stored center and whether it is
        new. ``None`` (and nothing added) when it is new and its publisher
        has *limit* centers already (0: no bound)."""

    async def get_center(self, publisher: str, name: str) -> Center | None: ...

    async def list_centers(self, publisher: str) -> list[Center]: ...

    async def page_centers(self, publisher: str, prefix: str = "", after: str | None = None,
                           limit: int = 100) -> tuple[list[Center], int]:
        """At most *limit* of the publisher's centers whose names start
        with *prefix*, by name, after the name *after* (``None``: from the
        first); and how many centers start with *prefix* in all. An index,
        not a scan: a page of a publisher's 100,000 centers costs what a
        page of ten does (docs/protocol.rst: The operator API)."""

    async def all_centers(self) -> list[Center]:
        """Every center of every publisher."""

    async def remove_center(self, publisher: str, name: str) -> bool: ...

    async def set_webhook(self, publisher: str, webhook: Webhook) -> bool:
        """Set (or replace) the publisher's webhook; ``False`` if there is no such publisher."""

    async def get_webhook(self, publisher: str) -> Webhook | None: ...

    async def remove_webhook(self, publisher: str) -> bool:
        """``False`` if it had none. Removing a publisher removes its webhook."""


class BrokerHandler(Protocol):
    """What a broker reports to the node it serves."""

    def message_arrived(self, arrival: Arrival) -> None:
        """A message published to a center, on any node, this one included."""

    def control(self, event: dict[str, str]) -> None:
        """A change a node made (``Broker.announce``)."""

    def reconnected(self) -> None:
        """The broker's feed was cut and is back: what was published
        meanwhile never arrived, and every live hub catches up
        (``Broker.stream``)."""


class Broker(Protocol):
    async def start(self, handler: BrokerHandler) -> None:
        """Begin receiving: what arrives goes to *handler*."""

    async def stop(self) -> None: ...

    async def load(self, center: Center, ttl: int) -> Stream | None:
        """A hub of *center* (idle for *ttl* seconds at most, 0: no bound)
        starts on this node: where its stream stands (``stream``)."""

    async def stream(self, center: Center) -> Stream | None:
        """Where the stream of *center* stands; ``None`` when the broker
        keeps none (the hub's own is the only one). ``NotFound`` when the
        center is gone."""

    async def publish(self, publisher: str, publications: list[Publication], key: str | None) -> Published:
        """Number each message, retain it and fan it out, all or none;
        once per ``(publisher, key)`` when *key* is given."""

    async def announce(self, event: dict[str, str]) -> None:
        """Tell every node of a change made here: ``{"type":
        "center_deleted", "publisher", "center"}``, ``{"type":
        "publisher_added", "publisher"}``, ``{"type":
        "publisher_changed", "publisher"}`` (its secret; with ``"change":
        "settings"``, only its settings, ``client_events``) or ``{"type":
        "publisher_removed", "publisher"}``."""

    def forget(self, publisher: str) -> None:
        """Drop what is held in memory for *publisher*, removed (its
        ``Idempotency-Key``\\ s)."""

    async def due(self, now: float, live: list[LiveCenter]) -> list[tuple[str, str]]:
        """``(publisher, center)`` of centers idle past their ttl, given the
        centers live on this node."""

    async def first_use(self, publisher: str, signature: str, timestamp: int) -> bool:
        """Whether a verified request signature is used for the first time
        on any node (remembering it until *timestamp* leaves the window)."""
