"""The Site each listener serves, with all its wiring."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from notifier.api import MAX_JSON_BODY, ApiApp, is_publish, max_body_bytes
from notifier.config import Config
from notifier.front import FrontSite, Plain
from notifier.httpserver import QuietSite
from notifier.public import PublicApp
from notifier.turns import EndOfTurn

#: Subscribers send no bodies.
PUBLIC_MAX_BODY = 4096


def public_site(app: PublicApp, config: Config, reactor: IReactorTime, *,
                timeout: float | None = None, turn: EndOfTurn | None = None) -> QuietSite:
    """The public listener: subscriptions on every transport, ``/healthz``,
    ``notifier.js``. *timeout* replaces the idle timeout when given; *turn*
    is where its answers wait for the end of the turn (the service's)."""
    plain = Plain(b"GET", b"/sub/", app.children[b"sub"], upgrades=True)
    site = FrontSite(app, plain, max_body_bytes=PUBLIC_MAX_BODY, reactor=reactor,
                     header_timeout=config.public.header_timeout, bodiless=frozenset({b"GET", b"HEAD"}),
                     turn=turn)
    return _idle_timeout(site, timeout)


def api_site(app: ApiApp, config: Config, reactor: IReactorTime, *,
             timeout: float | None = None, turn: EndOfTurn | None = None) -> QuietSite:
    """The api listener: publisher API, operator API, ``/metrics``,
    ``/healthz``. *timeout* replaces the idle timeout when given; *turn*
    is where its answers wait for the end of the turn (the service's)."""
    root = app.resource()
    # The front takes a publish's body of up to MAX_JSON_BODY bytes; one
    # that does not come with its head waits for the credentials to hold
    # (ApiApp.body_gate), as twisted.web's do.
    plain = Plain(b"POST", b"/", root, takes=is_publish, at_end_of_turn=True,
                  max_body=min(config.centers.max_message_bytes, MAX_JSON_BODY))
    site = FrontSite(root, plain, max_body_bytes=max_body_bytes(config), reactor=reactor,
                     header_timeout=config.api.header_timeout, body_gate=app.body_gate, turn=turn)
    return _idle_timeout(site, timeout)


def _idle_timeout(site: QuietSite, timeout: float | None) -> QuietSite:
    if timeout is not None:
        site.timeOut = timeout
    return site
