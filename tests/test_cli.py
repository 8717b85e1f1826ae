"""The ``notifier`` command, run as a real process against a temporary configuration."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.config import load_config

BIN = Path(sys.executable).parent
NOTIFIER = BIN / "notifier"
SECRET = re.compile(r"[A-Za-z0-9_-]{43,}\Z")

#: Creates centers for a publisher in the store of a configuration, through the registry.
MAKE_CENTERS = """
import sys
from twisted.internet import defer, task
from notifier.broker import LocalBroker
from notifier.config import load_config
from notifier.registry import HubRegistry
from notifier.store import open_store

async def run(reactor, path, publisher, names):
    config = load_config(path)
    store = open_store(config.store.url, reactor)
    await store.open()
    try:
        registry = HubRegistry(store, LocalBroker(), config.centers, reactor)
        for name in names:
            await registry.create_center(publisher, name)
    finally:
        await store.close()

task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, sys.argv[1], sys.argv[2], sys.argv[3:])))
"""


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
    result = publisher("add", name, setup=setup)
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    shown, secret = line.split(" ")
    assert shown == name
    assert SECRET.match(secret), secret
    return secret


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


@pytest.mark.parametrize("verb", ["remove", "rotate"])
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
    assert not (tmp_path / "state.db").exists()  # howto does not touch the store


def test_config_howto_with_a_missing_file_exits_2(tmp_path):
    result = notifier("config", "howto", "--config", str(tmp_path / "absent.toml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "absent.toml" in result.stderr
