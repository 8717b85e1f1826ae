"""The soak's checks (soak/ledger.py, soak/cursor.py, soak/webhooks.py):
that each one finds what it is there to find — a loss, a duplicate, a
message out of order, a ``recovered: false`` with or without lost history
— and stays quiet otherwise. Pure logic: no sockets, no reactor."""

from __future__ import annotations

from soak.cursor import Cursor, newer
from soak.ledger import Ledger, Stream
from soak.webhooks import WebhookLedger

CENTER = "redis/news"


def published(ledger: Ledger, seqs: range | list[int], epoch: str = "e1", center: str = CENTER,
              t: float = 100.0) -> dict[int, str]:
    """Messages published and acknowledged as ``epoch-seq``: seq -> key."""
    keys = {}
    for seq in seqs:
        key = f"k{center}-{seq}"
        ledger.sent(key, center, t + seq)
        ledger.acked(key, f"{epoch}-{seq}", t + seq + 0.01)
        keys[seq] = key
    return keys


class Subscriber:
    """What soak.clients.Client does with what it is sent, on one center."""

    def __init__(self, ledger: Ledger, start: str | None, transport: str = "websocket") -> None:
        self.ledger = ledger
        self.cursor = Cursor(["news"])
        self.stream: Stream = ledger.stream("client-1", CENTER, transport)
        if start is not None:
            self.cursor.fill(start)
            self.stream.begin(start)
        self.handed: list[str] = []

    def receive(self, message_id: str, key: str, t: float = 200.0) -> None:
        self.ledger.observe(CENTER, message_id, key, t)
        if self.cursor.accept("news", message_id):
            self.stream.handed_to_app(message_id)
            self.handed.append(message_id)
        else:
            self.stream.dropped(message_id)

    def finish(self) -> None:
        self.stream.finish(self.cursor.value(), 300.0)


def test_the_cursor_hands_each_message_once_and_never_an_older_one() -> None:
    cursor = Cursor(["news"])
    assert cursor.accept("news", "e1-1") and cursor.accept("news", "e1-2")
    assert not cursor.accept("news", "e1-2")          # again
    assert not cursor.accept("news", "e1-1")          # older
    assert cursor.accept("news", "e1-10")             # a gap is not its business
    assert cursor.accept("news", "e2-1")              # another epoch is new
    assert newer("e1-10", "e1-9") and not newer("e1-9", "e1-10") and newer("x-1", "y-5")


def test_a_compound_cursor_moves_each_center_forward_only() -> None:
    cursor = Cursor(["a", "b", "c"])
    assert cursor.value() is None
    cursor.fill("e1-3,,f1-0")
    assert cursor.value() == "e1-3,,f1-0" and not cursor.complete()
    cursor.merge("e1-2,g1-5,f1-1")
    assert cursor.value() == "e1-3,g1-5,f1-1" and cursor.complete()
    assert cursor.accept("b", "g1-6") and not cursor.accept("b", "g1-6")
    cursor.merge("e1-3,g1-6")                          # a count of entries that does not fit
    assert cursor.value() == "e1-3,g1-6,f1-1"


def test_everything_handed_is_no_loss() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 11))
    sub = Subscriber(ledger, "e1-0")
    for seq in range(1, 11):
        sub.receive(f"e1-{seq}", keys[seq])
    sub.finish()
    verdict = ledger.judge()
    assert verdict.failures() == []
    assert (verdict.published, verdict.acknowledged, verdict.handed) == (10, 10, 10)


def test_a_message_skipped_is_a_loss_and_so_is_the_last_one_never_sent() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 11))
    sub = Subscriber(ledger, "e1-0")
    for seq in [1, 2, 3, 5, 6, 7, 8, 9]:
        sub.receive(f"e1-{seq}", keys[seq])
    sub.stream.finish("e1-10", 300.0)  # the final read stood at 10: 10 was owed too
    verdict = ledger.judge()
    assert sorted(loss.id for loss in verdict.losses) == ["e1-10", "e1-4"]
    assert verdict.lost_messages == 2 and "2 deliveries lost (2 messages)" in verdict.failures()


def test_what_was_published_before_the_subscriber_began_is_not_owed() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 11))
    sub = Subscriber(ledger, "e1-6")
    for seq in range(7, 11):
        sub.receive(f"e1-{seq}", keys[seq])
    sub.finish()
    assert ledger.judge().losses == []


def test_a_gap_of_a_message_never_acknowledged_is_no_loss() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, [1, 2, 4])
    ledger.sent("unacknowledged", CENTER, 103.0)
    ledger.gave_up("unacknowledged")
    sub = Subscriber(ledger, "e1-0")
    for seq in [1, 2, 4]:
        sub.receive(f"e1-{seq}", keys[seq])
    sub.finish()
    verdict = ledger.judge()
    assert verdict.losses == [] and verdict.given_up == 1


def test_a_message_published_twice_under_two_ids_is_a_duplicate() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 4))
    sub = Subscriber(ledger, "e1-0")
    for seq in range(1, 4):
        sub.receive(f"e1-{seq}", keys[seq])
    sub.receive("e1-4", keys[2])  # a retry published anew: its Idempotency-Key failed
    sub.finish()
    verdict = ledger.judge()
    assert [d["what"] for d in verdict.duplicates] == ["published twice"]
    assert verdict.duplicates[0]["ids"] == ["e1-2", "e1-4"]


def test_an_id_holding_two_messages_is_a_conflict() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 3))
    ledger.observe(CENTER, "e1-2", "someone-else", 150.0)
    assert keys and ledger.judge().conflicts[0]["what"] == "one id, two messages"


def test_a_message_sent_again_is_dropped_by_the_client_and_not_counted_against_the_daemon() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 4))
    sub = Subscriber(ledger, "e1-0")
    for seq in [1, 2, 2, 3, 1]:
        sub.receive(f"e1-{seq}", keys[seq])
    sub.finish()
    verdict = ledger.judge()
    assert sub.handed == ["e1-1", "e1-2", "e1-3"]
    assert verdict.failures() == [] and verdict.dropped_duplicates == 2


def test_a_message_behind_the_position_never_handed_is_out_of_order_and_lost() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 5))
    sub = Subscriber(ledger, "e1-0")
    for seq in [1, 3, 2, 4]:
        sub.receive(f"e1-{seq}", keys[seq])
    sub.finish()
    verdict = ledger.judge()
    assert [o["id"] for o in verdict.out_of_order] == ["e1-2"]
    assert [loss.id for loss in verdict.losses] == ["e1-2"]


def test_a_window_declared_lost_where_history_was_lost_is_reported_not_counted() -> None:
    # history 5: after 20 messages only 16..20 are retained; a subscriber
    # at 3 comes back, told recovered: false, and is sent 16..20.
    ledger = Ledger({CENTER: 5})
    keys = published(ledger, range(1, 21))
    sub = Subscriber(ledger, "e1-0")
    for seq in range(1, 4):
        sub.receive(f"e1-{seq}", keys[seq])
    sub.stream.notice("e1-3", 130.0, "redis-a")
    for seq in range(16, 21):
        sub.receive(f"e1-{seq}", keys[seq])
    sub.finish()
    verdict = ledger.judge()
    assert verdict.losses == [] and verdict.notices == 1 and verdict.lost_with_notice == 12
    assert verdict.notices_unjustified == [] and verdict.failures() == []


def test_recovered_false_with_nothing_missing_is_a_failure() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 6))
    sub = Subscriber(ledger, "e1-0")
    for seq in range(1, 4):
        sub.receive(f"e1-{seq}", keys[seq])
    sub.stream.notice("e1-3", 110.0, "redis-b")
    for seq in range(1, 6):  # replayed from the oldest: 1..3 again, then 4, 5
        sub.receive(f"e1-{seq}", keys[seq])
    sub.finish()
    verdict = ledger.judge()
    assert verdict.losses == [] and verdict.out_of_order == []
    assert [n["why"] for n in verdict.notices_unjustified] == ["nothing was missing after the cursor"]
    assert verdict.notices_unjustified[0]["daemon"] == "redis-b"
    assert "1 recovered:false without lost history" in verdict.failures()


def test_recovered_false_with_less_than_history_retained_is_a_failure() -> None:
    # history 100, 30 published: nothing had to go, yet the replay began at 20.
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 31))
    sub = Subscriber(ledger, "e1-0")
    for seq in range(1, 6):
        sub.receive(f"e1-{seq}", keys[seq])
    sub.stream.notice("e1-5", 140.0)
    for seq in range(20, 31):
        sub.receive(f"e1-{seq}", keys[seq])
    sub.finish()
    verdict = ledger.judge()
    assert verdict.losses == [] and verdict.lost_with_notice == 14
    assert "fewer than history 100" in verdict.notices_unjustified[0]["why"]


def test_a_pusher_session_owes_every_message_between_its_first_and_its_last() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 8))
    session = ledger.pusher_stream("p-1", CENTER, subscribed=100.5)
    session.keys += [keys[1], keys[2], keys[4], keys[4], keys[3], keys[5]]
    session.ended, session.by_client = 200.0, True
    verdict = ledger.judge()
    # 3 came after 4 (out of order), 4 twice; 6 and 7 were published after it
    # subscribed and acknowledged well before it left: owed too.
    assert [d["key"] for d in verdict.duplicates] == [keys[4]]
    assert [o["id"] for o in verdict.out_of_order] == ["e1-3"]
    assert sorted(loss.id for loss in verdict.losses) == ["e1-6", "e1-7"]


def test_a_pusher_session_cut_or_in_a_fault_owes_nothing_after_its_last_message() -> None:
    ledger = Ledger({CENTER: 100})
    keys = published(ledger, range(1, 8))
    cut = ledger.pusher_stream("p-1", CENTER, subscribed=100.5)
    cut.keys += [keys[1], keys[2]]
    cut.ended, cut.by_client = 200.0, False
    left = ledger.pusher_stream("p-2", CENTER, subscribed=100.5)
    left.keys += [keys[1], keys[2]]
    left.ended, left.by_client = 200.0, True
    assert ledger.judge(quiet=lambda a, b: False).losses == []
    assert len(ledger.judge(quiet=lambda a, b: True).losses) == 5  # p-2 in quiet times: 3..7


def test_webhook_events_out_of_turn_and_missing_are_found() -> None:
    hooks = WebhookLedger(leave_grace=2.0)
    hooks.occupied("site/toggle", 100.0, 110.0)
    hooks.occupied("site/toggle", 130.0, 140.0)
    events = [{"name": "center_occupied", "center": "toggle", "ts": 100.1},
              {"name": "center_vacated", "center": "toggle", "ts": 112.0},
              {"name": "center_vacated", "center": "toggle", "ts": 142.0}]
    hooks.request(113.0, "site", "id-1", "500", True, events[:2])   # failed: not handled
    hooks.request(114.0, "site", "id-1", "200", True, events[:2])   # its retry: handled
    hooks.request(115.0, "site", "id-1", "200", True, events[:2])   # again: a repeat
    hooks.request(143.0, "site", "id-2", "200", False, events[2:])  # bad signature, and out of turn
    verdict = hooks.judge([], end=200.0)
    assert verdict["handled"] == 2 and verdict["repeats_after_handled"] == 1 and verdict["bad_signatures"] == 1
    assert [a["event"] for a in verdict["alternation"]] == ["center_vacated"]
    assert [(m["event"], m["from"]) for m in verdict["missing"]] == [("center_occupied", 130.0)]
    hooks.request(150.0, "site", "id-3", "500", True, events[:1])   # never retried successfully
    assert [n["webhook_id"] for n in hooks.judge([], end=200.0)["never_handled"]] == ["id-3"]
    # Near a fault that may cause them, the same are excused.
    excused = hooks.judge([(125.0, 145.0, "redis-master-kill"), (149.0, 151.0, "daemon-kill9")], end=200.0)
    assert excused["alternation"] == [] and excused["missing"] == [] and excused["never_handled"] == []


def test_an_event_missing_is_excused_by_a_daemon_stopped_while_it_could_still_be_waiting() -> None:
    def judged(kill_at: float) -> dict[str, list[dict[str, object]]]:
        hooks = WebhookLedger(leave_grace=2.0)
        hooks.occupied("site/toggle", 100.0, 110.0)   # neither event ever came
        hooks.occupied("site/toggle", 130.0, 140.0)
        occupied = {"name": "center_occupied", "center": "toggle", "ts": 130.1}
        vacated = {"name": "center_vacated", "center": "toggle", "ts": 142.0}
        hooks.request(131.0, "site", "id-1", "200", True, [occupied])
        hooks.request(143.0, "site", "id-2", "200", True, [vacated])
        return hooks.judge([(kill_at, kill_at + 3, "daemon-kill9")], end=200.0)

    # Stopped before a later event was handled: what it held is lost, as documented.
    assert [(m["event"], m["from"]) for m in judged(kill_at=120.0)["missing"]] == []
    # A later event was handled first: the requests go in order, so these were never sent.
    assert [(m["event"], m["from"]) for m in judged(kill_at=160.0)["missing"]] == \
        [("center_occupied", 100.0), ("center_vacated", 100.0)]


def test_a_daemon_that_keeps_what_its_subscribers_held_fails_the_memory_check():
    from soak.report import left_idle

    def sample(t: float, rss_a: float, pid_b: int, rss_b: float) -> dict:
        mib = 1048576
        return {"t": t, "daemons": {"a": {"pid": 1, "rss": rss_a * mib}, "b": {"pid": pid_b, "rss": rss_b * mib},
                                    "harness": {"pid": 9, "rss": 500 * mib}}}

    # a: back near its start once the clients left; b: restarted (pid 3), then kept 30 MiB
    samples = [sample(0, 70, 2, 70), sample(60, 90, 2, 95), sample(70, 80, 3, 68), sample(120, 75, 3, 98)]
    judged = left_idle(samples, 16)
    assert [(d["daemon"], d["pid"], d["rss_start"], d["rss_idle"], d["ok"]) for d in judged["daemons"]] == [
        ("a", 1, 70, 75, True), ("b", 3, 68, 98, False)]
    assert len(judged["failures"]) == 1 and judged["failures"][0].startswith("b (pid 3) kept 30.0 MiB")


def test_an_event_out_of_turn_is_excused_when_the_one_between_was_lost_with_its_daemon() -> None:
    def judged(stop_at: float) -> list[dict[str, object]]:
        hooks = WebhookLedger(leave_grace=2.0)
        first = {"name": "center_occupied", "center": "toggle", "ts": 100.0}
        # the vacated of about 120 s was waiting in a daemon (the receiver down) ...
        again = {"name": "center_occupied", "center": "toggle", "ts": 130.0}
        hooks.request(101.0, "site", "id-1", "200", True, [first])
        hooks.request(190.0, "site", "id-2", "200", True, [again])
        return list(hooks.judge([(stop_at, stop_at + 1, "daemon-sigterm")], end=300.0)["alternation"])

    # ... stopped before a later event was handled: lost with it, as documented
    assert judged(stop_at=140.0) == []
    # a stop long after the later one was handled does not explain it
    assert [a["event"] for a in judged(stop_at=250.0)] == ["center_occupied"]
