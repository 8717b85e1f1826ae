"""The value objects of the domain: publishers, centers, messages."""

from __future__ import annotations

from typing import Any, NamedTuple

from attrs import frozen


@frozen
class Publisher:
    name: str
    secret: str
    created: float


@frozen
class Center:
    """A notification center as the store keeps it.

    ``history`` and ``ttl`` are the per-center overrides given at creation,
    ``None`` where the server's defaults apply. ``epoch`` is made with the
    center (``Centers.make_epoch``), so a center deleted and made again
    has another. Where the broker keeps the center's stream (Redis), it is
    the epoch of its ids on every node; where the stream lives in this
    node's hub only, each hub begins an epoch of its own (its history does
    not outlive it). Empty for a center stored before epochs were kept.
    """

    publisher: str
    name: str
    private: bool
    history: int | None
    ttl: int | None
    created: float
    epoch: str = ""
    #: Whether it tracks who is there (docs/protocol.rst: Presence); only a private center does.
    presence: bool = False

    @property
    def path(self) -> str:
        return f"{self.publisher}/{self.name}"


#: What a webhook may be told (docs/protocol.rst: Webhooks).
WEBHOOK_EVENTS = ("center_occupied", "center_vacated", "member_joined", "member_left")


@frozen
class Webhook:
    """Where a publisher's site is told what happens: a URL and the events it wants."""

    url: str
    events: tuple[str, ...]


@frozen
class Message:
    """One published message; ``id`` is ``{epoch}-{seq}`` (see notifier.cursor)."""

    id: str
    center: str
    data: str
    ts: float


#: Who a subscriber of a presence center is: its token's ``uid`` and ``info``.
Member = tuple[str, "dict[str, Any] | None"]


class Grant(NamedTuple):
    """What a subscriber token admitted a subscription with: when it
    expires, and, for a presence center, whom as (its ``uid`` and ``info``)."""

    expires: float
    member: Member | None = None
