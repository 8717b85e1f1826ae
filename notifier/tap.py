"""``twistd notifier``: the command-line options and the service they make."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from notifier.config import ConfigError, load_config
from notifier.service import NotifierService


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = "Run notifier, the real-time notification server, from a TOML configuration."
    optParameters = [
        ["config", "c", None, "The TOML configuration file (every key optional)."],
    ]

    def postOptions(self) -> None:
        try:
            self["settings"] = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"configuration: {e}") from None


def makeService(options: Options, reactor: Any = None) -> IService:
    if reactor is None:
        from twisted.internet import reactor as _reactor

        reactor = _reactor
    return NotifierService(options["settings"], reactor)
