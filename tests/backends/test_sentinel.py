"""Redis with automatic failover (Sentinel), acknowledged publishes
(``replicas_ack``) and subscriptions kept honest.

Real ``redis-server`` processes on loopback ports, started here: a master,
a replica and three Sentinels (quorum 2, quick to act) for the failovers;
a master and a replica alone for ``WAIT``; a relay that goes black for the
liveness of the subscription. Daemons run in this process. Every wait is
bounded; no timing is asserted beyond generous "within N seconds".
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from notifier.backends.redis.addresses import SentinelAddress, parse_address
from notifier.backends.redis.client import Redis, RedisAddress, Script
from notifier.backends.redis.liveness import Liveness
from notifier.backends.redis.sentinel import Sentinels
from notifier.config import ConfigError, parse_config
from notifier.domain.errors import Unavailable
from tests.raw import connect
from tests.redis_server import QUICK_SYNC, RedisServer, SentinelCluster, command, info
from tests.relay import Relay
from tests.support import (
    Daemon,
    call,
    event_source,
    eventually,
    opened,
    publish,
    setup_site,
    sleep,
    start_daemon,
    until,
    websocket,
)

PUBLISHER, CENTER, SERVICE = "site", "news", "main"
SUB = f"/sub/{PUBLISHER}/{CENTER}"
LOG = f"notifier:log:{PUBLISHER}/{CENTER}"
#: Retained per center here: every message of a test stays in the history.
HISTORY = 5000
#: A master the Sentinels cannot make a replica of the new one after a failover.
STUBBORN = ("--rename-command", "REPLICAOF", "stubborn-replicaof", "--rename-command", "SLAVEOF", "stubborn-slaveof")


# parsing (no servers)


def test_a_sentinel_url_names_the_sentinels_the_service_the_database_and_the_password():
    address = parse_address("redis+sentinel://:p%40ss@s1:26380,s2,[::1]:26381/main/3")
    assert address == SentinelAddress((("s1", 26380), ("s2", 26379), ("::1", 26381)), "main", 3, "p@ss")
    assert parse_address("redis+sentinel://10.0.0.1/main") == \
        SentinelAddress((("10.0.0.1", 26379),), "main", 0, None)
    assert parse_address("redis://:pw@h:7000/2") == RedisAddress("h", 7000, 2, "pw")


@pytest.mark.parametrize("url", [
    "redis+sentinel://", "redis+sentinel:///main", "redis+sentinel://s1", "redis+sentinel://s1/",
    "redis+sentinel://s1:0/main", "redis+sentinel://s1:65536/main", "redis+sentinel://s1,,s2/main",
    "redis+sentinel://s 1/main", "redis+sentinel://s1/main/x", "redis+sentinel://s1/ma%20in",
    "redis+sentinel://user:pw@s1/main", "redis+sentinel://pw@s1/main", "redis+sentinel:s1/main",
])
def test_a_bad_sentinel_url_is_a_configuration_error_naming_the_key(url):
    with pytest.raises(ValueError):
        SentinelAddress.parse(url)
    with pytest.raises(ConfigError) as caught:
        parse_config(f'[store]\nurl = "{url}"\n')
    assert str(caught.value).startswith("store.url: ")


def test_a_configuration_error_never_shows_the_password():
    with pytest.raises(ConfigError) as caught:
        parse_config('[store]\nurl = "redis+sentinel://:hunter2@s1:26379/bad name"\n')
    assert "hunter2" not in str(caught.value) and "redis+sentinel: URL for s1:26379" in str(caught.value)


def test_the_acknowledgement_keys_are_checked():
    config = parse_config('[store]\nurl = "redis+sentinel://s1/main"\nreplicas_ack = 1\nreplicas_timeout_ms = 250\n')
    assert (config.store.replicas_ack, config.store.replicas_timeout_ms) == (1, 250)


@pytest.mark.parametrize("bad", ["replicas_ack = -1", "replicas_timeout_ms = 0", 'replicas_ack = "1"'])
def test_a_bad_acknowledgement_key_is_refused(bad):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[store]\n{bad}\n")
    assert str(caught.value).startswith("store.replicas_")


def test_a_switch_announced_for_another_service_or_garbled_is_ignored():
    sentinels = Sentinels(SentinelAddress((("s1", 1),), "main", 0, None), Clock())
    switched: list[Any] = []
    sentinels._switched = switched.append
    sentinels.found(("10.0.0.1", 6379))
    for message in ("other 10.0.0.1 6379 10.0.0.2 6379", "main 10.0.0.1 6379", "main a b c port"):
        sentinels.switch_announced(message)
    assert switched == []
    sentinels.switch_announced("main 10.0.0.1 6379 10.0.0.2 6380")
    sentinels.switch_announced("main 10.0.0.1 6379 10.0.0.2 6380")  # said again: nothing new
    assert switched == [("10.0.0.2", 6380)] and sentinels.current == ("10.0.0.2", 6380)


class _Silent:
    def __init__(self) -> None:
        self.transport = StringTransport()
        self.pings = 0

    def execute_command(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        assert args == ("PING",)
        self.pings += 1
        return defer.Deferred()


def test_a_subscription_that_stays_silent_is_dropped_and_one_that_answers_is_not():
    clock, connection = Clock(), _Silent()
    liveness = Liveness(connection, clock, "a subscription", every=1, silence=3)
    liveness.start()
    for _ in range(10):  # answers come: kept
        clock.advance(1)
        liveness.heard()
    assert connection.pings == 10 and not connection.transport.disconnecting
    clock.advance(1)
    clock.advance(1)
    assert not connection.transport.disconnecting
    clock.advance(1)  # three seconds of silence
    assert connection.transport.disconnecting
    assert connection.pings == 12
    clock.advance(10)
    assert connection.pings == 12  # stopped


# the servers


def _in_sync(replica: RedisServer) -> bool:
    try:
        return info(replica.port, "replication").get("master_link_status") == "up"
    except OSError:
        return False


@pytest_twisted.async_yield_fixture
async def cluster(tmp_path, request):
    servers = SentinelCluster(tmp_path, SERVICE, *getattr(request, "param", (1,)))
    try:
        await servers.start()
        yield servers
    finally:
        await servers.stop()


@pytest_twisted.async_yield_fixture
async def nodes():
    """``await nodes(url, **sections)`` starts a daemon; all are stopped after."""
    started: list[Daemon] = []

    async def start(url: str, **sections: dict[str, Any]) -> Daemon:
        daemon = await start_daemon(url, **sections)
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            if daemon.service.running:
                await daemon.service.stopService()


# clients that keep count


class Publisher:
    """Publishes numbered messages one after the other, each retried (with
    its Idempotency-Key) until acknowledged; ``acked`` maps text to id."""

    def __init__(self, name: str, daemon: Daemon, auth: tuple[str, str]) -> None:
        self.name = name
        self.daemon = daemon
        self.auth = auth
        self.acked: dict[str, str] = {}
        self.refused = 0
        self.running = True
        self.done = defer.Deferred.fromCoroutine(self._run())

    async def _run(self) -> None:
        n = 0
        while self.running:
            text = f"{self.name}-{n}"
            while True:
                try:
                    status, body = await publish(self.daemon, self.auth, text, headers={"Idempotency-Key": text})
                except defer.TimeoutError:
                    status, body = 0, None
                if status in (200, 201):
                    self.acked[text] = body["id"]
                    break
                assert status in (0, 503) and (body is None or body["error"] == "store_unavailable"), body
                self.refused += 1
                await sleep(0.05)
            n += 1
            await sleep(0.02)

    async def stop(self) -> None:
        self.running = False
        await self.done.addTimeout(30, reactor)


class LongPoll:
    """Long-polls the center from the first message on, following its cursor."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.received: list[dict[str, Any]] = []
        self.lost: list[Any] = []
        self.running = True
        self.done = defer.Deferred.fromCoroutine(self._run())

    async def _run(self) -> None:
        since: str | None = None
        while self.running:
            query = "?timeout=2" + (f"&since={since}" if since is not None else "")
            try:
                status, body = await call("GET", f"{self.daemon.public}{SUB}{query}")
            except defer.TimeoutError:
                continue
            if status != 200:
                self.lost.append((status, body))
                await sleep(0.1)
                continue
            if since is not None and not body["recovered"]:
                self.lost.append(body)
            self.received += body["messages"]
            if body["messages"]:
                since = body["messages"][-1]["id"]

    async def stop(self) -> None:
        self.running = False
        await self.done.addTimeout(30, reactor)


def _seq(message_id: str) -> int:
    return int(message_id.rsplit("-", 1)[1])


async def _drain(next_item: Any, expected: set[str], what: str) -> list[tuple[str, str]]:
    """``(id, data)`` pairs from *next_item* until every id of *expected* came."""
    got: list[tuple[str, str]] = []
    while not expected <= {message_id for message_id, _ in got}:
        try:
            got.append(await next_item())
        except defer.TimeoutError:
            missing = sorted(expected - {message_id for message_id, _ in got}, key=_seq)
            raise AssertionError(f"{what}: {len(missing)} acknowledged messages never came: {missing[:5]}") \
                from None
    return got


def _exactly_once_in_order(got: list[tuple[str, str]], acked: dict[str, str], what: str) -> None:
    seqs = [_seq(message_id) for message_id, _ in got]
    assert seqs == sorted(set(seqs)), f"{what}: out of order or twice: {seqs}"
    texts = [text for _, text in got]
    assert len(texts) == len(set(texts)), f"{what}: a message came twice"
    assert {text: message_id for message_id, text in got} == acked, what


# failover


@pytest.mark.integration
@pytest.mark.parametrize("cluster", [(2,)], indirect=True)
@pytest_twisted.ensureDeferred
async def test_publishes_and_subscriptions_go_through_two_failovers_exactly_once_in_order(cluster, nodes):
    # Two replicas: with replicas_ack = 1, the master's loss leaves one to
    # acknowledge publishes (with only one, publishing waits for it to return).
    store = {"replicas_ack": 1, "replicas_timeout_ms": 1000}
    a, b = await nodes(cluster.url, store=store), await nodes(cluster.url, store=store)
    auth = await setup_site(a, CENTER, PUBLISHER, history=HISTORY)
    sockets = [await websocket(f"{node.ws}{SUB}?format=json", node.public_port) for node in (a, b)]
    for ws in sockets:
        await opened(ws)
    streams = [await event_source(node.public_port, SUB) for node in (a, b)]
    for stream in streams:
        assert stream.status == 200 and (await stream.next())["retry"]
    polls = [LongPoll(b)]

    async def subscribed(node: Daemon, count: int) -> None:
        def held() -> int:
            hub = node.service.centers.loaded(PUBLISHER, CENTER)
            return len(hub.subscribers) if hub is not None else 0
        await eventually(lambda: defer.succeed(held()), lambda n: n >= count)

    await subscribed(a, 2)
    await subscribed(b, 3)
    publishers = [Publisher(f"p{i}", node, auth) for i, node in enumerate((a, b, a))]
    try:
        async def each_acknowledges(more: int, seconds: float) -> None:
            marks = [len(p.acked) for p in publishers]
            await eventually(lambda: defer.succeed([len(p.acked) - m for p, m in zip(publishers, marks, strict=True)]),
                             lambda grown: min(grown) >= more, seconds=seconds, every=0.05)

        await each_acknowledges(5, 10)
        # 1. The master dies with publishes in flight.
        first = await cluster.master()
        await cluster.server(first).kill()
        second = await cluster.failed_over(first)
        await each_acknowledges(5, 15)  # resumed by itself, within seconds of the promotion
        # 2. The old master comes back as a replica of the new one; then the new one dies.
        old = cluster.server(first)
        old.args = (*QUICK_SYNC, "--replicaof", "127.0.0.1", str(second))
        await old.start()
        await cluster.settled(second)
        await each_acknowledges(5, 10)
        await cluster.server(second).kill()
        third = await cluster.failed_over(second)
        await each_acknowledges(5, 15)
    except BaseException:
        for poll in polls:
            poll.running = False
        raise
    finally:
        for p in publishers:
            await p.stop()
    acked = {text: message_id for p in publishers for text, message_id in p.acked.items()}
    assert sum(p.refused for p in publishers) > 0  # publishing met the failovers
    # Every acknowledged message is in the new master's history, once.
    history = [json.loads(entry) for entry in command(third, "LRANGE", LOG, "0", "-1")]
    epoch = acked["p0-0"].rsplit("-", 1)[0]
    stored = [(f"{epoch}-{seq}", data) for seq, _, data in history]
    _exactly_once_in_order(stored, acked, "history")
    # ... and reached every subscriber exactly once, in order.
    expected = set(acked.values())
    for i, ws in enumerate(sockets):
        async def next_frame(ws: Any = ws) -> tuple[str, str]:
            envelope = json.loads(await ws.next(10))
            return envelope["id"], envelope["data"]
        _exactly_once_in_order(await _drain(next_frame, expected, f"WebSocket {i}"), acked, f"WebSocket {i}")
        assert not ws.closed.called
    for i, stream in enumerate(streams):
        async def next_event(stream: Any = stream) -> tuple[str, str]:
            event = await stream.next(10)
            return event["id"], event["data"]
        _exactly_once_in_order(await _drain(next_event, expected, f"SSE {i}"), acked, f"SSE {i}")
        assert not stream.ended.called
    for poll in polls:
        await eventually(lambda poll=poll: defer.succeed({m["id"] for m in poll.received}),
                         lambda got: expected <= got, seconds=10)
        await poll.stop()
        _exactly_once_in_order([(m["id"], m["data"]) for m in poll.received], acked, "long-poll")
        assert poll.lost == []
    for ws in sockets:
        ws.close()
    for stream in streams:
        stream.close()


@pytest.mark.integration
@pytest.mark.parametrize("cluster", [(2, STUBBORN)], indirect=True)
@pytest_twisted.ensureDeferred
async def test_a_master_failed_over_alive_is_left_for_the_new_one(cluster, nodes):
    """``SENTINEL FAILOVER`` with the old master alive, its connections
    open, and refusing to be made a replica (as one cut off from the
    Sentinels would stay a master): the daemon follows ``+switch-master`` to
    the new one. (``replicas_ack``: what the old master alone takes is
    never acknowledged.)"""
    a = await nodes(cluster.url, store={"replicas_ack": 1})
    auth = await setup_site(a, CENTER, PUBLISHER, history=HISTORY)
    ws = await websocket(f"{a.ws}{SUB}?format=json", a.public_port)
    await opened(ws)
    status, body = await publish(a, auth, "before")
    assert status == 201, body
    assert json.loads(await ws.next())["data"] == "before"
    first = await cluster.master()
    assert command(cluster.sentinels[0].port, "SENTINEL", "FAILOVER", SERVICE) == "OK"
    # (The old master stays one: it does not know REPLICAOF.)
    second = await cluster.failed_over(first)
    assert command(second, "ROLE")[0] == "master"

    async def attempt() -> tuple[int, Any]:
        return await publish(a, auth, "after")

    status, body = await eventually(attempt, lambda answer: answer[0] == 201, seconds=20, every=0.2)
    # Published on the new master, delivered from it.
    history = [json.loads(entry)[2] for entry in command(second, "LRANGE", LOG, "0", "-1")]
    assert history[-1] == "after"
    got = [json.loads(await ws.next(10))["data"]]
    while got[-1] != "after":
        got.append(json.loads(await ws.next(10))["data"])
    assert got.count("after") == 1 and not ws.closed.called
    ws.close()


# acknowledged by replicas (WAIT)


@pytest_twisted.async_yield_fixture
async def replicated(tmp_path):
    """A master and a replica of it (no Sentinel)."""
    master = RedisServer(tmp_path / "master", args=QUICK_SYNC)
    replica = RedisServer(tmp_path / "replica", args=(*QUICK_SYNC, "--replicaof", "127.0.0.1", str(master.port)))
    try:
        await master.start()
        await replica.start()
        await eventually(lambda: defer.succeed(_in_sync(replica)), bool, seconds=15)
        yield master, replica
    finally:
        await replica.stop()
        await master.stop()


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_publish_the_replicas_do_not_confirm_is_503_and_its_retry_delivers_it_once(replicated, nodes):
    master, replica = replicated
    # Long enough for a loaded machine to confirm the first publish in time.
    a = await nodes(master.url, store={"replicas_ack": 1, "replicas_timeout_ms": 1000})
    auth = await setup_site(a, CENTER, PUBLISHER, history=HISTORY)
    ws = await websocket(f"{a.ws}{SUB}?format=json", a.public_port)
    await opened(ws)
    status, body = await publish(a, auth, "first")
    assert status == 201, body
    assert json.loads(await ws.next())["data"] == "first"

    replica.pause()
    key = {"Idempotency-Key": "retried"}
    for _ in range(3):  # on whichever connection, unconfirmed stays unconfirmed
        sent = reactor.seconds()
        status, body = await publish(a, auth, "retried", headers=key)
        assert (status, body["error"]) == (503, "store_unavailable"), body
        assert reactor.seconds() - sent < 5
    # Kept by the master, held back from subscribers until confirmed.
    assert [json.loads(e)[2] for e in command(master.port, "LRANGE", LOG, "0", "-1")] == ["first", "retried"]
    assert not ws.messages.pending

    replica.resume()
    status, body = await eventually(lambda: publish(a, auth, "retried", headers=key),
                                    lambda answer: answer[0] in (200, 201), seconds=10, every=0.2)
    assert status == 200, body  # the first attempt's, answered again
    retried = body["id"]
    status, body = await publish(a, auth, "last")
    assert status == 201, body
    got = [json.loads(await ws.next(10)) for _ in range(2)]
    assert [(e["id"], e["data"]) for e in got] == [(retried, "retried"), (body["id"], "last")]
    assert [json.loads(e)[2] for e in command(master.port, "LRANGE", LOG, "0", "-1")] == \
        ["first", "retried", "last"]
    assert not ws.messages.pending
    ws.close()


@pytest.mark.integration
@pytest.mark.redis
@pytest_twisted.ensureDeferred
async def test_without_the_replicas_asked_for_a_publish_is_503_within_about_the_timeout(tmp_path, nodes):
    alone = RedisServer(tmp_path / "alone")
    await alone.start()
    try:
        a = await nodes(alone.url, store={"replicas_ack": 1, "replicas_timeout_ms": 400})
        auth = await setup_site(a, CENTER, PUBLISHER)
        for attempt in range(2):
            sent = reactor.seconds()
            status, body = await publish(a, auth, f"single {attempt}")
            assert (status, body["error"]) == (503, "store_unavailable"), body
            assert reactor.seconds() - sent < 4
        sent = reactor.seconds()
        status, body = await call("POST", f"{a.api}/api/v1/messages", auth=auth,
                                  body={"messages": [{"center": CENTER, "data": "x"}, {"center": CENTER, "data": "y"}]})
        assert (status, body["error"]) == (503, "store_unavailable"), body
        assert reactor.seconds() - sent < 4
        # Other work of the store goes on meanwhile.
        status, body = await call("GET", f"{a.api}/api/v1/centers/{CENTER}", auth=auth)
        assert status == 200, body
        # Asking for none acknowledges at once, as before.
        b = await nodes(alone.url)
        status, body = await publish(b, auth, "unreplicated")
        assert status == 201, body
    finally:
        await alone.stop()


# liveness of the subscription


@pytest.mark.integration
@pytest.mark.redis
@pytest_twisted.ensureDeferred
async def test_a_subscription_whose_network_goes_black_is_made_again(tmp_path, nodes):
    server = RedisServer(tmp_path / "redis")
    await server.start()
    relay = Relay(server.port)
    await relay.start()
    try:
        behind = await nodes(f"redis://127.0.0.1:{relay.port_number}/0")
        direct = await nodes(server.url)
        auth = await setup_site(direct, CENTER, PUBLISHER, history=HISTORY)
        ws = await websocket(f"{behind.ws}{SUB}?format=json", behind.public_port)
        await opened(ws)
        status, body = await publish(direct, auth, "before")
        assert status == 201, body
        assert json.loads(await ws.next())["data"] == "before"

        assert relay.freeze() >= 2  # the subscription and the pool: silent, never closed
        sent: list[str] = []

        async def attempt() -> list[str]:
            text = f"after {len(sent)}"
            status, body = await publish(direct, auth, text)
            assert status == 201, body
            sent.append(text)
            got = []
            while ws.messages.pending:
                got.append(json.loads(await ws.next())["data"])
            return got

        got: list[str] = []
        deadline = reactor.seconds() + 15
        while not got:
            assert reactor.seconds() < deadline, "the subscription was not made again within 15 s"
            got += await attempt()
            await sleep(0.5)
        while got[-1] != sent[-1]:
            got.append(json.loads(await ws.next(10))["data"])
        assert got == sent  # caught up: none missed, none twice
        assert not ws.closed.called
        ws.close()
    finally:
        await relay.stop()
        await server.stop()


# WAIT on a lent connection: cancelled, and many at once

_SET = "redis.call('SET', KEYS[1], ARGV[1]) return 1"
SET = Script("set", _SET, hashlib.sha1(_SET.encode()).hexdigest())


@pytest_twisted.async_yield_fixture
async def alone(tmp_path: Path) -> Any:
    """A Redis with no replica, and a client of it: ``(server, redis)``."""
    server = RedisServer(tmp_path / "alone")
    await server.start()
    redis = Redis(RedisAddress.parse(server.url), reactor)
    try:
        await redis.ready()
        yield server, redis
    finally:
        await redis.stop()
        await server.stop()


@pytest.mark.integration
@pytest.mark.redis
@pytest_twisted.ensureDeferred
async def test_a_wait_given_up_leaves_no_reply_for_the_next_command(alone):
    server, redis = alone
    waiting = defer.Deferred.fromCoroutine(redis.replicated(SET, ["k"], ["v"], 1, 8000))  # no replica
    # The script has run (its key is set) and the WAIT is what remains.
    await until(lambda: command(server.port, "GET", "k") == "v", 5, "the script to run")
    await until(lambda: any(c.replyQueue.waiting for c in redis._factory.pool), 5, "the WAIT sent")
    waiting.cancel()
    with pytest.raises(defer.CancelledError):
        await waiting
    pooled = list(redis._factory.connectionQueue.pending)
    assert not [connection for connection in pooled if connection.replyQueue.waiting]
    for _ in range(8):  # each answered with its own reply, never the WAIT's
        assert await redis.call("get", "k") == "v"


@pytest.mark.integration
@pytest.mark.redis
@pytest_twisted.ensureDeferred
async def test_publishes_waiting_for_replicas_do_not_queue_past_a_wait(alone):
    _, redis = alone
    answers: list[Any] = []

    async def one() -> None:
        try:
            answers.append(await redis.replicated(SET, ["k"], ["v"], 1, 1000))
        except Unavailable as e:
            answers.append(e.message)

    # Two connections are lent at a time: of six, the last two cannot
    # have one within a WAIT's time, and are refused rather than queued.
    await defer.gatherResults([defer.Deferred.fromCoroutine(one()) for _ in range(6)])
    refused = [a for a in answers if isinstance(a, str) and "too many" in a]
    assert len(refused) >= 2, answers
    assert all(a == (1, 0) for a in answers if not isinstance(a, str)), answers


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_a_publisher_gone_while_the_replicas_confirm_still_has_its_message_delivered(replicated, nodes):
    master, replica = replicated
    a = await nodes(master.url, store={"replicas_ack": 1, "replicas_timeout_ms": 3000})
    auth = await setup_site(a, CENTER, PUBLISHER, history=HISTORY)
    ws = await websocket(f"{a.ws}{SUB}?format=json", a.public_port)
    await opened(ws)
    replica.pause()
    client = await connect(a.service.api_port.getHost().port)
    credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    client.send((f"POST /api/v1/centers/{CENTER}/messages HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Basic {credentials}\r\nContent-Type: text/plain\r\n"
                 "Content-Length: 4\r\n\r\ngone").encode())
    await until(lambda: len(command(master.port, "LRANGE", LOG, "0", "-1")) == 1, 5, "the script to run")
    client.transport.abortConnection()  # the publisher leaves while WAIT waits
    replica.resume()
    assert json.loads(await ws.next(10))["data"] == "gone"
    ws.close()


@pytest.mark.integration
@pytest.mark.redis
@pytest_twisted.ensureDeferred
async def test_a_command_waiting_for_a_lent_connection_that_is_lost_is_refused(tmp_path, monkeypatch):
    from notifier.backends.redis import client

    monkeypatch.setattr(client, "CONNECTION_WAIT", 1)
    server = RedisServer(tmp_path / "one")
    await server.start()
    redis = Redis(RedisAddress.parse(server.url), reactor, poolsize=1)
    try:
        await redis.ready()
        # The pool's only connection is lent to a publish waiting for a
        # replica there is none of; a command waits for it.
        waiting = defer.Deferred.fromCoroutine(redis.replicated(SET, ["k"], ["v"], 1, 30_000))
        await until(lambda: any(c.replyQueue.waiting for c in redis._factory.pool), 5, "the WAIT sent")
        asked = defer.Deferred.fromCoroutine(redis.call("get", "k"))
        await server.kill()  # the lent connection is lost, and no other comes
        with pytest.raises(Unavailable):
            await waiting
        # Refused within its bound; before, it waited until Redis came back.
        answered = await defer.DeferredList([asked], consumeErrors=True).addTimeout(20, reactor)
        assert not answered[0][0] and answered[0][1].check(Unavailable), answered
    finally:
        await redis.stop()
        await server.stop()
