"""The JSON envelope (docs/protocol.rst: Subscribing), shared by every JSON wire form."""

from __future__ import annotations

import json
from typing import Any

from notifier.domain.model import Message


def envelope(message: Message) -> dict[str, Any]:
    return {"id": message.id, "center": message.center, "data": message.data, "ts": message.ts}


def envelope_json(message: Message) -> str:
    return json.dumps(envelope(message), ensure_ascii=False)
