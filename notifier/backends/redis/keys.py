"""Every name notifier uses in Redis, keys and channels.

Keys (``P`` = ``notifier:``): ``P publishers`` a hash name → JSON
``{"secret", "created", "app_id", "key", "client_events"}``, ``P
publisher_apps`` a hash app id → name, ``P publisher_keys`` a hash key →
name, and ``P last_app_id`` the last app id given (``INCR``); ``P centers:{publisher}`` a hash center → JSON
``{"private", "history", "ttl", "created", "epoch"}``, and ``P
center_names:{publisher}`` the same names in a sorted set, for paging by
name; per center ``P
seq:{path}`` (its last sequence number) and ``P log:{path}`` (its retained
messages, each JSON ``[seq, ts, data]``, or ``[seq, ts, data, event]`` for
a message of an event other than ``"message"``); ``P deadlines`` a sorted set of ``{path}`` by expiry time; ``P
idem:{publisher}:{key}`` a publish's ids by its ``Idempotency-Key``, and
``P held:{publisher}:{key}`` its messages while replicas have not confirmed
them (``[store] replicas_ack``); ``P sig:{publisher}:{signature}`` a request signature seen; ``P webhooks`` a
hash publisher → JSON ``{"url", "events"}``; presence (``P members:{path}``,
``P info:{path}``, ``P occupants:{path}``, ``P presence``: see
notifier.backends.redis.presence); the metrics history (``P
history:{node}:1`` and ``P history:{node}:60`` a node's samples of every
second and every minute, lists of JSON ``[t, websocket, sse, longpoll,
pusher, messages_in, messages_out]``, and ``P history_nodes`` a sorted set
of the nodes by the time of their latest sample: see
notifier.backends.redis.history). Channels, one pair
per database (pub/sub ignores it): ``P{db}:messages`` (each message JSON
``[publisher, center, epoch, seq, ts, data]``, then its event and the
connection it skips when it has them: lua/publish.lua) and
``P{db}:control``.
"""

from __future__ import annotations

from attrs import frozen

PREFIX = "notifier:"


@frozen
class Keys:
    """The names used by the daemons sharing database *db* of one Redis."""

    db: int

    @property
    def publishers(self) -> str:
        return PREFIX + "publishers"

    @property
    def publisher_apps(self) -> str:
        """App id → publisher name."""
        return PREFIX + "publisher_apps"

    @property
    def publisher_keys(self) -> str:
        """Key → publisher name."""
        return PREFIX + "publisher_keys"

    @property
    def last_app_id(self) -> str:
        """The last app id given: only ever incremented."""
        return PREFIX + "last_app_id"

    @property
    def deadlines(self) -> str:
        return PREFIX + "deadlines"

    @property
    def webhooks(self) -> str:
        return PREFIX + "webhooks"

    # presence (notifier.backends.redis.presence)

    @property
    def presence(self) -> str:
        return PREFIX + "presence"

    def presence_members(self, path: str) -> str:
        return f"{PREFIX}members:{path}"

    def presence_uids(self, path: str) -> str:
        return f"{PREFIX}uids:{path}"

    def presence_info(self, path: str) -> str:
        return f"{PREFIX}info:{path}"

    def presence_occupants(self, path: str) -> str:
        return f"{PREFIX}occupants:{path}"

    def presence_occupied(self, path: str) -> str:
        return f"{PREFIX}occupied:{path}"

    def centers(self, publisher: str) -> str:
        return f"{PREFIX}centers:{publisher}"

    def center_names(self, publisher: str) -> str:
        """The names of the publisher's centers, a sorted set (by name)."""
        return f"{PREFIX}center_names:{publisher}"

    def seq(self, path: str) -> str:
        """The last sequence number of the center at *path* (or, given a
        publisher's ``{publisher}/``, the start of its centers')."""
        return f"{PREFIX}seq:{path}"

    def log(self, path: str) -> str:
        """The retained messages of the center at *path* (as ``seq``)."""
        return f"{PREFIX}log:{path}"

    def idempotency(self, publisher: str, key: str) -> str:
        return f"{PREFIX}idem:{publisher}:{key}"

    def held(self, publisher: str, key: str) -> str:
        """The messages of a publish waiting for its replicas (publish.lua)."""
        return f"{PREFIX}held:{publisher}:{key}"

    def signature(self, publisher: str, signature: str) -> str:
        return f"{PREFIX}sig:{publisher}:{signature}"

    # the metrics history (notifier.backends.redis.history)

    def history(self, node: str, step: int) -> str:
        """*node*'s samples of every *step* seconds (1 or 60), oldest first."""
        return f"{PREFIX}history:{node}:{step}"

    @property
    def history_nodes(self) -> str:
        """The nodes sampling, by the time of their latest sample."""
        return PREFIX + "history_nodes"

    @property
    def messages(self) -> str:
        """The channel of published messages."""
        return f"{PREFIX}{self.db}:messages"

    @property
    def control(self) -> str:
        """The channel of changes (``Broker.announce``)."""
        return f"{PREFIX}{self.db}:control"
