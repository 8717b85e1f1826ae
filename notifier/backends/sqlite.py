"""The embedded default store: one SQLite file, reached through adbapi.

Every query runs on adbapi's single worker thread, never on the reactor. The
file is created readable by its owner only: it holds the publishers' secrets.
Another process (the offline command) may change the file while a daemon
runs; SQLite's ``data_version`` tells the daemon so (``changed``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.enterprise import adbapi

from notifier.model import Center, Publisher, Webhook

SCHEMA = """
CREATE TABLE IF NOT EXISTS publishers (
    name    TEXT PRIMARY KEY,
    secret  TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS centers (
    publisher TEXT NOT NULL REFERENCES publishers(name) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    private   INTEGER NOT NULL,
    history   INTEGER,
    ttl       INTEGER,
    created   REAL NOT NULL,
    epoch     TEXT NOT NULL DEFAULT '',
    presence  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (publisher, name)
);
CREATE TABLE IF NOT EXISTS webhooks (
    publisher TEXT PRIMARY KEY REFERENCES publishers(name) ON DELETE CASCADE,
    url       TEXT NOT NULL,
    events    TEXT NOT NULL
);
"""

CENTER_COLUMNS = "publisher, name, private, history, ttl, created, epoch, presence"
#: Columns added since the first schema, with their definitions: a file
#: made before them gets them when it is opened.
ADDED_COLUMNS = {"epoch": "TEXT NOT NULL DEFAULT ''", "presence": "INTEGER NOT NULL DEFAULT 0"}

MEMORY = ":memory:"

P = ParamSpec("P")
T = TypeVar("T")


def _prepare(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")


def _center(row: tuple[Any, ...]) -> Center:
    publisher, name, private, history, ttl, created, epoch, presence = row
    return Center(publisher, name, bool(private), history, ttl, created, epoch, bool(presence))


def _data_version(cursor: sqlite3.Cursor) -> int:
    """A number that changes whenever another connection commits a change."""
    cursor.execute("PRAGMA data_version")
    version: int = cursor.fetchone()[0]
    return version


class SQLiteStore:
    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,  # one connection: ":memory:" is per connection, and writes serialise anyway
            cp_openfun=_prepare,
            cp_reactor=reactor,
        )
        self._version: int | None = None

    async def _interact(self, interaction: Callable[Concatenate[sqlite3.Cursor, P], T],
                        *args: P.args, **kwargs: P.kwargs) -> T:
        """*interaction* run in a transaction on the pool's thread."""
        return await self._pool.runInteraction(interaction, *args, **kwargs)  # type: ignore[no-any-return]

    async def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._pool.runQuery(sql, args)  # type: ignore[no-any-return]

    async def _changes(self, sql: str, args: tuple[Any, ...]) -> int:
        """How many rows *sql* changed."""
        return await self._interact(_rowcount, sql, args)

    async def open(self) -> None:
        await self._interact(self._create)
        self._version = await self._interact(_data_version)

    async def changed(self) -> bool:
        # Per connection, and this store has one: its own changes leave it be.
        version = await self._interact(_data_version)
        changed, self._version = version != self._version, version
        return changed

    def _create(self, cursor: sqlite3.Cursor) -> None:
        if self.path != MEMORY:
            # The connection has the file open already; narrow it to its owner
            # before anything secret is written.
            os.chmod(self.path, 0o600)
        cursor.executescript(SCHEMA)
        cursor.execute("PRAGMA table_info(centers)")
        present = {column[1] for column in cursor.fetchall()}
        for column, definition in ADDED_COLUMNS.items():
            if column not in present:
                cursor.execute(f"ALTER TABLE centers ADD COLUMN {column} {definition}")
        if self.path != MEMORY:
            cursor.execute("PRAGMA journal_mode = WAL")

    async def close(self) -> None:
        self._pool.close()

    async def add_publisher(self, publisher: Publisher) -> bool:
        added = await self._changes("INSERT OR IGNORE INTO publishers (name, secret, created) VALUES (?, ?, ?)",
                                    (publisher.name, publisher.secret, publisher.created))
        return added == 1

    async def get_publisher(self, name: str) -> Publisher | None:
        rows = await self._query(
            "SELECT name, secret, created FROM publishers WHERE name = ?", (name,)
        )
        return Publisher(*rows[0]) if rows else None

    async def list_publishers(self) -> list[tuple[Publisher, int]]:
        rows = await self._query(
            "SELECT p.name, p.secret, p.created, COUNT(c.name) FROM publishers p"
            " LEFT JOIN centers c ON c.publisher = p.name GROUP BY p.name ORDER BY p.name"
        )
        return [(Publisher(name, secret, created), count) for name, secret, created, count in rows]

    async def set_secret(self, name: str, secret: str) -> bool:
        return await self._changes("UPDATE publishers SET secret = ? WHERE name = ?", (secret, name)) == 1

    async def remove_publisher(self, name: str) -> bool:
        return await self._changes("DELETE FROM publishers WHERE name = ?", (name,)) == 1

    async def add_center(self, center: Center, limit: int = 0) -> tuple[Center, bool] | None:
        return await self._interact(self._add_center, center, limit)

    def _add_center(self, cursor: sqlite3.Cursor, center: Center, limit: int) -> tuple[Center, bool] | None:
        if limit:
            cursor.execute(
                "SELECT COUNT(*), SUM(name = ?) FROM centers WHERE publisher = ?", (center.name, center.publisher))
            count, existing = cursor.fetchone()
            if not existing and count >= limit:
                return None
        cursor.execute(
            f"INSERT OR IGNORE INTO centers ({CENTER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (center.publisher, center.name, int(center.private), center.history, center.ttl, center.created,
             center.epoch, int(center.presence)),
        )
        if cursor.rowcount == 1:
            return center, True
        cursor.execute(
            f"SELECT {CENTER_COLUMNS} FROM centers"
            " WHERE publisher = ? AND name = ?",
            (center.publisher, center.name),
        )
        return _center(cursor.fetchone()), False

    async def get_center(self, publisher: str, name: str) -> Center | None:
        rows = await self._query(
            f"SELECT {CENTER_COLUMNS} FROM centers"
            " WHERE publisher = ? AND name = ?",
            (publisher, name),
        )
        return _center(rows[0]) if rows else None

    async def list_centers(self, publisher: str) -> list[Center]:
        rows = await self._query(
            f"SELECT {CENTER_COLUMNS} FROM centers"
            " WHERE publisher = ? ORDER BY name",
            (publisher,),
        )
        return [_center(row) for row in rows]

    async def all_centers(self) -> list[Center]:
        rows = await self._query(
            f"SELECT {CENTER_COLUMNS} FROM centers ORDER BY publisher, name"
        )
        return [_center(row) for row in rows]

    async def remove_center(self, publisher: str, name: str) -> bool:
        return await self._changes("DELETE FROM centers WHERE publisher = ? AND name = ?", (publisher, name)) == 1

    async def set_webhook(self, publisher: str, webhook: Webhook) -> bool:
        return await self._interact(self._set_webhook, publisher, webhook)

    @staticmethod
    def _set_webhook(cursor: sqlite3.Cursor, publisher: str, webhook: Webhook) -> bool:
        cursor.execute("SELECT 1 FROM publishers WHERE name = ?", (publisher,))
        if cursor.fetchone() is None:
            return False
        cursor.execute("INSERT OR REPLACE INTO webhooks (publisher, url, events) VALUES (?, ?, ?)",
                       (publisher, webhook.url, json.dumps(list(webhook.events))))
        return True

    async def get_webhook(self, publisher: str) -> Webhook | None:
        rows = await self._query("SELECT url, events FROM webhooks WHERE publisher = ?", (publisher,))
        return Webhook(rows[0][0], tuple(json.loads(rows[0][1]))) if rows else None

    async def remove_webhook(self, publisher: str) -> bool:
        return await self._changes("DELETE FROM webhooks WHERE publisher = ?", (publisher,)) == 1


def _rowcount(cursor: sqlite3.Cursor, sql: str, args: tuple[Any, ...]) -> int:
    cursor.execute(sql, args)
    return cursor.rowcount
