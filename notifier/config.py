"""The TOML configuration (docs/protocol.rst: Configuration), turned into one frozen, typed object.

Every key is optional; an unknown section or key, a value of the wrong type or
out of range, or an endpoint Twisted cannot parse refuses to start with a
message naming the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from typing import Any

from attrs import field, fields, frozen
from twisted.internet import endpoints

from notifier.domain.names import CENTER_NAME


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


def _endpoint(key: str, value: str) -> None:
    if value.startswith("systemd:"):
        # Its sockets exist only under socket activation: check the words only.
        args = dict(part.partition("=")[::2] for part in value.split(":")[1:])
        if set(args) != {"domain", "index"} or not args["index"].isdigit():
            raise ConfigError(f"{key}: expected 'systemd:domain=INET|INET6|UNIX:index=N', got {value!r}")
        return
    try:
        # The reactor is only stored by the endpoint constructors, never
        # used, so this parses without listening.
        endpoints.serverFromString(_NO_REACTOR, value)
    except Exception as e:
        raise ConfigError(f"{key}: cannot parse endpoint {value!r}: {e}") from None


class _NoReactor:
    """Stands in for the reactor while an endpoint description is parsed."""


_NO_REACTOR: Any = _NoReactor()


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,29}:")


def _url_named(url: str) -> str:
    """What an error may say of a store URL: its scheme and hosts only,
    never the rest, where a password may be (also one that broke it)."""
    from notifier.backends.redis.addresses import hosts_of

    scheme = _SCHEME.match(url)
    if scheme is None:
        return "a value without a scheme"
    hosts = hosts_of(url)
    return f"a {scheme[0]} URL" + (f" for {hosts}" if hosts else "")


def _store_url(key: str, value: str) -> None:
    if value.startswith("redis:") or value.startswith("redis+sentinel:"):
        from notifier.backends.redis.addresses import parse_address

        try:
            parse_address(value)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}, got {_url_named(value)}") from None
        return
    if not value.startswith("sqlite:") or value == "sqlite:":
        raise ConfigError(f"{key}: expected 'sqlite:PATH', 'sqlite::memory:', 'redis://host:port/db' or "
                          f"'redis+sentinel://host:port,host:port/SERVICE/db', got {_url_named(value)}")


def _patterns(key: str, value: list[Any]) -> None:
    for pattern in value:
        if not isinstance(pattern, str) or not CENTER_NAME.match(pattern.removesuffix("*") or "x"):
            raise ConfigError(f"{key}: every entry must be a center name, or its beginning followed by '*'")


def _origins(key: str, value: list[Any]) -> None:
    for origin in value:
        if not isinstance(origin, str) or not origin:
            raise ConfigError(f"{key}: every origin must be a non-empty string")


def _at_least(minimum: int | float) -> Callable[[str, int | float], None]:
    def check(key: str, value: int | float) -> None:
        if not value >= minimum:  # also refuses nan
            raise ConfigError(f"{key}: must be at least {minimum}, got {value}")

    return check


def _between(low: int | float, high: int | float) -> Callable[[str, int | float], None]:
    def check(key: str, value: int | float) -> None:
        if not low <= value <= high:
            raise ConfigError(f"{key}: must be between {low} and {high}, got {value}")

    return check


def _one_of(*choices: str) -> Callable[[str, str], None]:
    def check(key: str, value: str) -> None:
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")

    return check


def _key(default: Any, kind: type | tuple[type, ...], check: Any = None) -> Any:
    return field(default=default, metadata={"kind": kind, "check": check})


@frozen
class PublicConfig:
    endpoint: str = _key("tcp:8080", str, _endpoint)
    #: listen(2)'s backlog: connections the kernel queues before they are accepted.
    backlog: int = _key(1024, int, _between(1, 65535))
    allowed_origins: tuple[str, ...] = _key(("*",), list, _origins)
    header_timeout: float = _key(10, (int, float), _between(0.1, 600))
    #: Connections at once from one peer address; 0: unlimited.
    max_connections_per_ip: int = _key(0, int, _between(0, 1_000_000))


@frozen
class ApiConfig:
    endpoint: str = _key("tcp:8081:interface=127.0.0.1", str, _endpoint)
    backlog: int = _key(1024, int, _between(1, 65535))
    admin_token: str = _key("", str)
    header_timeout: float = _key(10, (int, float), _between(0.1, 600))


@frozen
class StoreConfig:
    url: str = _key("sqlite:notifier.db", str, _store_url)
    #: Whether a ``sqlite:PATH`` store keeps each center's history and ids in
    #: the file, across restarts (every publish answered once committed).
    #: ``sqlite::memory:`` has no file: its default is history in memory, and
    #: ``durable = true`` with it is refused. Redis keeps history anyway.
    durable: bool = _key(True, bool)
    #: SQLite's ``synchronous`` for that history: "normal" survives any
    #: crash of the daemon, "full" a power cut too.
    synchronous: str = _key("normal", str, _one_of("normal", "full"))
    #: With Redis: replicas that must hold a publish (``WAIT``) before it is
    #: acknowledged; 0 acknowledges it once the master has it.
    replicas_ack: int = _key(0, int, _between(0, 100))
    #: Milliseconds those replicas have, past which the publish answers 503.
    replicas_timeout_ms: int = _key(500, int, _between(1, 60_000))


@frozen
class CentersConfig:
    history: int = _key(100, int, _between(0, 100_000))
    max_message_bytes: int = _key(65536, int, _between(1, 64 * 1024 * 1024))
    auto_create: bool = _key(False, bool)
    #: Auto-created centers whose names match one of these are private.
    auto_create_private: tuple[str, ...] = _key((), list, _patterns)
    max_per_publisher: int = _key(10_000, int, _at_least(0))
    idle_ttl: int = _key(0, int, _at_least(0))
    #: Bytes of retained messages a center keeps in memory at most; the oldest go first.
    max_retained_bytes: int = _key(16 * 1024 * 1024, int, _at_least(1024))
    #: The same, for all of one publisher's centers on a node together.
    max_retained_bytes_per_publisher: int = _key(256 * 1024 * 1024, int, _at_least(1024))


@frozen
class SubscribersConfig:
    longpoll_timeout: int = _key(30, int, _between(0, 120))
    ping_interval: float = _key(25, (int, float), _at_least(0.05))
    drain_seconds: float = _key(2, (int, float), _between(0, 600))
    max_per_center: int = _key(0, int, _at_least(0))
    send_buffer_bytes: int = _key(1_048_576, int, _at_least(1024))


@frozen
class PresenceConfig:
    #: Seconds a member (or a center's last subscriber) may be gone before it counts as left.
    leave_grace: float = _key(5, (int, float), _between(0, 3600))


@frozen
class WebhooksConfig:
    #: Seconds of events gathered into one request.
    batch_seconds: float = _key(1, (int, float), _between(0, 3600))
    #: Seconds a site has to answer a request.
    timeout: float = _key(5, (int, float), _between(0.1, 600))
    #: Seconds a request is retried before its events are given up.
    retry_for: float = _key(600, (int, float), _between(0, 7 * 86400))
    #: Events waiting per publisher at most; more drop the oldest.
    max_queue: int = _key(10_000, int, _between(1, 10_000_000))
    #: Whether a webhook may go to a loopback, private, link-local or other
    #: non-public address (the site is often on the same machine).
    allow_private: bool = _key(True, bool)


@frozen
class PusherConfig:
    """The Pusher Channels face (docs/pusher.rst)."""

    #: Whether the ``/app/{key}`` (public) and ``/apps/{app_id}`` (api) routes are served.
    enabled: bool = _key(True, bool)
    #: Whether client events (``client-*``) are relayed, for every publisher.
    client_events: bool = _key(False, bool)
    #: Events in one ``batch_events`` request at most.
    max_batch: int = _key(10, int, _between(1, 1000))
    #: Characters of an event name at most (a message's event is 200 at most).
    max_event_name: int = _key(200, int, _between(1, 200))
    #: Bytes of an event's data at most (``[centers] max_message_bytes`` wins if smaller).
    max_event_bytes: int = _key(10_240, int, _between(1, 64 * 1024 * 1024))
    #: Seconds of silence after which a client pings, told to every client.
    activity_timeout: int = _key(120, int, _between(1, 3600))
    #: Client events a connection may send per second.
    client_event_rate: int = _key(10, int, _between(1, 10_000))


@frozen
class Config:
    public: PublicConfig = PublicConfig()
    api: ApiConfig = ApiConfig()
    store: StoreConfig = StoreConfig()
    centers: CentersConfig = CentersConfig()
    subscribers: SubscribersConfig = SubscribersConfig()
    presence: PresenceConfig = PresenceConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    pusher: PusherConfig = PusherConfig()


def _section(name: str, cls: type, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}]: must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        qualified = f"{name}.{key}"
        if key not in known:
            raise ConfigError(f"{qualified}: unknown key (known: {', '.join(known)})")
        kind = known[key].metadata["kind"]
        # bool is an int to Python, never to a configuration file.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            names = kind if isinstance(kind, tuple) else (kind,)
            expected = " or ".join({list: "array"}.get(k, k.__name__) for k in names)
            raise ConfigError(f"{qualified}: expected {expected}, got {type(value).__name__}")
        check = known[key].metadata["check"]
        if check is not None:
            check(qualified, value)
        values[key] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def parse_config(text: str) -> Config:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    sections = {f.name: f.type for f in fields(Config)}
    classes = {f.name: f.default.__class__ for f in fields(Config)}
    values = {}
    for name, table in document.items():
        if name not in sections:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(sections)})")
        values[name] = _section(name, classes[name], table)
    store = document.get("store", {})
    if store.get("durable") is True and store.get("url") == "sqlite::memory:":
        raise ConfigError("store.durable: 'sqlite::memory:' has no file to keep history in; "
                          "use 'sqlite:PATH', or remove durable = true")
    return Config(**values)


def load_config(path: str | None) -> Config:
    """Read the file at *path*; ``None`` gives every default."""
    if path is None:
        return Config()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_config(text)
