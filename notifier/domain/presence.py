"""Who is where: occupancy of every center, members of presence centers.

A hub tells its ``Watcher`` (a ``Presence``, one per node) when it gets its
first subscriber and loses its last, and when a member (a token's ``uid``)
comes or goes. The node keeps what is on it, per center: how many of its
connections each uid has. What is true of the whole cluster is the
``Directory``'s: a uid new to a center there is a **join**, one gone from
every node a **leave**; a center's first subscriber anywhere makes it
**occupied**, the last one gone **vacated**. Only the node whose change made
the difference is told so, so each event is reported once per cluster: it
tells the subscribers of every node (presence items) and queues the
publisher's webhook.

Nothing is reported at once when something goes: a uid whose last
connection went, or a center whose last subscriber did, counts as gone
only once it has stayed gone ``leave_grace`` seconds (a page reload, a
long-poll between two requests), checked by a sweep a few times per grace.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from notifier.domain.errors import NotifierError
from notifier.domain.hub import Hub, Subscriber
from notifier.domain.model import Member

log = Logger()

T = TypeVar("T")

#: A member as the directory answers it: its uid and info.
Info = dict[str, Any] | None


class Directory(Protocol):
    """Presence for the whole cluster (one node: this one)."""

    async def join(self, path: str, uid: str, info: Info) -> bool:
        """This node holds *uid* in the center at *path*: whether it is new there."""

    async def leave(self, path: str, uid: str) -> bool:
        """This node no longer holds *uid*: whether no node does."""

    async def members(self, path: str) -> list[tuple[str, Info]]:
        """Every member of the center, by uid."""

    async def occupy(self, path: str) -> bool:
        """This node has subscribers of the center: whether it is the first."""

    async def vacate(self, path: str) -> bool:
        """This node has none left: whether no node has any."""

    async def refresh(self, held: dict[str, dict[str, Info]],
                      occupied: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
        """Say again what this node holds (members by center, occupied
        centers), so that it is not taken for gone; what was new again
        (this node had been taken for gone): ``(path, uid)`` joined, paths
        occupied."""

    async def sweep(self) -> tuple[list[tuple[str, str]], list[str]]:
        """Forget what nodes that stopped saying so held: the ``(path,
        uid)`` that thereby left, and the paths thereby vacated."""


class LocalDirectory:
    """One node is the whole cluster: what it holds is all there is."""

    def __init__(self) -> None:
        self._members: dict[str, dict[str, Info]] = {}
        self._occupied: set[str] = set()

    async def join(self, path: str, uid: str, info: Info) -> bool:
        members = self._members.setdefault(path, {})
        new = uid not in members
        members[uid] = info
        return new

    async def leave(self, path: str, uid: str) -> bool:
        members = self._members.get(path, {})
        gone = members.pop(uid, _ABSENT) is not _ABSENT
        if not members:
            self._members.pop(path, None)
        return gone

    async def members(self, path: str) -> list[tuple[str, Info]]:
        return sorted(self._members.get(path, {}).items())

    async def occupy(self, path: str) -> bool:
        new = path not in self._occupied
        self._occupied.add(path)
        return new

    async def vacate(self, path: str) -> bool:
        if path in self._occupied:
            self._occupied.discard(path)
            return True
        return False

    async def refresh(self, held: dict[str, dict[str, Info]],
                      occupied: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
        return [], []

    async def sweep(self) -> tuple[list[tuple[str, str]], list[str]]:
        return [], []


_ABSENT = object()


class Item:
    """A presence item (docs/protocol.rst: Presence), each wire form made once."""

    __slots__ = ("kind", "body", "_forms")

    def __init__(self, kind: str, body: dict[str, Any]) -> None:
        self.kind = kind
        self.body = body
        self._forms: dict[Callable[[Item], object], object] = {}

    def form(self, encode: Callable[[Item], T]) -> T:
        try:
            return self._forms[encode]  # type: ignore[return-value]
        except KeyError:
            value = self._forms[encode] = encode(self)
            return value

    def json(self) -> str:
        return json.dumps(self.body, ensure_ascii=False, separators=(", ", ": "))


def members_item(center: str, members: list[tuple[str, Info]]) -> Item:
    return Item("members", {"presence": "members", "center": center,
                            "members": [{"uid": uid, "info": info} for uid, info in members]})


def join_item(center: str, uid: str, info: Info) -> Item:
    return Item("join", {"presence": "join", "center": center, "uid": uid, "info": info})


def leave_item(center: str, uid: str) -> Item:
    return Item("leave", {"presence": "leave", "center": center, "uid": uid})


def item_of(body: dict[str, Any]) -> Item:
    """An item received from another node."""
    return Item(str(body["presence"]), body)


class PresenceSubscriber(Protocol):
    """A subscriber that carries presence items (WebSocket json, SSE)."""

    def present(self, item: Item) -> None: ...


def _tells(subscriber: Subscriber) -> PresenceSubscriber | None:
    return subscriber if getattr(subscriber, "tells_presence", False) else None  # type: ignore[return-value]


class Roster:
    """What this node holds of one center: its members' connections here,
    those gone and not yet reported, and its subscribers' coming and going."""

    __slots__ = ("publisher", "center", "path", "connections", "info", "gone", "emptied", "reported",
                 "waiting", "chain")

    def __init__(self, publisher: str, center: str) -> None:
        self.publisher, self.center, self.path = publisher, center, f"{publisher}/{center}"
        #: Connections here per uid (a uid with none is in ``gone``).
        self.connections: dict[str, int] = {}
        self.info: dict[str, Info] = {}
        #: Since when each uid with no connection here has had none.
        self.gone: dict[str, float] = {}
        #: Since when the center has had no subscriber here (``None``: it has some).
        self.emptied: float | None = None
        #: Whether the directory was told this node occupies the center.
        self.reported = False
        #: Subscribers that have not had their members item yet: what came for them meanwhile.
        self.waiting: dict[PresenceSubscriber, list[Item]] = {}
        #: The directory calls of this center, one after the other.
        self.chain: Deferred[None] = succeed(None)

    def idle(self) -> bool:
        return not self.connections and not self.gone and self.emptied is None and not self.reported \
            and not self.waiting


class Presence:
    """The node's ``Watcher``: occupancy and members, reported once per cluster.

    *hub_of* finds the live hub of a ``(publisher, center)`` on this node;
    *announce* tells the other nodes of an item (their ``remote`` gets it);
    *event* is told of each occupancy and member event for webhooks:
    ``(publisher, name, center, fields)``.
    """

    def __init__(self, directory: Directory, clock: IReactorTime, leave_grace: float,
                 hub_of: Callable[[str, str], Hub | None],
                 announce: Callable[[dict[str, str]], Deferred[None] | None],
                 event: Callable[[str, str, str, dict[str, Any]], None], node: str) -> None:
        self.directory = directory
        self.clock = clock
        self.leave_grace = leave_grace
        self.hub_of = hub_of
        self.announce = announce
        self.event = event
        self.node = node
        self.rosters: dict[str, Roster] = {}
        #: Rosters with something gone, not yet reported.
        self._pending: set[Roster] = set()

    def _roster(self, hub: Hub) -> Roster:
        path = hub.center.path
        roster = self.rosters.get(path)
        if roster is None:
            roster = self.rosters[path] = Roster(hub.center.publisher, hub.center.name)
        return roster

    def _then(self, roster: Roster, call: Callable[[], Any]) -> None:
        """Run *call* (a coroutine function) after the center's earlier
        directory calls; a failure is logged, and the next goes on."""
        def step(_: object) -> Deferred[None]:
            return Deferred.fromCoroutine(call())

        def failed(failure: Any) -> None:
            # The refresh says it all again once the directory is back; what
            # this node no longer holds expires there.
            if failure.check(NotifierError):
                log.warn("presence of {path}: {error}", path=roster.path, error=failure.value.message)
            else:
                log.failure("presence of {path}", failure, path=roster.path)

        roster.chain = roster.chain.addCallback(step).addErrback(failed)

    # Watcher

    def filled(self, hub: Hub) -> None:
        roster = self._roster(hub)
        roster.emptied = None
        if not roster.reported:
            roster.reported = True
            self._then(roster, lambda: self._occupied(roster))

    def emptied(self, hub: Hub) -> None:
        roster = self._roster(hub)
        roster.emptied = self.clock.seconds()
        self._pending.add(roster)

    def came(self, hub: Hub, subscriber: Subscriber, member: Member) -> None:
        roster = self._roster(hub)
        uid, info = member
        count = roster.connections.get(uid, 0)
        roster.connections[uid] = count + 1
        told = _tells(subscriber)
        if told is not None:
            roster.waiting[told] = []
        if count == 0:
            roster.info[uid] = info
            if roster.gone.pop(uid, None) is None:  # not back within the grace: new here
                self._then(roster, lambda: self._joined(roster, uid, info))
        if told is not None:
            # Once the subscriber has sent where it starts and its backlog
            # (it attaches first, so that nothing is missed): next turn.
            self.clock.callLater(0, self._then, roster, partial(self._welcome, roster, told))

    def went(self, hub: Hub, subscriber: Subscriber) -> None:
        roster = self._roster(hub)
        uid = hub.members.get(subscriber)
        told = _tells(subscriber)
        if told is not None:
            roster.waiting.pop(told, None)
        if uid is None:
            return
        count = roster.connections.get(uid, 0) - 1
        if count > 0:
            roster.connections[uid] = count
            return
        roster.connections.pop(uid, None)
        roster.gone[uid] = self.clock.seconds()
        self._pending.add(roster)

    # what the directory says

    async def _occupied(self, roster: Roster) -> None:
        if await self.directory.occupy(roster.path):
            self.event(roster.publisher, "center_occupied", roster.center, {})

    async def _vacated(self, roster: Roster) -> None:
        if await self.directory.vacate(roster.path):
            self.event(roster.publisher, "center_vacated", roster.center, {})

    async def _joined(self, roster: Roster, uid: str, info: Info) -> None:
        if await self.directory.join(roster.path, uid, info):
            self._joined_now(roster.publisher, roster.center, uid, info)

    async def _left(self, roster: Roster, uid: str) -> None:
        if roster.connections.get(uid):
            return  # back meanwhile: the directory still holds it for this node
        if await self.directory.leave(roster.path, uid):
            self._left_now(roster.publisher, roster.center, uid)

    def _joined_now(self, publisher: str, center: str, uid: str, info: Info) -> None:
        self._tell(publisher, center, join_item(center, uid, info))
        self.event(publisher, "member_joined", center, {"uid": uid, "info": info})

    def _left_now(self, publisher: str, center: str, uid: str) -> None:
        self._tell(publisher, center, leave_item(center, uid))
        self.event(publisher, "member_left", center, {"uid": uid})

    async def _welcome(self, roster: Roster, told: PresenceSubscriber) -> None:
        """Send a new subscriber the members (itself included, its join
        being done), then what came for it meanwhile that the list does not
        already say."""
        members = await self.directory.members(roster.path)
        meanwhile = roster.waiting.pop(told, None)
        if meanwhile is None:
            return  # gone meanwhile
        told.present(members_item(roster.center, members))
        present = {uid for uid, _ in members}
        for item in meanwhile:
            uid = item.body.get("uid")
            if (item.kind == "join") != (uid in present):
                told.present(item)

    def _tell(self, publisher: str, center: str, item: Item) -> None:
        """An item to every node's subscribers of the center, this one's
        first."""
        self.deliver(publisher, center, item)
        self.announce({"type": "presence", "node": self.node, "publisher": publisher, "center": center,
                       "item": item.json()})

    def deliver(self, publisher: str, center: str, item: Item) -> None:
        """*item* to this node's subscribers of the center that carry items."""
        hub = self.hub_of(publisher, center)
        if hub is None:
            return
        for observer in tuple(hub.observers):
            observer.present(item)
        roster = self.rosters.get(hub.center.path)
        waiting = roster.waiting if roster is not None else {}
        for subscriber in tuple(hub.subscribers):
            told = _tells(subscriber)
            if told is None:
                continue
            held = waiting.get(told)
            if held is not None:
                held.append(item)
            else:
                told.present(item)

    def remote(self, event: dict[str, str]) -> None:
        """An item another node told (``announce``)."""
        if event.get("node") == self.node:
            return  # told here already
        try:
            item = item_of(json.loads(event["item"]))
        except (KeyError, TypeError, ValueError):
            log.warn("ignoring a malformed presence event")
            return
        self.deliver(event.get("publisher", ""), event.get("center", ""), item)

    # time

    def sweep(self) -> None:
        """Report what has been gone ``leave_grace`` seconds (a few times
        per grace)."""
        if not self._pending:
            return
        due = self.clock.seconds() - self.leave_grace
        for roster in tuple(self._pending):
            for uid, since in tuple(roster.gone.items()):
                if since <= due:
                    del roster.gone[uid]
                    roster.info.pop(uid, None)
                    self._then(roster, partial(self._left, roster, uid))
            if roster.emptied is not None and roster.emptied <= due:
                roster.emptied = None
                if roster.reported:
                    roster.reported = False
                    self._then(roster, partial(self._vacated, roster))
            if not roster.gone and roster.emptied is None:
                self._pending.discard(roster)
                if roster.idle():
                    self._drop(roster)

    def _drop(self, roster: Roster) -> None:
        def dropped(_: object) -> None:
            if roster.idle() and self.rosters.get(roster.path) is roster:
                del self.rosters[roster.path]

        roster.chain.addCallback(dropped)

    async def refresh(self) -> None:
        """Tell the directory again what this node holds; and forget what
        nodes that stopped telling it held (each reported by one node)."""
        held = {path: {uid: roster.info.get(uid) for uid in roster.connections}
                for path, roster in self.rosters.items() if roster.connections}
        occupied = [path for path, roster in self.rosters.items() if roster.reported]
        rejoined, reoccupied = await self.directory.refresh(held, occupied)
        for path, uid in rejoined:  # this node had been taken for gone
            publisher, center = path.split("/", 1)
            self._joined_now(publisher, center, uid, held[path].get(uid))
        for path in reoccupied:
            publisher, center = path.split("/", 1)
            self.event(publisher, "center_occupied", center, {})
        left, vacated = await self.directory.sweep()
        for path, uid in left:
            publisher, center = path.split("/", 1)
            self._left_now(publisher, center, uid)
        for path in vacated:
            publisher, center = path.split("/", 1)
            self.event(publisher, "center_vacated", center, {})

    # reading

    async def members(self, path: str) -> list[tuple[str, Info]]:
        return await self.directory.members(path)

    def local_members(self) -> dict[str, int]:
        """Members on this node, by publisher (a uid counted once per center)."""
        counts: dict[str, int] = {}
        for roster in self.rosters.values():
            if roster.connections:
                counts[roster.publisher] = counts.get(roster.publisher, 0) + len(roster.connections)
        return counts

