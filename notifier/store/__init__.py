"""Durable state: publishers and their centers.

``Store`` is the interface every backend implements; ``open_store`` picks one
from ``[store] url``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from notifier.model import Center, Publisher

if TYPE_CHECKING:
    from notifier.broker import Broker


class Store(Protocol):
    async def open(self) -> None:
        """Make the store ready (create the schema)."""

    async def close(self) -> None:
        """Release the store; nothing is lost that was acknowledged."""

    async def add_publisher(self, publisher: Publisher) -> bool:
        """Add *publisher*; ``False`` (and nothing changed) if the name exists."""

    async def get_publisher(self, name: str) -> Publisher | None: ...

    async def list_publishers(self) -> list[tuple[Publisher, int]]:
        """Every publisher by name, with its number of centers."""

    async def set_secret(self, name: str, secret: str) -> bool:
        """Replace the secret; ``False`` if there is no such publisher."""

    async def remove_publisher(self, name: str) -> bool:
        """Remove the publisher and its centers; ``False`` if unknown."""

    async def add_center(self, center: Center, limit: int = 0) -> tuple[Center, bool] | None:
        """Add *center* unless it exists; the stored center and whether it is
        new. ``None`` (and nothing added) when it is new and its publisher
        has *limit* centers already (0: no bound)."""

    async def get_center(self, publisher: str, name: str) -> Center | None: ...

    async def list_centers(self, publisher: str) -> list[Center]: ...

    async def all_centers(self) -> list[Center]:
        """Every center of every publisher."""

    async def remove_center(self, publisher: str, name: str) -> bool: ...


def open_store(url: str, reactor: object) -> Store:
    """The store for *url* (already validated by the configuration)."""
    return open_state(url, reactor)[0]


def open_state(url: str, reactor: object) -> tuple[Store, Broker]:
    """The store and the broker that *url* means: SQLite with delivery on
    this node, or Redis with delivery through it to every node."""
    if url.startswith("redis:"):
        from notifier.broker.redis import RedisBroker
        from notifier.redis import Redis, RedisAddress
        from notifier.store.redis import RedisStore

        store = RedisStore(Redis(RedisAddress.parse(url), reactor))
        return store, RedisBroker(store.redis, store)
    from notifier.broker import LocalBroker
    from notifier.store.sqlite import SQLiteStore

    return SQLiteStore(url.removeprefix("sqlite:"), reactor), LocalBroker()
