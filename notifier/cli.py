"""The ``notifier`` command: operating a store offline, and setting up.

``notifier publisher add|show|list|rotate|remove`` use the same publishers and store
as the daemon, run to completion under ``task.react``; a running daemon sees
the change within a few seconds. ``notifier config init|howto`` write a
starting configuration and say how to use it. ``notifier store restored``
starts every center's history anew after the file was put back from a
backup.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet import defer, task

from notifier.backends.configured import open_backend
from notifier.backends.sqlite import SQLiteStore
from notifier.config import Config, ConfigError, load_config
from notifier.domain.errors import NotifierError
from notifier.domain.model import Publisher
from notifier.domain.publishers import Publishers

STARTER = """\
# notifier configuration; every key is optional (see etc/notifier.toml for all of them).
[public]
endpoint = "tcp:8080"

[api]
endpoint = "tcp:8081:interface=127.0.0.1"
admin_token = "{token}"

[store]
url = "sqlite:{store}"
durable = true          # history kept in the file across restarts; false: in memory, faster
"""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", default=argparse.SUPPRESS,
                        help="the daemon's TOML configuration file")
    parser = argparse.ArgumentParser(prog="notifier", parents=[common],
                                     description="Operate a notifier store offline.")
    nouns = parser.add_subparsers(dest="noun", required=True)

    publisher = nouns.add_parser("publisher", help="publishing accounts", parents=[common])
    verbs = publisher.add_subparsers(dest="verb", required=True)
    for verb, text in (
        ("add", "add a publisher and print its secret (shown only this once), then its Pusher app id and key"),
        ("show", "print a publisher: its centers, when it was made, its Pusher app (never its secret)"),
        ("rotate", "give a publisher a new secret and print it"),
        ("remove", "remove a publisher and all its centers"),
    ):
        verbs.add_parser(verb, help=text, parents=[common]).add_argument("name")
    verbs.add_parser("list", help="list publishers, as show does each", parents=[common])

    store = nouns.add_parser("store", help="the SQLite store", parents=[common])
    verbs = store.add_subparsers(dest="verb", required=True)
    verbs.add_parser("restored", parents=[common],
                     help="after putting the file back from a backup, with the daemon stopped: "
                          "every center begins a new epoch (docs/operating.rst: Backups)")

    config = nouns.add_parser("config", help="configuration files", parents=[common])
    verbs = config.add_subparsers(dest="verb", required=True)
    verbs.add_parser("init", help="write a starting configuration with a new admin token",
                     parents=[common]).add_argument("path")
    verbs.add_parser("howto", help="print how to publish and subscribe with a configuration",
                     parents=[common])
    return parser


async def _publisher(reactor: Any, config: Config, args: argparse.Namespace, out: TextIO) -> None:
    store, broker = open_backend(config.store, reactor)
    await store.open()
    # Not started: it only tells running daemons of a rotation or removal.
    publishers = Publishers(store, broker, reactor)
    try:
        if args.verb == "add":
            publisher = await publishers.add_publisher(args.name)
            # The first line as it always was, "NAME SECRET", for the scripts that read it.
            print(f"{publisher.name} {publisher.secret}", file=out)
            print(f"app_id={publisher.app_id} key={publisher.key}", file=out)
        elif args.verb == "show":
            print(_shown(*await publishers.described(args.name), config), file=out)
        elif args.verb == "rotate":
            publisher = await publishers.rotate_secret(args.name)
            print(f"{publisher.name} {publisher.secret}", file=out)
        elif args.verb == "remove":
            await publishers.remove_publisher(args.name)
        else:
            for publisher, centers in await publishers.list_publishers():
                print(_shown(publisher, centers, config), file=out)
    except NotifierError as e:
        print(f"notifier: {e.message}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        await store.close()


def _shown(publisher: Publisher, centers: int, config: Config) -> str:
    """One line of ``publisher show`` and ``list``: tab-separated, never the secret."""
    client_events = publisher.relays_client_events(config.pusher.client_events)
    chosen = "" if publisher.client_events is not None else " (default)"
    return (f"{publisher.name}\tcenters={centers}\tcreated={publisher.created:.0f}\tapp_id={publisher.app_id}"
            f"\tkey={publisher.key}\tclient_events={str(client_events).lower()}{chosen}")


async def _restored(reactor: Any, config: Config, out: TextIO) -> None:
    path = config.store.url[len("sqlite:"):]
    try:
        alone = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        print(f"notifier: {path}: no such file", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        try:
            # Every store holds a shared lock on its file while open (SQLiteStore).
            fcntl.flock(alone, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"notifier: {path} is open (a running daemon, or another notifier command): "
                  "stop it first", file=sys.stderr)
            raise SystemExit(1) from None
        store = SQLiteStore(path, reactor, hold=False)
        await store.open()
        try:
            count = await store.new_epochs()
        finally:
            await store.close()
    finally:
        os.close(alone)
    print(f"{count} centers begin new epochs; the history kept in the file was dropped", file=out)


def _init(path: str, out: TextIO) -> None:
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    store = os.path.join(folder, "notifier.db") if folder else "notifier.db"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"notifier: {path} exists; not overwritten", file=sys.stderr)
        raise SystemExit(1) from None
    with os.fdopen(fd, "w") as f:
        f.write(STARTER.format(token=secrets.token_urlsafe(32), store=os.path.abspath(store)))
    print(f"wrote {path}", file=out)


def _http_base(endpoint: str) -> str:
    """A URL for a ``tcp:`` or ``ssl:`` endpoint description, for the how-to."""
    parts = endpoint.split(":")
    kind = parts[0]
    port = next((p for p in parts[1:] if p.isdigit()), None) if kind in ("tcp", "ssl") else None
    if port is None:
        return f"<{endpoint}>"
    host = "127.0.0.1"
    for part in parts[1:]:
        if part.startswith("interface=") and part[len("interface="):] not in ("", "0.0.0.0", "::"):
            host = part[len("interface="):]
    return f"{'https' if kind == 'ssl' else 'http'}://{host}:{port}"


def _howto(config: Config, out: TextIO) -> None:
    api = _http_base(config.api.endpoint)
    public = _http_base(config.public.endpoint)
    ws = public.replace("http", "ws", 1)
    token = config.api.admin_token or "<set [api] admin_token first>"
    print(f"""\
notifier: public listener {public}, api listener {api}

  # 1. add a publisher (its secret is shown only once)
  curl -s -H 'Authorization: Bearer {token}' -d '{{"name": "demo"}}' {api}/admin/v1/publishers
  SECRET=<the secret it printed>

  # 2. create a center, then subscribe to it (each in its own terminal)
  curl -s -u demo:$SECRET -X PUT {api}/api/v1/centers/news
  curl -s '{public}/sub/demo/news'                       # long-poll: waits for a message
  # or in a browser's console:
  #   new WebSocket('{ws}/sub/demo/news').onmessage = e => console.log(e.data)

  # 3. publish
  curl -s -u demo:$SECRET -H 'Content-Type: text/plain' -d 'Hello' {api}/api/v1/centers/news/messages

  # or do all of it, and watch it happen, in the console (sign in with the admin token):
  #   {api}/console/
""", file=out)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.noun == "config" and args.verb == "init":
        _init(args.path, sys.stdout)
        return
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as e:
        print(f"notifier: configuration: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.noun == "config":
        _howto(config, sys.stdout)
        return
    if args.noun == "store":
        if not config.store.url.startswith("sqlite:") or config.store.url == "sqlite::memory:":
            print("notifier: store restored is for a sqlite:PATH store", file=sys.stderr)
            raise SystemExit(2)
        task.react(lambda reactor: defer.Deferred.fromCoroutine(_restored(reactor, config, sys.stdout)))
        return
    task.react(lambda reactor: defer.Deferred.fromCoroutine(_publisher(reactor, config, args, sys.stdout)))


if __name__ == "__main__":
    main()
