"""The naming rules (docs/protocol.rst: The publisher API) for publishers,
centers and the events of messages."""

from __future__ import annotations

import re

from notifier.domain.errors import BadRequest

PUBLISHER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
#: ``.`` and ``..`` are not names: no browser can reach them in a URL.
#: ``=``, ``,`` and ``;`` are there for Pusher's channel names (notifier.pusher).
CENTER_NAME = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._:@~=,;-]{1,200}\Z")
#: An event name (docs/protocol.rst: Events): 1 to 200 characters, none a
#: control character (C0, DEL, C1), so that it goes as it is on an SSE
#: ``event:`` line, which a line break would end; none a lone surrogate,
#: which no UTF-8 carries (a JSON string may hold one).
EVENT_NAME = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,200}\Z")


def matches(pattern: str, name: str) -> bool:
    """Whether *pattern* names *name*: exactly, or, ending in ``*``, as its beginning."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name


def check_publisher_name(name: str) -> str:
    if not isinstance(name, str) or not PUBLISHER_NAME.match(name):
        raise BadRequest(
            "a publisher name is 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
            code="invalid_publisher_name",
        )
    return name


def check_center_name(name: str) -> str:
    if not isinstance(name, str) or not CENTER_NAME.match(name):
        raise BadRequest(
            "a center name is 1 to 200 of A-Z, a-z, 0-9 and . _ : @ ~ = , ; -, other than . and ..",
            code="invalid_center_name",
        )
    return name


def check_event_name(name: object) -> str:
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        raise BadRequest("an event name is 1 to 200 characters of UTF-8 text, none a control character",
                         code="invalid_event")
    return name
