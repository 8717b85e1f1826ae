"""Opening a WebSocket: Autobahn's debug line describing each connection's
configuration, and the coloured method names of its debug lines, are
made only when debug lines are logged."""

from __future__ import annotations

import pprint
from typing import Any

import autobahn.util
import pytest
import pytest_twisted
import txaio
from twisted.logger import formatEvent, globalLogPublisher

from tests.raw import raw_websocket
from tests.support import running, setup_site

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_the_configuration_is_formatted_only_for_a_debug_line_logged(monkeypatch: Any) -> None:
    formatted: list[object] = []
    named: list[object] = []
    real = pprint.PrettyPrinter.pformat
    real_hltype = autobahn.util.hltype

    def counted(self: pprint.PrettyPrinter, value: object) -> str:
        formatted.append(value)
        return real(self, value)

    def hltype(value: object) -> str:
        named.append(value)
        return real_hltype(value)

    monkeypatch.setattr(pprint.PrettyPrinter, "pformat", counted)
    monkeypatch.setattr(autobahn.util, "hltype", hltype)
    async with running() as daemon:
        await setup_site(daemon)
        assert txaio.get_global_log_level() != "debug"
        quiet = await raw_websocket(daemon.public_port, "/sub/site/news")
        assert formatted == [] and named == []

        logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            logged.append(formatEvent(event))

        txaio.set_global_log_level("debug")
        globalLogPublisher.addObserver(observe)
        try:
            loud = await raw_websocket(daemon.public_port, "/sub/site/news")
        finally:
            globalLogPublisher.removeObserver(observe)
            txaio.set_global_log_level("info")
        assert formatted, "not formatted for a debug line that is logged"
        assert named, "no method named for a debug line that is logged"
        assert any("autoPingInterval" in line for line in logged)
        assert any("connectionMade" in line for line in logged)
        for client in (quiet, loud):
            client.client.transport.loseConnection()
