"""Delivery of published messages to every node's hubs.

``Broker`` is the seam between publishing and fan-out: the local broker hands
a message straight to the hub on this node; a networked broker would publish
it outward and deliver what comes back, so every node delivers the same way.
"""

from __future__ import annotations

from typing import Protocol

from notifier.hub import Hub
from notifier.model import Message


class Broker(Protocol):
    async def publish(self, hub: Hub, data: str) -> tuple[Message, int]:
        """Give *data* its id, retain it, and fan it out.

        Answers the message and how many subscribers of this node it reached.
        """


class LocalBroker:
    """One node: ids and history live in the hub itself."""

    async def publish(self, hub: Hub, data: str) -> tuple[Message, int]:
        prepared = hub.append(data)
        return prepared.message, hub.deliver(prepared)
