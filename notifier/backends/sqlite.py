"""The embedded default store: one SQLite file, reached through adbapi.

Every query runs on adbapi's single worker thread, never on the reactor. The
file is created readable by its owner only: it holds the publishers' secrets.
Another process (the offline command) may change the file while a daemon
runs; SQLite's ``data_version`` tells the daemon so (``changed``).

A publisher's Pusher app id is the next number of the ``app_ids`` counter
(``next_app_id``), which only goes up; app ids and keys are each kept
unique by an index. A file made before publishers had them is given the
columns when it is opened, and each publisher in it an app id and a key.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.enterprise import adbapi

from notifier.domain.model import Center, Publisher, Webhook
from notifier.domain.publishers import new_key

SCHEMA = """
-- app_id and key are NULL only in a row of a file made before they were
-- kept, until the file is opened (PUBLISHER_COLUMNS_ADDED).
CREATE TABLE IF NOT EXISTS publishers (
    name          TEXT PRIMARY KEY,
    secret        TEXT NOT NULL,
    created       REAL NOT NULL,
    app_id        TEXT,
    key           TEXT,
    client_events INTEGER
);
-- The last app id given (next_app_id): never lowered, so never given twice.
CREATE TABLE IF NOT EXISTS app_ids (
    id   INTEGER PRIMARY KEY CHECK (id = 0),
    last INTEGER NOT NULL
);
INSERT OR IGNORE INTO app_ids (id, last) VALUES (0, 0);
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
-- Durable history (notifier.backends.journal): a stream per center and epoch, and
-- the log of their messages, appended in the order they were committed.
-- The log has no index of its own: the journal keeps where each stream's
-- messages are in memory, read from the log when it starts. A stream whose
-- row is gone (its center deleted) leaves messages the journal removes.
CREATE TABLE IF NOT EXISTS streams (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    publisher TEXT NOT NULL,
    center    TEXT NOT NULL,
    epoch     TEXT NOT NULL,
    UNIQUE (publisher, center, epoch)
);
-- A message's event is NULL for the default, "message": named only when
-- it is another.
CREATE TABLE IF NOT EXISTS log (
    id     INTEGER PRIMARY KEY,
    stream INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    ts     REAL NOT NULL,
    data   TEXT NOT NULL,
    event  TEXT
);
CREATE TABLE IF NOT EXISTS idempotency (
    publisher TEXT NOT NULL,
    key       TEXT NOT NULL,
    at        REAL NOT NULL,
    ids       TEXT NOT NULL,
    PRIMARY KEY (publisher, key)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS center_removed AFTER DELETE ON centers BEGIN
    DELETE FROM streams WHERE publisher = old.publisher AND center = old.name;
END;
CREATE TRIGGER IF NOT EXISTS publisher_removed AFTER DELETE ON publishers BEGIN
    DELETE FROM streams WHERE publisher = old.name;
    DELETE FROM idempotency WHERE publisher = old.name;
END;
-- Counts the changes to publishers, centers and webhooks, whoever makes
-- them (the offline command too): what the daemon looks at to notice them.
CREATE TABLE IF NOT EXISTS changes (
    id    INTEGER PRIMARY KEY CHECK (id = 0),
    count INTEGER NOT NULL
);
INSERT OR IGNORE INTO changes (id, count) VALUES (0, 0);
"""

#: The tables whose every change counts in ``changes``.
WATCHED = ("publishers", "centers", "webhooks")
CHANGE_TRIGGERS = "".join(
    f"CREATE TRIGGER IF NOT EXISTS {table}_{event.lower()} AFTER {event} ON {table}"
    " BEGIN UPDATE changes SET count = count + 1; END;\n"
    for table in WATCHED for event in ("INSERT", "UPDATE", "DELETE"))

CENTER_COLUMNS = "publisher, name, private, history, ttl, created, epoch, presence"
#: Columns added since the first schema, with their definitions: a file
#: made before them gets them when it is opened.
ADDED_COLUMNS = {"epoch": "TEXT NOT NULL DEFAULT ''", "presence": "INTEGER NOT NULL DEFAULT 0"}
PUBLISHER_COLUMNS = "name, secret, created, app_id, key, client_events"
#: The same for the publishers.
PUBLISHER_COLUMNS_ADDED = {"app_id": "TEXT", "key": "TEXT", "client_events": "INTEGER"}
#: Made once the columns are there: what keeps app ids and keys unique,
#: and finds a publisher by either.
PUBLISHER_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS publishers_app_id ON publishers (app_id);
CREATE UNIQUE INDEX IF NOT EXISTS publishers_key ON publishers (key);
"""
#: The same for the log of durable history (the messages of a file made
#: before events were are of the default event: NULL).
ADDED_LOG_COLUMNS = {"event": "TEXT"}

MEMORY = ":memory:"

P = ParamSpec("P")
T = TypeVar("T")


def _prepare(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")


def _publisher(row: tuple[Any, ...]) -> Publisher:
    name, secret, created, app_id, key, client_events = row
    return Publisher(name, secret, created, app_id, key, None if client_events is None else bool(client_events))


def _next_app_id(cursor: sqlite3.Cursor) -> str:
    cursor.execute("UPDATE app_ids SET last = last + 1")
    cursor.execute("SELECT last FROM app_ids")
    return str(cursor.fetchone()[0])


def _center(row: tuple[Any, ...]) -> Center:
    publisher, name, private, history, ttl, created, epoch, presence = row
    return Center(publisher, name, bool(private), history, ttl, created, epoch, bool(presence))


def _versions(cursor: sqlite3.Cursor) -> tuple[int, int]:
    """Two numbers: one that changes whenever another connection commits a
    change (SQLite's ``data_version``), one whenever publishers, centers or
    webhooks change (not the history the daemon writes all the time)."""
    cursor.execute("PRAGMA data_version")
    version: int = cursor.fetchone()[0]
    cursor.execute("SELECT count FROM changes")
    count: int = cursor.fetchone()[0]
    return version, count


class StoreError(Exception):
    """The store's file cannot be used; the message names it."""


def check_file(path: str) -> None:
    """Refuse, before the daemon starts, an SQLite file that is not a
    database (a corrupt header or schema); a missing or empty file is made.
    Read only, and at start only: never while the reactor runs."""
    if path == MEMORY or not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    try:
        connection = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is not a usable SQLite database ({e}): restore it from a backup, "
                         "or move it away to start with an empty store") from None


class SQLiteStore:
    """The store in one SQLite file (or in memory).

    While open, it holds a shared ``flock`` on the file (not the locks
    SQLite itself takes: those are ``fcntl`` ranges, apart from it):
    ``notifier store restored`` takes it exclusively, and so refuses to run
    while a daemon, or another command, has the file open. *hold* is false
    for that command's own store."""

    def __init__(self, path: str, reactor: Any, hold: bool = True) -> None:
        self.path = path
        self._hold = hold and path != MEMORY
        self._held: int | None = None
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,  # one connection: ":memory:" is per connection, and writes serialise anyway
            cp_openfun=_prepare,
            cp_reactor=reactor,
        )
        self._versions: tuple[int, int] | None = None

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
        self._versions = await self._interact(_versions)

    async def changed(self) -> bool:
        # data_version is per connection, and this store has one: its own
        # changes leave it be; the count leaves history writes be.
        versions = await self._interact(_versions)
        before, self._versions = self._versions, versions
        return before is None or (versions[0] != before[0] and versions[1] != before[1])

    def _create(self, cursor: sqlite3.Cursor) -> None:
        if self._hold and self._held is None:
            held = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(held, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(held)
                raise StoreError(f"{self.path} is being restored (notifier store restored)") from None
            self._held = held
        if self.path != MEMORY:
            # The connection has the file open already; narrow it to its owner
            # before anything secret is written.
            os.chmod(self.path, 0o600)
        cursor.executescript(SCHEMA + CHANGE_TRIGGERS)
        for table, added in (("centers", ADDED_COLUMNS), ("publishers", PUBLISHER_COLUMNS_ADDED)):
            cursor.execute(f"PRAGMA table_info({table})")
            present = {column[1] for column in cursor.fetchall()}
            for column, definition in added.items():
                if column not in present:
                    cursor.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        cursor.executescript(PUBLISHER_INDEXES)
        cursor.execute("PRAGMA table_info(log)")
        present = {column[1] for column in cursor.fetchall()}
        for column, definition in ADDED_LOG_COLUMNS.items():
            if column not in present:
                cursor.execute(f"ALTER TABLE log ADD COLUMN {column} {definition}")
        if self.path != MEMORY:
            cursor.execute("PRAGMA journal_mode = WAL")
        # Last: its writes begin a transaction, which WAL mode is not set in.
        _give_app_ids(cursor)

    async def close(self) -> None:
        self._pool.close()
        if self._held is not None:
            os.close(self._held)  # a file descriptor: closing it does no I/O
            self._held = None

    async def new_epochs(self) -> int:
        """Every center begins a new epoch, and the history kept for the old
        ones is dropped (``notifier store restored``); how many centers.

        For a file put back from a backup: the ids given since the backup
        was made would otherwise be given again, to other messages, and
        browsers that saw them would skip those. A new epoch tells them
        their cursors are of a history that is gone."""
        return await self._interact(_new_epochs)

    async def add_publisher(self, publisher: Publisher) -> bool:
        # OR IGNORE: a name, app id or key taken is no error, but False.
        added = await self._changes(
            f"INSERT OR IGNORE INTO publishers ({PUBLISHER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (publisher.name, publisher.secret, publisher.created, publisher.app_id, publisher.key,
             None if publisher.client_events is None else int(publisher.client_events)))
        return added == 1

    async def next_app_id(self) -> str:
        return await self._interact(_next_app_id)

    async def get_publisher(self, name: str) -> Publisher | None:
        return await self._publisher_where("name", name)

    async def get_publisher_by_app_id(self, app_id: str) -> Publisher | None:
        return await self._publisher_where("app_id", app_id)

    async def get_publisher_by_key(self, key: str) -> Publisher | None:
        return await self._publisher_where("key", key)

    async def _publisher_where(self, column: str, value: str) -> Publisher | None:
        """The publisher whose *column* (``name``, ``app_id`` or ``key``: each unique, and indexed) is *value*."""
        rows = await self._query(f"SELECT {PUBLISHER_COLUMNS} FROM publishers WHERE {column} = ?", (value,))
        return _publisher(rows[0]) if rows else None

    async def list_publishers(self) -> list[tuple[Publisher, int]]:
        columns = ", ".join(f"p.{column}" for column in PUBLISHER_COLUMNS.split(", "))
        rows = await self._query(
            f"SELECT {columns}, COUNT(c.name) FROM publishers p"
            " LEFT JOIN centers c ON c.publisher = p.name GROUP BY p.name ORDER BY p.name"
        )
        return [(_publisher(row[:-1]), row[-1]) for row in rows]

    async def set_secret(self, name: str, secret: str) -> bool:
        return await self._changes("UPDATE publishers SET secret = ? WHERE name = ?", (secret, name)) == 1

    async def set_client_events(self, name: str, client_events: bool | None) -> bool:
        value = None if client_events is None else int(client_events)
        return await self._changes("UPDATE publishers SET client_events = ? WHERE name = ?", (value, name)) == 1

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

    async def page_centers(self, publisher: str, prefix: str = "", after: str | None = None,
                           limit: int = 100) -> tuple[list[Center], int]:
        return await self._interact(self._page_centers, publisher, prefix, after, limit)

    @staticmethod
    def _page_centers(cursor: sqlite3.Cursor, publisher: str, prefix: str, after: str | None,
                      limit: int) -> tuple[list[Center], int]:
        # Names are ASCII below DEL: those starting with the prefix are the
        # range [prefix, prefix + DEL), a range of the primary key's index.
        low, high = prefix, prefix + "\x7f"
        cursor.execute("SELECT COUNT(*) FROM centers WHERE publisher = ? AND name >= ? AND name < ?",
                       (publisher, low, high))
        total = cursor.fetchone()[0]
        if after is not None and after >= low:
            low_test, low = "name > ?", after
        else:
            low_test = "name >= ?"
        cursor.execute(f"SELECT {CENTER_COLUMNS} FROM centers WHERE publisher = ? AND {low_test} AND name < ?"
                       " ORDER BY name LIMIT ?", (publisher, low, high, limit))
        return [_center(row) for row in cursor.fetchall()], total

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
        # Notifier's format keeps its events as the list it always was;
        # another format keeps them in an object that names it.
        events: Any = list(webhook.events)
        if webhook.format != "notifier":
            events = {"format": webhook.format, "events": events}
        cursor.execute("INSERT OR REPLACE INTO webhooks (publisher, url, events) VALUES (?, ?, ?)",
                       (publisher, webhook.url, json.dumps(events)))
        return True

    async def get_webhook(self, publisher: str) -> Webhook | None:
        rows = await self._query("SELECT url, events FROM webhooks WHERE publisher = ?", (publisher,))
        if not rows:
            return None
        events = json.loads(rows[0][1])
        if isinstance(events, dict):
            return Webhook(rows[0][0], tuple(events["events"]), events["format"])
        return Webhook(rows[0][0], tuple(events))

    async def remove_webhook(self, publisher: str) -> bool:
        return await self._changes("DELETE FROM webhooks WHERE publisher = ?", (publisher,)) == 1


def _give_app_ids(cursor: sqlite3.Cursor) -> None:
    """Give each publisher stored before app ids and keys were kept an app
    id (oldest first) and a key."""
    cursor.execute("SELECT name, app_id IS NULL, key IS NULL FROM publishers"
                   " WHERE app_id IS NULL OR key IS NULL ORDER BY created, name")
    for name, no_app_id, no_key in cursor.fetchall():
        if no_app_id:
            cursor.execute("UPDATE publishers SET app_id = ? WHERE name = ?", (_next_app_id(cursor), name))
        while no_key:
            # A key another publisher has (never) is made again.
            cursor.execute("UPDATE OR IGNORE publishers SET key = ? WHERE name = ?", (new_key(), name))
            no_key = cursor.rowcount == 0


def _new_epochs(cursor: sqlite3.Cursor) -> int:
    centers = cursor.execute("SELECT publisher, name FROM centers").fetchall()
    # An epoch as the centers make one (centers.new_epoch).
    cursor.executemany("UPDATE centers SET epoch = ? WHERE publisher = ? AND name = ?",
                       [(secrets.token_hex(4), publisher, name) for publisher, name in centers])
    cursor.execute("DELETE FROM log")
    cursor.execute("DELETE FROM streams")
    return len(centers)


def _rowcount(cursor: sqlite3.Cursor, sql: str, args: tuple[Any, ...]) -> int:
    cursor.execute(sql, args)
    return cursor.rowcount
