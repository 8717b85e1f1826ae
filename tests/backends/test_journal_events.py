"""The journal (notifier.backends.journal) and the events of messages: a
row names its event only when it is not the default, the log keeps it
(NULL for the default), and a load gives it back with its message; a file
whose log was made before events were is given the column when the store
opens it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor

from notifier.backends.journal import Journal, frame, unframe
from notifier.backends.sqlite import CHANGE_TRIGGERS, SCHEMA, SQLiteStore


def _file(tmp_path: Path) -> str:
    path = str(tmp_path / "n.db")
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA + CHANGE_TRIGGERS)
    return path


def _events_on_disk(path: str) -> list[tuple[int, str | None]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT seq, event FROM log ORDER BY id").fetchall()


def test_a_row_names_its_event_only_when_it_has_one_of_its_own_and_a_load_gives_it_back(tmp_path):
    path = _file(tmp_path)
    journal = Journal(path, "normal")
    rows = [("site", "news", "e1", 1, 1.0, "plain", 10),
            ("site", "news", "e1", 2, 2.0, "named", 10, "price"),
            ("site", "news", "e1", 3, 3.0, "plain again", 10)]
    assert journal.handle([("write", rows, None)])[0] == [("ok",)]
    assert _events_on_disk(path) == [(1, None), (2, "price"), (3, None)]
    expected = ("e1", 3, [(1, 1.0, "plain"), (2, 2.0, "named", "price"), (3, 3.0, "plain again")])
    assert journal.handle([("load", "site", "news", "e1", None)])[0] == [("ok", expected)]
    # as the daemon gets it, through the frames
    buffer = bytearray(frame(("ok", expected)))
    assert unframe(buffer) == [("ok", expected)]
    journal.close()
    # another journal (a restart) reads the same
    again = Journal(path, "normal")
    assert again.handle([("load", "site", "news", "e1", 2)])[0] == [("ok", ("e1", 3, expected[2][1:]))]
    again.close()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cc", "Cs")),
                                             min_size=1, max_size=200)), min_size=1, max_size=20))
def test_every_event_comes_back_as_it_was_written(tmp_path_factory, events):
    path = _file(tmp_path_factory.mktemp("events"))
    journal = Journal(path, "normal")
    rows = [("site", "news", "e1", seq, float(seq), f"m{seq}", 100, *(() if event is None else (event,)))
            for seq, event in enumerate(events, 1)]
    assert journal.handle([("write", rows, None)])[0] == [("ok",)]
    [(_, (_, _, retained))] = journal.handle([("load", "site", "news", "e1", None)])[0]
    assert retained == [row[3:6] + row[7:] for row in rows]
    journal.close()


@pytest_twisted.ensureDeferred
async def test_a_file_whose_log_was_made_before_events_gets_the_column_and_keeps_its_history(tmp_path):
    path = str(tmp_path / "n.db")
    old_log = SCHEMA.replace("    data   TEXT NOT NULL,\n    event  TEXT\n", "    data   TEXT NOT NULL\n")
    assert old_log != SCHEMA
    with sqlite3.connect(path) as db:
        db.executescript(old_log + CHANGE_TRIGGERS)
        db.execute("INSERT INTO streams (publisher, center, epoch) VALUES ('site', 'news', 'e1')")
        db.execute("INSERT INTO log (id, stream, seq, ts, data) VALUES (1, 1, 1, 1.0, 'from before')")
    store = SQLiteStore(path, reactor)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as db:
        assert "event" in [column[1] for column in db.execute("PRAGMA table_info(log)")]
    journal = Journal(path, "normal")
    assert journal.handle([("write", [("site", "news", "e1", 2, 2.0, "after", 10, "price")], None)])[0] == [("ok",)]
    assert journal.handle([("load", "site", "news", "e1", None)])[0] == [
        ("ok", ("e1", 2, [(1, 1.0, "from before"), (2, 2.0, "after", "price")]))]
    journal.close()
