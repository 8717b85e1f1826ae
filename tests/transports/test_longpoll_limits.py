"""What a long-poll may cost the host, measured over real sockets: answers
of history bounded in bytes, the kernel memory of clients that read
nothing, idle connections with data queued cut rather than closed,
connections per address, and polls that end with their token."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import socket
import termios
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import endpoints, reactor, tcp
from twisted.internet.defer import Deferred

from notifier.config import ConfigError, parse_config
from notifier.http.listeners import public_site
from tests.raw import connect, get_request, request
from tests.support import (
    call,
    event_source,
    expect_json_error,
    published,
    running,
    server_side,
    setup_site,
    sleep,
    subscriber_count,
    subscriber_token,
    until,
    websocket,
)
from tests.support.http import recording

#: The most bytes of envelopes in a long-poll answer of history
#: (docs/protocol.rst: Long-poll), and the JSON around them at most.
CAP = 128 * 1024
AROUND = 1024
#: ``SO_SNDBUF`` of the public listener's connections (docs/operating.rst),
#: as Linux reports it: doubled.
SEND_BUFFER = 2 * 256 * 1024
#: Messages of this size, and how many: several times the cap retained.
SIZE = 4000
COUNT = 400
#: Clients that read nothing.
CLIENTS = 200


async def fill(daemon: Any, center: str = "news", count: int = COUNT, tag: str = "") -> list[str]:
    """Publish *count* messages of ``SIZE`` bytes to *center*; their ids."""
    node = daemon.service
    ids: list[str] = []
    for start in range(0, count, 50):
        batch = [(center, f"{tag}{i:06d} ".ljust(SIZE, "x")) for i in range(start, min(start + 50, count))]
        more, _ = await node.publishing.publish_batch("site", batch)
        ids += more
    return ids


def tcp_memory_pages() -> int:
    """The kernel's TCP memory in use on this host, in pages (``/proc/net/sockstat``)."""
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    raise AssertionError("no TCP line in /proc/net/sockstat")


def queued(sock: socket.socket) -> int:
    """Bytes waiting in *sock*'s receive queue (``FIONREAD``), without reading them."""
    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little")


def server_sockets(port: int) -> list[tuple[str, int]]:
    """The state (hex, as ``/proc/net/tcp`` has it) and send queue of every
    socket on local *port* but the listening one."""
    found = []
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if int(local.split(":")[1], 16) == port and state != "0A":
                found.append((state, int(queues.split(":")[0], 16)))
    return found


def waiting(daemon: Any, center: str) -> bool:
    """Whether *center* has a subscriber on *daemon* (a poll waiting)."""
    hub = daemon.service.centers.loaded("site", center)
    return hub is not None and bool(hub.subscribers)


async def poll_on(daemon: Any, path: str, cursor: str) -> list[str]:
    """The ids a reading client gets polling *path* from *cursor* until
    nothing is left, each answer checked against the cap."""
    received: list[str] = []
    while True:
        status, headers, body = await request(daemon.public_port,
                                              get_request(f"/sub/site/{path}?since={cursor}&timeout=0"))
        assert status == 200, body
        answer = json.loads(body)
        assert answer["recovered"] is True
        assert len(body) <= CAP + AROUND, len(body)
        assert headers[b"notifier-cursor"].decode() == answer["last_id"]
        if not answer["messages"]:
            return received
        received += [message["id"] for message in answer["messages"]]
        cursor = answer["last_id"]


# answers of history: bounded in bytes, and nothing lost


@pytest.mark.integration
@pytest.mark.parametrize("centers", [1, 2])
@pytest_twisted.ensureDeferred
async def test_a_longpoll_answer_of_history_is_capped_and_polling_on_gets_everything_once(centers: int) -> None:
    async with running(centers={"history": 2 * COUNT}) as daemon:
        auth = await setup_site(daemon)
        names = ["news", "sports"][:centers]
        if centers == 2:
            await call("PUT", f"{daemon.api}/api/v1/centers/sports", auth=auth)
        ids = []
        for name in names:
            ids += await fill(daemon, name, COUNT // centers, tag=f"{name} ")
        epochs = [daemon.service.centers.loaded("site", name).epoch for name in names]
        received = await poll_on(daemon, ",".join(names), ",".join(f"{epoch}-0" for epoch in epochs))
        assert sorted(received) == sorted(ids) and len(received) == len(ids)  # every one, once
        for name in names:  # each center's in the order published
            mine = [i for i in received if i.startswith(daemon.service.centers.loaded("site", name).epoch + "-")]
            assert mine == [i for i in ids if i in set(mine)]


@pytest.mark.integration
@pytest.mark.parametrize("path", ["news", "news,sports"])
@pytest_twisted.ensureDeferred
async def test_a_waiting_longpoll_answered_with_many_messages_is_capped_too(path: str) -> None:
    async with running(centers={"history": COUNT}) as daemon:
        auth = await setup_site(daemon)
        await call("PUT", f"{daemon.api}/api/v1/centers/sports", auth=auth)
        status, headers, body = await request(daemon.public_port, get_request(f"/sub/site/{path}?timeout=0"))
        cursor = headers[b"notifier-cursor"].decode()
        poll = Deferred.fromCoroutine(request(daemon.public_port,
                                              get_request(f"/sub/site/{path}?since={cursor}&timeout=20"), 20))
        await until(lambda: waiting(daemon, "news"), 5, "the poll to wait")
        ids = await fill(daemon, "news", 100)  # in batches of 50, each past the cap
        status, headers, body = await poll
        answer = json.loads(body)
        assert status == 200 and answer["recovered"] is True
        assert 0 < len(body) <= CAP + AROUND, len(body)
        assert headers[b"notifier-cursor"].decode() == answer["last_id"]
        first = [message["id"] for message in answer["messages"]]
        assert first == ids[:len(first)]
        assert first + await poll_on(daemon, path, answer["last_id"]) == ids


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_longpolls_that_read_nothing_pin_little_kernel_memory() -> None:
    async with running(centers={"history": COUNT}) as daemon:
        await setup_site(daemon)
        ids = await fill(daemon)
        since = ids[0].rsplit("-", 1)[0] + "-0"
        head = get_request(f"/sub/site/news?since={since}").replace(b"Connection: close\r\n", b"")
        page = os.sysconf("SC_PAGESIZE")
        clients: list[socket.socket] = []
        before = tcp_memory_pages()
        try:
            for _ in range(CLIENTS):
                # A peer that offers a small window and never reads.
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(5)
                sock.connect(("127.0.0.1", daemon.public_port))
                sock.sendall(head)
                clients.append(sock)
                if len(clients) % 20 == 0:
                    await sleep(0)
            await until(lambda: all(queued(sock) for sock in clients), 20, "every answer to start")
            # What the daemon sends is in the kernel once it stops growing.
            last = -1
            for _ in range(50):
                await sleep(0.2)
                now = tcp_memory_pages()
                if now == last:
                    break
                last = now
            pinned = (tcp_memory_pages() - before) * page
        finally:
            for sock in clients:
                sock.close()
        print(f"TCP memory pinned by {CLIENTS} long-polls reading nothing: {pinned / 2**20:.1f} MiB")
        # An answer and its sockets' overhead (about 180 KB measured), with
        # room for what other processes of the host do meanwhile: never the
        # 1.4 MB each held when an answer was not capped.
        assert pinned <= CLIENTS * 3 * CAP, f"{pinned / 2**20:.1f} MiB"


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_public_connections_inherit_a_bounded_send_buffer() -> None:
    async with running() as daemon:
        await setup_site(daemon)
        listening = daemon.service.public_port.socket
        assert listening.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == SEND_BUFFER
        ws = await websocket(daemon.ws + "/sub/site/news", daemon.public_port)
        try:
            subscriber = server_side(daemon, ws.protocol.transport.getHost().port)
            accepted = subscriber.transport.socket
            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == SEND_BUFFER
        finally:
            ws.close()
            await ws.closed


# idle connections with data queued


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_an_idle_connection_with_data_queued_is_cut_not_left_closing() -> None:
    async with running() as daemon:
        auth = await setup_site(daemon)
        await published(daemon, auth, "x" * 60000)
        site = public_site(daemon.service.public, daemon.service.config, reactor,
                           turn=daemon.service.api_port.factory.turn, timeout=0.5)
        fronts = recording(site)
        listening = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        port = listening.getHost().port
        try:
            client = await connect(port, rcvbuf=4096)
            client.transport.pauseProducing()  # reads nothing
            await until(lambda: fronts, 5, "the connection")
            # The kernel takes the whole answer: nothing stays in Twisted's buffer.
            fronts[0].transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            client.send(get_request("/sub/site/news/last").replace(b"Connection: close\r\n", b""))
            await until(lambda: any(sent > 0 for _, sent in server_sockets(port)), 5, "the answer to be queued")
            await until(lambda: not fronts[0].transport.connected, 10, "the idle connection to end")
            # Cut: no socket left in FIN-WAIT-1 (04) or closing with its data.
            assert server_sockets(port) == []
            client.transport.abortConnection()
        finally:
            await listening.stopListening()


# connections per address


def test_max_connections_per_ip_is_checked() -> None:
    assert parse_config("").public.max_connections_per_ip == 0
    assert parse_config("[public]\nmax_connections_per_ip = 3\n").public.max_connections_per_ip == 3


@pytest.mark.parametrize("bad", ["-1", '"3"', "true", "2.5"])
def test_a_bad_max_connections_per_ip_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="public.max_connections_per_ip"):
        parse_config(f"[public]\nmax_connections_per_ip = {bad}\n")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_connections_from_one_address_are_limited_each_counted_once() -> None:
    async with running(public={"max_connections_per_ip": 3}) as daemon:
        await setup_site(daemon)
        port = daemon.public_port
        # One of each: a WebSocket, an event stream, and an idle connection.
        ws = await websocket(daemon.ws + "/sub/site/news", port)
        stream = await event_source(port, "/sub/site/news")
        idle = await connect(port)
        refused = await connect(port)
        assert await refused.wait_closed(5) and not refused.data
        # Counted, each writes to its connection itself: straight to the socket.
        subscribers = list(daemon.service.centers.loaded("site", "news").subscribers)
        transports = [getattr(s, "transport", None) or s.request.transport for s in subscribers]
        assert len(transports) == 2 and all(isinstance(transport, tcp.Server) for transport in transports)
        ws.close()
        await ws.closed

        async def accepted() -> bool:
            client = await connect(port)
            client.send(get_request("/healthz"))
            await client.wait_closed(5)
            return bytes(client.data).startswith(b"HTTP/1.1 200")

        await until(lambda: daemon.service.public_port.factory.peers == {"127.0.0.1": 2}, 5, "the WebSocket to go")
        assert await accepted()
        stream.close()
        idle.transport.loseConnection()
        await until(lambda: daemon.service.public_port.factory.peers == {}, 5, "every connection counted out")


# polls that end with their token


async def _waiting_private_poll(daemon: Any, path: str, lifetime: float) -> tuple[tuple[str, str], str, Any]:
    """A long-poll of *path* waiting on the private center user.17 with a
    token of *lifetime* seconds: the publisher's credentials, the token, the
    poll's answer to come."""
    auth = await setup_site(daemon)
    await call("PUT", f"{daemon.api}/api/v1/centers/user.17", {"private": True}, auth=auth)
    token = subscriber_token(auth[1], lifetime=lifetime, centers=["user.17"])
    poll = Deferred.fromCoroutine(call("GET", f"{daemon.public}/sub/site/{path}?token={token}&timeout=20"))
    await until(lambda: waiting(daemon, "user.17"), 5, "the poll to wait")
    return auth, token, poll


@pytest.mark.integration
@pytest.mark.parametrize("path", ["user.17", "news,user.17"])
@pytest_twisted.ensureDeferred
async def test_a_waiting_longpoll_ends_when_its_token_expires(path: str) -> None:
    async with running() as daemon:
        auth, token, poll = await _waiting_private_poll(daemon, path, lifetime=2)
        expiry = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
        await sleep(max(0.0, expiry - time.time()) + 0.5)
        await published(daemon, auth, "after expiry", "user.17")  # private, and too late for this token
        status, body = await poll
        expect_json_error(status, body, 401, "expired_token")
        assert await subscriber_count(daemon, auth, "user.17") == 0


@pytest.mark.integration
@pytest.mark.parametrize("change", ["rotate", "remove"])
@pytest_twisted.ensureDeferred
async def test_a_waiting_longpoll_ends_when_its_publisher_changes(change: str) -> None:
    async with running() as daemon:
        auth, _, poll = await _waiting_private_poll(daemon, "user.17", lifetime=60)
        if change == "rotate":
            status, _ = await daemon.admin("POST", "/admin/v1/publishers/site/rotate")
            assert status == 200
            expect_json_error(*await poll, 401, "invalid_token")
        else:
            status, _ = await daemon.admin("DELETE", "/admin/v1/publishers/site")
            assert status in (200, 204)
            expect_json_error(*await poll, 404, "center_deleted")
