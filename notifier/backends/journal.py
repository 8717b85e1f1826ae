"""The journal: the process that writes the durable history of a
``sqlite:PATH`` store (docs/operating.rst: Durable history).

The daemon starts it (``python -m notifier.backends.journal PATH SYNCHRONOUS``) and
talks to it over its standard input and output, in frames: a 4-byte
big-endian length, then a ``marshal``-ed tuple. Requests are answered in
the order they came. Whenever it is free it takes every request waiting,
and writes the publishes among them in one transaction (group commit), so
that the cost of a commit is shared by the publishes that arrived together;
each is answered once that transaction is committed.

A process of its own, so that SQLite's work never holds the daemon's
reactor (nor its interpreter lock). Only the standard library: it starts in
a few tens of milliseconds. It ignores SIGINT and SIGTERM (a service
manager sends them to the whole group): it ends when the daemon tells it
to, or when its input ends, the daemon gone, once what it read is done.

Requests and their answers:

``("write", rows, key)``
    *rows*: ``(publisher, center, epoch, seq, ts, data, keep)`` of each
    message, *keep* the number of messages its center retains, and
    ``event`` after it, ``(publisher, center, epoch, seq, ts, data, keep,
    event)``, for a message of an event other than the default
    (``"message"``): a message of the default event costs what it did
    before events were, and its ``event`` column is NULL. *key*:
    ``(publisher, key, at, ids_json)`` of an ``Idempotency-Key``, or
    ``None``. Answered ``("ok",)``, or ``("failed", episode, reason)``: once
    a write has failed, every write after it fails with the same episode
    (a string naming the failure) until a ``("rewind",)``: their numbers
    were given after the failed ones.
``("load", publisher, center, epoch, history)``
    ``("ok", None)`` or ``("ok", (epoch, seq, retained))``: see ``load``;
    each of *retained* is ``(seq, ts, data)``, or ``(seq, ts, data,
    event)`` for a message of an event of its own
    (``notifier.backends.interfaces.Retained``).
``("keys", oldest)``
    ``("ok", [(publisher, key, at, ids_json), ...])``, oldest first.
``("forget", publisher, center_or_None)``
    ``("ok", None)``: after a deletion, the messages a write queued before
    it put back under a stream that is gone.
``("rewind",)``, ``("stop",)``
    Not answered.

A request that cannot be read, or a read that fails, is answered
``("error", message)``.
"""

from __future__ import annotations

import marshal
import os
import secrets
import signal
import sqlite3
import struct
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any

#: Rows in one INSERT statement at most (``COLUMNS`` parameters each).
ROWS_PER_STATEMENT = 200
#: The columns of the log each message fills (``Journal.insert``).
COLUMNS = 6
#: Messages past their history are removed from the log this many at a time.
DELETE_EVERY = 256
#: Seconds an ``Idempotency-Key`` is kept (as ``notifier.domain.idempotency.KEY_TTL``).
KEY_TTL = 600.0
#: Seconds between two purges of the keys older than that.
PURGE_EVERY = 60.0

HEADER = struct.Struct(">I")


def frame(value: Any) -> bytes:
    payload = marshal.dumps(value)
    return HEADER.pack(len(payload)) + payload


def unframe(buffer: bytearray) -> list[Any]:
    """The whole frames at the start of *buffer*, removed from it."""
    values = []
    start = 0
    end = len(buffer)
    while end - start >= 4:
        (size,) = HEADER.unpack_from(buffer, start)
        if end - start - 4 < size:
            break
        values.append(marshal.loads(bytes(buffer[start + 4:start + 4 + size])))
        start += 4 + size
    del buffer[:start]
    return values


def slack(keep: int) -> int:
    """How many messages past *keep* a stream may hold on disk before its
    oldest are removed: removing then costs one statement per ``slack``
    messages of a stream, not one per message."""
    return max(8, keep // 8)


class Conflict(Exception):
    """A write numbered after something that is not in the log as the
    journal knows it."""


class Stream:
    """A center's stream in one epoch, as the journal knows it: where its
    messages are in the log (their row ids, oldest first) and its latest seq."""

    __slots__ = ("id", "name", "ids", "last")

    def __init__(self, id: int, name: tuple[str, str, str]) -> None:
        self.id = id
        self.name = name
        self.ids = array("q")
        self.last = 0


class Journal:
    """The SQLite side: one connection (opened again after a failure, so
    that a disk made writable again is seen), and the index of the log,
    read once when the journal starts and kept up to date by its writes."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.connection: sqlite3.Connection | None = None
        self.indexed = False
        self.streams: dict[tuple[str, str, str], Stream] = {}
        self.centers: dict[tuple[str, str], list[Stream]] = {}
        self.next_id = 1
        #: Row ids of messages past their stream's history, removed in bulk.
        self.dead: list[int] = []
        #: Names this journal's failures apart from any other's (a process
        #: id may be used again by a later journal): the daemon rewinds once
        #: per failure it has not seen.
        self.incarnation = secrets.token_hex(6)
        self.episode = 0
        self.failing = False
        self.reason = ""
        self.purged = 0.0
        self.statements: dict[int, str] = {}

    def handle(self, requests: list[Any], emit: Callable[[list[Any]], None] | None = None) -> tuple[list[Any], bool]:
        """The answers to *requests*, in order, and whether to go on. With
        *emit*, what is answered is also given to it as soon as a commit is
        made (the commit's answers and those before them), not only once
        every request is done."""
        answers: list[Any] = []
        writes: list[Any] = []
        emitted = 0
        going = True

        def committed() -> None:
            nonlocal writes, emitted
            answers.extend(self.commit(writes))
            writes = []
            if emit is not None:
                emit(answers[emitted:])
                emitted = len(answers)

        for request in requests:
            kind = request[0] if isinstance(request, tuple) and request else None
            if kind == "write":
                writes.append(request)
                continue
            if writes:
                committed()
            if kind == "rewind":
                self.failing = False
            elif kind == "stop":
                going = False
                self.sweep()
            elif kind in READS:
                answers.append(self.read(kind, request[1:]))
            else:
                answers.append(("error", f"unknown request {request!r:.80}"))
        if writes:
            committed()
        if emit is not None and emitted < len(answers):
            emit(answers[emitted:])
        return answers, going

    def open(self) -> sqlite3.Cursor:
        if self.connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None)
            try:
                connection.execute("PRAGMA busy_timeout = 5000")
                connection.execute(f"PRAGMA synchronous = {self.synchronous}")
            except sqlite3.Error:
                connection.close()
                raise
            self.connection = connection
        cursor = self.connection.cursor()
        if not self.indexed:
            self.index(cursor)
        return cursor

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except sqlite3.Error:
                pass
        self.connection = None

    def rollback(self) -> None:
        if self.connection is not None and self.connection.in_transaction:
            try:
                self.connection.execute("ROLLBACK")
            except sqlite3.Error:
                self.close()

    def index(self, cursor: sqlite3.Cursor) -> None:
        """Read where every stream's messages are (one pass over the log),
        and remove the messages of streams that are gone."""
        streams: dict[tuple[str, str, str], Stream] = {}
        centers: dict[tuple[str, str], list[Stream]] = {}
        cursor.execute("SELECT id, publisher, center, epoch FROM streams")
        by_id = {}
        for id, publisher, center, epoch in cursor.fetchall():
            stream = by_id[id] = streams[(publisher, center, epoch)] = Stream(id, (publisher, center, epoch))
            centers.setdefault((publisher, center), []).append(stream)
        orphans: list[tuple[int]] = []
        last = 0
        cursor.execute("SELECT id, stream, seq FROM log ORDER BY id")
        while rows := cursor.fetchmany(10_000):
            for id, stream_id, seq in rows:
                found = by_id.get(stream_id)
                if found is None:
                    orphans.append((id,))
                else:
                    found.ids.append(id)
                    found.last = seq
            last = rows[-1][0]
        self.streams, self.centers, self.next_id = streams, centers, last + 1
        self.dead.clear()  # still in the log: read again as the streams' own, trimmed by their next write
        self.indexed = True
        if orphans:
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany("DELETE FROM log WHERE id = ?", orphans)
            cursor.execute("COMMIT")

    # reads

    def read(self, kind: str, args: tuple[Any, ...]) -> Any:
        try:
            return ("ok", READS[kind](self, self.open(), *args))
        except (sqlite3.Error, TypeError, ValueError) as e:
            self.rollback()
            return ("error", str(e))

    def load(self, cursor: sqlite3.Cursor, publisher: str, center: str, epoch: str,
             history: int | None) -> tuple[str, int, list[tuple[Any, ...]]] | None:
        """Where the stream of a center stands on disk: its epoch, latest
        seq, and its last *history* messages (all, with ``None``) as ``(seq,
        ts, data)``, or ``(seq, ts, data, event)`` for one of an event of its
        own, oldest first; the stream of *epoch*, or of the latest
        epoch when *epoch* is empty (a center stored before epochs were).
        ``None`` when there is none. Streams of other epochs are what a
        deletion left behind: they go."""
        found = self.centers.get((publisher, center), [])
        chosen = None
        for stream in found:
            if stream.name[2] == epoch or (not epoch and stream is found[-1]):
                chosen = stream
        stale = [stream for stream in found if stream is not chosen]
        if stale:
            self.drop(cursor, stale)
        if chosen is None:
            return None
        ids = list(chosen.ids if history is None else chosen.ids[len(chosen.ids) - history:] if history else [])
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            cursor.execute(
                f"SELECT seq, ts, data, event FROM log WHERE id IN ({','.join('?' * len(part))}) ORDER BY id", part)
            rows += [row[:3] if row[3] is None else row for row in cursor.fetchall()]
        return chosen.name[2], chosen.last, rows

    def drop(self, cursor: sqlite3.Cursor, streams: list[Stream]) -> None:
        """Remove *streams* and their messages, from the file and from memory."""
        cursor.execute("BEGIN IMMEDIATE")
        try:
            for stream in streams:
                cursor.executemany("DELETE FROM log WHERE id = ?", ((id,) for id in stream.ids))
            cursor.executemany("DELETE FROM streams WHERE id = ?", ((stream.id,) for stream in streams))
            cursor.execute("COMMIT")
        except sqlite3.Error:
            self.rollback()
            return  # tried again by the next load
        for stream in streams:
            del self.streams[stream.name]
            siblings = self.centers[stream.name[:2]]
            siblings.remove(stream)
            if not siblings:
                del self.centers[stream.name[:2]]

    def keys(self, cursor: sqlite3.Cursor, oldest: float) -> list[tuple[str, str, float, str]]:
        cursor.execute("SELECT publisher, key, at, ids FROM idempotency WHERE at >= ? ORDER BY at", (oldest,))
        return cursor.fetchall()

    def forget(self, cursor: sqlite3.Cursor, publisher: str, center: str | None) -> None:
        """After *center* (or every center of *publisher*) was deleted: drop
        its streams of any epoch but the one the store holds now (none, or
        the center's made again), with their messages. A write queued
        before the deletion may have added messages, or even made its
        stream's row again after the store removed it."""
        streams = [stream for name, streams in self.centers.items()
                   if name[0] == publisher and (center is None or name[1] == center) for stream in streams]
        gone = []
        for stream in streams:
            cursor.execute("SELECT epoch FROM centers WHERE publisher = ? AND name = ?", stream.name[:2])
            current = cursor.fetchone()
            if current is None or current[0] != stream.name[2]:
                gone.append(stream)
        if gone:
            self.drop(cursor, gone)

    # writes

    def commit(self, writes: list[Any]) -> list[Any]:
        if not self.failing:
            try:
                self.transaction(writes)
                return [("ok",)] * len(writes)
            except Exception as e:  # sqlite3.Error; anything else is a bug, refused all the same
                self.rollback()
                self.close()
                if isinstance(e, sqlite3.IntegrityError):
                    # The log is not what this journal thinks (another one
                    # wrote to it): read it again before the next write.
                    self.indexed = False
                self.failing = True
                self.episode += 1
                self.reason = str(e) if isinstance(e, sqlite3.Error) else f"{type(e).__name__}: {e}"
        return [("failed", f"{self.incarnation}.{self.episode}", self.reason)] * len(writes)

    def transaction(self, writes: list[Any]) -> None:
        cursor = self.open()
        cursor.execute("BEGIN IMMEDIATE")
        made: dict[tuple[str, str, str], Stream] = {}
        values: list[Any] = []
        added: dict[Stream, tuple[list[int], int, int]] = {}  # stream -> (new ids, last seq, keep)
        keys = []
        known = self.streams
        id = self.next_id
        for _, rows, key in writes:
            for row in rows:
                if len(row) == 7:  # the default event: no slice made
                    publisher, center, epoch, seq, ts, data, keep = row
                    event = None
                else:
                    publisher, center, epoch, seq, ts, data, keep, event = row
                name = (publisher, center, epoch)
                stream = known.get(name) or made.get(name)
                if stream is None:
                    stream = made[name] = Stream(self.stream_id(cursor, name), name)
                entry = added.get(stream)
                latest = stream.last if entry is None else entry[1]
                if seq != latest + 1:
                    # Numbered after something this journal did not answer
                    # (committed by one that ended, say): refused, and the
                    # daemon catches up from the file.
                    raise Conflict(f"{publisher}/{center} is at {epoch}-{latest}, not {epoch}-{seq - 1}")
                values += (id, stream.id, seq, ts, data, event)
                if entry is None:
                    added[stream] = ([id], seq, keep)
                else:
                    entry[0].append(id)
                    added[stream] = (entry[0], seq, keep)
                id += 1
            if key is not None:
                keys.append(key)
        self.insert(cursor, values)
        if keys:
            cursor.executemany("INSERT OR REPLACE INTO idempotency (publisher, key, at, ids) VALUES (?, ?, ?, ?)",
                               keys)
        dead = self.dead
        cut: dict[Stream, int] = {}
        doomed: list[int] = []
        for stream, (ids, _, keep) in added.items():
            keep = max(keep, 1)  # the latest stays, and with it the latest seq
            held = len(stream.ids) + len(ids)
            if held > keep + slack(keep):
                cut[stream] = n = held - keep
                # the oldest n of what it held and what it gets now
                doomed += stream.ids[:n].tolist() + ids[:max(0, n - len(stream.ids))]
        if len(dead) + len(doomed) >= DELETE_EVERY:
            cursor.executemany("DELETE FROM log WHERE id = ?", ((old,) for old in sorted(dead + doomed)))
            removed = True
        else:
            removed = False
        now = time.time()
        purge = now - self.purged >= PURGE_EVERY
        if purge:
            cursor.execute("DELETE FROM idempotency WHERE at < ?", (now - KEY_TTL,))
        cursor.execute("COMMIT")
        # Committed: the index follows.
        if purge:
            self.purged = now
        self.next_id = id
        for name, stream in made.items():
            known[name] = stream
            self.centers.setdefault(name[:2], []).append(stream)
        for stream, (ids, last, _) in added.items():
            stream.ids.extend(ids)
            stream.last = last
        for stream, n in cut.items():
            del stream.ids[:n]
        if removed:
            dead.clear()
        else:
            dead += doomed

    def sweep(self) -> None:
        """Remove the messages past their history that are still in the log."""
        if self.dead and not self.failing:
            try:
                cursor = self.open()
                cursor.execute("BEGIN IMMEDIATE")
                cursor.executemany("DELETE FROM log WHERE id = ?", ((old,) for old in sorted(self.dead)))
                cursor.execute("COMMIT")
                self.dead.clear()
            except sqlite3.Error:
                self.rollback()  # read again, and removed, by the next journal

    @staticmethod
    def stream_id(cursor: sqlite3.Cursor, name: tuple[str, str, str]) -> int:
        cursor.execute("INSERT OR IGNORE INTO streams (publisher, center, epoch) VALUES (?, ?, ?)", name)
        cursor.execute("SELECT id FROM streams WHERE publisher = ? AND center = ? AND epoch = ?", name)
        stream: int = cursor.fetchone()[0]
        return stream

    def insert(self, cursor: sqlite3.Cursor, values: list[Any]) -> None:
        """Append the messages whose columns are *values*, ``COLUMNS`` at a
        time, in as few statements as may be."""
        per = ROWS_PER_STATEMENT * COLUMNS
        for start in range(0, len(values), per):
            chunk = values[start:start + per]
            rows = len(chunk) // COLUMNS
            sql = self.statements.get(rows)
            if sql is None:
                sql = self.statements[rows] = (
                    "INSERT INTO log (id, stream, seq, ts, data, event) VALUES "
                    + ",".join(["(?, ?, ?, ?, ?, ?)"] * rows))
            cursor.execute(sql, chunk)


READS: dict[str, Callable[..., Any]] = {"load": Journal.load, "keys": Journal.keys, "forget": Journal.forget}


def _send(sink: int, answers: list[Any]) -> None:
    out = memoryview(b"".join(frame(answer) for answer in answers))
    while out:
        out = out[os.write(sink, out):]


def serve(journal: Journal, source: int, sink: int) -> None:
    """Answer what comes from *source* on *sink* until told to stop, or
    until *source* ends."""
    buffer = bytearray()
    going = True
    while going:
        chunk = os.read(source, 1 << 20)
        if not chunk:
            break
        buffer += chunk
        try:
            requests = unframe(buffer)
        except (ValueError, EOFError, TypeError) as e:
            sys.stderr.write(f"notifier journal: unreadable request, stopping: {e}\n")
            break
        _, going = journal.handle(requests, lambda answers: _send(sink, answers))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m notifier.backends.journal PATH normal|full\n")
        return 2
    # A service manager signals the whole group: the daemon says when to stop.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    journal = Journal(argv[0], argv[1])
    try:
        serve(journal, 0, 1)
    finally:
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
