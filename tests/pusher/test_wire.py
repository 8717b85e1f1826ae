"""Pusher's frames and signatures, in memory: what the WebSocket and the
HTTP API build every message of."""

from __future__ import annotations

import json

import pusher
import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.domain.hub import Batch, Prepared
from notifier.domain.model import Message
from notifier.domain.presence import join_item, leave_item, members_item
from notifier.pusher import wire
from notifier.pusher.connection import _exclusions, item_frame
from tests.raw import server_frames


def _payload(frame: bytes) -> dict:
    ((opcode, payload),) = server_frames(frame)
    assert opcode == 1
    return json.loads(payload)


@pytest.mark.parametrize(("channel", "kind", "cache"), [
    ("news", wire.PUBLIC, False),
    ("private-a", wire.PRIVATE, False),
    ("private-encrypted-a", wire.ENCRYPTED, False),
    ("presence-a", wire.PRESENCE, False),
    ("cache-a", wire.PUBLIC, True),
    ("private-cache-a", wire.PRIVATE, True),
    ("presence-cache-a", wire.PRESENCE, True),
    ("private-encrypted-cache-a", wire.ENCRYPTED, True),
    ("privatea", wire.PUBLIC, False),
])
def test_a_channels_kind_is_its_prefix(channel, kind, cache):
    assert wire.kind_of(channel) == kind
    assert wire.is_cache(channel) is cache


def test_the_libraries_signatures_are_recognized_and_nothing_else():
    client = pusher.Pusher(app_id="1", key="k" * 20, secret="s3cret")
    given_auth = client.authenticate("private-a", "12.34")["auth"]
    assert wire.signed("s3cret", "k" * 20, "12.34:private-a", given_auth)
    presence = client.authenticate("presence-a", "12.34", {"user_id": "u"})
    assert wire.signed("s3cret", "k" * 20, f"12.34:presence-a:{presence['channel_data']}", presence["auth"])
    user = client.authenticate_user("12.34", {"id": "u"})
    assert wire.signed("s3cret", "k" * 20, f"12.34::user::{user['user_data']}", user["auth"])
    for forged in (given_auth.upper(), "k" * 20 + ":", ":" + given_auth.split(":")[1], None, 7, "ü:ü"):
        assert not wire.signed("s3cret", "k" * 20, "12.34:private-a", forged)
    assert not wire.signed("other", "k" * 20, "12.34:private-a", given_auth)
    assert not wire.signed("s3cret", "j" * 20, "12.34:private-a", given_auth)


@given(st.text(), st.text(min_size=1, max_size=50))
def test_a_message_frame_carries_its_text_and_event_as_they_are(text, event):
    frame = wire.message_frame(Message("e-1", "news", text, 0.0, event))
    assert _payload(frame) == {"event": event, "channel": "news", "data": text}


def test_the_protocols_own_events_carry_their_data_as_json_text():
    assert _payload(wire.event_frame("pusher:pong", {})) == {"event": "pusher:pong", "data": "{}"}
    assert _payload(wire.error_frame(4001, "no")) == {"event": "pusher:error",
                                                      "data": '{"code":4001,"message":"no"}'}
    error = _payload(wire.subscription_error("private-a", "bad", 401))
    assert error["channel"] == "private-a"
    assert json.loads(error["data"]) == {"type": "AuthError", "error": "bad", "status": 401}


def test_presence_items_are_pushers_member_events():
    members = _payload(item_frame(members_item("presence-r", [("a", {"n": 1}), ("b", None)])))
    assert members["event"] == "pusher_internal:subscription_succeeded" and members["channel"] == "presence-r"
    assert json.loads(members["data"]) == {"presence": {"ids": ["a", "b"], "hash": {"a": {"n": 1}, "b": None},
                                                        "count": 2}}
    added = _payload(item_frame(join_item("presence-r", "c", {"x": 2})))
    assert added["event"] == "pusher_internal:member_added"
    assert json.loads(added["data"]) == {"user_id": "c", "user_info": {"x": 2}}
    removed = _payload(item_frame(leave_item("presence-r", "c")))
    assert (removed["event"], json.loads(removed["data"])) == ("pusher_internal:member_removed", {"user_id": "c"})


def test_a_batch_knows_once_which_sockets_it_skips():
    batch = Batch([Prepared(Message("e-1", "c", "a", 0.0)), Prepared(Message("e-2", "c", "b", 0.0, "x", "1.2"))])
    assert batch.form(_exclusions) == frozenset({"1.2"})
    assert Batch([Prepared(Message("e-3", "c", "a", 0.0))]).form(_exclusions) == frozenset()


@pytest.mark.parametrize("name", ["a", "A-z_=@,.;0", "x" * 164])
def test_pushers_channel_names_are_valid(name):
    assert wire.CHANNEL_NAME.match(name)


@pytest.mark.parametrize("name", ["", "x" * 165, "a b", "a/b", "#server-to-user-1", "ü"])
def test_other_channel_names_are_not(name):
    assert not wire.CHANNEL_NAME.match(name)


def test_the_established_frame_is_what_json_would_make():
    data = _payload(wire.established_frame("123.45", 120))
    assert data["event"] == "pusher:connection_established"
    assert json.loads(data["data"]) == {"socket_id": "123.45", "activity_timeout": 120}
