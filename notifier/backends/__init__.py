"""The backends: where state is kept and how messages reach every node.

``open_backend`` is the one place that chooses: an SQLite store with
delivery on this node, or Redis for both, shared by every node using it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from notifier.backends.interfaces import Broker, Store
from notifier.backends.local import LocalBroker
from notifier.backends.redis.broker import RedisBroker
from notifier.backends.redis.client import Redis, RedisAddress
from notifier.backends.redis.keys import Keys
from notifier.backends.redis.presence import RedisDirectory
from notifier.backends.redis.store import RedisStore
from notifier.backends.sqlite import SQLiteStore
from notifier.presence import Directory, LocalDirectory


def open_backend(url: str, reactor: IReactorTime) -> tuple[Store, Broker]:
    """The store and the broker that *url* (``[store] url``, already
    validated by the configuration) means."""
    if url.startswith("redis:"):
        address = RedisAddress.parse(url)
        redis, keys = Redis(address, reactor), Keys(address.db)
        return RedisStore(redis, keys), RedisBroker(redis, keys, reactor)
    return SQLiteStore(url.removeprefix("sqlite:"), reactor), LocalBroker(reactor)


def presence_directory(broker: Broker, reactor: IReactorTime, node: str) -> Directory:
    """Where presence is kept for the nodes that share *broker*: Redis's, or
    this node's own memory when it is the only one."""
    if isinstance(broker, RedisBroker):
        return RedisDirectory(broker.redis, broker.keys, reactor, node)
    return LocalDirectory()
