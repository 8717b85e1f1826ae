"""A publisher's centers as an operator looks through them: searched by
prefix, sorted, one page at a time (docs/protocol.rst: The operator API).

Sorted by name, a page is a range of the store's index (``Store.page_centers``),
so the 1,000th page of 100,000 centers costs what the first does. Sorted by
subscribers or by latest message, the centers that have some (only those
live on this node can) come first, most first, then every other one by
name, from the store as before.

A cursor is where the last page ended, ``[sort, prefix, rank, name]`` in
base64url JSON, ``rank`` ``None`` past the ranked centers: the next page is
what sorts after it now. A center added or removed meanwhile moves no other
one, so none is given twice or skipped unless it changed its own place.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
from collections.abc import Callable

from attrs import frozen

from notifier.domain.centers import Centers
from notifier.domain.errors import BadRequest
from notifier.domain.hub import Hub
from notifier.domain.model import Center

#: How a page may be sorted; the first is the default.
SORTS = ("name", "subscribers", "activity")
#: Centers in a page at most, and when not told.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
#: The longest prefix looked for: a center's name is at most 200 characters.
MAX_PREFIX = 200


def _subscribers(hub: Hub) -> float | None:
    return len(hub.subscribers) or None


def _activity(hub: Hub) -> float | None:
    latest = hub.latest
    return None if latest is None else latest.ts


#: A live center's rank in a sort other than by name (``None``: it has none).
RANKS: dict[str, Callable[[Hub], float | None]] = {"subscribers": _subscribers, "activity": _activity}


@frozen
class Page:
    centers: list[Center]
    #: The cursor of the following page; ``None`` on the last.
    next: str | None
    #: Centers whose names start with the prefix, in all.
    total: int


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="invalid_query")


def encode_cursor(sort: str, prefix: str, rank: float | None, name: str) -> str:
    text = json.dumps([sort, prefix, rank, name], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, sort: str, prefix: str) -> tuple[float | None, str]:
    """The ``(rank, name)`` a page of *sort* and *prefix* starts after;
    400 ``invalid_query`` for anything but a cursor of that listing."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise _invalid("cursor is not one this server gave") from None
    if not (isinstance(value, list) and len(value) == 4 and isinstance(value[3], str)
            and (value[2] is None or (isinstance(value[2], int | float) and not isinstance(value[2], bool)))):
        raise _invalid("cursor is not one this server gave")
    if value[0] != sort or value[1] != prefix:
        raise _invalid("cursor is of another sort or prefix: start again without it")
    return value[2], value[3]


def check_listing(sort: str | None, limit: str | None, prefix: str | None) -> tuple[str, int, str]:
    """The sort, limit and prefix of a listing, as given in a query; 400
    ``invalid_query`` for one that is not."""
    sort = sort or SORTS[0]
    if sort not in SORTS:
        raise _invalid(f"sort is one of {', '.join(SORTS)}")
    if limit is None:
        count = DEFAULT_LIMIT
    elif limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_LIMIT:
        count = int(limit)
    else:
        raise _invalid(f"limit is 1 to {MAX_LIMIT}")
    prefix = prefix or ""
    if len(prefix) > MAX_PREFIX:
        raise _invalid(f"prefix is at most {MAX_PREFIX} characters")
    return sort, count, prefix


async def page_centers(centers: Centers, publisher: str, *, prefix: str = "", sort: str = "name",
                       limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page:
    """One page of *publisher*'s centers whose names start with *prefix*."""
    rank, after = decode_cursor(cursor, sort, prefix) if cursor is not None else (None, None)
    ranked: list[tuple[float, str, Center]] = []
    if sort in RANKS:
        rank_of = RANKS[sort]
        for hub in centers.hubs():
            center = hub.center
            if center.publisher == publisher and center.name.startswith(prefix):
                value = rank_of(hub)
                if value is not None:
                    ranked.append((-value, center.name, center))
    found: list[tuple[float | None, Center]] = []
    if rank is not None or after is None:  # still among the ranked
        start = (-rank, after) if rank is not None and after is not None else None
        later = [item for item in ranked if start is None or (item[0], item[1]) > start]
        found = [(-key, center) for key, _, center in heapq.nsmallest(limit + 1, later, key=_order)]
        after = None  # the unranked, if reached, from their first
    total = None
    if len(found) <= limit:
        skip = {name for _, name, _ in ranked}
        named, total = await _by_name(centers, publisher, prefix, after, limit + 1 - len(found), skip)
        found.extend((None, center) for center in named)
    if total is None:
        _, total = await centers.store.page_centers(publisher, prefix, None, 0)
    page = found[:limit]
    following = None
    if len(found) > limit:
        last_rank, last = page[-1]
        following = encode_cursor(sort, prefix, last_rank, last.name)
    return Page([center for _, center in page], following, total)


def _order(item: tuple[float, str, Center]) -> tuple[float, str]:
    return item[0], item[1]


async def _by_name(centers: Centers, publisher: str, prefix: str, after: str | None, wanted: int,
                   skip: set[str]) -> tuple[list[Center], int]:
    """*wanted* centers by name after *after*, none of those in *skip*; and
    how many start with the prefix (``Store.page_centers``)."""
    found: list[Center] = []
    total = 0
    while len(found) < wanted:
        asked = wanted - len(found) + min(len(skip), MAX_LIMIT)
        rows, total = await centers.store.page_centers(publisher, prefix, after, asked)
        found.extend(center for center in rows if center.name not in skip)
        if len(rows) < asked:
            break
        after = rows[-1].name
    return found[:wanted], total

