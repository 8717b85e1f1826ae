"""Where the Redis store is, as ``[store] url`` says (docs/operating.rst: Several daemons with Redis).

``redis://[:password@]host[:port][/db]`` names one Redis server;
``redis+sentinel://[:password@]host1:port1,host2:port2,…/SERVICE[/db]``
names the Sentinels that know which server is the master of *SERVICE*
(port 26379 when left out). The password is the Redis servers' one: the
Sentinels are asked without any.

A URL that does not parse is a ValueError whose message holds nothing of
the URL: where it went wrong, a password may be anywhere in it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from attrs import frozen

#: The port of a Sentinel, when the URL leaves it out.
SENTINEL_PORT = 26379

#: A Sentinel's service name (``sentinel monitor SERVICE …``).
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,200}\Z")
#: One ``host[:port]`` of the list (``[::1]:26379`` for an IPv6 address).
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?\Z")
#: Where a URL's authority ends.
_END = re.compile(r"[/?#]")

REDIS_FORM = "redis://[:password@]host[:port][/db]"
SENTINEL_FORM = "redis+sentinel://[:password@]host:port,host:port,.../SERVICE[/db]"
#: Said with the forms: what breaks a password in a URL.
_ENCODED = "with any '/', '?', '#' or '%' of the password percent-encoded"


@frozen
class RedisAddress:
    """One Redis server."""

    host: str
    port: int
    db: int
    password: str | None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """``redis://[:password@]host[:port][/db]``; ValueError if it is not one."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # its message quotes the URL
            raise ValueError(f"expected {REDIS_FORM}, {_ENCODED}") from None
        if parts.scheme != "redis" or not parts.hostname or port == 0:
            raise ValueError(f"expected {REDIS_FORM}, {_ENCODED}")
        db = parts.path.strip("/") or "0"
        if not db.isdigit():
            raise ValueError("the database must be a number")
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port or 6379, int(db), password)

    def describe(self) -> str:
        return f"Redis at {self.host}:{self.port}"


@frozen
class SentinelAddress:
    """The Sentinels watching the master of *service*, and what to use on it."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SentinelAddress:
        """``redis+sentinel://[:password@]host:port,…/SERVICE[/db]``; ValueError if it is not one."""
        scheme, sep, rest = url.partition("://")
        if scheme != "redis+sentinel" or not sep:
            raise ValueError(f"expected {SENTINEL_FORM}")
        netloc, _, path = rest.partition("/")
        password: str | None = None
        if "@" in netloc:
            credentials, _, netloc = netloc.rpartition("@")
            user, colon, secret = credentials.partition(":")
            if not colon or user:
                raise ValueError("the password comes as ':password@' (Redis servers, not Sentinels)")
            password = unquote(secret) or None
        sentinels = []
        for number, entry in enumerate(netloc.split(","), 1):
            found = _HOST.match(entry.strip())
            if found is None:
                raise ValueError(f"expected {SENTINEL_FORM}, {_ENCODED}: Sentinel {number} is not host:port")
            port = int(found["port"] or SENTINEL_PORT)
            if not 0 < port < 65536:
                raise ValueError(f"the port of Sentinel {number} is out of range")
            sentinels.append((found["v6"] or found["name"], port))
        service, _, db = path.partition("/")
        if not _SERVICE.match(service):
            raise ValueError(f"expected {SENTINEL_FORM}: name the service the Sentinels monitor")
        db = db.strip("/") or "0"
        if not db.isdigit():
            raise ValueError("the database must be a number")
        return cls(tuple(dict.fromkeys(sentinels)), service, int(db), password)

    def describe(self) -> str:
        listed = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"the master of {self.service!r} (Sentinels {listed})"


Address = RedisAddress | SentinelAddress


def hosts_of(url: str) -> str | None:
    """The ``host[:port]`` list of *url* as written, if it is one beyond
    doubt: what names a URL in an error. A password comes before an ``@``,
    and one that breaks the URL (an unencoded ``/``, ``?`` or ``#``) may
    end the authority early, or be followed by an ``@`` in the query: the
    hosts are named only if what follows the authority's last ``@`` is
    what follows the URL's last one, up to the path."""
    _, sep, rest = url.partition("://")
    authority = _END.split(rest, maxsplit=1)[0].rpartition("@")[2]
    hosts = _END.split(rest.rpartition("@")[2], maxsplit=1)[0]
    if not sep or hosts != authority or not all(_HOST.match(entry) for entry in hosts.split(",")):
        return None
    return hosts


def parse_address(url: str) -> Address:
    """The Redis a ``redis://`` or ``redis+sentinel://`` URL names; ValueError if neither."""
    if url.startswith("redis+sentinel:"):
        return SentinelAddress.parse(url)
    return RedisAddress.parse(url)
