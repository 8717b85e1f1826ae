"""Durable history (``[store] durable``) and the events of messages: a
message's event outlives a restart with it, on every transport, and a file
made before events were is opened, its history resumed as of the default
event, and keeps the events published since."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted

from tests.support import Daemon, call, event_source, publish, setup_site, start_daemon, websocket

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _durable(path: Path) -> AsyncIterator[Daemon]:
    daemon = await start_daemon(f"sqlite:{path}", store={"durable": True})
    try:
        yield daemon
    finally:
        await daemon.service.stopService()


async def _published(daemon: Daemon, auth: tuple[str, str], text: str, event: str | None = None) -> str:
    status, body = await publish(daemon, auth, text, headers={"Notifier-Event": event} if event else None)
    assert status == 201, body
    return str(body["id"])


async def _history(daemon: Daemon, since: str) -> list[tuple[str, str, str | None]]:
    status, body = await call("GET", f"{daemon.public}/sub/site/news?since={since}&timeout=0")
    assert status == 200 and body["recovered"] is True, body
    return [(m["id"], m["data"], m.get("event")) for m in body["messages"]]


def _events_on_disk(path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT data, event FROM log ORDER BY id").fetchall()


@pytest_twisted.ensureDeferred
async def test_a_message_s_event_outlives_a_restart_on_every_transport(tmp_path):
    path = tmp_path / "n.db"
    async with _durable(path) as daemon:
        auth = await setup_site(daemon)
        first = await _published(daemon, auth, "first")
        named = await _published(daemon, auth, "named", "price")
        plain = await _published(daemon, auth, "plain")
    # Nothing stored for the default event.
    assert _events_on_disk(path) == [("first", None), ("named", "price"), ("plain", None)]
    async with _durable(path) as daemon:
        assert await _history(daemon, first) == [(named, "named", "price"), (plain, "plain", None)]
        ws = await websocket(f"{daemon.ws}/sub/site/news?format=json&since={first}", daemon.public_port)
        assert json.loads(await ws.next())["recovered"] is True
        assert [json.loads(await ws.next()).get("event") for _ in range(2)] == ["price", None]
        ws.close()
        es = await event_source(daemon.public_port, f"/sub/site/news?since={first}")
        await es.next()  # retry
        assert json.loads((await es.next())["data"]) == {"recovered": True}
        events = [await es.next() for _ in range(2)]
        assert [(e["id"], e["event"], e["data"]) for e in events] == [(named, "price", "named"),
                                                                      (plain, "message", "plain")]
        es.close()


@pytest_twisted.ensureDeferred
async def test_a_file_from_before_events_resumes_its_history_and_keeps_the_events_published_since(tmp_path):
    path = tmp_path / "n.db"
    async with _durable(path) as daemon:
        auth = await setup_site(daemon)
        first = await _published(daemon, auth, "first")
        older = await _published(daemon, auth, "older")
    with sqlite3.connect(path) as db:  # the log as it was made before events were
        db.execute("ALTER TABLE log DROP COLUMN event")
    async with _durable(path) as daemon:
        assert await _history(daemon, first) == [(older, "older", None)]
        named = await _published(daemon, auth, "named", "price")
    async with _durable(path) as daemon:
        assert await _history(daemon, first) == [(older, "older", None), (named, "named", "price")]
