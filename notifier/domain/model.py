"""The value objects of the domain: publishers, centers, messages."""

from __future__ import annotations

from typing import Any, NamedTuple

from attrs import frozen


@frozen
class Publisher:
    """A publisher: a site, with its secret, and what makes it a Pusher app.

    ``app_id`` (ASCII digits) and ``key`` (public, 20 characters of
    ``[a-z0-9]``) are what a Pusher client or server library is configured
    with: the key names the app on a WebSocket connection, the app id in
    the HTTP API's paths. Both are made with the publisher
    (``Publishers.add_publisher``) and never change, a secret rotated
    included, and no other publisher of the store ever has them while it
    is there. ``client_events`` is its own choice of whether Pusher client
    events are relayed; ``None``: as ``[pusher] client_events`` says.
    """

    name: str
    secret: str
    created: float
    app_id: str
    key: str
    client_events: bool | None = None

    def relays_client_events(self, default: bool) -> bool:
        """Whether Pusher client events are relayed for it, *default*
        being the server's ``[pusher] client_events``."""
        return default if self.client_events is None else self.client_events


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

#: What a webhook in Pusher's format may be told (docs/pusher.rst), by
#: Pusher's name: the event it is of the node's own (``WEBHOOK_EVENTS``, and
#: two only the Pusher face makes).
PUSHER_WEBHOOK_EVENTS = {
    "channel_occupied": "center_occupied", "channel_vacated": "center_vacated",
    "member_added": "member_joined", "member_removed": "member_left",
    "client_event": "client_event", "cache_miss": "cache_miss",
}

#: The formats a webhook's requests may have.
WEBHOOK_FORMATS = ("notifier", "pusher")


@frozen
class Webhook:
    """Where a publisher's site is told what happens: a URL, the events it
    wants (named in its format), and the format of its requests:
    notifier's own, or Pusher's."""

    url: str
    events: tuple[str, ...]
    format: str = "notifier"

    def wants(self, name: str) -> bool:
        """Whether it is told of the node's event *name*."""
        if self.format == "pusher":
            return any(PUSHER_WEBHOOK_EVENTS[event] == name for event in self.events)
        return name in self.events


#: The event of a message published without one: the only event of
#: notifier's own protocol, and the one its wire forms leave unsaid.
MESSAGE_EVENT = "message"


@frozen
class Message:
    """One published message; ``id`` is ``{epoch}-{seq}`` (see notifier.cursor).

    ``event`` names what it is (docs/protocol.rst: Events): ``"message"``
    unless the publisher named another, which every wire form that can
    carry it does. ``exclude`` is the Pusher socket id (``digits.digits``)
    of the one connection that must not be sent it (the connection that
    sent it, told its own event already); only the Pusher face reads it,
    and only live: it is not kept in any retained history.
    """

    id: str
    center: str
    data: str
    ts: float
    event: str = MESSAGE_EVENT
    exclude: str | None = None


#: Who a subscriber of a presence center is: its token's ``uid`` and ``info``.
Member = tuple[str, "dict[str, Any] | None"]


class Grant(NamedTuple):
    """What a subscriber token admitted a subscription with: when it
    expires, and, for a presence center, whom as (its ``uid`` and ``info``)."""

    expires: float
    member: Member | None = None
