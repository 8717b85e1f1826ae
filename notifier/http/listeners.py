"""The site each listener serves, with all its wiring."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from notifier.config import Config
from notifier.end_of_turn import EndOfTurn
from notifier.http.api import ApiApp, ApiRoot, max_body_bytes
from notifier.http.connection import HttpSite
from notifier.http.public import PublicApp

#: Subscribers send no bodies.
PUBLIC_MAX_BODY = 4096


def public_site(app: PublicApp, config: Config, reactor: IReactorTime, *, turn: EndOfTurn,
                timeout: float | None = None) -> HttpSite:
    """The public listener: subscriptions on every transport, ``/healthz``,
    ``notifier.js``; *turn* is the service's end of the turn. *timeout*
    replaces the idle timeout when given."""
    site = HttpSite(app, reactor, turn=turn, max_body_bytes=PUBLIC_MAX_BODY,
                    header_timeout=config.public.header_timeout, bodiless=frozenset({b"GET", b"HEAD"}))
    return _idle_timeout(site, timeout)


def api_site(app: ApiApp, config: Config, reactor: IReactorTime, *, turn: EndOfTurn,
             timeout: float | None = None) -> HttpSite:
    """The api listener: publisher API, operator API, ``/metrics``,
    ``/healthz``; its answers wait for the end of the turn (*turn*, the
    service's) to go out together. A body that does not come with its head
    waits for the credentials to hold (``ApiApp.body_gate``). *timeout*
    replaces the idle timeout when given."""
    site = HttpSite(ApiRoot(app), reactor, turn=turn, max_body_bytes=max_body_bytes(config),
                    header_timeout=config.api.header_timeout, body_gate=app.body_gate, at_end_of_turn=True)
    return _idle_timeout(site, timeout)


def _idle_timeout(site: HttpSite, timeout: float | None) -> HttpSite:
    if timeout is not None:
        site.timeOut = timeout
    return site
