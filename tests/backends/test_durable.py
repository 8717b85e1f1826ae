"""Durable history (``[store] durable = true``): ids, epochs, retained
messages and Idempotency-Keys kept in the SQLite file, acknowledged only
once committed; tried across real restarts (SIGTERM, SIGKILL), on every
transport, with publishers that keep publishing while the daemon dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue

from tests.process import NOTIFIER, Process, clean_exit, write_config
from tests.support import (
    Daemon,
    basic,
    call,
    event_source,
    expect_json_error,
    opened,
    published,
    setup_site,
    start_daemon,
    until,
    websocket,
)

pytestmark = pytest.mark.integration

DURABLE = {"durable": True}
TEXT = {"Content-Type": "text/plain"}


def _next(id: str) -> str:
    epoch, seq = id.rsplit("-", 1)
    return f"{epoch}-{int(seq) + 1}"


def _rows(path: Path, center: str) -> list[tuple[int, str]]:
    """``(seq, data)`` of *center*'s messages in the file, read as another
    process would (the test's own, synchronous connection)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(
            "SELECT seq, data FROM log JOIN streams ON streams.id = log.stream"
            " WHERE streams.center = ? ORDER BY seq", (center,)).fetchall()


async def _history(base: str, path: str, since: str) -> dict[str, Any]:
    """A long-poll answered at once with everything retained after *since*."""
    status, body = await call("GET", f"{base}{path}?since={since}&timeout=0")
    assert status == 200, body
    return body


# in one process: the service stopped and started again


@contextlib.asynccontextmanager
async def _durable(path: Path) -> AsyncIterator[Daemon]:
    """A daemon in this process, keeping its history in *path*."""
    daemon = await start_daemon(f"sqlite:{path}", store=DURABLE)
    try:
        yield daemon
    finally:
        await daemon.service.stopService()


@pytest_twisted.ensureDeferred
async def test_ids_and_history_outlive_a_restart_on_every_transport(tmp_path):
    async with _durable(tmp_path / "n.db") as daemon:
        auth = await setup_site(daemon)
        before = [await published(daemon, auth, f"before {i}") for i in range(3)]
    async with _durable(tmp_path / "n.db") as daemon:
        after = await published(daemon, auth, "after")
        assert after == _next(before[-1])  # the same epoch, the next seq
        body = await _history(daemon.public, "/sub/site/news", before[0])
        assert body["recovered"] is True
        assert [(m["id"], m["data"]) for m in body["messages"]] == [
            (before[1], "before 1"), (before[2], "before 2"), (after, "after")]

        ws = await websocket(f"{daemon.ws}/sub/site/news?format=json&since={before[1]}", daemon.public_port)
        assert (await opened(ws))["recovered"] is True
        assert [json.loads(await ws.next())["id"] for _ in range(2)] == [before[2], after]
        ws.close()

        es = await event_source(daemon.public_port, "/sub/site/news", {"Last-Event-ID": before[2]})
        await es.next()  # retry
        assert json.loads((await es.next())["data"]) == {"recovered": True}
        event = await es.next()
        assert (event["id"], event["data"]) == (after, "after")
        es.close()


@pytest_twisted.ensureDeferred
async def test_history_is_trimmed_on_disk_and_what_was_trimmed_is_not_recovered(tmp_path):
    path = tmp_path / "n.db"
    async with _durable(path) as daemon:
        auth = await setup_site(daemon)
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/small", {"history": 5}, auth=auth)
        assert status == 201 and body["history"] == 5, body
        ids = [await published(daemon, auth, str(i), "small") for i in range(60)]
    rows = _rows(path, "small")
    # the latest 5 at least, and never more than 5 + the trimming slack (8)
    assert 5 <= len(rows) <= 13
    assert rows[-5:] == [(int(id.rsplit("-", 1)[1]), str(i)) for i, id in enumerate(ids) if i >= 55]
    async with _durable(path) as daemon:
        body = await _history(daemon.public, "/sub/site/small", ids[54])
        assert body["recovered"] is True and [m["data"] for m in body["messages"]] == [str(i) for i in range(55, 60)]
        body = await _history(daemon.public, "/sub/site/small", ids[10])
        assert body["recovered"] is False


@pytest_twisted.ensureDeferred
async def test_a_center_deleted_and_made_again_is_a_new_epoch_with_nothing_of_before(tmp_path):
    path = tmp_path / "n.db"
    async with _durable(path) as daemon:
        auth = await setup_site(daemon)
        old = [await published(daemon, auth, f"old {i}") for i in range(3)]
        status, _ = await call("DELETE", f"{daemon.api}/api/v1/centers/news", auth=auth)
        assert status == 204
        status, _ = await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=auth)
        assert status == 201
        new = await published(daemon, auth, "new")
        assert new.rsplit("-", 1)[0] != old[0].rsplit("-", 1)[0]
        await until(lambda: _rows(path, "news") == [(1, "new")], what="the old stream's messages removed")
    async with _durable(path) as daemon:
        body = await _history(daemon.public, "/sub/site/news", old[0])
        assert body["recovered"] is False and [m["data"] for m in body["messages"]] == ["new"]


@pytest_twisted.ensureDeferred
async def test_an_idempotency_key_is_remembered_across_a_restart(tmp_path):
    path = tmp_path / "n.db"
    daemon = await start_daemon(f"sqlite:{path}", store=DURABLE)
    auth = await setup_site(daemon)
    headers = {**TEXT, "Idempotency-Key": "order-17"}
    status, first = await call("POST", f"{daemon.api}/api/v1/centers/news/messages", raw=b"once",
                               auth=auth, headers=headers)
    assert status == 201, first
    status, batch = await call("POST", f"{daemon.api}/api/v1/messages",
                               {"messages": [{"center": "news", "data": "a"}, {"center": "news", "data": "b"}]},
                               auth=auth, headers={"Idempotency-Key": "batch-9"})
    assert status == 201, batch
    await daemon.service.stopService()
    daemon = await start_daemon(f"sqlite:{path}", store=DURABLE)
    try:
        status, again = await call("POST", f"{daemon.api}/api/v1/centers/news/messages", raw=b"once",
                                   auth=auth, headers=headers)
        assert status == 200 and again["id"] == first["id"], again
        status, batch_again = await call(
            "POST", f"{daemon.api}/api/v1/messages",
            {"messages": [{"center": "news", "data": "a"}, {"center": "news", "data": "b"}]},
            auth=auth, headers={"Idempotency-Key": "batch-9"})
        assert status == 200 and batch_again["ids"] == batch["ids"], batch_again
        assert [data for _, data in _rows(path, "news")] == ["once", "a", "b"]  # delivered once
    finally:
        await daemon.service.stopService()


# the real daemon, killed while publishers publish


@contextlib.asynccontextmanager
async def _spawned(folder: Path, centers: dict[str, dict[str, Any]]) -> AsyncIterator[tuple[Process, tuple[str, str]]]:
    """``twistd -n notifier`` keeping its history in *folder*, with a
    publisher "site" and its *centers* (name: options); killed at the end."""
    config, public, api = write_config(folder, store=DURABLE)
    daemon = Process(config, public, api)
    await daemon.start()
    try:
        status, body = await daemon.admin("POST", "/admin/v1/publishers", {"name": "site"})
        assert status == 201, body
        auth = ("site", body["secret"])
        for center, options in centers.items():
            status, body = await call("PUT", f"{daemon.api}/api/v1/centers/{center}", options or None, auth=auth)
            assert status == 201, body
        yield daemon, auth
    finally:
        await daemon.kill()


async def _publish(daemon: Process, auth: tuple[str, str], text: bytes, center: str = "news") -> tuple[int, Any]:
    return await call("POST", f"{daemon.api}/api/v1/centers/{center}/messages", raw=text, auth=auth, headers=TEXT)


async def _publisher(daemon: Process, auth: tuple[str, str], center: str, name: str,
                     acked: list[tuple[str, str]], going: list[bool]) -> None:
    """Publish until told to stop, or until the daemon is gone; every 201 is kept."""
    count = 0
    while going[0]:
        text = f"{name}.{count}"
        try:
            status, body = await _publish(daemon, auth, text.encode(), center)
        except Exception:
            return  # the daemon is gone: this publish was never acknowledged
        if status == 201:
            acked.append((body["id"], text))
        count += 1


@pytest.mark.parametrize("signal", ["KILL", "TERM"])
@pytest_twisted.ensureDeferred
async def test_every_acknowledged_message_survives_the_daemon_s_death(tmp_path, signal):
    centers = ["a", "b"]
    async with _spawned(tmp_path, {center: {"history": 10000} for center in centers}) as (daemon, auth):
        public = daemon.public_port
        acked: dict[str, list[tuple[str, str]]] = {center: [] for center in centers}
        going = [True]
        publishers = [defer.Deferred.fromCoroutine(_publisher(daemon, auth, center, f"{center}{n}",
                                                              acked[center], going))
                      for center in centers for n in range(3)]
        await until(lambda: all(len(acked[c]) >= 150 for c in centers), timeout=30, what="publishes acknowledged")
        daemon.transport.signalProcess(signal)
        reason = await daemon.stopped(15)
        if signal == "TERM":
            assert clean_exit(reason), daemon.log()
        going[0] = False
        await defer.DeferredList(publishers)

        await daemon.start()
        for center in centers:
            epoch = acked[center][0][0].rsplit("-", 1)[0]
            body = await _history(daemon.public, f"/sub/site/{center}", f"{epoch}-0")
            assert body["recovered"] is True
            found = {m["id"]: m["data"] for m in body["messages"]}
            missing = [(id, text) for id, text in acked[center] if found.get(id) != text]
            assert not missing, f"acknowledged but not found after {signal}: {missing[:5]}"
            seqs = [int(m["id"].rsplit("-", 1)[1]) for m in body["messages"]]
            assert seqs == list(range(1, len(seqs) + 1))  # no gap, nothing twice
            # publishing goes on in the same epoch, after the last committed
            status, next_one = await _publish(daemon, auth, b"after", center)
            assert status == 201 and next_one["id"] == f"{epoch}-{len(seqs) + 1}", next_one
            # and a browser that saw the last acknowledged one resumes on each transport
            last = acked[center][-1][0]
            ws = await websocket(f"{daemon.ws}/sub/site/{center}?format=json&since={last}", public)
            assert (await opened(ws))["recovered"] is True
            ws.close()
            es = await event_source(public, f"/sub/site/{center}", {"Last-Event-ID": last})
            await es.next()  # retry
            assert json.loads((await es.next())["data"]) == {"recovered": True}
            es.close()


def _journal_pid(daemon_pid: int) -> int:
    """The journal process the daemon started (its only child)."""
    with open(f"/proc/{daemon_pid}/task/{daemon_pid}/children", encoding="ascii") as f:
        children = [int(pid) for pid in f.read().split()]
    assert len(children) == 1, children
    return children[0]


@pytest_twisted.ensureDeferred
async def test_a_full_disk_refuses_publishes_with_503_and_recovers_when_it_has_room(tmp_path):
    """The journal's file size limit lowered to what the files hold stands
    for a full disk: its writes fail with EFBIG, as on a full disk with
    ENOSPC. Publishes are refused, none acknowledged is lost, and when
    there is room again publishing goes on from the last committed id."""
    path = tmp_path / "n.db"
    async with _spawned(tmp_path, {"news": {}}) as (daemon, auth):
        status, first = await _publish(daemon, auth, b"first")
        assert status == 201
        journal = _journal_pid(daemon.transport.pid)
        resource.prlimit(journal, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        for text in (b"refused", b"refused again"):
            status, body = await _publish(daemon, auth, text)
            expect_json_error(status, body, 503, "store_unavailable")
        resource.prlimit(journal, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        status, second = await _publish(daemon, auth, b"second")
        assert status == 201 and second["id"] == _next(first["id"]), second
        assert [data for _, data in _rows(path, "news")] == ["first", "second"]
        assert "the store cannot write" in daemon.log() and "the store writes again" in daemon.log()


@pytest_twisted.ensureDeferred
async def test_a_corrupt_database_file_is_refused_at_start_naming_it(tmp_path):
    config, public, api = write_config(tmp_path, store=DURABLE)
    (tmp_path / "n.db").write_bytes(b"this is no SQLite database, just bytes " * 200)
    daemon = Process(config, public, api)
    daemon.spawn()
    reason = await daemon.stopped(30)
    assert not clean_exit(reason)
    assert str(tmp_path / "n.db") in daemon.log() and "not a usable SQLite database" in daemon.log()


@pytest_twisted.ensureDeferred
async def test_the_offline_command_works_on_a_running_daemon_s_file(tmp_path):
    async with _spawned(tmp_path, {"news": {}}) as (daemon, auth):
        config = daemon.config
        going = [True]
        acked: list[tuple[str, str]] = []
        publishing = defer.Deferred.fromCoroutine(_publisher(daemon, auth, "news", "p", acked, going))
        out, err, code = await getProcessOutputAndValue(
            str(NOTIFIER), ["publisher", "add", "other", "--config", str(config)], env=dict(os.environ))
        assert code == 0, err
        out, err, code = await getProcessOutputAndValue(
            str(NOTIFIER), ["publisher", "list", "--config", str(config)], env=dict(os.environ))
        assert code == 0 and b"other" in out and b"site" in out, (out, err)
        going[0] = False
        await publishing
        assert acked
        body = await _history(daemon.public, "/sub/site/news", acked[0][0].rsplit("-", 1)[0] + "-0")
        assert len(acked) > 100
        assert [(m["id"], m["data"]) for m in body["messages"]] == acked[-100:]  # the default history


@pytest_twisted.ensureDeferred
async def test_a_journal_that_dies_is_started_again_and_nothing_is_lost(tmp_path):
    path = tmp_path / "n.db"
    async with _spawned(tmp_path, {"news": {}}) as (daemon, auth):
        status, first = await _publish(daemon, auth, b"first")
        assert status == 201
        journal = _journal_pid(daemon.transport.pid)
        os.kill(journal, 9)
        await until(lambda: "the journal ended" in daemon.log(), what="the daemon noticing")
        status, second = await _publish(daemon, auth, b"second")
        assert status == 201 and second["id"] == _next(first["id"]), second
        assert _journal_pid(daemon.transport.pid) != journal
        assert [data for _, data in _rows(path, "news")] == ["first", "second"]


@pytest_twisted.ensureDeferred
async def test_a_commit_the_daemon_never_heard_of_is_caught_up_not_numbered_over(tmp_path):
    """A message in the log the daemon was never told of (a journal that
    ended between its commit and its answer) is not given its id again:
    the publish numbered over it is refused, the hubs catch up from the
    file (its subscribers get it), and publishing goes on after it."""
    from notifier.backends.journal import Journal

    path = tmp_path / "n.db"
    async with _durable(path) as daemon:
        auth = await setup_site(daemon)
        first = await published(daemon, auth, "first")
        ws = await websocket(f"{daemon.ws}/sub/site/news?format=json", daemon.public_port)
        await opened(ws)
        epoch = first.rsplit("-", 1)[0]
        other = Journal(str(path), "normal")  # what the ended journal committed
        assert other.handle([("write", [("site", "news", epoch, 2, 1.0, "unanswered", 100)], None)])[0] == [("ok",)]
        other.close()
        status, body = await _publish_in(daemon, auth, b"numbered over it")
        expect_json_error(status, body, 503, "store_unavailable")
        caught_up = json.loads(await ws.next())
        assert (caught_up["id"], caught_up["data"]) == (_next(first), "unanswered")
        after = await published(daemon, auth, "after")
        assert after == _next(_next(first))
        assert [data for _, data in _rows(path, "news")] == ["first", "unanswered", "after"]
        ws.close()


async def _publish_in(daemon: Daemon, auth: tuple[str, str], text: bytes) -> tuple[int, Any]:
    return await call("POST", f"{daemon.api}/api/v1/centers/news/messages", raw=text, auth=auth, headers=TEXT)


@pytest_twisted.ensureDeferred
async def test_a_keyed_publish_whose_client_leaves_is_still_done_once_for_its_retries(tmp_path):
    """The first request of an Idempotency-Key gives up (its client times
    out) while the journal is held: the publish still completes, a retry
    that was waiting gets its id, and nothing is delivered twice."""
    import signal as signals

    import treq
    from twisted.web._newclient import ResponseNeverReceived

    path = tmp_path / "n.db"
    async with _spawned(tmp_path, {"news": {}}) as (daemon, auth):
        status, _ = await _publish(daemon, auth, b"before")  # the center's hub is live
        assert status == 201
        journal = _journal_pid(daemon.transport.pid)
        os.kill(journal, signals.SIGSTOP)
        headers = {**TEXT, "Idempotency-Key": "once", "Authorization": basic(*auth)}
        url = f"{daemon.api}/api/v1/centers/news/messages"
        try:
            with pytest.raises(ResponseNeverReceived):  # treq's timeout
                await treq.post(url, data=b"keyed", headers=headers, timeout=0.5, persistent=False)
            retry = defer.Deferred.fromCoroutine(call("POST", url, raw=b"keyed", auth=auth,
                                                      headers={**TEXT, "Idempotency-Key": "once"}))
        finally:
            os.kill(journal, signals.SIGCONT)
        status, first = await retry
        assert status == 200, first  # answered with the first request's id
        status, again = await _publish(daemon, auth, b"keyed")
        assert status == 201  # (no key: a new message)
        status, third = await call("POST", url, raw=b"keyed", auth=auth, headers={**TEXT, "Idempotency-Key": "once"})
        assert status == 200 and third["id"] == first["id"]
        assert [data for _, data in _rows(path, "news")] == ["before", "keyed", "keyed"]


@pytest_twisted.ensureDeferred
async def test_a_file_put_back_from_a_backup_begins_new_epochs_once_told(tmp_path):
    # A backup holds the ids given until it was made; the messages published
    # after it are lost with the file, and their ids would be given again to
    # others (browsers that saw them would skip those): `notifier store
    # restored` makes every center begin a new epoch instead.
    config, _, _ = write_config(tmp_path, store=DURABLE)
    path = tmp_path / "n.db"
    backup = tmp_path / "backup.db"
    async with _durable(path) as daemon:
        auth = await setup_site(daemon)
        kept = [await published(daemon, auth, f"kept {n}") for n in range(3)]
        with sqlite3.connect(path) as live, sqlite3.connect(backup) as copy:
            live.backup(copy)
        lost = [await published(daemon, auth, f"lost {n}") for n in range(2)]
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(backup, path)
    out, err, code = await getProcessOutputAndValue(
        str(NOTIFIER), ["store", "restored", "--config", str(config)], env=dict(os.environ))
    assert code == 0 and b"1 centers begin new epochs" in out, (out, err)
    async with _durable(path) as daemon:
        first = await published(daemon, auth, "after")
        assert first.rsplit("-", 1)[0] != kept[0].rsplit("-", 1)[0] and first.endswith("-1")
        assert first not in kept + lost
        for cursor in (kept[-1], lost[-1]):
            body = await _history(daemon.public, "/sub/site/news", cursor)
            assert body["recovered"] is False
            assert [m["id"] for m in body["messages"]] == [first]
    assert _rows(path, "news") == [(1, "after")]


@pytest.mark.parametrize("url", ["sqlite::memory:", "redis://127.0.0.1:1/0"])
def test_store_restored_is_for_a_sqlite_file(tmp_path, url):
    config = tmp_path / "notifier.toml"
    config.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    from notifier.cli import main
    with pytest.raises(SystemExit) as exit:
        main(["store", "restored", "--config", str(config)])
    assert exit.value.code == 2


@pytest_twisted.ensureDeferred
async def test_store_restored_refuses_a_file_a_daemon_has_open(tmp_path):
    config, _, _ = write_config(tmp_path, store=DURABLE)
    path = tmp_path / "n.db"

    async def restored() -> tuple[bytes, int]:
        out, err, code = await getProcessOutputAndValue(
            str(NOTIFIER), ["store", "restored", "--config", str(config)], env=dict(os.environ))
        return err, code

    async with _durable(path) as daemon:
        auth = await setup_site(daemon)
        first = await published(daemon, auth, "kept")
        err, code = await restored()
        assert code == 1 and b"is open" in err, err
        # Nothing was changed under the daemon.
        assert await published(daemon, auth, "after") == _next(first)
    err, code = await restored()
    assert code == 0, err


# the default: a sqlite:PATH store without a durable key


@contextlib.asynccontextmanager
async def _default(path: Path, **store: Any) -> AsyncIterator[Daemon]:
    """A daemon in this process on *path* with *store* and otherwise every
    default of ``[store]``: no ``durable`` key unless *store* has one."""
    daemon = await start_daemon(f"sqlite:{path}", **({"store": store} if store else {}))
    try:
        yield daemon
    finally:
        await daemon.service.stopService()


@pytest_twisted.ensureDeferred
async def test_by_default_a_file_keeps_history_and_ids_across_a_restart(tmp_path):
    path = tmp_path / "n.db"
    async with _default(path) as daemon:
        auth = await setup_site(daemon)
        before = [await published(daemon, auth, f"before {i}") for i in range(3)]
        status, stats = await daemon.admin("GET", "/admin/v1/stats")
        assert status == 200 and stats["store"] == "sqlite-durable", stats
    assert [data for _, data in _rows(path, "news")] == ["before 0", "before 1", "before 2"]
    async with _default(path) as daemon:
        body = await _history(daemon.public, "/sub/site/news", before[0])
        assert body["recovered"] is True
        assert [(m["id"], m["data"]) for m in body["messages"]] == [(before[1], "before 1"), (before[2], "before 2")]
        assert await published(daemon, auth, "after") == _next(before[-1])


def _made_before_durable_history(path: Path) -> None:
    """Take out of *path* what only durable history ever added to the
    schema, as in a file made before it existed."""
    with sqlite3.connect(path) as db:
        db.executescript("DROP TRIGGER center_removed; DROP TRIGGER publisher_removed;"
                         "DROP TABLE streams; DROP TABLE log; DROP TABLE idempotency;")


@pytest.mark.parametrize("older", [False, True], ids=["history-in-memory", "before-durable-history"])
@pytest_twisted.ensureDeferred
async def test_a_file_of_history_in_memory_becomes_durable_on_upgrade(tmp_path, older):
    # What a file without the durable key was run with before: history in memory.
    path = tmp_path / "n.db"
    async with _default(path, durable=False) as daemon:
        auth = await setup_site(daemon)
        await setup_site(daemon, center="quiet", publisher="other")
        forgotten = await published(daemon, auth, "in memory only")
        status, stats = await daemon.admin("GET", "/admin/v1/stats")
        assert stats["store"] == "sqlite", stats
    assert _rows(path, "news") == []
    if older:
        _made_before_durable_history(path)
    async with _default(path) as daemon:
        # Publishers, secrets and centers are as they were; the history kept
        # in memory is gone, as at any restart of that configuration.
        body = await _history(daemon.public, "/sub/site/news", forgotten)
        assert body["recovered"] is False and body["messages"] == []
        first = await published(daemon, auth, "kept")
        assert first.rsplit("-", 1)[0] != forgotten.rsplit("-", 1)[0]  # a new epoch: no id given twice
        status, body = await call("GET", f"{daemon.api}/api/v1/centers", auth=auth)
        assert status == 200 and [c["name"] for c in body["centers"]] == ["news"], body
    assert [data for _, data in _rows(path, "news")] == ["kept"]
    async with _default(path) as daemon:
        body = await _history(daemon.public, "/sub/site/news", first.rsplit("-", 1)[0] + "-0")
        assert body["recovered"] is True and [m["data"] for m in body["messages"]] == ["kept"]
