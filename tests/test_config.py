"""The TOML configuration: the documented defaults, every key, and every refusal naming its key."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from notifier.backends.configured import open_backend
from notifier.backends.durable import DurableBroker
from notifier.backends.local import LocalBroker
from notifier.config import Config, ConfigError, load_config, parse_config
from notifier.service import store_kind

REPO = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"

#: The documented defaults (docs/protocol.rst: Configuration): every key with its default.
SPEC_DEFAULTS = """
[public]
endpoint = "tcp:8080"                      # Twisted endpoint description
backlog = 1024                             # listen(2) backlog
allowed_origins = ["*"]                    # WebSocket Origin check and CORS
header_timeout = 10                        # seconds for a request head, from its first byte
max_connections_per_ip = 0                 # connections at once from one address; 0 unlimited

[api]
endpoint = "tcp:8081:interface=127.0.0.1"
backlog = 1024
admin_token = ""                           # empty: admin API refused (401)
header_timeout = 10

[store]
url = "sqlite:notifier.db"                 # or "sqlite::memory:", "redis://host:port/db", "redis+sentinel://…"
durable = true                             # sqlite:PATH keeps history and ids across restarts
synchronous = "normal"                     # for that history: "normal" or "full"
replicas_ack = 0                           # Redis replicas that must hold a publish before it is acknowledged
replicas_timeout_ms = 500                  # how long they have, else 503

[centers]
history = 100                              # retained messages per center
max_message_bytes = 65536
auto_create = false
idle_ttl = 0                               # seconds; 0 = centers never expire
auto_create_private = []                   # auto-created centers matching these are private
max_per_publisher = 10000                  # 0 = unlimited
max_retained_bytes = 16777216              # retained bytes per center on a node
max_retained_bytes_per_publisher = 268435456  # and of all of a publisher's centers

[subscribers]
longpoll_timeout = 30
ping_interval = 25                         # WebSocket pings, SSE heartbeats
drain_seconds = 2                          # spread of closes on shutdown
max_per_center = 0                         # 0 = unlimited
send_buffer_bytes = 1048576                # per connection; past it, drop (4408)

[presence]
leave_grace = 5                            # seconds a member may be gone before it has left

[webhooks]
batch_seconds = 1                          # events gathered into one request
timeout = 5                                # seconds a site has to answer
retry_for = 600                            # seconds a request is retried, then given up
max_queue = 10000                          # events waiting per publisher; more drop the oldest
allow_private = true                       # loopback, private, link-local addresses allowed

[pusher]
enabled = true                             # the /app/ and /apps/ routes
client_events = false                      # every app's default
max_batch = 10                             # events in one batch_events request
max_event_name = 200                       # characters
max_event_bytes = 10240                    # bytes of an event's data
activity_timeout = 120                     # seconds, told to clients
client_event_rate = 10                     # client events per second per connection
"""

#: A value for every key, each different from its default and valid.
VALID: dict[str, dict[str, Any]] = {
    "public": {"endpoint": "tcp:9090:interface=127.0.0.1", "backlog": 4096,
               "allowed_origins": ["https://example.org", "http://localhost:3000"], "header_timeout": 2.5,
               "max_connections_per_ip": 20},
    "api": {"endpoint": "unix:/tmp/notifier-api.sock", "backlog": 64, "admin_token": "s3cret-token",
            "header_timeout": 30},
    "store": {"url": "sqlite::memory:", "durable": False, "synchronous": "full", "replicas_ack": 1,
              "replicas_timeout_ms": 2000},
    "centers": {"history": 7, "max_message_bytes": 1024, "auto_create": True, "idle_ttl": 3600,
                "auto_create_private": ["user.*", "exact"], "max_per_publisher": 5,
                "max_retained_bytes": 1 << 20, "max_retained_bytes_per_publisher": 1 << 30},
    "subscribers": {"longpoll_timeout": 120, "ping_interval": 0.5, "drain_seconds": 0.25,
                    "max_per_center": 10, "send_buffer_bytes": 4096},
    "presence": {"leave_grace": 0.5},
    "webhooks": {"batch_seconds": 0.25, "timeout": 2, "retry_for": 30, "max_queue": 100,
                 "allow_private": False},
    "pusher": {"enabled": False, "client_events": True, "max_batch": 20, "max_event_name": 100,
               "max_event_bytes": 2048, "activity_timeout": 30, "client_event_rate": 5},
}


def _string(text: str) -> str:
    """A TOML basic string: JSON's escapes, plus DEL, which TOML also wants escaped."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    """*value* as TOML text (JSON's strings, numbers, booleans and arrays are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(k)} = {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return _string(value)


def toml(document: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, table in document.items():
        lines.append(f"[{_string(section)}]")
        lines.extend(f"{_string(key)} = {_value(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n"


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return str(caught.value)


# defaults and valid values


def test_defaults_are_the_table_of_the_spec():
    spec = tomllib.loads(SPEC_DEFAULTS)
    config = Config()
    for section, table in spec.items():
        values = getattr(config, section)
        assert {f.name for f in attrs.fields(type(values))} == set(table), section
        for key, default in table.items():
            got = getattr(values, key)
            assert (list(got) if isinstance(got, tuple) else got) == default, f"{section}.{key}"
    assert {f.name for f in attrs.fields(Config)} == set(spec)
    assert parse_config("") == config
    assert parse_config(SPEC_DEFAULTS) == config
    assert load_config(None) == config


def test_every_section_and_key_is_accepted_with_a_valid_value():
    assert set(VALID) == {f.name for f in attrs.fields(Config)}
    for section, table in VALID.items():
        assert set(table) == {f.name for f in attrs.fields(type(getattr(Config(), section)))}, section
    config = parse_config(toml(VALID))
    for section, table in VALID.items():
        for key, value in table.items():
            got = getattr(getattr(config, section), key)
            assert got == (tuple(value) if isinstance(value, list) else value), f"{section}.{key}"
            assert got != getattr(getattr(Config(), section), key), f"{section}.{key} is its default"


@pytest.mark.parametrize("section, key", [(s, k) for s, t in VALID.items() for k in t])
def test_each_key_alone_changes_only_itself(section, key):
    config = parse_config(toml({section: {key: VALID[section][key]}}))
    expected = VALID[section][key]
    expected = tuple(expected) if isinstance(expected, list) else expected
    assert getattr(getattr(config, section), key) == expected
    assert attrs.evolve(config, **{section: getattr(Config(), section)}) == Config()


@pytest.mark.parametrize("text, section, key, value", [
    ('[subscribers]\nping_interval = 3', "subscribers", "ping_interval", 3),
    ('[subscribers]\ndrain_seconds = 0', "subscribers", "drain_seconds", 0),
    ('[subscribers]\nlongpoll_timeout = 0', "subscribers", "longpoll_timeout", 0),
    ('[centers]\nhistory = 0', "centers", "history", 0),
    ('[centers]\nmax_message_bytes = 1', "centers", "max_message_bytes", 1),
    ('[public]\nallowed_origins = []', "public", "allowed_origins", ()),
    ('[public]\nendpoint = "tcp:0"', "public", "endpoint", "tcp:0"),
    ('[store]\nurl = "sqlite:/var/lib/notifier/n.db"', "store", "url", "sqlite:/var/lib/notifier/n.db"),
    ('[store]\nurl = "redis+sentinel://s1,s2:26380,[::1]:1/main/2"', "store", "url",
     "redis+sentinel://s1,s2:26380,[::1]:1/main/2"),
    ('[store]\nreplicas_ack = 0', "store", "replicas_ack", 0),
    ('[store]\nreplicas_timeout_ms = 1', "store", "replicas_timeout_ms", 1),
])
def test_edge_values_are_accepted(text, section, key, value):
    assert getattr(getattr(parse_config(text), section), key) == value


class _Reactor(Clock):
    """Enough of a reactor for the store's pool, which is never started here."""

    def callWhenRunning(self, call: Any, *args: Any) -> None:
        pass


def test_a_sqlite_file_keeps_its_history_unless_told_not_to():
    assert parse_config("").store.durable is True
    for text in ("", '[store]\nurl = "sqlite:/var/lib/notifier/n.db"\n'):
        store = parse_config(text).store
        assert store_kind(store) == "sqlite-durable"
        assert isinstance(open_backend(store, _Reactor())[1], DurableBroker)
    store = parse_config('[store]\nurl = "sqlite:n.db"\ndurable = false\n').store
    assert store_kind(store) == "sqlite"
    assert type(open_backend(store, _Reactor())[1]) is LocalBroker


def test_sqlite_memory_keeps_history_in_memory_and_refuses_to_be_made_durable():
    for text in ('[store]\nurl = "sqlite::memory:"\n', '[store]\nurl = "sqlite::memory:"\ndurable = false\n'):
        store = parse_config(text).store
        assert store_kind(store) == "sqlite"
        assert type(open_backend(store, _Reactor())[1]) is LocalBroker
    message = refused('[store]\nurl = "sqlite::memory:"\ndurable = true\n')
    assert "store.durable" in message and "sqlite::memory:" in message


@pytest.mark.parametrize("durable", ["", "durable = true\n", "durable = false\n"])
def test_durable_changes_nothing_with_redis(durable):
    for url in ("redis://127.0.0.1:6379/0", "redis+sentinel://s1,s2/main/0"):
        store = parse_config(f'[store]\nurl = "{url}"\n{durable}').store
        assert store_kind(store) == "redis"


def test_the_configuration_is_frozen():
    config = parse_config(toml(VALID))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.centers.history = 1  # type: ignore[misc]
    assert isinstance(config.public.allowed_origins, tuple)


# refusals name the key


@pytest.mark.parametrize("text, names", [
    ("[bogus]\nx = 1\n", ["bogus"]),
    ("bogus = 1\n", ["bogus"]),
    ("[centers]\nhistroy = 5\n", ["centers.histroy"]),
    ("[public]\nendpoint = \"tcp:8080\"\nport = 8080\n", ["public.port"]),
    ("[store]\npath = \"x.db\"\n", ["store.path"]),
])
def test_unknown_sections_and_keys_are_refused(text, names):
    message = refused(text)
    for name in names:
        assert name in message


@pytest.mark.parametrize("section, key, value", [
    ("centers", "history", "100"),            # a string for an int
    ("centers", "history", True),             # a bool for an int
    ("centers", "history", 1.5),              # a float for an int
    ("centers", "history", 10.0),             # even a whole float
    ("centers", "max_message_bytes", "64k"),
    ("centers", "idle_ttl", False),
    ("centers", "auto_create", 1),            # an int for a bool
    ("centers", "auto_create", "true"),
    ("subscribers", "longpoll_timeout", 1.5),
    ("subscribers", "ping_interval", "25"),
    ("subscribers", "ping_interval", True),
    ("subscribers", "drain_seconds", False),
    ("subscribers", "max_per_center", "0"),
    ("subscribers", "send_buffer_bytes", 1e6),
    ("public", "endpoint", 8080),
    ("public", "allowed_origins", "*"),       # a string for a list
    ("public", "allowed_origins", [1]),       # a list element not a string
    ("public", "allowed_origins", ["*", True]),
    ("public", "allowed_origins", [["*"]]),
    ("public", "allowed_origins", [""]),
    ("api", "admin_token", 123),
    ("api", "endpoint", ["tcp:8081"]),
    ("store", "url", 1),
    ("store", "synchronous", 2),
    ("store", "durable", "yes"),
    ("webhooks", "allow_private", "false"),   # a string for a bool
    ("webhooks", "allow_private", 0),
    ("centers", "history", {"a": 1}),
])
def test_wrong_types_are_refused_naming_the_key(section, key, value):
    message = refused(toml({section: {key: value}}))
    assert f"{section}.{key}" in message


@pytest.mark.parametrize("section, key, value", [
    ("centers", "history", -1),
    ("centers", "history", 10**9),
    ("centers", "max_message_bytes", 0),
    ("centers", "max_message_bytes", -5),
    ("centers", "idle_ttl", -1),
    ("subscribers", "longpoll_timeout", -1),
    ("subscribers", "longpoll_timeout", 121),
    ("subscribers", "ping_interval", 0),
    ("subscribers", "ping_interval", -1.0),
    ("subscribers", "ping_interval", float("nan")),
    ("subscribers", "drain_seconds", -0.5),
    ("subscribers", "drain_seconds", float("nan")),
    ("subscribers", "drain_seconds", float("inf")),
    ("subscribers", "max_per_center", -1),
    ("subscribers", "send_buffer_bytes", 0),
    ("store", "synchronous", "off"),
    ("store", "synchronous", "NORMAL"),
    ("store", "replicas_ack", -1),
    ("store", "replicas_timeout_ms", 0),
    ("store", "replicas_timeout_ms", -500),
])
def test_out_of_range_values_are_refused_naming_the_key(section, key, value):
    message = refused(toml({section: {key: value}}))
    assert f"{section}.{key}" in message


@pytest.mark.parametrize("section", ["public", "api"])
@pytest.mark.parametrize("endpoint", ["bogus:1", "tcp:notaport", "", "tcp:8080:backlog=many"])
def test_unparseable_endpoints_are_refused_naming_the_key(section, endpoint):
    message = refused(toml({section: {"endpoint": endpoint}}))
    assert f"{section}.endpoint" in message


@pytest.mark.parametrize("url", ["sqlite:", "mysql://localhost/notifier", "notifier.db", "",
                                 "redis+sentinel://", "redis+sentinel://s1:26379", "redis+sentinel://s1:26379/",
                                 "redis+sentinel://s1:99999/main", "redis+sentinel://s1,,s2/main",
                                 "redis+sentinel://s1/main/zero", "redis+sentinel://s1/ma in",
                                 "redis+sentinel://user:pw@s1/main", "redis+sentinel:s1/main"])
def test_bad_store_urls_are_refused_naming_the_key(url):
    message = refused(toml({"store": {"url": url}}))
    assert "store.url" in message


@pytest.mark.parametrize("section", ["public", "api", "store", "centers", "subscribers"])
def test_a_section_that_is_not_a_table_is_refused(section):
    assert section in refused(f"{section} = 1\n")


@pytest.mark.parametrize("text", [
    "[centers\nhistory = 1\n",
    "[centers]\nhistory = \n",
    "[centers]\nhistory = 1\nhistory = 2\n",
    "just some words\n",
    '[public]\nendpoint = "tcp:8080\n',
])
def test_invalid_toml_is_refused(text):
    assert "TOML" in refused(text)


def test_load_config_reads_a_file(tmp_path):
    path = tmp_path / "notifier.toml"
    path.write_text(toml(VALID), encoding="utf-8")
    assert load_config(str(path)) == parse_config(toml(VALID))


def test_load_config_refuses_a_file_with_a_bad_key_naming_the_key(tmp_path):
    path = tmp_path / "notifier.toml"
    path.write_text("[centers]\nhistory = \"lots\"\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"centers\.history"):
        load_config(str(path))


def test_unreadable_files_are_refused_naming_the_file(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(missing))
    assert str(missing) in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path))  # a folder
    assert str(tmp_path) in str(caught.value)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[centers]\nhistory = 1 # \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(binary))
    assert str(binary) in str(caught.value)


def test_the_example_configuration_of_the_repository_loads():
    example = REPO / "etc" / "notifier.toml"
    config = load_config(str(example))
    assert isinstance(config, Config)


# properties

_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3),
    ),
    max_leaves=8,
)
_SECTIONS = {f.name: {k.name for k in attrs.fields(type(f.default))} for f in attrs.fields(Config)}
_keys = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def _unknown_documents(draw):
    """A TOML document holding at least one unknown section or key, among arbitrary values."""
    document: dict[str, dict[str, Any]] = {}
    section = draw(st.sampled_from(sorted(_SECTIONS)) | _keys)
    key = draw(_keys.filter(lambda k: k not in _SECTIONS.get(section, ())))
    document[section] = {key: draw(_values)}
    return document, section, key


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_unknown_documents())
def test_unknown_keys_with_arbitrary_values_only_ever_raise_config_error(case):
    document, section, key = case
    text = toml(document)
    tomllib.loads(text)  # the generator writes valid TOML
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    named = f"{section}.{key}" if section in _SECTIONS else section
    assert named in str(caught.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([(s, k) for s, keys in _SECTIONS.items() for k in sorted(keys)]), _values)
def test_known_keys_with_arbitrary_values_give_a_config_or_config_error(where, value):
    section, key = where
    text = toml({section: {key: value}})
    try:
        config = parse_config(text)
    except ConfigError as e:
        assert f"{section}.{key}" in str(e)
    else:
        got = getattr(getattr(config, section), key)
        assert got == (tuple(value) if isinstance(value, list) else value)


# the real command


def _twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([str(TWISTD), "-n", "--pidfile=", "notifier", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("text, name", [
    ('[centers]\nhistory = "many"\n', "centers.history"),
    ('[subscribers]\ndrain_secs = 1\n', "subscribers.drain_secs"),
    ('[public]\nendpoint = "bogus:1"\n', "public.endpoint"),
    ('[nonsense]\n', "nonsense"),
])
@pytest.mark.integration
def test_twistd_refuses_a_bad_configuration_naming_the_key(tmp_path, text, name):
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    result = _twistd("--config", str(bad), cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert name in output
    assert "Traceback" not in output
    assert not (tmp_path / "notifier.db").exists()  # refused before opening anything


@pytest.mark.integration
def test_twistd_refuses_a_missing_configuration_file(tmp_path):
    result = _twistd("--config", str(tmp_path / "absent.toml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "absent.toml" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
