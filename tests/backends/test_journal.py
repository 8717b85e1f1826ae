"""The journal (notifier.backends.journal) as one object, on a real SQLite file:
group commits, the index it keeps of the log, trimming, failures and
their episodes, and the frames it is spoken to in."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.backends.journal import DELETE_EVERY, KEY_TTL, Journal, frame, slack, unframe
from notifier.backends.sqlite import CHANGE_TRIGGERS, SCHEMA
from notifier.domain import idempotency


def _file(tmp_path: Path) -> str:
    path = str(tmp_path / "n.db")
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA + CHANGE_TRIGGERS)
        db.execute("PRAGMA journal_mode = WAL")
    return path


def _write(center: str, first: int, count: int, keep: int = 100, epoch: str = "e1",
           key: tuple[str, str, float, str] | None = None) -> tuple:
    rows = [("site", center, epoch, seq, 1000.0 + seq, f"{center} {seq}", keep)
            for seq in range(first, first + count)]
    return ("write", rows, key)


def _rows_on_disk(path: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM log").fetchone()[0]


def test_writes_that_come_together_are_one_transaction_and_load_back(tmp_path):
    path = _file(tmp_path)
    journal = Journal(path, "normal")
    answers, going = journal.handle([_write("a", 1, 3), _write("b", 1, 2), _write("a", 4, 1)])
    assert answers == [("ok",)] * 3 and going
    assert journal.handle([("load", "site", "a", "e1", 100)])[0] == [
        ("ok", ("e1", 4, [(seq, 1000.0 + seq, f"a {seq}") for seq in range(1, 5)]))]
    assert journal.handle([("load", "site", "a", "e1", 2)])[0] == [
        ("ok", ("e1", 4, [(3, 1003.0, "a 3"), (4, 1004.0, "a 4")]))]
    # history 0: nothing retained, but the latest seq is kept
    assert journal.handle([("load", "site", "b", "e1", 0)])[0] == [("ok", ("e1", 2, []))]
    assert journal.handle([("load", "site", "nothing", "e1", 10)])[0] == [("ok", None)]
    journal.close()

    # another journal on the file (a restart) reads the same from the log
    again = Journal(path, "normal")
    assert again.handle([("load", "site", "a", "e1", None)])[0][0][1][1] == 4
    assert again.handle([_write("a", 5, 1)])[0] == [("ok",)]
    assert again.handle([("load", "site", "a", "e1", 1)])[0] == [("ok", ("e1", 5, [(5, 1005.0, "a 5")]))]
    again.close()


def test_a_center_of_an_unknown_epoch_takes_the_latest_and_other_epochs_go(tmp_path):
    path = _file(tmp_path)
    journal = Journal(path, "normal")
    journal.handle([_write("a", 1, 3, epoch="old"), _write("a", 1, 2, epoch="new")])
    # a center stored before epochs were (empty epoch): the latest stream
    assert journal.handle([("load", "site", "a", "", 10)])[0][0][1][:2] == ("new", 2)
    # asked with its own epoch, the other stream is removed, file and memory
    assert journal.handle([("load", "site", "a", "new", 10)])[0][0][1][:2] == ("new", 2)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT epoch FROM streams").fetchall() == [("new",)]
        assert db.execute("SELECT count(*) FROM log").fetchone()[0] == 2
    journal.close()


def test_history_is_trimmed_with_slack_and_removed_in_bulk(tmp_path):
    path = _file(tmp_path)
    journal = Journal(path, "normal")
    keep = 10
    for seq in range(1, 200):
        assert journal.handle([_write("a", seq, 1, keep=keep)])[0] == [("ok",)]
        stream = journal.streams[("site", "a", "e1")]
        assert keep <= len(stream.ids) <= keep + slack(keep) or seq < keep
    # what is past history waits to be removed, DELETE_EVERY at a time at most
    assert _rows_on_disk(path) <= keep + slack(keep) + DELETE_EVERY
    journal.handle([("stop",)])  # stopping removes what waits
    assert _rows_on_disk(path) <= keep + slack(keep)
    loaded = journal.handle([("load", "site", "a", "e1", keep)])[0][0][1]
    assert loaded[1] == 199 and [row[0] for row in loaded[2]] == list(range(190, 200))
    journal.close()


def test_a_failed_write_fails_every_write_until_a_rewind(tmp_path):
    path = _file(tmp_path)
    journal = Journal(path, "normal")
    assert journal.handle([_write("a", 1, 1)])[0] == [("ok",)]
    # a message without data cannot be committed: the write fails, and so
    # does the next, numbered after it, until the daemon has rewound
    broken = ("write", [("site", "a", "e1", 2, 1002.0, None, 100)], None)
    first, = journal.handle([broken])[0]
    assert first[0] == "failed" and "NOT NULL" in first[2]
    second, = journal.handle([_write("a", 2, 1)])[0]
    assert second[:2] == first[:2]  # the same episode
    assert journal.handle([("rewind",), _write("a", 2, 1)])[0] == [("ok",)]
    third, = journal.handle([broken])[0]
    assert third[0] == "failed" and third[1] != first[1]  # a new episode
    journal.handle([("rewind",)])
    assert journal.handle([("load", "site", "a", "e1", 10)])[0][0][1][1] == 2
    journal.close()


def test_the_failures_of_two_journals_are_told_apart_in_one_process(tmp_path):
    # A later journal may have the process id of an earlier one: its first
    # failure must not pass for the earlier one's, which the daemon has
    # rewound already (it would not rewind again, and every write would fail).
    broken = ("write", [("site", "a", "e1", 1, 1001.0, None, 100)], None)
    episodes = set()
    for _ in range(2):
        journal = Journal(_file(tmp_path), "normal")
        failed, = journal.handle([broken])[0]
        assert failed[0] == "failed"
        episodes.add(failed[1])
        journal.close()
    assert len(episodes) == 2


def test_keys_are_written_with_their_messages_and_read_back(tmp_path):
    path = _file(tmp_path)
    journal = Journal(path, "normal")
    now = time.time()
    key = ("site", "order-1", now, '["e1-1"]')
    old = ("site", "order-0", now - KEY_TTL - 1, '["e1-0"]')
    assert journal.handle([_write("a", 1, 1, key=old), _write("a", 2, 1, key=key)])[0] == [("ok",)] * 2
    # read back from a time; the keys past KEY_TTL are purged as writes go
    assert journal.handle([("keys", now - 1), ("keys", now + 1)])[0] == [("ok", [key]), ("ok", [])]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT key FROM idempotency").fetchall() == [("order-1",)]
    journal.close()


def test_forget_removes_what_a_deletion_left(tmp_path):
    path = _file(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO publishers (name, secret, created) VALUES ('site', 's', 0)")
        db.executemany("INSERT INTO centers (publisher, name, private, created, epoch) VALUES ('site', ?, 0, 0, 'e1')",
                       [("a",), ("b",), ("c",)])
    journal = Journal(path, "normal")
    journal.handle([_write("a", 1, 3), _write("b", 1, 1)])
    with sqlite3.connect(path) as db:  # the store deletes the center: its stream row goes
        db.execute("DELETE FROM centers WHERE name = 'a'")
    journal.handle([_write("a", 4, 1)])  # a write queued before the deletion was known
    assert journal.handle([("forget", "site", "a")])[0] == [("ok", None)]
    assert _rows_on_disk(path) == 1
    assert journal.handle([("load", "site", "a", "e1", 10)])[0] == [("ok", None)]
    # a center's first write after its deletion makes its stream's row again: forgotten all the same
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM centers WHERE name = 'c'")
    journal.handle([_write("c", 1, 2)])
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM streams WHERE center = 'c'").fetchone()[0] == 1
    journal.handle([("forget", "site", "c")])
    assert _rows_on_disk(path) == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT center FROM streams").fetchall() == [("b",)]
    journal.close()
    # at start, messages of streams that are gone are removed too
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM streams WHERE center = 'b'")
    Journal(path, "normal").handle([("keys", 0.0)])
    assert _rows_on_disk(path) == 0


def test_unknown_requests_are_answered_with_an_error():
    journal = Journal(":memory:", "normal")
    assert journal.handle([("fly",), "nonsense"])[0] == [
        ("error", "unknown request ('fly',)"), ("error", "unknown request 'nonsense'")]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.integers(), st.none() | st.floats(allow_nan=False)),
                max_size=20), st.integers(min_value=1, max_value=7))
def test_frames_read_back_whatever_way_they_are_cut(values, cut):
    data = b"".join(frame(value) for value in values)
    buffer = bytearray()
    read = []
    for start in range(0, len(data), cut):
        buffer += data[start:start + cut]
        read += unframe(buffer)
    assert read == values and not buffer


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_synchronous_is_set_on_the_connection(tmp_path, synchronous):
    journal = Journal(_file(tmp_path), synchronous)
    cursor = journal.open()
    assert cursor.execute("PRAGMA synchronous").fetchone()[0] == {"normal": 1, "full": 2}[synchronous]
    journal.close()


def test_the_journal_keeps_keys_as_long_as_the_daemon_remembers_them():
    assert KEY_TTL == idempotency.KEY_TTL


def test_a_write_larger_than_the_history_keeps_only_the_history(tmp_path):
    path = _file(tmp_path)
    journal = Journal(path, "normal")
    assert journal.handle([_write("a", 1, 50, keep=5)])[0] == [("ok",)]
    assert len(journal.streams[("site", "a", "e1")].ids) == 5
    journal.handle([("stop",)])  # what waits to be removed is removed
    with sqlite3.connect(path) as db:
        assert [seq for seq, in db.execute("SELECT seq FROM log ORDER BY id")] == [46, 47, 48, 49, 50]
    journal.close()


def test_a_write_numbered_after_what_the_log_lacks_is_refused(tmp_path):
    """Numbered after a commit this journal never answered (one that ended
    did), or skipping one: refused, so that no id is given twice."""
    journal = Journal(_file(tmp_path), "normal")
    assert journal.handle([_write("a", 1, 2)])[0] == [("ok",)]
    refused, = journal.handle([_write("a", 2, 1)])[0]  # seq 2 again
    assert refused[0] == "failed" and "at e1-2" in refused[2]
    journal.handle([("rewind",)])
    skipped, = journal.handle([_write("a", 4, 1)])[0]
    assert skipped[0] == "failed"
    assert journal.handle([("rewind",), _write("a", 3, 2)])[0] == [("ok",)]
    assert journal.handle([("load", "site", "a", "e1", None)])[0][0][1][1] == 4
    journal.close()


def test_each_commit_is_answered_as_soon_as_it_is_made_in_order(tmp_path):
    journal = Journal(_file(tmp_path), "normal")
    sent: list[list] = []
    answers, going = journal.handle(
        [("keys", 0.0), _write("a", 1, 1), ("load", "site", "a", "e1", 1), _write("a", 2, 1), ("stop",)],
        sent.append)
    assert sent[0] == [("ok", []), ("ok",)]  # the read before the first commit, and the commit
    assert [answer for batch in sent for answer in batch] == answers and len(answers) == 4
    assert going is False
    journal.close()


def test_a_request_asked_now_is_written_at_once_and_others_with_the_turn():
    from twisted.internet.testing import MemoryReactorClock

    from notifier.backends.durable import JournalProcess, _Pipe

    reactor = MemoryReactorClock()
    journal = JournalProcess("unused.sqlite", "normal", reactor)
    theirs, ours = os.pipe()
    os.set_blocking(theirs, False)
    journal._pipe, journal._running = _Pipe(ours, reactor), True

    def sent() -> list:
        try:
            return unframe(bytearray(os.read(theirs, 1 << 20)))
        except BlockingIOError:
            return []

    try:
        single = ("write", [("site", "news", "e1", 1, 1.0, "x", 10)], None)
        journal.ask(single)
        journal.ask(single)
        assert sent() == []  # with the others of this turn
        reactor.advance(0)
        assert sent() == [single, single]  # in one write
        batch = ("write", [("site", "news", "e1", n, 1.0, "x", 10) for n in range(2, 102)], None)
        journal.ask(single)
        journal.ask(batch, now=True)
        assert sent() == [single, batch]  # at once, the turn's earlier ones before it
    finally:
        journal._pipe.close()
        os.close(theirs)


def test_the_broker_asks_for_a_batch_now_and_a_single_publish_with_the_turn():
    from twisted.internet.testing import MemoryReactorClock

    from notifier.backends.durable import DurableBroker
    from notifier.backends.interfaces import Publication

    broker = DurableBroker("unused.sqlite", "normal", MemoryReactorClock())
    asked: list[tuple[int, bool]] = []

    class Journal:
        def ask(self, request, then=None, *args, now=False):
            asked.append((len(request[1]), now))

    broker.journal = Journal()  # type: ignore[assignment]
    publication = Publication("site", "news", "x", "e1", 0, 10, 0)
    broker._committed([publication], None)
    broker._committed([publication] * 3, None)
    assert asked == [(1, False), (3, True)]
