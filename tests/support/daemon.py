"""A daemon in this process on free loopback ports: its configuration,
starting and stopping it, and what a test reads of it."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import attrs
from twisted.internet import reactor

from notifier.config import parse_config
from notifier.service import NotifierService, make_service
from tests.support.http import call

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def config_text(store_url: str, **sections: dict[str, Any]) -> str:
    """A configuration on free loopback ports, with *sections* merged in."""
    base: dict[str, dict[str, Any]] = {
        "public": {"endpoint": "tcp:0:interface=127.0.0.1"},
        "api": {"endpoint": "tcp:0:interface=127.0.0.1", "admin_token": ADMIN_TOKEN},
        "store": {"url": store_url},
        "subscribers": {"drain_seconds": 0.2},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@attrs.define
class Daemon:
    """A NotifierService running in this process on free loopback ports."""

    service: NotifierService

    @property
    def public(self) -> str:
        return f"http://127.0.0.1:{self.service.public_port.getHost().port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.service.public_port.getHost().port}"

    @property
    def public_port(self) -> int:
        return self.service.public_port.getHost().port

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.service.api_port.getHost().port}"

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await call(method, self.api + path, body, admin=ADMIN_TOKEN)

    async def add_publisher(self, name: str) -> str:
        status, body = await self.admin("POST", "/admin/v1/publishers", {"name": name})
        assert status == 201, body
        return body["secret"]


async def start_daemon(store_url: str = "sqlite::memory:", **sections: dict[str, Any]) -> Daemon:
    service = make_service(parse_config(config_text(store_url, **sections)), reactor)
    service.startService()
    await service.ready
    return Daemon(service)


@contextlib.asynccontextmanager
async def running(**sections: dict[str, Any]) -> AsyncIterator[Daemon]:
    """A daemon with *sections* in its configuration, stopped after."""
    daemon = await start_daemon(**sections)
    try:
        yield daemon
    finally:
        if daemon.service.running:
            await daemon.service.stopService()


def server_side(daemon: Daemon, local_port: int, center: str = "news") -> Any:
    """The subscriber object serving the client whose socket is on *local_port*."""
    hub = daemon.service.centers.loaded("site", center)
    assert hub is not None
    for subscriber in hub.subscribers:
        transport = getattr(subscriber, "transport", None) or subscriber.request.transport
        if transport.getPeer().port == local_port:
            return subscriber
    raise AssertionError(f"no subscriber for the client on port {local_port}")


def small_send_buffer(subscriber: Any) -> None:
    """Fix the kernel send buffer of *subscriber*'s connection at 64 KiB.

    On loopback Linux grows it up to ``tcp_wmem``'s maximum (4 MiB or more)
    even toward a peer that reads nothing, which would swallow most of what a
    test publishes before the daemon's own buffering is ever involved.
    """
    transport = getattr(subscriber, "transport", None) or subscriber.request.transport
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)


def rss() -> int:
    """This process's resident memory, in bytes (the daemon runs in it)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def admin_stats(daemon: Daemon) -> dict[str, Any]:
    status, body = await daemon.admin("GET", "/admin/v1/stats")
    assert status == 200, body
    return body


async def healthy(daemon: Daemon) -> None:
    """Both listeners answer ``/healthz``."""
    for base in (daemon.public, daemon.api):
        status, body = await call("GET", base + "/healthz")
        assert (status, body) == (200, {"status": "ok"}), base
