"""The soak's publishers: a site publishing at a steady rate, as a site
that follows docs/protocol.rst does.

Each publish (single, or a batch to several centers) carries an
``Idempotency-Key`` and is tried again, with the same key and the same
body, after a timeout, a lost connection or a 5xx, on any daemon of the
site, backing off from 100 ms to 2 s, for ``GIVE_UP`` seconds at most
(then it is left unacknowledged). Its text starts with a key of the soak's
own and the time it was first sent, so that whoever receives it knows
which message it is and how long it took.
"""

from __future__ import annotations

import json
import random
from typing import Any

from twisted.internet import defer, reactor

from soak.clients import Site, World
from soak.http import pool, request
from tests.support import basic, sleep

#: Seconds one attempt may take.
ATTEMPT_TIMEOUT = 5.0
#: Publishes in flight at once, at most (beyond, the steady rate waits).
IN_FLIGHT = 64


class Publisher:
    """Publishes to *centers* (name -> (weight, smallest, largest text)) of
    *site* at *rate* messages a second, a share of them in batches."""

    def __init__(self, world: World, site: Site, prefix: str, centers: dict[str, tuple[float, int, int]],
                 rate: float, batch_share: float, batch_sizes: tuple[int, int], give_up: float) -> None:
        self.world = world
        self.site = site
        self.prefix = prefix
        self.centers = centers
        self.rate = rate
        self.batch_share = batch_share
        self.batch_sizes = batch_sizes
        #: Seconds after which a publish not acknowledged is given up.
        self.give_up = give_up
        self.running = False
        self.count = 0
        self.in_flight: set[defer.Deferred[Any]] = set()
        self.limit = defer.DeferredSemaphore(IN_FLIGHT)
        self.connections = pool(8)
        self.rng = random.Random(world.rng.random())
        self.by_daemon: dict[str, dict[str, int]] = {}
        self.loop: defer.Deferred[None] | None = None

    def start(self) -> None:
        self.running = True
        self.loop = defer.Deferred.fromCoroutine(self._run())

    async def stop(self, seconds: float) -> None:
        """No more publishes; wait for those in flight (at most *seconds*)."""
        self.running = False
        if self.loop is not None:
            await self.loop
        if self.in_flight:
            waiting = defer.DeferredList(list(self.in_flight), consumeErrors=True)
            waiting.addTimeout(seconds, reactor)
            try:
                await waiting
            except defer.TimeoutError:
                pass
        await self.connections.closeCachedConnections()

    async def _run(self) -> None:
        names = list(self.centers)
        weights = [self.centers[name][0] for name in names]
        while self.running:
            await sleep(self.rng.expovariate(self.rate))
            if not self.running:
                break
            if self.rng.random() < self.batch_share:
                size = self.rng.randint(*self.batch_sizes)
                entries = [self._entry(self.rng.choices(names, weights)[0]) for _ in range(size)]
                self._spawn(entries, batch=True)
            else:
                self._spawn([self._entry(self.rng.choices(names, weights)[0])], batch=False)

    def _entry(self, center: str) -> tuple[str, int]:
        _, smallest, largest = self.centers[center]
        return center, self.rng.randint(smallest, largest)

    def _spawn(self, entries: list[tuple[str, int]], batch: bool) -> defer.Deferred[Any]:
        d = self.limit.run(lambda: defer.Deferred.fromCoroutine(self._publish(entries, batch)))
        self.in_flight.add(d)

        def done(result: Any) -> Any:
            self.in_flight.discard(d)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: self.world.metrics.harness_errors.append(f"publisher: {f.getErrorMessage()}"))
        return d

    def batch_now(self, size: int) -> defer.Deferred[None]:
        """A batch of *size* to the site's centers, now; fires once its first
        attempt is on its way (for a fault to strike it in flight)."""
        names = list(self.centers)
        entries = [self._entry(self.rng.choice(names)) for _ in range(size)]
        sending: defer.Deferred[None] = defer.Deferred()
        d = defer.Deferred.fromCoroutine(self._publish(entries, True, sending))
        self.in_flight.add(d)

        def done(result: Any) -> Any:
            self.in_flight.discard(d)
            return result

        d.addBoth(done)
        return sending

    async def _publish(self, entries: list[tuple[str, int]], batch: bool,
                       sending: defer.Deferred[None] | None = None) -> None:
        ledger, metrics = self.world.ledger, self.world.metrics
        if not self.running and sending is None:
            return  # waited for a place in flight past the end of the load: never sent
        self.count += 1
        key = f"{self.prefix}{'B' if batch else ''}{self.count:07d}"
        first = reactor.seconds()
        keys = [f"{key}.{i}" if batch else key for i in range(len(entries))]
        texts = []
        for message_key, (center, size) in zip(keys, entries, strict=True):
            head = f"{message_key} {first:.3f} "
            texts.append(head + "x" * max(0, size - len(head)))
            ledger.sent(message_key, f"{self.site.store}/{center}", first)
        metrics.published += len(entries)
        headers = {"Authorization": basic(self.site.publisher, self.site.secret), "Idempotency-Key": key}
        if batch:
            path = "/api/v1/messages"
            body = json.dumps({"messages": [{"center": center, "data": text}
                                            for (center, _), text in zip(entries, texts, strict=True)]}).encode()
            headers["Content-Type"] = "application/json"
        else:
            path = f"/api/v1/centers/{entries[0][0]}/messages"
            body = texts[0].encode()
            headers["Content-Type"] = "text/plain; charset=utf-8"
        attempt = 0
        while True:
            attempt += 1
            daemon = self.site.pick(self.rng)
            counts = self.by_daemon.setdefault(daemon.name, {})
            d = defer.Deferred.fromCoroutine(request("POST", daemon.api + path, data=body, headers=headers,
                                                     timeout=ATTEMPT_TIMEOUT, connections=self.connections))
            if sending is not None and not sending.called:
                reactor.callLater(0, sending.callback, None)
            try:
                answer = await d
                outcome = str(answer.status)
                if isinstance(answer.body, dict) and answer.status >= 400:
                    outcome += f" {answer.body.get('error')}"
            except defer.TimeoutError:
                answer, outcome = None, "timeout"
            except Exception as e:
                answer, outcome = None, f"failed ({type(e).__name__})"
            metrics.attempts[outcome] += 1
            counts[outcome] = counts.get(outcome, 0) + 1
            now = reactor.seconds()
            if answer is not None and answer.status in (200, 201) and isinstance(answer.body, dict):
                ids = answer.body.get("ids") if batch else [answer.body.get("id")]
                if not isinstance(ids, list) or len(ids) != len(keys):
                    metrics.anomaly(now, "an acknowledgement without its ids", key=key, body=str(answer.body)[:200])
                    return
                for message_key, message_id in zip(keys, ids, strict=True):
                    ledger.acked(message_key, str(message_id), now)
                metrics.acked += len(keys)
                if attempt > 1:
                    metrics.retried.append((first, now, attempt, self.site.store))
                return
            if answer is not None and 400 <= answer.status < 500:
                # A refusal no retry mends: the daemon or the harness is wrong.
                metrics.anomaly(now, f"publish refused {outcome}", key=key, daemon=daemon.name,
                                body=str(answer.body)[:200])
                for message_key in keys:
                    ledger.gave_up(message_key)
                return
            if answer is not None and answer.status >= 500 and answer.status != 503:
                metrics.anomaly(now, f"publish answered {outcome}", key=key, daemon=daemon.name,
                                body=str(answer.body)[:200])
            if now - first > self.give_up:
                for message_key in keys:
                    ledger.gave_up(message_key)
                return
            await sleep(min(2.0, 0.1 * 2 ** (attempt - 1)) * (0.5 + self.rng.random() / 2))
