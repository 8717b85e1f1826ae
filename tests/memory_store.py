"""A dict-backed Store whose calls complete at once: for in-memory HTTP tests.

It passes the same contract tests as the real stores (tests/backends/test_store.py).
"""

from __future__ import annotations

from attrs import evolve

from notifier.domain.model import Center, Publisher, Webhook


class MemoryStore:
    def __init__(self) -> None:
        self.publishers: dict[str, Publisher] = {}
        #: The names of the publishers by app id, and by key.
        self.app_ids: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.last_app_id = 0
        self.centers: dict[tuple[str, str], Center] = {}
        self.webhooks: dict[str, Webhook] = {}
        self.closed = False

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    async def changed(self) -> bool:
        return True  # it cannot tell who changed it: look again every time

    async def add_publisher(self, publisher: Publisher) -> bool:
        if publisher.name in self.publishers or publisher.app_id in self.app_ids or publisher.key in self.keys:
            return False
        self.publishers[publisher.name] = publisher
        self.app_ids[publisher.app_id] = self.keys[publisher.key] = publisher.name
        return True

    async def next_app_id(self) -> str:
        self.last_app_id += 1
        return str(self.last_app_id)

    async def get_publisher(self, name: str) -> Publisher | None:
        return self.publishers.get(name)

    async def get_publisher_by_app_id(self, app_id: str) -> Publisher | None:
        name = self.app_ids.get(app_id)
        return None if name is None else self.publishers[name]

    async def get_publisher_by_key(self, key: str) -> Publisher | None:
        name = self.keys.get(key)
        return None if name is None else self.publishers[name]

    async def list_publishers(self) -> list[tuple[Publisher, int]]:
        return [
            (p, sum(1 for owner, _ in self.centers if owner == p.name))
            for _, p in sorted(self.publishers.items())
        ]

    async def set_secret(self, name: str, secret: str) -> bool:
        publisher = self.publishers.get(name)
        if publisher is None:
            return False
        self.publishers[name] = evolve(publisher, secret=secret)
        return True

    async def set_client_events(self, name: str, client_events: bool | None) -> bool:
        publisher = self.publishers.get(name)
        if publisher is None:
            return False
        self.publishers[name] = evolve(publisher, client_events=client_events)
        return True

    async def remove_publisher(self, name: str) -> bool:
        publisher = self.publishers.pop(name, None)
        if publisher is None:
            return False
        del self.app_ids[publisher.app_id], self.keys[publisher.key]
        for key in [key for key in self.centers if key[0] == name]:
            del self.centers[key]
        self.webhooks.pop(name, None)
        return True

    async def add_center(self, center: Center, limit: int = 0) -> tuple[Center, bool] | None:
        key = (center.publisher, center.name)
        if key in self.centers:
            return self.centers[key], False
        if limit and sum(owner == center.publisher for owner, _ in self.centers) >= limit:
            return None
        self.centers[key] = center
        return center, True

    async def get_center(self, publisher: str, name: str) -> Center | None:
        return self.centers.get((publisher, name))

    async def list_centers(self, publisher: str) -> list[Center]:
        return [c for (owner, _), c in sorted(self.centers.items()) if owner == publisher]

    async def page_centers(self, publisher: str, prefix: str = "", after: str | None = None,
                           limit: int = 100) -> tuple[list[Center], int]:
        named = [c for (owner, name), c in sorted(self.centers.items())
                 if owner == publisher and name.startswith(prefix)]
        later = [c for c in named if after is None or c.name > after]
        return later[:limit], len(named)

    async def all_centers(self) -> list[Center]:
        return [c for _, c in sorted(self.centers.items())]

    async def remove_center(self, publisher: str, name: str) -> bool:
        return self.centers.pop((publisher, name), None) is not None

    async def set_webhook(self, publisher: str, webhook: Webhook) -> bool:
        if publisher not in self.publishers:
            return False
        self.webhooks[publisher] = webhook
        return True

    async def get_webhook(self, publisher: str) -> Webhook | None:
        return self.webhooks.get(publisher)

    async def remove_webhook(self, publisher: str) -> bool:
        return self.webhooks.pop(publisher, None) is not None
