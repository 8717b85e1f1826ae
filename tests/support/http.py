"""The HTTP API as a publisher and an operator call it, over real sockets,
and the credentials, computed from the documentation rather than by
notifier.domain.credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import treq

from tests.support.waiting import bounded

TEXT = {"Content-Type": "text/plain; charset=utf-8"}

#: The request signature scheme (docs/security.rst).
SCHEME = "Notifier-HMAC-SHA256"


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def call(
    method: str, url: str, body: Any = None, *, auth: tuple[str, str] | None = None,
    admin: str | None = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
) -> tuple[int, Any]:
    """One HTTP request, bounded by ``WAIT``; the status and the decoded JSON body (or bytes)."""
    sent = dict(headers or {})
    if auth is not None:
        sent["Authorization"] = basic(*auth)
    if admin is not None:
        sent["Authorization"] = f"Bearer {admin}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return await bounded(_exchange(method, url, data, sent))


async def _exchange(method: str, url: str, data: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
    response = await treq.request(method, url, data=data, headers=headers, persistent=False)
    content = await response.content()
    kind = response.headers.getRawHeaders(b"content-type", [b""])[0]
    if kind.startswith(b"application/json"):
        return response.code, json.loads(content)
    return response.code, content


async def make_center(daemon: Any, auth: tuple[str, str], center: str = "news", **options: Any) -> dict[str, Any]:
    """Create *center* with *options* through *daemon*'s api listener; its description."""
    status, body = await call("PUT", f"{daemon.api}/api/v1/centers/{center}", options or None, auth=auth)
    assert status == 201, body
    return body


async def setup_site(daemon: Any, center: str = "news", publisher: str = "site",
                     **options: Any) -> tuple[str, str]:
    """A publisher and one of its centers; the publisher's credentials."""
    auth = (publisher, await daemon.add_publisher(publisher))
    await make_center(daemon, auth, center, **options)
    return auth


async def publish(daemon: Any, auth: tuple[str, str], text: str, center: str = "news",
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """Publish *text* to *center*: the status and the decoded answer."""
    return await call("POST", f"{daemon.api}/api/v1/centers/{center}/messages", raw=text.encode(),
                      auth=auth, headers={**TEXT, **(headers or {})})


async def published(daemon: Any, auth: tuple[str, str], text: str, center: str = "news") -> str:
    """Publish *text* to *center*, which must succeed; the message's id."""
    status, body = await publish(daemon, auth, text, center)
    assert status == 201, body
    return body["id"]


async def subscriber_count(daemon: Any, auth: tuple[str, str], center: str = "news") -> int:
    """How many subscribers the api listener counts on *center*."""
    status, body = await call("GET", f"{daemon.api}/api/v1/centers/{center}", auth=auth)
    assert status == 200, body
    return body["subscribers"]



def expect_json_error(status: int, body: Any, expected: int, code: str | None = None) -> dict[str, Any]:
    """The documented error of status *expected*, as ``call`` decodes it; the decoded body."""
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert code is None or body["error"] == code, body
    return body


# credentials, computed from the documentation rather than by notifier.domain.credentials


def sign(secret: str, method: str, target: str, timestamp: int | str, body: bytes) -> str:
    """The documented request signature, computed from its text."""
    signed = f"{method}\n{target}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode("utf-8"), signed.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_header(publisher: str, timestamp: int | str, signature: str) -> str:
    return f"{SCHEME} publisher={publisher}, timestamp={timestamp}, signature={signature}"


def signed_headers(publisher: str, secret: str, method: str, target: str, body: bytes = b"",
                   timestamp: int | None = None, **headers: str) -> dict[str, str]:
    """*headers* and an ``Authorization`` signing exactly this request."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = sign(secret, method, target, timestamp, body)
    return {"Authorization": signature_header(publisher, timestamp, signature), **headers}


def subscriber_token(secret: str, *, lifetime: float | None = 60, key: str | None = None, **claims: Any) -> str:
    """A subscriber token: HS256 with *secret* (or another *key*), expiring in *lifetime* s."""
    if lifetime is not None:
        claims["exp"] = int(time.time() + lifetime)
    return jwt.encode(claims, (key if key is not None else secret).encode("utf-8"), algorithm="HS256")


def recording(site: Any) -> list[Any]:
    """The connections *site* (a listener's factory) makes from now on."""
    made: list[Any] = []
    build = site.buildProtocol

    def record(addr: Any) -> Any:
        protocol = build(addr)
        made.append(protocol)
        return protocol

    site.buildProtocol = record
    return made
