"""The listeners' backlog: ``[public] backlog`` and ``[api] backlog``
(default 1024), read back from the kernel's own record of each listening
socket, so that a reconnect storm is queued rather than dropped."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from notifier.config import ConfigError, parse_config
from notifier.service import with_backlog
from tests.support import config_text, free_port, running


def kernel_backlog(port: Any) -> int:
    """The accept queue's bound of a listening TCP socket: Linux reports it as
    ``tcpi_sacked`` of ``TCP_INFO`` (and the queue's length as ``tcpi_unacked``)."""
    info = port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    unacked, sacked = struct.unpack_from("=II", info, 24)
    return int(sacked)


def capped(backlog: int) -> int:
    """What the kernel keeps of *backlog*: at most ``net.core.somaxconn``."""
    return min(backlog, int(Path("/proc/sys/net/core/somaxconn").read_text()))


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_both_listeners_queue_1024_connections_by_default() -> None:
    async with running() as daemon:
        assert kernel_backlog(daemon.service.public_port) == capped(1024)
        assert kernel_backlog(daemon.service.api_port) == capped(1024)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_the_backlog_is_configured_per_listener() -> None:
    async with running(public={"backlog": 300}, api={"backlog": 20}) as daemon:
        assert kernel_backlog(daemon.service.public_port) == capped(300)
        assert kernel_backlog(daemon.service.api_port) == 20


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_reuseport_listener_takes_it_too() -> None:
    port = free_port()
    async with running(public={"endpoint": f"reuseport:{port}:interface=127.0.0.1", "backlog": 200}) as daemon:
        assert kernel_backlog(daemon.service.public_port) == capped(200)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_backlog_in_the_endpoint_itself_wins() -> None:
    async with running(public={"endpoint": "tcp:0:interface=127.0.0.1:backlog=7", "backlog": 300}) as daemon:
        assert kernel_backlog(daemon.service.public_port) == 7


@pytest.mark.parametrize("description, expected", [
    ("tcp:8080", "tcp:8080:backlog=1024"),
    ("tcp:8080:interface=127.0.0.1", "tcp:8080:interface=127.0.0.1:backlog=1024"),
    ("tcp6:8080", "tcp6:8080:backlog=1024"),
    ("ssl:443:privateKey=k.pem:certKey=c.pem", "ssl:443:privateKey=k.pem:certKey=c.pem:backlog=1024"),
    ("unix:/run/notifier.sock", "unix:/run/notifier.sock:backlog=1024"),
    ("reuseport:8080", "reuseport:8080:backlog=1024"),
    ("TCP:8080", "TCP:8080:backlog=1024"),
    ("tcp:8080:backlog=50", "tcp:8080:backlog=50"),
    ("tcp:port=8080:backlog=50:interface=::1", "tcp:port=8080:backlog=50:interface=::1"),
    ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
])
def test_with_backlog(description: str, expected: str) -> None:
    assert with_backlog(description, 1024) == expected


@pytest.mark.parametrize("value", [0, -1, 65536, "many", 1.5])
def test_a_backlog_out_of_range_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"backlog"):
        parse_config(config_text("sqlite::memory:", public={"backlog": value}))
