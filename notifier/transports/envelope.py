"""The JSON envelope (docs/protocol.rst: Subscribing), shared by every JSON wire form."""

from __future__ import annotations

import json
from typing import Any

from notifier.domain.model import MESSAGE_EVENT, Message


def envelope(message: Message) -> dict[str, Any]:
    """``{"id", "center", "data", "ts"}``, and ``"event"`` last for a
    message of an event other than ``"message"``: a message of the default
    event is the envelope it was before events were, byte for byte."""
    body = {"id": message.id, "center": message.center, "data": message.data, "ts": message.ts}
    if message.event != MESSAGE_EVENT:
        body["event"] = message.event
    return body


def envelope_json(message: Message) -> str:
    return json.dumps(envelope(message), ensure_ascii=False)
