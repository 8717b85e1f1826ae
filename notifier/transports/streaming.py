"""What every streaming subscriber does, whatever its frames.

A streaming subscriber (WebSocket, Server-Sent Events) holds one connection
and is attached to one hub, or to several (a multiplexed subscription,
docs/protocol.rst: Many centers on one connection). It owns the attachment
(backlog and live messages meeting with no gap), the announcement of where
it starts,
the replayed backlog under backpressure, leaving its hubs, the end of its
token, and the drop of a client too slow or stuck. A transport supplies
only its frames and how it cuts a connection.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence

from notifier.domain.hub import Batch, Hub, Opening, Prepared, interleave
from notifier.domain.model import Grant, Message
from notifier.domain.presence import Item
from notifier.domain.token_deadlines import TokenDeadlines
from notifier.transports.backpressure import Paced
from notifier.transports.ordering import InOrder


class StreamingSubscriber(Paced):
    transport_name: str
    #: The hubs it is attached to; none before it starts and once it left.
    hubs: tuple[Hub, ...] = ()
    #: Called with each hub of a subscriber dropped as too slow.
    dropped: Callable[[Hub], None]
    #: Publish order across its hubs, when it has several.
    _in_order: InOrder | None = None

    # what a transport provides

    @abstractmethod
    def encode(self, message: Message) -> bytes:
        """A message as this subscriber's frames (the same function for every
        subscriber of a format, so that a message is encoded once for all)."""

    @abstractmethod
    def _announce(self, cursor: str | None, opening: Opening) -> None:
        """Send what comes before the backlog of *opening*: where the stream
        starts, and, for a *cursor* given, whether it was recovered."""

    @abstractmethod
    def _announce_many(self, positions: list[str], lost: list[str]) -> None:
        """Send what opens a multiplexed subscription: its starting point
        (*positions*, one per center) and the centers it could not resume."""

    @abstractmethod
    def close(self, reason: str) -> None:
        """End the subscription (Subscriber.close)."""

    @abstractmethod
    def _cut_slow(self) -> None:
        """End a connection whose client fell too far behind."""

    @abstractmethod
    def _keep_alive(self) -> None:
        """The transport's own heartbeat (a ping, a comment line)."""

    # attachment

    def attach(self, hub: Hub, cursor: str | None, grant: Grant | None = None,
               deadlines: TokenDeadlines | None = None) -> None:
        """Follow *hub* from *cursor*: the announcement, the backlog, then
        live messages; until the *grant* of a private center's token
        expires, if given (and as its member, in a presence center)."""
        opening = hub.attach(self, cursor, grant.member if grant is not None else None)
        self.hubs = (*self.hubs, hub)
        if grant is not None and deadlines is not None:
            deadlines.add(grant.expires, hub, self)
        self._announce(cursor, opening)
        encode = self.encode
        self._send_backlog(prepared.form(encode) for prepared in opening.backlog)

    def attach_many(self, hubs: Sequence[Hub], cursors: Sequence[str | None], grant: Grant | None = None,
                    deadlines: TokenDeadlines | None = None) -> None:
        """Follow several hubs from their *cursors* (``None``: live only) on
        one connection: the starting point, then the backlogs and the live
        messages of every hub in publish order."""
        member = grant.member if grant is not None else None
        openings = [hub.attach(self, cursor, member) for hub, cursor in zip(hubs, cursors, strict=True)]
        self.hubs = tuple(hubs)
        in_order = self._in_order = InOrder(hubs)
        if grant is not None and deadlines is not None:
            deadlines.add(grant.expires, hubs[0], self)  # it leaves every hub at once
        lost = [hub.center.name for hub, opening in zip(hubs, openings, strict=True) if not opening.recovered]
        self._announce_many([opening.position for opening in openings], lost)
        backlog = in_order.backlog(interleave([opening.backlog for opening in openings]))
        self._send_backlog(self._replayed(backlog))

    def _replayed(self, backlog: list[Prepared]) -> Iterable[bytes]:
        """A multiplexed backlog as frames (what ``deliver`` would send)."""
        encode = self.encode
        return (prepared.form(encode) for prepared in backlog)

    def deliver(self, batch: Batch) -> None:
        in_order = self._in_order
        if in_order is not None:
            taken = in_order.take(batch)
            if taken is None:
                return
            batch = taken
        self._pace(batch.joined(self.encode))

    # presence (notifier.domain.presence)

    #: Whether presence items reach this subscriber.
    tells_presence = False

    def present(self, item: Item) -> None:
        """Send a presence item, as this transport frames one."""
        self._pace(item.form(self.encode_item))

    def encode_item(self, item: Item) -> bytes:
        raise TypeError(f"{type(self).__name__} carries no presence items")

    def _leave(self) -> None:
        hubs, self.hubs = self.hubs, ()
        for hub in hubs:
            hub.unsubscribe(self)

    # falling behind

    def _drop_slow(self) -> None:
        hubs = self.hubs
        self._leave()
        if hubs:
            self.dropped(hubs[0])  # one subscriber, however many centers
        self._cut_slow()

    def heartbeat(self) -> None:
        """Every ping interval: drop a stream stuck through several beats,
        else keep it alive."""
        if self._stalled():
            self._give_up()
        else:
            self._keep_alive()

    def _size(self, frames: bytes) -> int:
        return len(frames)
