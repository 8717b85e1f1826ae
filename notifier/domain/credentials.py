"""Credentials: publisher Basic auth and request signing, the admin token,
and subscriber tokens (JWT) for private centers.

Every comparison of a secret, a signature or a token is constant-time.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
from base64 import b64decode
from collections.abc import Sequence
from typing import Any, TypeGuard

import jwt
from attrs import frozen

from notifier.domain.errors import Unauthorized
from notifier.domain.model import Publisher
from notifier.domain.names import matches
from notifier.domain.signatures import SIGNATURE_WINDOW

HMAC_SCHEME = b"notifier-hmac-sha256"
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


def _bad(message: str, code: str = "bad_credentials") -> Unauthorized:
    return Unauthorized(message, code=code)


def bad_credentials() -> Unauthorized:
    """The one refusal of credentials that name no publisher, or the wrong
    secret or signature: it never tells which."""
    return _bad("unknown publisher or wrong credentials")


#: Checked in place of a publisher that does not exist, so that refusing an
#: unknown publisher takes as long as refusing a wrong secret.
_NOBODY = Publisher("", "x" * 43, 0.0, "", "")


@frozen
class BasicCredentials:
    publisher: str
    secret: str

    def check_time(self, now: float) -> None:
        """Nothing to check: Basic credentials carry no time."""

    def may_hold(self, publisher: Publisher | None) -> bool:
        """Whether these credentials can hold for *publisher*, before any body is read."""
        return secrets.compare_digest((publisher or _NOBODY).secret.encode(), self.secret.encode()) \
            and publisher is not None

    def verify(self, publisher: Publisher | None, method: bytes, uri: bytes, body: bytes, now: float) -> None:
        if not self.may_hold(publisher):
            raise bad_credentials()


@frozen
class SignedRequest:
    publisher: str
    timestamp: int
    signature: str

    def check_time(self, now: float) -> None:
        """Refuse a timestamp out of the window: before anything is looked
        up, so that the answer says nothing of the publisher."""
        if abs(now - self.timestamp) > SIGNATURE_WINDOW:
            raise _bad(f"the signature's timestamp is more than {SIGNATURE_WINDOW} s from the server's clock",
                       code="stale_signature")

    def verify(self, publisher: Publisher | None, method: bytes, uri: bytes, body: bytes, now: float) -> None:
        self.check_time(now)
        expected = signature((publisher or _NOBODY).secret, method, uri, self.timestamp, body)
        if not hmac.compare_digest(expected, self.signature) or publisher is None:
            raise bad_credentials()


def signature(secret: str, method: bytes, path_with_query: bytes, timestamp: int, body: bytes) -> str:
    """The documented request signature, as lowercase hex."""
    signed = b"\n".join((
        method, path_with_query, str(timestamp).encode(), hashlib.sha256(body).hexdigest().encode(),
    ))
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def publisher_credentials_from(values: Sequence[bytes]) -> BasicCredentials | SignedRequest:
    """What the ``Authorization`` header's *values* (the first counts) claim."""
    header = values[0] if values else b""
    scheme, _, value = header.partition(b" ")
    scheme = scheme.lower()
    if scheme == b"basic":
        return _basic(value)
    if scheme == HMAC_SCHEME:
        return _signed(value)
    raise _bad("publisher credentials required (Basic or Notifier-HMAC-SHA256)", code="missing_credentials")


def _basic(value: bytes) -> BasicCredentials:
    try:
        decoded = b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _bad("malformed Basic credentials") from None
    name, colon, secret = decoded.partition(":")
    if not colon:
        raise _bad("malformed Basic credentials")
    return BasicCredentials(name, secret)


def _signed(value: bytes) -> SignedRequest:
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise _bad("malformed signature header") from None
    params: dict[str, str] = {}
    for part in text.split(","):
        name, eq, param = part.strip().partition("=")
        if not eq or name in params:
            raise _bad("malformed signature header")
        params[name] = param
    if set(params) != {"publisher", "timestamp", "signature"}:
        raise _bad("the signature header needs publisher, timestamp and signature")
    timestamp = params["timestamp"]
    if not timestamp.isdigit() or len(timestamp) > 12 or not _HEX64.match(params["signature"]):
        raise _bad("malformed signature header")
    return SignedRequest(params["publisher"], int(timestamp), params["signature"])


def admin_granted(authorization: bytes | None, token: str) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <token>`` (never for an empty token)."""
    scheme, _, value = (authorization or b"").partition(b" ")
    return bool(token) and scheme.lower() == b"bearer" and secrets.compare_digest(value.strip(), token.encode())


def check_admin(authorization: bytes | None, token: str) -> None:
    """Pass only ``Authorization: Bearer <token>``; an empty token refuses all."""
    if not token:
        raise _bad("the admin API is disabled (no admin_token configured)", code="admin_disabled")
    if not admin_granted(authorization, token):
        raise _bad("admin token required (Authorization: Bearer)")


def check_subscriber_token(token: str | None, publisher: Publisher, center: str, now: float) -> float:
    """Pass a JWT (HS256, the publisher's secret) that grants *center* and
    has not expired; when it expires."""
    claims = subscriber_claims(token, publisher, now)
    if not grants(claims, center):
        raise _bad("the subscriber token is for another center", code="invalid_token")
    return float(claims["exp"])


def subscriber_claims(token: str | None, publisher: Publisher, now: float) -> dict[str, Any]:
    """The claims of a subscriber token (HS256, the publisher's secret)
    that has not expired; which centers it grants is ``grants``'s to say."""
    if not token:
        raise _bad("this center needs a subscriber token (token=)", code="token_required")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, publisher.secret.encode(), algorithms=["HS256"],
            # Time is checked below against the server's clock.
            options={"require": ["exp"], "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise _bad("invalid subscriber token", code="invalid_token") from None
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not _time(exp) or not _time(nbf):
        raise _bad("invalid subscriber token", code="invalid_token")
    if now >= exp:
        raise _bad("the subscriber token has expired", code="expired_token")
    if now < nbf:
        raise _bad("the subscriber token is not valid yet", code="invalid_token")
    return claims


#: The longest ``uid`` a token may carry, in characters.
MAX_UID = 128
#: The largest ``info`` a token may carry, in bytes of JSON.
MAX_INFO_BYTES = 1024


def member(claims: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """Who a token's holder is in a presence center (docs/protocol.rst: Presence):
    its ``uid`` and ``info``."""
    uid = claims.get("uid")
    if not isinstance(uid, str) or not 1 <= len(uid) <= MAX_UID:
        raise _bad(f"a presence center needs a token with a uid (a string of 1 to {MAX_UID} characters)",
                   code="uid_required")
    info = claims.get("info")
    if info is not None and (not isinstance(info, dict)
                             or len(json.dumps(info, ensure_ascii=False).encode()) > MAX_INFO_BYTES):
        raise _bad(f"a token's info is a JSON object of at most {MAX_INFO_BYTES} bytes", code="invalid_token")
    return uid, info


def _time(value: Any) -> TypeGuard[int | float]:
    """Whether a claim is a time: a number, finite (Python reads JSON's
    ``Infinity``, ``NaN`` and ``1e309`` too) and within a float's range."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def grants(claims: dict[str, Any], center: str) -> bool:
    """Whether ``sub`` names *center* exactly, or an entry of ``centers``
    names it (there, a ``*`` suffix grants every name it prefixes)."""
    sub = claims.get("sub")
    if isinstance(sub, str) and secrets.compare_digest(sub.encode(), center.encode()):
        return True
    centers = claims.get("centers")
    if not isinstance(centers, list):
        return False
    return any(isinstance(pattern, str) and pattern and matches(pattern, center) for pattern in centers)
