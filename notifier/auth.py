"""Reading credentials off requests: publisher Basic auth and the admin token."""

from __future__ import annotations

import binascii
import secrets
from base64 import b64decode

from twisted.web.iweb import IRequest

from notifier.errors import Unauthorized


def _authorization(request: IRequest) -> bytes:
    return request.getHeader(b"authorization") or b""


def basic_credentials(request: IRequest) -> tuple[str, str]:
    """``(publisher, secret)`` from ``Authorization: Basic``, else ``Unauthorized``."""
    scheme, _, value = _authorization(request).partition(b" ")
    if scheme.lower() != b"basic":
        raise Unauthorized("publisher credentials required (Authorization: Basic)", code="missing_credentials")
    try:
        decoded = b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthorized("malformed Basic credentials", code="bad_credentials") from None
    name, colon, secret = decoded.partition(":")
    if not colon:
        raise Unauthorized("malformed Basic credentials", code="bad_credentials")
    return name, secret


def check_admin(request: IRequest, token: str) -> None:
    """Pass only ``Authorization: Bearer <token>``; an empty token refuses all."""
    scheme, _, value = _authorization(request).partition(b" ")
    if not token:
        raise Unauthorized("the admin API is disabled (no admin_token configured)", code="admin_disabled")
    if scheme.lower() != b"bearer" or not secrets.compare_digest(value.strip(), token.encode()):
        raise Unauthorized("admin token required (Authorization: Bearer)", code="bad_credentials")
