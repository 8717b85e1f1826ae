"""The store and the broker ``[store] url`` names (notifier.backends), and
the presence directory and the store of the metrics history that go with
the broker."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from notifier.backends.durable import DurableBroker
from notifier.backends.interfaces import Broker, Store
from notifier.backends.local import LocalBroker
from notifier.backends.redis.addresses import parse_address
from notifier.backends.redis.broker import RedisBroker
from notifier.backends.redis.client import Redis
from notifier.backends.redis.history import RedisHistory
from notifier.backends.redis.keys import Keys
from notifier.backends.redis.presence import RedisDirectory
from notifier.backends.redis.store import RedisStore
from notifier.backends.sqlite import MEMORY, SQLiteStore
from notifier.config import StoreConfig
from notifier.domain.history import ClusterHistory
from notifier.domain.presence import Directory, LocalDirectory


def open_backend(config: StoreConfig, reactor: IReactorTime) -> tuple[Store, Broker]:
    """The store and the broker that ``[store]`` (already validated by the
    configuration) means."""
    url = config.url
    if url.startswith(("redis:", "redis+sentinel:")):
        address = parse_address(url)
        redis, keys = Redis(address, reactor), Keys(address.db)
        broker = RedisBroker(redis, keys, reactor, config.replicas_ack, config.replicas_timeout_ms)
        return RedisStore(redis, keys), broker
    path = url.removeprefix("sqlite:")
    if path == MEMORY or not config.durable:
        return SQLiteStore(path, reactor), LocalBroker(reactor)
    return SQLiteStore(path, reactor), DurableBroker(path, config.synchronous, reactor)


def presence_directory(broker: Broker, reactor: IReactorTime, node: str) -> Directory:
    """Where presence is kept for the nodes that share *broker*: Redis's, or
    this node's own memory when it is the only one."""
    if isinstance(broker, RedisBroker):
        return RedisDirectory(broker.redis, broker.keys, reactor, node)
    return LocalDirectory()


def history_store(broker: Broker) -> ClusterHistory | None:
    """Where the nodes sharing *broker* keep their metrics history: Redis;
    none when the node is the only one (its own memory answers)."""
    if isinstance(broker, RedisBroker):
        return RedisHistory(broker.redis, broker.keys)
    return None
