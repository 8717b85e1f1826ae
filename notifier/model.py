"""The value objects of the domain: publishers, centers, messages."""

from __future__ import annotations

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
    ``None`` where the server's defaults apply.
    """

    publisher: str
    name: str
    private: bool
    history: int | None
    ttl: int | None
    created: float

    @property
    def path(self) -> str:
        return f"{self.publisher}/{self.name}"


@frozen
class Message:
    """One published message; ``id`` is ``{epoch}-{seq}`` (see notifier.cursor)."""

    id: str
    center: str
    data: str
    ts: float
