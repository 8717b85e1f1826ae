"""The soak's subscribers: pages that subscribe, lose their connection,
come back and resume as ``notifier/static/notifier.js`` does, then leave.

Each ``Client`` is one page with one subscription (one center, or several
on one connection) over one transport: native WebSocket (``format=json``),
Server-Sent Events (``format=json``), long-poll, or the Pusher protocol
(``PusherClient``, a frame-level client of ``/app/{key}``). Like
notifier.js it asks where its centers stand before its first connection
(a long-poll with ``timeout=0``), resumes with ``since`` after any cut,
backs off exponentially with jitter (500 ms doubling to 30 s, reset once
connected), and hands its application only what its ``Cursor`` accepts.
What it hands goes to the ``Ledger``; when it leaves it makes a final read
(a long-poll with ``timeout=0`` from its cursor) so that what it was owed
up to then is known.

Some clients misbehave on purpose: slow consumers stop reading for a
while (with a small receive buffer), sleepers close their connection and
come back later (their center keeping little history, they come back to
``recovered: false``). ``Toggler`` occupies a center now and then, alone,
for the webhook checks.

The WebSocket and event-stream connections are the tests' own clients
(``tests.support.websocket``, ``tests.support.sse``), their queues replaced
by callbacks.
"""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import attrs
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IDelayedCall

from soak.cursor import Cursor, parse_id
from soak.http import request
from soak.ledger import Ledger, PusherStream, Stream
from soak.metrics import Metrics, Outage
from soak.topology import Daemon
from tests.pusher.support import App, auth
from tests.support import sleep, subscriber_token
from tests.support.sse import event_source
from tests.support.websocket import websocket

BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
#: Seconds a long-poll of a connected client waits (notifier.js waits 30).
LONGPOLL_TIMEOUT = 20
#: Seconds a leaving client keeps trying its final read, and waits for a
#: daemon that is behind the acknowledged messages.
FINAL_READ_SECONDS = 30.0


@attrs.define
class Site:
    """A publisher and the daemons that serve it."""

    store: str                  # "redis" or "sqlite"
    publisher: str
    secret: str
    app: App
    daemons: list[Daemon]
    history: dict[str, int]     # center -> retained messages
    private: set[str]

    def pick(self, rng: random.Random) -> Daemon:
        return rng.choice(self.daemons)


@attrs.define
class Spec:
    transport: str              # websocket, sse, longpoll, pusher
    centers: list[str]
    lifetime: float
    slow: bool = False
    sleeper: bool = False
    uid: str | None = None


class _Sink:
    """Stands for the tests' clients' DeferredQueue: every item to a callback."""

    def __init__(self, callback: Callable[[Any], None]) -> None:
        self.callback = callback

    def put(self, item: Any) -> None:
        self.callback(item)


def split(data: str) -> tuple[str, float]:
    """The key and the first sending time written in a message's text."""
    parts = data.split(" ", 2)
    try:
        return parts[0], float(parts[1])
    except (IndexError, ValueError):
        return parts[0], 0.0


def backoff(rng: random.Random, attempt: int) -> float:
    """notifier.js's: 500 ms doubling to 30 s, between half of it and all of it."""
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** attempt)
    return ceiling / 2 + rng.random() * ceiling / 2


async def _open(url: str, port: int, frame: Callable[[str], None]) -> tuple[Any, list[str]] | str:
    """A WebSocket to *url*, its frames from now on handed to *frame*, and
    those it had already; or why it was refused."""
    try:
        ws = await websocket(url, port)
    except Exception as e:
        return f"refused ({type(e).__name__})"
    factory = ws.protocol.factory
    pending = list(factory.messages.pending)
    factory.messages = _Sink(frame)
    return ws, pending


def fire(d: defer.Deferred[None]) -> None:
    """Fire *d* unless it has fired already."""
    if not d.called:
        d.callback(None)


class World:
    """What every client shares: the ledger, the figures, chance, and
    whether the run is ending."""

    def __init__(self, ledger: Ledger, metrics: Metrics, rng: random.Random) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.rng = rng
        self.ending = False
        self.final_reads = defer.DeferredSemaphore(64)


class Client:
    """One page subscribed to ``spec.centers`` of *site*."""

    def __init__(self, world: World, site: Site, spec: Spec, name: str) -> None:
        self.world = world
        self.site = site
        self.spec = spec
        self.name = name
        self.cursor = Cursor(spec.centers)
        self.streams: dict[str, Stream] = {
            center: world.ledger.stream(name, f"{site.store}/{center}", spec.transport) for center in spec.centers}
        private = [c for c in spec.centers if c in site.private]
        self.token = subscriber_token(site.secret, lifetime=spec.lifetime + 3600, centers=private,
                                      uid=spec.uid or name, info={"name": name}) if private else None
        self.birth = reactor.seconds()
        self.death = self.birth + spec.lifetime
        self.attempt = 0
        self.connected_at = 0.0
        self.outage_since: float | None = None
        self.outage_why = ""
        self._stop: Callable[[], None] | None = None
        self._by_client = False
        self._napping = False
        self._since: dict[str, str | None] = {}
        self._timers: list[IDelayedCall] = []
        self._leaving = False
        #: The transport of a slow consumer while it reads nothing.
        self._paused: Any = None
        self._waiting: defer.Deferred[None] | None = None
        #: The daemon of the connection in use.
        self._where = ""

    # the page's life

    async def run(self) -> None:
        metrics = self.world.metrics
        metrics.clients[self.spec.transport] += 1
        try:
            await self._begin()
            while reactor.seconds() < self.death and not self.world.ending:
                daemon = self.site.pick(self.world.rng)
                self._by_client = False
                timer = reactor.callLater(max(0.0, self.death - reactor.seconds()), self.stop)
                if self.spec.sleeper:
                    self._timers.append(reactor.callLater(self.world.rng.uniform(5, 20), self._nap))
                try:
                    why = await self._connect(daemon)
                finally:
                    if timer.active():
                        timer.cancel()
                    self._cancel_timers()
                    self._close_notices()
                if self._napping:
                    self._napping = False
                    await self._pause(self.world.rng.uniform(10, 25))
                    continue
                if self._by_client or self.world.ending:
                    break
                metrics.ends[f"{self.spec.transport} {why}"] += 1
                if self.outage_since is None:
                    self.outage_since, self.outage_why = reactor.seconds(), why
                delay = backoff(self.world.rng, self.attempt)
                self.attempt += 1
                await self._pause(delay)
            if self.outage_since is not None:
                self._outage_over(truncated=True)
            await self._leave()
        except Exception as e:  # a bug of the harness: reported, never hidden
            metrics.harness_errors.append(f"{self.name}: {e!r}")
        finally:
            metrics.clients[self.spec.transport] -= 1

    def stop(self) -> None:
        """End the connection in use, by the page's own choice."""
        self._by_client = True
        self._cancel_timers()
        if self._paused is not None:
            self._paused.resumeProducing()  # so that the close handshake is read
            self._paused = None
        if self._stop is not None:
            self._stop()

    def leave_now(self) -> None:
        self.death = reactor.seconds()
        self.stop()
        if self._waiting is not None:
            fire(self._waiting)

    async def _pause(self, seconds: float) -> None:
        """Wait *seconds*, or until the page leaves, whichever comes first."""
        waiting = self._waiting = defer.Deferred()
        timer = reactor.callLater(max(0.0, min(seconds, self.death - reactor.seconds())), fire, waiting)
        await waiting
        if timer.active():
            timer.cancel()
        self._waiting = None

    def _nap(self) -> None:
        self._napping = True
        self.stop()

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def _opened(self) -> None:
        self.attempt = 0
        self.connected_at = reactor.seconds()
        self.world.metrics.connected[self.spec.transport] += 1
        if self.outage_since is not None:
            self._outage_over()

    def _closed(self) -> None:
        self.world.metrics.connected[self.spec.transport] -= 1

    def _outage_over(self, truncated: bool = False) -> None:
        assert self.outage_since is not None
        now = reactor.seconds()
        self.world.metrics.outages.append(Outage(self.spec.transport, self.site.store, self.outage_since, now,
                                                 self.outage_why + (" (left)" if truncated else ""),
                                                 slow=self.spec.slow))
        self.outage_since = None

    # urls and the cursor

    def _path(self) -> str:
        return f"/sub/{self.site.publisher}/" + ",".join(quote(c, safe="") for c in self.spec.centers)

    def _query(self, **params: Any) -> str:
        if self.token is not None:
            params["token"] = self.token
        parts = [f"{name}={quote(str(value), safe='')}" for name, value in params.items() if value is not None]
        return "?" + "&".join(parts) if parts else ""

    def _remember_since(self) -> str | None:
        since = self.cursor.value()
        self._since = dict(zip(self.spec.centers, self.cursor.positions, strict=True))
        return since

    def _begun(self) -> None:
        for center, position in zip(self.spec.centers, self.cursor.positions, strict=True):
            if position is not None:
                self.streams[center].begin(position)

    def _recovery(self, recovered: Any, lost: Any) -> None:
        if recovered is not False:
            return
        centers = lost if isinstance(lost, list) and lost else self.spec.centers
        now = reactor.seconds()
        for center in centers:
            stream = self.streams.get(center)
            if stream is not None:
                stream.notice(self._since.get(center), now, self._where)

    def _close_notices(self) -> None:
        for center, position in zip(self.spec.centers, self.cursor.positions, strict=True):
            stream = self.streams[center]
            parsed = parse_id(position)
            if stream.open_notice is not None and parsed is not None and parsed[0] == stream.epoch:
                stream.close_notice(parsed[1])

    def receive(self, envelope: Any, after: str | None = None) -> None:
        """A message from the daemon (``after``: the cursor after it, when told)."""
        if not isinstance(envelope, dict) or envelope.get("id") is None:
            return
        message_id = str(envelope["id"])
        center = envelope.get("center") or self.spec.centers[0]
        key, _ = split(str(envelope.get("data", "")))
        now = reactor.seconds()
        self.world.ledger.observe(f"{self.site.store}/{center}", message_id, key, now)
        fresh = self.cursor.accept(center, message_id)
        if after:
            self.cursor.merge(after)
        stream = self.streams.get(center)
        if stream is None:
            return
        if fresh:
            stream.handed_to_app(message_id)
            self.world.metrics.handed += 1
            ts = envelope.get("ts")
            if not self._leaving and not self.spec.slow and isinstance(ts, (int, float)):
                # From the daemon's taking the publish (not the publisher's
                # first attempt: its retries are counted apart), or from the
                # connection's opening for what it was sent on resuming; not
                # for slow consumers, late by their own doing.
                self.world.metrics.latencies.append(now - max(ts, self.connected_at))
        else:
            stream.dropped(message_id)

    # before the first connection, and when leaving

    async def _begin(self) -> None:
        """notifier.js ``begin``: where the centers stand, before connecting."""
        if self.cursor.complete():
            return
        daemon = self.site.pick(self.world.rng)
        try:
            answer = await request("GET", daemon.public + self._path() + self._query(timeout=0), timeout=10)
        except Exception:
            return
        if answer.status == 200 and answer.cursor:
            self.cursor.fill(answer.cursor)
            self._begun()
        elif (answer.status >= 500 and answer.status != 503) or answer.status == 404:
            self._anomaly(answer.status, answer.body, "the position asked before connecting")

    async def _leave(self) -> None:
        """The final read, then every stream is finished where it stands."""
        self._leaving = True
        async with self.world.final_reads:
            await self._final_read()
        now = reactor.seconds()
        for center, position in zip(self.spec.centers, self.cursor.positions, strict=True):
            self.streams[center].finish(position, now)

    async def _final_read(self) -> None:
        deadline = reactor.seconds() + FINAL_READ_SECONDS
        while reactor.seconds() < deadline:
            asked = reactor.seconds()
            since = self._remember_since()
            daemon = self.site.pick(self.world.rng)
            self._where = daemon.name
            try:
                answer = await request("GET", daemon.public + self._path() + self._query(since=since, timeout=0),
                                       timeout=10)
            except Exception:
                await sleep(0.5)
                continue
            if answer.status != 200 or not isinstance(answer.body, dict):
                if answer.status >= 500 and answer.status != 503:
                    self._anomaly(answer.status, answer.body, "a final read")
                await sleep(0.5)
                continue
            self._poll_answer(answer.body, answer.cursor)
            if answer.body.get("messages"):
                continue
            if not self._behind(asked):
                return
            await sleep(1.0)
        self.world.metrics.final_reads_behind += 1

    def _behind(self, asked: float) -> bool:
        """Whether a message acknowledged before *asked* is after the cursor."""
        for center, position in zip(self.spec.centers, self.cursor.positions, strict=True):
            parsed = parse_id(position)
            if parsed is None:
                continue
            latest = self.world.ledger.latest_known(f"{self.site.store}/{center}", parsed[0], asked)
            if latest is not None and latest > parsed[1]:
                return True
        return False

    def _poll_answer(self, body: dict[str, Any], cursor: str | None) -> None:
        last_id = body.get("last_id") or cursor
        self._recovery(body.get("recovered"), body.get("lost"))
        for message in body.get("messages") or []:
            self.receive(message)
        if last_id:
            self.cursor.merge(last_id)
            self._begun()

    def _anomaly(self, status: int, body: Any, what: str) -> None:
        self.world.metrics.anomaly(reactor.seconds(), f"{status} on {what}", client=self.name,
                                   transport=self.spec.transport, body=str(body)[:200])

    # the transports

    async def _connect(self, daemon: Daemon) -> str:
        self._where = daemon.name
        if self.spec.transport == "websocket":
            return await self._websocket(daemon)
        if self.spec.transport == "sse":
            return await self._sse(daemon)
        return await self._longpoll(daemon)

    async def _websocket(self, daemon: Daemon) -> str:
        since = self._remember_since()
        url = f"ws://127.0.0.1:{daemon.public_port}{self._path()}{self._query(format='json', since=since)}"
        opened = await _open(url, daemon.public_port, self._frame)
        if isinstance(opened, str):
            return opened
        ws, pending = opened
        self._opened()
        self._stop = ws.close
        if self._by_client:
            ws.close()
        for frame in pending:
            self._frame(frame)
        if self.spec.slow:
            self._slow(ws.protocol.transport)
        try:
            code, reason = await ws.closed
        finally:
            self._stop = None
            self._paused = None
            self._closed()
        return f"closed {code} {reason or ''}".strip()

    def _frame(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if not isinstance(frame, dict) or "presence" in frame:
            return
        if frame.get("id") is None:
            if frame.get("cursor"):
                self.cursor.merge(frame["cursor"])
                self._begun()
            if "recovered" in frame:
                self._recovery(frame["recovered"], frame.get("lost"))
            return
        self.receive(frame)

    def _slow(self, transport: Any) -> None:
        """Stop reading now and then, with a small receive buffer."""
        try:
            transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        except (OSError, AttributeError):
            pass
        rng = self.world.rng

        def pause() -> None:
            transport.pauseProducing()
            self._paused = transport
            self._timers.append(reactor.callLater(rng.uniform(5, 40), resume))

        def resume() -> None:
            transport.resumeProducing()
            self._paused = None
            self._timers.append(reactor.callLater(rng.uniform(5, 20), pause))

        self._timers.append(reactor.callLater(rng.uniform(2, 10), pause))

    async def _sse(self, daemon: Daemon) -> str:
        since = self._remember_since()
        path = self._path() + self._query(format="json", since=since)
        try:
            source = await event_source(daemon.public_port, path)
        except Exception as e:
            return f"refused ({type(e).__name__})"
        if source.status != 200:
            source.close()
            if source.status >= 500 and source.status != 503:
                self._anomaly(source.status, "", "an event stream")
            return f"refused {source.status}"
        protocol = source.protocol
        pending = list(protocol.events.pending)
        protocol.events = _Sink(self._event)  # type: ignore[assignment]
        self._opened()
        self._stop = source.close
        if self._by_client:
            source.close()
        for event in pending:
            self._event(event)
        try:
            await source.ended
        finally:
            self._stop = None
            self._closed()
        return "ended"

    def _event(self, event: dict[str, str]) -> None:
        name = event.get("event")
        if "data" not in event:
            # The opening block: where the stream starts.
            if event.get("id"):
                if len(self.spec.centers) > 1:
                    self.cursor.merge(event["id"])
                else:
                    self.cursor.fill(event["id"])
                self._begun()
            return
        if name == "recovery":
            try:
                body = json.loads(event["data"])
            except ValueError:
                return
            self._recovery(body.get("recovered"), body.get("lost"))
            return
        if name in ("members", "join", "leave"):
            return
        try:
            envelope = json.loads(event["data"])
        except ValueError:
            return
        self.receive(envelope, event.get("id") if len(self.spec.centers) > 1 else None)

    async def _longpoll(self, daemon: Daemon) -> str:
        stopped = False
        current: list[defer.Deferred[Any]] = []

        def stop() -> None:
            nonlocal stopped
            stopped = True
            for d in current:
                d.cancel()

        self._stop = stop
        if self._by_client:
            return "stopped"
        opened = False
        try:
            while not stopped:
                since = self._remember_since()
                timeout = LONGPOLL_TIMEOUT if opened else 0
                url = daemon.public + self._path() + self._query(since=since, timeout=timeout)
                d = defer.Deferred.fromCoroutine(request("GET", url, timeout=timeout + 10))
                current[:] = [d]
                try:
                    answer = await d
                except Exception as e:
                    if stopped:
                        return "stopped"
                    return f"failed ({type(e).__name__})"
                if answer.status != 200 or not isinstance(answer.body, dict):
                    if answer.status >= 500 and answer.status != 503:
                        self._anomaly(answer.status, answer.body, "a long-poll")
                    return f"answered {answer.status}"
                if not opened:
                    opened = True
                    self._opened()
                self._poll_answer(answer.body, answer.cursor)
            return "stopped"
        finally:
            self._stop = None
            if opened:
                self._closed()


class PusherClient:
    """A page using the Pusher protocol on ``/app/{key}``: subscribes to its
    channels, and to nothing it missed when it comes back (Pusher has no
    resuming), as pusher-js does."""

    def __init__(self, world: World, site: Site, spec: Spec, name: str) -> None:
        self.world = world
        self.site = site
        self.spec = spec
        self.name = name
        self.death = reactor.seconds() + spec.lifetime
        self.attempt = 0
        self.sessions: dict[str, PusherStream] = {}
        self.connected_at = 0.0
        self.outage_since: float | None = None
        self.outage_why = ""
        self._ws: Any = None
        self._by_client = False
        self._waiting: defer.Deferred[None] | None = None

    async def run(self) -> None:
        metrics = self.world.metrics
        metrics.clients["pusher"] += 1
        try:
            while reactor.seconds() < self.death and not self.world.ending:
                daemon = self.site.pick(self.world.rng)
                self._by_client = False
                timer = reactor.callLater(max(0.0, self.death - reactor.seconds()), self.stop)
                try:
                    why = await self._connect(daemon)
                finally:
                    if timer.active():
                        timer.cancel()
                if self._by_client or self.world.ending:
                    break
                metrics.ends[f"pusher {why}"] += 1
                if self.outage_since is None:
                    self.outage_since, self.outage_why = reactor.seconds(), why
                delay = backoff(self.world.rng, self.attempt)
                self.attempt += 1
                self._waiting = defer.Deferred()
                timer = reactor.callLater(max(0.0, min(delay, self.death - reactor.seconds())), fire, self._waiting)
                await self._waiting
                if timer.active():
                    timer.cancel()
            if self.outage_since is not None:
                metrics.outages.append(Outage("pusher", self.site.store, self.outage_since, reactor.seconds(),
                                              self.outage_why + " (left)"))
        except Exception as e:
            metrics.harness_errors.append(f"{self.name}: {e!r}")
        finally:
            metrics.clients["pusher"] -= 1

    def stop(self) -> None:
        self._by_client = True
        if self._ws is not None:
            self._ws.close()

    def leave_now(self) -> None:
        self.death = reactor.seconds()
        self.stop()
        if self._waiting is not None:
            fire(self._waiting)

    async def _connect(self, daemon: Daemon) -> str:
        url = f"ws://127.0.0.1:{daemon.public_port}/app/{self.site.app.key}?protocol=7&client=soak&version=1"
        opened = await _open(url, daemon.public_port, self._frame)
        if isinstance(opened, str):
            return opened
        ws, pending = opened
        self._ws = ws
        if self._by_client:
            ws.close()
        self.sessions = {}
        self.attempt = 0
        self.connected_at = reactor.seconds()
        self.world.metrics.connected["pusher"] += 1
        if self.outage_since is not None:
            self.world.metrics.outages.append(Outage("pusher", self.site.store, self.outage_since,
                                                     reactor.seconds(), self.outage_why))
            self.outage_since = None
        for frame in pending:
            self._frame(frame)
        try:
            code, reason = await ws.closed
        finally:
            self._ws = None
            self.world.metrics.connected["pusher"] -= 1
            now = reactor.seconds()
            for session in self.sessions.values():
                session.ended = now
                session.by_client = self._by_client
        return f"closed {code} {reason or ''}".strip()

    def _send(self, event: str, data: Any) -> None:
        if self._ws is not None:
            self._ws.protocol.sendMessage(json.dumps({"event": event, "data": data}).encode())

    def _frame(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        event, channel = frame.get("event"), frame.get("channel")
        if event == "pusher:connection_established":
            socket_id = json.loads(frame["data"])["socket_id"]
            for center in self.spec.centers:
                data: dict[str, Any] = {"channel": center}
                if center.startswith("presence-"):
                    channel_data = json.dumps({"user_id": self.spec.uid or self.name,
                                               "user_info": {"name": self.name}})
                    data["channel_data"] = channel_data
                    data["auth"] = auth(self.site.app, f"{socket_id}:{center}:{channel_data}")
                self._send("pusher:subscribe", data)
        elif event == "pusher:ping":
            self._send("pusher:pong", {})
        elif event == "pusher_internal:subscription_succeeded" and channel in self.spec.centers:
            self.sessions[channel] = self.world.ledger.pusher_stream(
                self.name, f"{self.site.store}/{channel}", reactor.seconds())
        elif event == "pusher:subscription_error" or (
                event == "pusher:error" and '"code":4200' not in str(frame.get("data")).replace(" ", "")):
            self.world.metrics.anomaly(reactor.seconds(), f"Pusher {event}", client=self.name,
                                       body=str(frame.get("data"))[:200])
        elif channel in self.sessions and isinstance(frame.get("data"), str) and not str(event).startswith("pusher"):
            key, _ = split(frame["data"])
            self.sessions[channel].keys.append(key)
            # Pusher frames carry no time of the daemon's: not in the latency figures.
            self.world.metrics.handed += 1


class Toggler:
    """Occupies a center alone, now and then, for the webhook checks: a
    WebSocket for a while, then none for longer than ``leave_grace``."""

    def __init__(self, world: World, site: Site, center: str, leave_grace: float,
                 occupied: Callable[[str, float, float], None], hold: tuple[float, float]) -> None:
        self.world = world
        self.site = site
        self.center = center
        self.leave_grace = leave_grace
        self.occupied = occupied
        self.hold = hold
        self.running = True
        self._ws: Any = None
        self._resting: defer.Deferred[None] | None = None

    def stop(self) -> None:
        self.running = False
        if self._ws is not None:
            self._ws.close()
        if self._resting is not None:
            fire(self._resting)

    async def run(self) -> None:
        rng = self.world.rng
        try:
            while self.running:
                daemon = self.site.pick(rng)
                url = f"ws://127.0.0.1:{daemon.public_port}/sub/{self.site.publisher}/{self.center}"
                try:
                    ws = await websocket(url, daemon.public_port)
                except Exception:
                    await sleep(0.5)
                    continue
                start = reactor.seconds()
                self._ws = ws
                if not self.running:
                    ws.close()
                timer = reactor.callLater(rng.uniform(*self.hold), ws.close)
                await ws.closed
                self._ws = None
                if timer.active():
                    timer.cancel()
                self.occupied(f"{self.site.publisher}/{self.center}", start, reactor.seconds())
                if self.running and reactor.seconds() - start >= self.hold[0] - 0.1:
                    self._resting = defer.Deferred()
                    reactor.callLater(self.leave_grace + rng.uniform(3, 10), fire, self._resting)
                    await self._resting
        except Exception as e:
            self.world.metrics.harness_errors.append(f"toggler {self.center}: {e!r}")
