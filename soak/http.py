"""HTTP requests of the soak's clients and publishers: treq, each bounded,
answering the status, the headers the soak reads and the JSON body."""

from __future__ import annotations

import json
from typing import Any

import attrs
import treq
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from tests.support import bounded


@attrs.frozen
class Answer:
    status: int
    body: Any
    cursor: str | None   # the Notifier-Cursor header


def pool(size: int) -> HTTPConnectionPool:
    """Kept-alive connections, up to *size* per daemon."""
    made = HTTPConnectionPool(reactor, persistent=True)
    made.maxPersistentPerHost = size
    made.cachedConnectionTimeout = 30
    made.retryAutomatically = False
    return made


async def _exchange(method: str, url: str, data: bytes | None, headers: dict[Any, Any],
                    connections: HTTPConnectionPool | None) -> Answer:
    if connections is None:
        response = await treq.request(method, url, data=data, headers=headers, persistent=False)
    else:
        response = await treq.request(method, url, data=data, headers=headers, pool=connections)
    content = await response.content()
    kind = response.headers.getRawHeaders(b"content-type", [b""])[0]
    cursor = response.headers.getRawHeaders(b"notifier-cursor", [None])[0]
    body: Any = content
    if kind.startswith(b"application/json"):
        try:
            body = json.loads(content)
        except ValueError:
            body = content
    return Answer(response.code, body, cursor.decode() if cursor is not None else None)


async def request(method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
                  timeout: float, connections: HTTPConnectionPool | None = None) -> Answer:
    """One request, failing (``defer.TimeoutError`` or the connection's
    error) past *timeout* seconds."""
    answer: Answer = await bounded(_exchange(method, url, data, headers or {}, connections), timeout)
    return answer
