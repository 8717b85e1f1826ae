"""The PHP publisher client (clients/php) run as a subprocess: a publisher's
calls described in JSON, performed by clients/php/tests/call.php, whose
outcomes the tests assert on."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import treq
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.support.daemon import Daemon, start_daemon

PHP_CLIENT = Path(__file__).resolve().parents[2] / "clients" / "php"
CALL = PHP_CLIENT / "tests" / "call.php"

NOTIFIER_EXCEPTION = "Notifier\\NotifierException"
TRANSPORT_EXCEPTION = "Notifier\\TransportException"
INVALID_ARGUMENT = "InvalidArgumentException"
#: Every notice, warning and deprecation goes to stderr, which the tests want empty.
STRICT = ["-d", "error_reporting=-1", "-d", "display_errors=stderr", "-d", "log_errors=0"]


def php_path() -> str:
    path = shutil.which("php")
    if path is None:
        raise RuntimeError("php is required (Debian: php-cli and php-curl): `make test` installs them")
    modules = subprocess.run([path, "-m"], capture_output=True, text=True, check=True).stdout.split()
    if "curl" not in modules:
        raise RuntimeError("php's curl extension is required (Debian: php-curl): `make test` installs it")
    return path


@attrs.frozen
class Run:
    """What one PHP run printed: one outcome per call, and how the client dumps."""

    outcomes: list[dict[str, Any]]
    debug: str

    def result(self, index: int) -> Any:
        outcome = self.outcomes[index]
        assert "exception" not in outcome, outcome
        return outcome["result"]

    def exception(self, index: int) -> dict[str, Any]:
        outcome = self.outcomes[index]
        assert "exception" in outcome, outcome
        return outcome["exception"]

    @property
    def results(self) -> list[Any]:
        return [self.result(i) for i in range(len(self.outcomes))]


@attrs.define
class Php:
    """Runs Notifier\\Client calls as one publisher, in a PHP subprocess."""

    php: str
    tmp_path: Path
    daemon: Daemon
    url: str
    publisher: str
    secret: str
    runs: int = 0

    async def run(self, *calls: list[Any], url: str | None = None, publisher: str | None = None,
                  secret: str | None = None, **options: Any) -> Run:
        self.runs += 1
        program = self.tmp_path / f"program-{self.runs}.json"
        program.write_text(json.dumps({
            "url": url or self.url,
            "publisher": publisher or self.publisher,
            "secret": secret or self.secret,
            "options": options,
            "calls": [list(call) for call in calls],
        }))
        out, err, code = await getProcessOutputAndValue(
            self.php, [*STRICT, str(CALL), str(program)], env=dict(os.environ), reactor=reactor)
        assert code == 0 and not err, (code, out, err)
        printed = json.loads(out)
        assert len(printed["outcomes"]) == len(calls), printed
        return Run(printed["outcomes"], printed["debug"])

    async def result(self, *call: Any, **options: Any) -> Any:
        return (await self.run(list(call), **options)).result(0)

    async def exception(self, *call: Any, **options: Any) -> dict[str, Any]:
        return (await self.run(list(call), **options)).exception(0)


@contextlib.asynccontextmanager
async def php_beside_a_daemon(tmp_path: Path, **sections: dict[str, Any]) -> AsyncIterator[Php]:
    """PHP calling, as the publisher ``site``, a daemon of its own
    (``php.daemon``) with *sections* in its configuration, stopped after."""
    executable = php_path()
    daemon = await start_daemon(f"sqlite:{tmp_path / 'notifier.db'}", **sections)
    try:
        secret = await daemon.add_publisher("site")
        yield Php(executable, tmp_path, daemon, daemon.api, "site", secret)
    finally:
        if daemon.service.running:
            await daemon.service.stopService()


async def longpoll(daemon: Daemon, center: str, **params: str) -> tuple[int, Any]:
    response = await treq.get(f"{daemon.public}/sub/site/{center}", params={"timeout": "5", **params},
                              persistent=False)
    return response.code, json.loads(await response.content())


def assert_refusal(exception: dict[str, Any], status: int, error: str) -> None:
    assert exception["class"] == NOTIFIER_EXCEPTION, exception
    assert exception["status"] == exception["code"] == status, exception
    assert exception["error"] == error, exception
    assert exception["error_message"] and exception["error_message"] in exception["message"], exception
