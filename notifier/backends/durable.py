"""History that outlives the daemon: the ``sqlite:PATH`` store's broker
(docs/operating.rst: Durable history).

Each center's messages are kept in the store's SQLite file (the
``streams`` and ``log`` tables), with the ``Idempotency-Key``\\ s of
the publishes that made them. A publish is numbered at once, on the
reactor, and handed to the journal (``notifier.backends.journal``): a process of its
own, started with the daemon, which writes the publishes that arrive
together in one transaction. The publish is answered, and its messages
reach the hubs, only once that transaction is committed: nothing is
acknowledged that a crash could lose.

A write that fails (a full disk, a file made read-only) fails every publish
numbered before the failure was known here: their numbers are given again,
from what the hubs hold, which is exactly what was committed. They are
answered 503 ``store_unavailable``; the journal opens the file again for
the next write, so publishing recovers when the disk does. A journal that
ends unasked fails what it had not answered, and is started again.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from notifier.backends.interfaces import Arrival, BrokerHandler, Publication, Published, Stream
from notifier.backends.journal import frame, unframe
from notifier.backends.local import LocalBroker
from notifier.backends.shielding import shielded
from notifier.domain.errors import Unavailable
from notifier.domain.idempotency import KEY_TTL, fingerprint, ids_of
from notifier.domain.model import MESSAGE_EVENT, Center

log = Logger()



#: Seconds the journal has to finish what it was asked, once told to stop.
STOP_SECONDS = 30.0
#: Bytes the pipe to the journal may hold (Linux: F_SETPIPE_SZ, within the
#: system's pipe-max-size); what does not fit waits in the daemon.
PIPE_SIZE = 1 << 20


class _Pipe:
    """The journal's standard input, written at once when asked (a process
    transport would wait for the reactor's next turn). What the pipe has no
    room for waits, in order, until the reactor says it has (an
    ``IWriteDescriptor``)."""

    def __init__(self, fd: int, reactor: Any) -> None:
        self.fd = fd
        self.reactor = reactor
        self.waiting = bytearray()
        os.set_blocking(fd, False)
        try:
            fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
        except OSError:
            pass  # the system's default size: what does not fit waits

    def write(self, data: bytes) -> None:
        if not self.waiting:
            try:
                written = os.write(self.fd, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return  # the journal is gone: processEnded fails what waits for it
            if written == len(data):
                return
            data = data[written:]
            self.reactor.addWriter(self)
        self.waiting += data

    def doWrite(self) -> None:
        try:
            written = os.write(self.fd, self.waiting)
        except BlockingIOError:
            return
        except OSError:
            written = len(self.waiting)
        del self.waiting[:written]
        if not self.waiting:
            self.reactor.removeWriter(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "journal"

    def connectionLost(self, reason: Failure) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            if self.waiting:
                self.reactor.removeWriter(self)
                self.waiting.clear()
            os.close(self.fd)
            self.fd = -1


class JournalProcess(ProcessProtocol):
    """The daemon's end of the journal: requests go out as frames on its
    standard input, answers come back in the same order on its output."""

    def __init__(self, path: str, synchronous: str, reactor: Any) -> None:
        self.path = path
        self.synchronous = synchronous
        self.reactor = reactor
        #: What waits for each answer, in order: (returned, then, args) of ``ask``.
        self._waiting: deque[tuple[Deferred[Any], Callable[..., Any] | None, tuple[Any, ...]]] = deque()
        self._buffer = bytearray()
        self._running = False
        self._stopping = False
        self._ended: Deferred[None] | None = None
        self._ends = 0
        #: Requests not written yet, and the reactor's call that writes them.
        self._unsent: list[bytes] = []
        self._flushing: IDelayedCall | None = None

    @property
    def started(self) -> bool:
        return self._running

    def start(self) -> None:
        self._running = True
        self._stopping = False
        self._buffer.clear()
        theirs, ours = os.pipe()
        try:
            self.reactor.spawnProcess(
                self, sys.executable, [sys.executable, "-m", "notifier.backends.journal", self.path, self.synchronous],
                env=os.environ.copy(), childFDs={0: theirs, 1: "r", 2: 2})
        except BaseException:
            os.close(ours)
            self._running = False
            raise
        finally:
            os.close(theirs)
        self._pipe = _Pipe(ours, self.reactor)

    def stop(self) -> Deferred[None]:
        """Finish what was asked, then end."""
        if not self._running:
            return succeed(None)
        self._stopping = True
        ended: Deferred[None] = Deferred()
        self._ended = ended
        self.tell(("stop",))
        # A journal that does not end (a disk that hangs) does not hold the daemon.
        timer = self.reactor.callLater(STOP_SECONDS, self._kill)
        ended.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        return ended

    def _kill(self) -> None:
        if self._running:
            log.error("the journal did not end within {seconds} s; killed", seconds=STOP_SECONDS)
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]

    def ask(self, request: tuple[Any, ...], then: Callable[..., Any] | None = None, *args: Any,
            now: bool = False) -> Deferred[Any]:
        """Send *request*: a Deferred of its answer, or of ``then(answer,
        *args)``, which runs when the answer comes even if what is returned
        was cancelled meanwhile (a request whose client went away). With
        *now*, it is written at once (with what waits before it) rather
        than with the others of the reactor's turn."""
        if not self._running:
            self.start()
        returned: Deferred[Any] = Deferred()
        self._waiting.append((returned, then, args))
        self._unsent.append(frame(request))
        if now:
            self._flush()
        else:
            self._soon()
        return returned

    def tell(self, request: tuple[Any, ...]) -> None:
        """Send *request*, which has no answer."""
        if self._running:
            self._unsent.append(frame(request))
            self._soon()

    def _soon(self) -> None:
        """Write what is asked once the reactor has dealt with everything
        ready now: the publishes read in one turn go out in one write. The
        journal does not wait for the daemon's next write when it is done
        with a group: it takes whatever the pipe holds by then (one read,
        one transaction), while the daemon reads its answers."""
        if self._flushing is None:
            self._flushing = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        if self._flushing is not None:
            if self._flushing.active():
                self._flushing.cancel()
            self._flushing = None
        if not self._unsent:
            return
        self._pipe.write(b"".join(self._unsent))
        self._unsent.clear()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._buffer += data
        try:
            answers = unframe(self._buffer)
        except (ValueError, EOFError, TypeError):
            log.error("the journal answered what cannot be read; it is started again")
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
            return
        waiting = self._waiting
        for answer in answers:
            _answer(answer, *waiting.popleft())

    def processEnded(self, reason: Failure) -> None:
        self._running = False
        self._pipe.close()
        if not self._stopping or not isinstance(reason.value, ProcessDone):
            log.error("the journal ended ({reason}); it is started again for the next request",
                      reason=reason.getErrorMessage())
        waiting, self._waiting = self._waiting, deque()
        self._unsent.clear()
        self._ends += 1
        for entry in waiting:
            _answer(("failed", f"ended.{self._ends}", "the journal process ended"), *entry)
        if self._ended is not None:
            ended, self._ended = self._ended, None
            ended.callback(None)


def _answer(answer: Any, returned: Deferred[Any], then: Callable[..., Any] | None, args: tuple[Any, ...]) -> None:
    """Fire *returned* with *answer*, or with what ``then(answer, *args)``
    returns or raises; *then* runs even when *returned* was cancelled."""
    if then is not None:
        try:
            answer = then(answer, *args)
        except BaseException:
            if not returned.called:
                returned.errback(Failure())
            return
    if not returned.called:
        returned.callback(answer)


def _read(answer: Any) -> Any:
    """What a read request's *answer* holds, or the ``Unavailable`` it is."""
    if answer[0] == "ok":
        return answer[1]
    raise Unavailable(f"the store cannot be read: {answer[1]}", code="store_unavailable")


class DurableBroker(LocalBroker):
    """``LocalBroker`` whose streams and keys are kept in the SQLite file."""

    def __init__(self, path: str, synchronous: str, reactor: Any) -> None:
        super().__init__(reactor)
        self.journal = JournalProcess(path, synchronous, reactor)
        #: The latest seq given to a center whose publish is not committed
        #: yet: ``(publisher, center) -> (epoch, seq)``.
        self._latest: dict[tuple[str, str], tuple[str, int]] = {}
        #: The last failure whose numbers were given again.
        self._rewound: str | None = None
        self._failing = False
        self.handler: BrokerHandler | None = None

    async def start(self, handler: BrokerHandler) -> None:
        self.handler = handler
        self.journal.start()
        keys = _read(await self.journal.ask(("keys", self.clock.seconds() - KEY_TTL)))
        for publisher, key, at, ids in keys:
            kept = json.loads(ids)  # the ids, or, since fingerprints are kept, {"ids", "fingerprint"}
            if isinstance(kept, dict):
                self.keys.remember(publisher, key, at, "\n".join(kept["ids"]), kept["fingerprint"])
            else:
                self.keys.remember(publisher, key, at, "\n".join(kept))

    async def stop(self) -> None:
        await self.journal.stop()

    # Work that others may wait on too (a hub being loaded, a publish and
    # the retries of its Idempotency-Key) goes on when the request that
    # started it is cancelled (its client gone): only that request stops
    # waiting for it.

    async def load(self, center: Center, ttl: int) -> Stream | None:
        return await shielded(Deferred.fromCoroutine(self._stream(center, center.history)))

    async def stream(self, center: Center) -> Stream | None:
        return await shielded(Deferred.fromCoroutine(self._stream(center, None)))

    async def _stream(self, center: Center, history: int | None) -> Stream | None:
        found = _read(await self.journal.ask(("load", center.publisher, center.name, center.epoch, history)))
        if found is None:
            # Nothing written yet: the center's own epoch, when it has one.
            return Stream(center.epoch, 0, ()) if center.epoch else None
        epoch, seq, retained = found
        return Stream(epoch, seq, tuple(retained))

    async def announce(self, event: dict[str, str]) -> None:
        # Not started: the offline command, whose deletions the daemon's
        # journal finds by itself (a stream whose row is gone is never read).
        if self.journal.started and event.get("type") in ("center_deleted", "publisher_removed"):
            _read(await self.journal.ask(("forget", event.get("publisher", ""), event.get("center"))))

    async def publish(self, publisher: str, publications: list[Publication], key: str | None) -> Published:
        if key is None:
            return await self._committed(publications, None)  # a Deferred of its own already
        return await shielded(Deferred.fromCoroutine(self._once(publisher, publications, key)))

    async def _once(self, publisher: str, publications: list[Publication], key: str) -> Published:
        asked = fingerprint((p.center, p.data, p.event) for p in publications)
        published, fresh = await self.keys.once(
            publisher, key, lambda: self._committed(publications, (publisher, key, asked)), asked)
        return published if fresh else Published(ids_of(published), False)

    def _committed(self, publications: list[Publication],
                   key: tuple[str, str, str] | None) -> Deferred[Published]:
        """Number *publications* after what each center was last given,
        and write them: their ``Published`` once committed."""
        ts = self.clock.seconds()
        latest = self._latest
        arrivals = []
        rows: list[tuple[Any, ...]] = []
        for publisher, center, data, epoch, seq, history, _, event, exclude in publications:
            path = (publisher, center)
            given = latest.get(path)
            seq = (given[1] if given is not None and given[0] == epoch and given[1] > seq else seq) + 1
            latest[path] = (epoch, seq)
            arrivals.append(Arrival(publisher, center, epoch, seq, ts, data, event, exclude))
            # The event goes in the row only when it is not the default
            # (notifier.backends.journal); what the message skips, never.
            if event == MESSAGE_EVENT:
                rows.append((publisher, center, epoch, seq, ts, data, history))
            else:
                rows.append((publisher, center, epoch, seq, ts, data, history, event))
        ids = tuple(arrival.id for arrival in arrivals)
        row = None if key is None else (key[0], key[1], ts, json.dumps({"ids": ids, "fingerprint": key[2]}))
        # The hubs get what was committed even when the publisher is gone
        # before it is answered (its request cancelled).
        # A batch goes at once: the journal commits it while the next is
        # read (reading a batch takes longer than committing it).
        return self.journal.ask(("write", rows, row), self._answered, arrivals, ids, now=len(rows) > 1)

    def _answered(self, answer: Any, arrivals: list[Arrival], ids: tuple[str, ...]) -> Published:
        """A write's *answer*: its messages go to the hubs (in the order they
        were committed), or the publish fails."""
        if answer[0] == "ok":
            if self._failing:
                self._failing = False
                log.info("the store writes again: publishes are accepted")
            latest = self._latest
            arrived = self.handler.message_arrived if self.handler is not None else None
            for arrival in arrivals:
                publisher, center, epoch, seq, _, _, _, _ = arrival
                path = (publisher, center)
                if latest.get(path) == (epoch, seq):
                    del latest[path]  # nothing after it waits: the hub's seq is the latest again
                if arrived is not None:
                    arrived(arrival)
            return Published(ids, True)
        _, episode, reason = answer
        if episode != self._rewound:
            # What was numbered after the failed write fails with it; what
            # comes from now on is numbered after what the hubs hold.
            self._rewound = episode
            self._latest.clear()
            self.journal.tell(("rewind",))
            if self.handler is not None:
                # A write may have been committed without its answer (the
                # journal ended), or another writer went on: every live hub
                # catches up with the file before numbering from it again.
                self.handler.reconnected()
            if not self._failing:
                self._failing = True
                log.error("the store cannot write, publishes are refused: {reason}", reason=reason)
        raise Unavailable(f"the store cannot write: {reason}", code="store_unavailable")
