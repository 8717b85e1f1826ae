"""The Site each listener serves, with all its wiring."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from notifier.api import ApiApp, max_body_bytes
from notifier.config import Config
from notifier.front import FrontSite
from notifier.httpserver import QuietSite
from notifier.public import PublicApp

#: Subscribers send no bodies.
PUBLIC_MAX_BODY = 4096


def public_site(app: PublicApp, config: Config, reactor: IReactorTime, *,
                timeout: float | None = None) -> QuietSite:
    """The public listener: subscriptions on every transport, ``/healthz``,
    ``notifier.js``. *timeout* replaces the idle timeout when given."""
    site = FrontSite(app, app.children[b"sub"], max_body_bytes=PUBLIC_MAX_BODY, reactor=reactor,
                     header_timeout=config.public.header_timeout)
    return _idle_timeout(site, timeout)


def api_site(app: ApiApp, config: Config, reactor: IReactorTime, *,
             timeout: float | None = None) -> QuietSite:
    """The api listener: publisher API, operator API, ``/metrics``,
    ``/healthz``. *timeout* replaces the idle timeout when given."""
    site = QuietSite(app.resource(), max_body_bytes=max_body_bytes(config), reactor=reactor,
                     header_timeout=config.api.header_timeout, body_gate=app.body_gate)
    return _idle_timeout(site, timeout)


def _idle_timeout(site: QuietSite, timeout: float | None) -> QuietSite:
    if timeout is not None:
        site.timeOut = timeout
    return site
