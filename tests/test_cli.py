"""The ``notifier`` command, run as a real process against a temporary configuration."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from notifier.config import load_config
from tests.process import Process, clean_exit, command, write_config
from tests.support import call, event_source, free_port, sleep, websocket

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
NOTIFIER = BIN / "notifier"
SECRET = re.compile(r"[A-Za-z0-9_-]{43,}\Z")
#: What ``publisher add`` prints after "NAME SECRET": the publisher's Pusher app.
PUSHER_APP = re.compile(r"app_id=([0-9]{1,20}) key=([a-z0-9]{20})\Z")

#: Creates centers for a publisher in the store of a configuration, through the centers.
MAKE_CENTERS = """
import sys
from twisted.internet import defer, task
from notifier.backends.configured import open_backend
from notifier.config import load_config
from notifier.domain.centers import Centers
from notifier.domain.stats import Stats
from notifier.end_of_turn import EndOfTurn

async def run(reactor, path, publisher, names):
    config = load_config(path)
    store, broker = open_backend(config.store, reactor)
    await store.open()
    try:
        centers = Centers(store, broker, config.centers, reactor, Stats(started=reactor.seconds()), EndOfTurn(reactor))
        for name in names:
            await centers.create_center(publisher, name)
    finally:
        await store.close()

task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, sys.argv[1], sys.argv[2], sys.argv[3:])))
"""

#: Deletes centers of a publisher from the store of a configuration, through the centers.
DELETE_CENTERS = MAKE_CENTERS.replace("centers.create_center", "centers.delete_center")

#: How soon a running daemon acts on a change made with the offline command (docs/operating.rst: The command line).
PROMISED_SECONDS = 2.0


def notifier(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(NOTIFIER), *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result


@pytest.fixture
def setup(tmp_path):
    """A configuration whose SQLite store is in a temporary folder; (folder, config path)."""
    config = tmp_path / "notifier.toml"
    config.write_text(
        "[api]\n"
        'admin_token = "token-for-tests"\n'
        "[store]\n"
        f'url = "sqlite:{tmp_path / "state.db"}"\n',
        encoding="utf-8",
    )
    return tmp_path, str(config)


def publisher(verb: str, *args: str, setup) -> subprocess.CompletedProcess[str]:
    folder, config = setup
    return notifier("publisher", verb, *args, "--config", config, cwd=folder)


def added(name: str, setup) -> str:
    return added_app(name, setup)[0]


def added_app(name: str, setup) -> tuple[str, str, str]:
    """The secret, app id and key printed by ``publisher add``."""
    result = publisher("add", name, setup=setup)
    assert result.returncode == 0, result.stderr
    line, app = result.stdout.splitlines()
    shown, secret = line.split(" ")
    assert shown == name
    assert SECRET.match(secret), secret
    pusher = PUSHER_APP.match(app)
    assert pusher is not None, app
    return secret, pusher[1], pusher[2]


def listed(setup) -> dict[str, int]:
    """Each listed publisher's name and its number of centers."""
    result = publisher("list", setup=setup)
    assert result.returncode == 0, result.stderr
    found = {}
    for line in result.stdout.splitlines():
        if not line.strip():
            continue
        name = line.split()[0]
        count = re.search(r"\bcenters\D{0,3}(\d+)", line)
        assert count is not None, line
        found[name] = int(count.group(1))
    return found


def test_add_prints_the_name_and_a_secret_once(setup):
    secret = added("drupal-site", setup)
    other = added("blog_2", setup)
    assert secret != other
    folder, _ = setup
    assert stat.S_IMODE(os.stat(folder / "state.db").st_mode) == 0o600
    assert not (folder / "notifier.db").exists()  # the configured store, not a default one


def test_list_shows_names_and_center_counts_and_never_a_secret(setup):
    first = added("alpha", setup)
    second = added("beta", setup)
    folder, config = setup
    made = subprocess.run([sys.executable, "-c", MAKE_CENTERS, config, "alpha", "news", "chat", "c.3"],
                          cwd=folder, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert listed(setup) == {"alpha": 3, "beta": 0}
    result = publisher("list", setup=setup)
    assert first not in result.stdout and second not in result.stdout
    assert first not in result.stderr and second not in result.stderr
    assert not re.search(r"[A-Za-z0-9_-]{43,}", result.stdout)


def test_list_of_an_empty_store(setup):
    assert listed(setup) == {}


def test_add_show_and_list_print_the_pusher_app_and_rotate_keeps_it(setup):
    secret, app_id, key = added_app("site", setup)
    other_secret, other_app_id, other_key = added_app("other", setup)
    assert int(other_app_id) > int(app_id) and other_key != key
    expected = f"site\tcenters=0\tcreated=\\d+\tapp_id={app_id}\tkey={key}\tclient_events=false \\(default\\)"
    shown = publisher("show", "site", setup=setup)
    assert shown.returncode == 0, shown.stderr
    assert re.fullmatch(expected + "\n", shown.stdout), shown.stdout
    assert secret not in shown.stdout
    result = publisher("list", setup=setup)
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["other", "site"]
    assert re.fullmatch(expected, lines[1]), lines
    assert f"app_id={other_app_id}\tkey={other_key}" in lines[0]
    assert secret not in result.stdout and other_secret not in result.stdout
    assert publisher("rotate", "site", setup=setup).returncode == 0
    assert publisher("show", "site", setup=setup).stdout == shown.stdout
    unknown = publisher("show", "nobody", setup=setup)
    assert unknown.returncode == 1 and "nobody" in unknown.stderr and unknown.stdout == ""


def test_rotate_prints_a_different_secret(setup):
    old = added("site", setup)
    result = publisher("rotate", "site", setup=setup)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    name, new = line.split(" ")
    assert name == "site"
    assert SECRET.match(new)
    assert new != old
    again = publisher("rotate", "site", setup=setup)
    assert again.stdout.split()[1] not in (old, new)


def test_remove_then_list_no_longer_shows_it(setup):
    added("keep", setup)
    added("gone", setup)
    assert set(listed(setup)) == {"keep", "gone"}
    result = publisher("remove", "gone", setup=setup)
    assert result.returncode == 0, result.stderr
    assert listed(setup) == {"keep": 0}
    # The name is free again, with a new secret.
    added("gone", setup)


def test_adding_twice_is_refused(setup):
    secret = added("site", setup)
    result = publisher("add", "site", setup=setup)
    assert result.returncode == 1
    assert "site" in result.stderr
    assert "exist" in result.stderr.lower()
    assert result.stdout == ""
    assert secret not in result.stderr
    assert listed(setup) == {"site": 0}


@pytest.mark.parametrize("name", ["Site", "_site", "a b", "x" * 65, "é", "site/x"])
def test_a_bad_name_is_refused(setup, name):
    result = publisher("add", name, setup=setup)
    assert result.returncode == 1
    assert "name" in result.stderr.lower()
    assert result.stdout == ""
    assert listed(setup) == {}


@pytest.mark.parametrize("verb", ["remove", "rotate", "show"])
def test_an_unknown_publisher_is_refused(setup, verb):
    added("other", setup)
    result = publisher(verb, "nobody", setup=setup)
    assert result.returncode == 1
    assert "nobody" in result.stderr
    assert result.stdout == ""
    assert listed(setup) == {"other": 0}


@pytest.mark.parametrize("verb", [("list",), ("add", "site"), ("rotate", "site"), ("remove", "site")])
def test_a_missing_config_file_exits_2(tmp_path, verb):
    missing = tmp_path / "absent.toml"
    result = notifier("publisher", *verb, "--config", str(missing), cwd=tmp_path)
    assert result.returncode == 2
    assert "absent.toml" in result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no store was made anywhere


def test_a_bad_config_file_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[centers]\nhistory = -3\n", encoding="utf-8")
    result = notifier("publisher", "list", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "centers.history" in result.stderr


def test_config_init_writes_a_private_file_that_loads(tmp_path):
    path = tmp_path / "etc" / "notifier.toml"
    result = notifier("config", "init", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    config = load_config(str(path))
    assert len(config.api.admin_token) >= 32
    assert config.store.url.startswith("sqlite:")
    assert config.store.url != "sqlite::memory:"
    # Two files, two tokens.
    other = tmp_path / "other.toml"
    assert notifier("config", "init", str(other), cwd=tmp_path).returncode == 0
    assert load_config(str(other)).api.admin_token != config.api.admin_token


def test_config_init_refuses_to_overwrite(tmp_path):
    path = tmp_path / "notifier.toml"
    path.write_text("# mine\n", encoding="utf-8")
    result = notifier("config", "init", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "notifier.toml" in result.stderr
    assert path.read_text(encoding="utf-8") == "# mine\n"


def test_config_init_then_publisher_add_uses_that_store(tmp_path):
    path = tmp_path / "notifier.toml"
    assert notifier("config", "init", str(path), cwd=tmp_path).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = notifier("publisher", "add", "site", "--config", str(path), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    store = Path(load_config(str(path)).store.url.removeprefix("sqlite:"))
    assert store.exists()
    assert list(elsewhere.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_a_daemon_on_the_configuration_of_config_init_keeps_history_across_a_restart(tmp_path):
    # make run's configuration: `notifier config init run/notifier.toml`.
    path = tmp_path / "run" / "notifier.toml"
    assert notifier("config", "init", str(path), cwd=tmp_path).returncode == 0
    written = path.read_text(encoding="utf-8")
    assert re.search(r"^durable = true\b", written, re.M), written
    # Only its ports are changed, to free ones.
    public, api = free_port(), free_port()
    while api == public:
        api = free_port()
    moved = written.replace('"tcp:8080"', f'"tcp:{public}:interface=127.0.0.1"') \
                   .replace('"tcp:8081:interface=127.0.0.1"', f'"tcp:{api}:interface=127.0.0.1"')
    assert moved.count(f":{public}:") == 1 and moved.count(f":{api}:") == 1, moved
    path.write_text(moved, encoding="utf-8")
    token = load_config(str(path)).api.admin_token
    daemon = Process(path, public, api)
    try:
        await daemon.start()
        status, body = await call("POST", f"{daemon.api}/admin/v1/publishers", {"name": "demo"}, admin=token)
        assert status == 201, body
        auth = ("demo", body["secret"])
        status, body = await call("PUT", f"{daemon.api}/api/v1/centers/news", auth=auth)
        assert status == 201, body
        ids = []
        for text in ("one", "two"):
            status, body = await call("POST", f"{daemon.api}/api/v1/centers/news/messages", raw=text.encode(),
                                      auth=auth, headers={"Content-Type": "text/plain"})
            assert status == 201, body
            ids.append(body["id"])
        daemon.terminate()
        assert clean_exit(await daemon.stopped(30)), daemon.log()
        await daemon.start()
        status, body = await call("GET", f"{daemon.public}/sub/demo/news?since={ids[0]}&timeout=0")
        assert status == 200, body
        assert body["recovered"] is True
        assert [(m["id"], m["data"]) for m in body["messages"]] == [(ids[1], "two")]
        daemon.terminate()
        assert clean_exit(await daemon.stopped(30)), daemon.log()
    finally:
        await daemon.kill()


def test_config_howto_prints_curl_lines_with_the_ports(tmp_path):
    path = tmp_path / "notifier.toml"
    path.write_text(
        "[public]\n"
        'endpoint = "tcp:18080"\n'
        "[api]\n"
        'endpoint = "tcp:18081:interface=127.0.0.1"\n'
        'admin_token = "the-admin-token"\n'
        "[store]\n"
        f'url = "sqlite:{tmp_path / "state.db"}"\n',
        encoding="utf-8",
    )
    result = notifier("config", "howto", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    curls = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("curl")]
    assert len(curls) >= 3
    assert any("http://127.0.0.1:18081/admin/v1/publishers" in line and "the-admin-token" in line
               for line in curls)
    assert any("http://127.0.0.1:18081/api/v1/centers/" in line for line in curls)
    assert any(":18080/sub/" in line for line in curls)
    for line in curls:
        urls = re.findall(r"https?://[^\s'\"]+", line)
        assert urls, line
        for url in urls:
            port = re.match(r"https?://[^/:]+:(\d+)/", url)
            assert port is not None, url
            expected = "18080" if "/sub/" in url else "18081"
            assert port.group(1) == expected, url
    assert "http://127.0.0.1:18081/console/" in result.stdout  # the console, on the api listener
    assert not (tmp_path / "state.db").exists()  # howto does not touch the store


def test_config_howto_with_a_missing_file_exits_2(tmp_path):
    result = notifier("config", "howto", "--config", str(tmp_path / "absent.toml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "absent.toml" in result.stderr


# the offline command against a running daemon


async def _closed(what, since: float):
    """What *what* (a Deferred) fires with, within PROMISED_SECONDS of *since*."""
    what.addTimeout(max(since + PROMISED_SECONDS - reactor.seconds(), 0.1), reactor)
    return await what


@pytest_twisted.ensureDeferred
async def test_a_publisher_removed_or_rotated_offline_is_closed_on_a_running_daemon(tmp_path):
    config, public, api = write_config(tmp_path)
    daemon = Process(config, public, api)
    try:
        await daemon.start()
        secrets = {}
        for name in ("site", "gone"):
            code, out, err = await command("publisher", "add", name, "--config", str(config), cwd=tmp_path)
            assert code == 0, err
            secrets[name] = out.split()[1]
        site, gone = ("site", secrets["site"]), ("gone", secrets["gone"])
        for auth, center, options in ((site, "news", None), (site, "private", {"private": True}),
                                      (site, "kept", None), (gone, "news", None)):
            status, body = await call("PUT", f"{daemon.api}/api/v1/centers/{center}", options, auth=auth)
            assert status == 201, body
        token = jwt.encode({"sub": "private", "exp": int(time.time()) + 600}, site[1].encode(), algorithm="HS256")
        private = await websocket(f"{daemon.ws}/sub/site/private?token={token}", public)
        news = await websocket(f"{daemon.ws}/sub/site/news", public)
        kept = await websocket(f"{daemon.ws}/sub/site/kept", public)
        removed = await websocket(f"{daemon.ws}/sub/gone/news", public)
        stream = await event_source(public, "/sub/gone/news")
        assert stream.status == 200
        poll = treq.get(f"{daemon.public}/sub/gone/news?timeout=60", persistent=False)
        for _ in range(50):  # the long-poll is attached once the daemon has read it
            status, body = await call("GET", f"{daemon.api}/api/v1/centers/news", auth=gone)
            if body["subscribers"] == 3:
                break
            await sleep(0.05)
        assert body["subscribers"] == 3, body

        # Rotated: the private center's subscriber is told its token is void;
        # the public ones stay.
        code, out, err = await command("publisher", "rotate", "site", "--config", str(config), cwd=tmp_path)
        assert code == 0, err
        code, _ = await _closed(private.closed, reactor.seconds())
        assert code == 4401
        auth = ("site", out.split()[1])
        status, body = await call("POST", f"{daemon.api}/api/v1/centers/news/messages", raw=b"still here",
                                  auth=auth, headers={"Content-Type": "text/plain"})
        assert status == 201, body
        assert await news.next() == "still here"
        assert not news.closed.called and not kept.closed.called

        # Removed: every subscriber of its centers is let go, and no new one
        # is taken, on any transport.
        code, _, err = await command("publisher", "remove", "gone", "--config", str(config), cwd=tmp_path)
        assert code == 0, err
        since = reactor.seconds()
        code, _ = await _closed(removed.closed, since)
        assert code == 1001
        await _closed(stream.ended, since)
        response = await _closed(poll, since)
        assert response.code == 404
        assert (await response.json())["error"] == "center_deleted"
        status, body = await call("GET", f"{daemon.public}/sub/gone/news?timeout=0")
        assert status == 404, body

        # A center deleted offline is closed too; the others are not.
        deleted = getProcessOutputAndValue(sys.executable, ["-c", DELETE_CENTERS, str(config), "site", "news"],
                                           env=dict(os.environ), path=str(tmp_path))
        out, err, code = await deleted.addTimeout(60, reactor)
        assert code == 0, err.decode()
        code, _ = await _closed(news.closed, reactor.seconds())
        assert code == 1001
        status, body = await call("GET", f"{daemon.public}/sub/site/news?timeout=0")
        assert status == 404, body
        assert not kept.closed.called
        status, body = await call("POST", f"{daemon.api}/api/v1/centers/kept/messages", raw=b"kept",
                                  auth=auth, headers={"Content-Type": "text/plain"})
        assert status == 201, body
        assert await kept.next() == "kept"
        assert "Traceback" not in daemon.log()
    finally:
        await daemon.kill()
