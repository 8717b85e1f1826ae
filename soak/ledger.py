"""The ledger: what was published and acknowledged, what each subscriber
handed to its application, and the verdict drawn from them.

No I/O and no reactor here: the clients and publishers call it as things
happen, ``judge()`` reads it (during the run, for the running figures, and
at the end), and ``tests/test_soak_ledger.py`` checks its rules.

The rules (docs/reliability.rst, What is checked):

* A message is identified by a key of the soak's own, written in its text;
  its id is what the daemon answered (``acked``) or what a subscriber was
  sent (``observe``). One id holding two different messages, or one message
  under two ids (published twice: its ``Idempotency-Key`` failed), is a
  conflict or a duplicate.
* A native subscriber's ``Stream`` of one center starts at the first
  position it learnt (``begin``) and ends at the position of its final
  read (``finish``). Every acknowledged message numbered in between must
  have been handed to the application, except those inside a window the
  daemon declared lost (``recovered: false``): those are reported, not
  counted as lost, and the window must be one where history really was
  lost (the oldest message replayed is at most ``history`` behind the
  latest).
* What the cursor refused is a duplicate the client dropped (its id was
  handed already) or a message out of order (older than the position,
  never handed), which then also shows as lost.
* A Pusher session (``PusherStream``) cannot resume: within one session,
  what it was sent must be in order, never twice and without a gap, and
  every message published after it subscribed and acknowledged well before
  it ended by itself must be there.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from soak.cursor import parse_id

#: Seconds before the end of a Pusher session within which an
#: acknowledged message may still be on its way (not required).
PUSHER_GRACE = 3.0
#: Messages by which a window declared lost may fall short of ``history``
#: and still count as history really lost (publishes in flight).
NOTICE_SLACK = 2
#: Seconds after a notice within which the latest numbered message is
#: looked for, to judge it.
NOTICE_LOOKAHEAD = 2.0


@attrs.define(slots=True, eq=False)
class Message:
    """One message as published: *key* is in its text, *center* names the
    store and the center (``redis/c3``)."""

    key: str
    center: str
    sent: float
    acked_id: str | None = None
    acked_at: float | None = None
    given_up: bool = False


@attrs.define(slots=True, eq=False)
class Stream:
    """What one native subscriber handed its application of one center."""

    client: str
    center: str
    transport: str
    epoch: str | None = None
    #: The first position known (seq): messages after it are owed.
    start: int | None = None
    #: Seqs handed, as inclusive runs ``[lo, hi]``, in the order handed.
    runs: list[list[int]] = attrs.Factory(list)
    #: Windows declared lost: ``[lo, hi, t, daemon]``, seqs ``lo < s <= hi``.
    notices: list[list[Any]] = attrs.Factory(list)
    #: A notice whose window ends with the next message: ``(lo, t, daemon)``.
    open_notice: tuple[int, float, str] | None = None
    #: The position of the final read (seq).
    final: int | None = None
    handed: int = 0
    dropped_duplicates: int = 0
    out_of_order: list[int] = attrs.Factory(list)
    handed_twice: int = 0
    epoch_changes: int = 0
    ended: float | None = None

    def begin(self, position: str | None) -> None:
        """The first position the subscriber learnt (a cursor, or a first frame)."""
        parsed = parse_id(position)
        if parsed is None or self.start is not None:
            return
        self.epoch, self.start = parsed

    def _same_epoch(self, epoch: str, seq: int) -> bool:
        if self.epoch is None:
            self.epoch, self.start = epoch, seq - 1 if self.start is None else self.start
            return True
        if epoch != self.epoch:
            self.epoch_changes += 1
            return False
        return True

    def handed_to_app(self, message_id: str) -> None:
        parsed = parse_id(message_id)
        if parsed is None:
            return
        epoch, seq = parsed
        if not self._same_epoch(epoch, seq):
            return
        self.close_notice(seq - 1)
        self.handed += 1
        runs = self.runs
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        elif runs and seq <= runs[-1][1]:
            self.handed_twice += 1
        else:
            runs.append([seq, seq])

    def dropped(self, message_id: str) -> None:
        """The cursor refused this message: handed already, from before the
        stream began or inside a window declared lost (sent again, after a
        resume), or else out of order (never handed, and now behind)."""
        parsed = parse_id(message_id)
        if parsed is None or parsed[0] != self.epoch:
            return
        seq = parsed[1]
        if self._was_handed(seq) or (self.start is not None and seq <= self.start) \
                or any(lo < seq <= hi for lo, hi, *_ in self.notices):
            self.dropped_duplicates += 1
        else:
            self.out_of_order.append(seq)

    def _was_handed(self, seq: int) -> bool:
        for lo, hi in reversed(self.runs):
            if lo <= seq <= hi:
                return True
            if hi < seq:
                return False
        return False

    def notice(self, since: str | None, t: float, where: str = "") -> None:
        """``recovered: false`` for this center, resuming from *since* (on the daemon *where*)."""
        parsed = parse_id(since)
        if parsed is None:
            return  # no position: nothing could be owed before
        if self.epoch is not None and parsed[0] != self.epoch:
            return
        self.close_notice(parsed[1])
        self.open_notice = (parsed[1], t, where)

    def close_notice(self, upper: int) -> None:
        """The window of an open notice ends at *upper* (the seq before the
        first message sent after it, or where the stream stood)."""
        if self.open_notice is None:
            return
        lo, t, where = self.open_notice
        self.open_notice = None
        self.notices.append([lo, max(lo, upper), t, where])

    def finish(self, position: str | None, t: float) -> None:
        parsed = parse_id(position)
        self.ended = t
        if parsed is None:
            return
        if self.epoch is None:
            self.epoch = parsed[0]
        if parsed[0] != self.epoch:
            self.epoch_changes += 1
            return
        self.close_notice(parsed[1])
        self.final = parsed[1]

    def last(self) -> int | None:
        return self.runs[-1][1] if self.runs else self.start


@attrs.define(slots=True, eq=False)
class PusherStream:
    """One Pusher session's channel: what it was sent, by message key."""

    client: str
    center: str
    subscribed: float
    keys: list[str] = attrs.Factory(list)
    ended: float | None = None
    #: Whether the client ended the session itself (not a cut or a close
    #: by the server): only then are the last messages owed.
    by_client: bool = False


@attrs.define(slots=True)
class Loss:
    client: str
    transport: str
    center: str
    id: str
    key: str
    acked_at: float | None


@attrs.define(slots=True)
class Verdict:
    published: int = 0
    acknowledged: int = 0
    given_up: int = 0
    handed: int = 0
    streams: int = 0
    losses: list[Loss] = attrs.Factory(list)
    #: Messages published twice (two ids), and messages a Pusher session got twice.
    duplicates: list[dict[str, Any]] = attrs.Factory(list)
    #: An id holding two messages, or an acknowledgement naming another id than was sent.
    conflicts: list[dict[str, Any]] = attrs.Factory(list)
    out_of_order: list[dict[str, Any]] = attrs.Factory(list)
    dropped_duplicates: int = 0
    notices: int = 0
    notices_unjustified: list[dict[str, Any]] = attrs.Factory(list)
    lost_with_notice: int = 0
    epoch_changes: list[dict[str, Any]] = attrs.Factory(list)
    unfinished: int = 0
    by_transport: dict[str, dict[str, int]] = attrs.Factory(dict)

    @property
    def lost_messages(self) -> int:
        return len({(loss.center, loss.id) for loss in self.losses})

    def failures(self) -> list[str]:
        """What fails the run: loss, duplicates, order, conflicts, epochs."""
        failed = []
        if self.losses:
            failed.append(f"{len(self.losses)} deliveries lost ({self.lost_messages} messages)")
        if self.duplicates:
            failed.append(f"{len(self.duplicates)} duplicates")
        if self.out_of_order:
            failed.append(f"{len(self.out_of_order)} out of order")
        if self.conflicts:
            failed.append(f"{len(self.conflicts)} id conflicts")
        if self.epoch_changes:
            failed.append(f"{len(self.epoch_changes)} epoch changes")
        if self.notices_unjustified:
            failed.append(f"{len(self.notices_unjustified)} recovered:false without lost history")
        return failed


class Ledger:
    """Every message published, every id seen, every subscriber's streams."""

    def __init__(self, history: dict[str, int]) -> None:
        #: Messages retained by each center (``store/center``).
        self.history = dict(history)
        self.messages: dict[str, Message] = {}
        #: (center, epoch, seq) -> the key of the message first seen under that id.
        self.observed: dict[tuple[str, str, int], str] = {}
        #: key -> every id it was seen or acknowledged under, when more than one.
        self._ids: dict[str, str] = {}
        self.conflicts: list[dict[str, Any]] = []
        self.duplicate_ids: dict[str, set[str]] = {}
        #: (center, epoch) -> [(t, seq)], the latest seq known, growing.
        self._latest: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
        self.streams: list[Stream] = []
        self.pusher: list[PusherStream] = []
        self.raw_deliveries = 0
        self._sent_index: tuple[int, dict[str, tuple[list[float], list[Message]]]] | None = None

    # publishing

    def sent(self, key: str, center: str, t: float) -> Message:
        message = self.messages.get(key)
        if message is None:
            message = self.messages[key] = Message(key, center, t)
        return message

    def acked(self, key: str, message_id: str, t: float) -> None:
        message = self.messages[key]
        if message.acked_id is not None and message.acked_id != message_id:
            self.conflicts.append({"what": "acknowledged twice with different ids", "key": key,
                                   "ids": [message.acked_id, message_id]})
        if message.acked_id is None:
            message.acked_id, message.acked_at = message_id, t
        self._saw(key, message.center, message_id, t)

    def gave_up(self, key: str) -> None:
        message = self.messages[key]
        if message.acked_id is None:
            message.given_up = True

    # receiving

    def observe(self, center: str, message_id: str, key: str, t: float) -> None:
        """A subscriber was sent *key* as *message_id* (before any dedup)."""
        self.raw_deliveries += 1
        self._saw(key, center, message_id, t)

    def _saw(self, key: str, center: str, message_id: str, t: float) -> None:
        parsed = parse_id(message_id)
        if parsed is None:
            return
        epoch, seq = parsed
        at = (center, epoch, seq)
        holder = self.observed.get(at)
        if holder is None:
            self.observed[at] = key
            latest = self._latest[(center, epoch)]
            if not latest or seq > latest[-1][1]:
                latest.append((t, seq))
        elif holder != key:
            self.conflicts.append({"what": "one id, two messages", "center": center, "id": message_id,
                                   "keys": [holder, key]})
        first = self._ids.get(key)
        if first is None:
            self._ids[key] = message_id
        elif first != message_id:
            self.duplicate_ids.setdefault(key, {first}).add(message_id)

    def stream(self, client: str, center: str, transport: str) -> Stream:
        stream = Stream(client, center, transport)
        self.streams.append(stream)
        return stream

    def pusher_stream(self, client: str, center: str, subscribed: float) -> PusherStream:
        stream = PusherStream(client, center, subscribed)
        self.pusher.append(stream)
        return stream

    def latest_known(self, center: str, epoch: str, t: float) -> int | None:
        """The highest seq of *center* seen or acknowledged by time *t*."""
        latest = self._latest.get((center, epoch))
        if not latest:
            return None
        i = bisect.bisect_right(latest, (t, float("inf")))
        return latest[i - 1][1] if i else None

    def id_of(self, key: str) -> str | None:
        message = self.messages.get(key)
        if message is not None and message.acked_id is not None:
            return message.acked_id
        return self._ids.get(key)

    # the verdict

    def judge(self, quiet: Callable[[float, float], bool] = lambda a, b: True,
              streams: Iterable[Stream] | None = None, pusher: Iterable[PusherStream] | None = None) -> Verdict:
        """The verdict on *streams* (default: all). *quiet(t0, t1)* tells
        whether no fault was going on between t0 and t1 (Pusher sessions
        owe their last messages only then)."""
        verdict = Verdict()
        self._sent_index = None
        verdict.published = len(self.messages)
        verdict.acknowledged = sum(1 for m in self.messages.values() if m.acked_id is not None)
        verdict.given_up = sum(1 for m in self.messages.values() if m.given_up)
        verdict.conflicts = list(self.conflicts)
        acked = self._acked_index()
        for key, ids in sorted(self.duplicate_ids.items()):
            verdict.duplicates.append({"what": "published twice", "key": key, "ids": sorted(ids)})
        for stream in self.streams if streams is None else streams:
            self._judge_stream(stream, acked, verdict)
        for session in self.pusher if pusher is None else pusher:
            self._judge_pusher(session, acked, verdict, quiet)
        return verdict

    def _acked_index(self) -> dict[tuple[str, str], tuple[list[int], dict[int, Message]]]:
        index: dict[tuple[str, str], dict[int, Message]] = defaultdict(dict)
        for message in self.messages.values():
            parsed = parse_id(message.acked_id)
            if parsed is not None:
                index[(message.center, parsed[0])][parsed[1]] = message
        return {where: (sorted(by_seq), by_seq) for where, by_seq in index.items()}

    def _tally(self, verdict: Verdict, transport: str, field: str, n: int = 1) -> None:
        counts = verdict.by_transport.setdefault(
            transport, {"streams": 0, "handed": 0, "lost": 0, "duplicates": 0, "out_of_order": 0})
        counts[field] += n

    def _judge_stream(self, stream: Stream, acked: dict[tuple[str, str], tuple[list[int], dict[int, Message]]],
                      verdict: Verdict) -> None:
        verdict.streams += 1
        verdict.handed += stream.handed
        verdict.dropped_duplicates += stream.dropped_duplicates
        self._tally(verdict, stream.transport, "streams")
        self._tally(verdict, stream.transport, "handed", stream.handed)
        if stream.epoch_changes:
            verdict.epoch_changes.append({"client": stream.client, "center": stream.center,
                                          "changes": stream.epoch_changes})
        if stream.handed_twice:
            verdict.duplicates.append({"what": "handed twice", "client": stream.client, "center": stream.center,
                                       "count": stream.handed_twice})
            self._tally(verdict, stream.transport, "duplicates", stream.handed_twice)
        for seq in stream.out_of_order:
            verdict.out_of_order.append({"client": stream.client, "transport": stream.transport,
                                         "center": stream.center, "id": f"{stream.epoch}-{seq}"})
            self._tally(verdict, stream.transport, "out_of_order")
        if stream.epoch is None or stream.start is None:
            return
        final = stream.final
        if final is None:
            verdict.unfinished += 1
            final = stream.last()
            if final is None:
                return
        seqs, by_seq = acked.get((stream.center, stream.epoch), ([], {}))
        covered = [(lo, hi) for lo, hi in stream.runs]
        for lo, hi, t, where in stream.notices:
            verdict.notices += 1
            self._check_notice(stream, lo, hi, t, where, verdict)
            if hi > lo:
                covered.append((lo + 1, hi))
                verdict.lost_with_notice += bisect.bisect_right(seqs, hi) - bisect.bisect_right(seqs, lo)
        covered.sort()
        # The gaps of what is covered, within (start, final].
        at = stream.start + 1
        gaps = []
        for lo, hi in covered:
            if lo > at:
                gaps.append((at, min(lo - 1, final)))
            at = max(at, hi + 1)
            if at > final:
                break
        if at <= final:
            gaps.append((at, final))
        for lo, hi in gaps:
            if lo > hi:
                continue
            for seq in seqs[bisect.bisect_left(seqs, lo):bisect.bisect_right(seqs, hi)]:
                message = by_seq[seq]
                verdict.losses.append(Loss(stream.client, stream.transport, stream.center,
                                           f"{stream.epoch}-{seq}", message.key, message.acked_at))
                self._tally(verdict, stream.transport, "lost")

    def _check_notice(self, stream: Stream, lo: int, hi: int, t: float, where: str, verdict: Verdict) -> None:
        """A window declared lost must be one where history was lost."""
        if hi <= lo:
            verdict.notices_unjustified.append({"client": stream.client, "center": stream.center, "daemon": where,
                                                "transport": stream.transport, "since": f"{stream.epoch}-{lo}",
                                                "t": t, "why": "nothing was missing after the cursor"})
            return
        history = self.history.get(stream.center)
        assert stream.epoch is not None
        latest = self.latest_known(stream.center, stream.epoch, t + NOTICE_LOOKAHEAD)
        if history is None or latest is None:
            return
        retained = latest - hi  # the oldest replayed is hi + 1
        if retained < history - NOTICE_SLACK:
            verdict.notices_unjustified.append({
                "client": stream.client, "center": stream.center, "daemon": where, "transport": stream.transport,
                "since": f"{stream.epoch}-{lo}", "t": t,
                "why": f"the replay began at seq {hi + 1} with {retained} retained after it, "
                       f"fewer than history {history}"})

    def _judge_pusher(self, session: PusherStream,
                      acked: dict[tuple[str, str], tuple[list[int], dict[int, Message]]],
                      verdict: Verdict, quiet: Callable[[float, float], bool]) -> None:
        verdict.streams += 1
        verdict.handed += len(session.keys)
        self._tally(verdict, "pusher", "streams")
        self._tally(verdict, "pusher", "handed", len(session.keys))
        seen: set[str] = set()
        got: dict[str, set[int]] = defaultdict(set)
        last: tuple[str, int] | None = None
        for key in session.keys:
            if key in seen:
                verdict.duplicates.append({"what": "a Pusher session got a message twice", "client": session.client,
                                           "center": session.center, "key": key})
                self._tally(verdict, "pusher", "duplicates")
                continue
            seen.add(key)
            parsed = parse_id(self.id_of(key))
            if parsed is None:
                continue
            epoch, seq = parsed
            if last is not None and last[0] == epoch and seq <= last[1]:
                verdict.out_of_order.append({"client": session.client, "transport": "pusher",
                                             "center": session.center, "id": f"{epoch}-{seq}"})
                self._tally(verdict, "pusher", "out_of_order")
            last = (epoch, seq)
            got[epoch].add(seq)
        owed: set[tuple[str, int]] = set()
        for epoch, seqs_got in got.items():
            seqs, _ = acked.get((session.center, epoch), ([], {}))
            lo, hi = min(seqs_got), max(seqs_got)
            owed.update((epoch, seq) for seq in seqs[bisect.bisect_left(seqs, lo):bisect.bisect_right(seqs, hi)])
        if session.by_client and session.ended is not None:
            # What was published after it subscribed and acknowledged well
            # before it ended, in a quiet time.
            until = session.ended - PUSHER_GRACE
            by_sent = self._by_sent().get(session.center, ([], []))
            times, entries = by_sent
            for i in range(bisect.bisect_right(times, session.subscribed), bisect.bisect_right(times, until)):
                message = entries[i]
                assert message.acked_at is not None and message.acked_id is not None
                if message.acked_at <= until and quiet(message.sent, session.ended):
                    parsed = parse_id(message.acked_id)
                    assert parsed is not None
                    owed.add(parsed)
        for epoch, seq in sorted(owed):
            if seq in got.get(epoch, ()):
                continue
            message = acked[(session.center, epoch)][1][seq]
            verdict.losses.append(Loss(session.client, "pusher", session.center, f"{epoch}-{seq}",
                                       message.key, message.acked_at))
            self._tally(verdict, "pusher", "lost")

    def _by_sent(self) -> dict[str, tuple[list[float], list[Message]]]:
        """Each center's acknowledged messages by the time they were first sent."""
        if self._sent_index is None or self._sent_index[0] != len(self.messages):
            by_center: dict[str, list[Message]] = defaultdict(list)
            for message in self.messages.values():
                if message.acked_id is not None:
                    by_center[message.center].append(message)
            index = {}
            for center, messages in by_center.items():
                messages.sort(key=lambda m: m.sent)
                index[center] = ([m.sent for m in messages], messages)
            self._sent_index = (len(self.messages), index)
        return self._sent_index[1]
