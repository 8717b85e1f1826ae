"""The repository as people clone it: it stands alone, its documentation
covers its package, and its editable install is what twistd finds."""

from __future__ import annotations

import pkgutil
import re
import subprocess
from pathlib import Path

import pytest

import notifier

ROOT = Path(__file__).resolve().parent.parent


def tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.fail("the tests run from a git checkout (git ls-files)")
    return [ROOT / name for name in listed.decode().split("\0") if name]


def test_no_file_names_a_file_outside_the_repository() -> None:
    # Spelled in pieces, so that this file does not name them either.
    outside = re.compile("|".join(re.escape(a + b) for a, b in (
        ("SPEC", ".md"), ("DESIGN", ".md"), ("../", "shared"), ("shared/", "bench"))))
    found = []
    for path in tracked_files():
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # images, the vendored minified files' binaries
        for number, line in enumerate(text.splitlines(), 1):
            if outside.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_the_api_reference_documents_every_module() -> None:
    documented = set(re.findall(r"^\.\. automodule:: (\S+)$", (ROOT / "docs" / "api.rst").read_text(), re.M))
    modules = {info.name for info in pkgutil.walk_packages(notifier.__path__, "notifier.")}
    assert modules - documented == set(), "modules missing from docs/api.rst"
    assert documented - modules == set(), "docs/api.rst names modules that do not exist"


def test_every_page_is_in_the_table_of_contents() -> None:
    docs = ROOT / "docs"
    index = (docs / "index.rst").read_text()
    listed = set(re.findall(r"^   (\w+)$", index, re.M))
    pages = {path.stem for path in docs.glob("*.rst")} - {"index"}
    assert pages == listed


def test_twistd_finds_the_plugin_of_the_installed_checkout() -> None:
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    import twisted.plugins

    # The checkout's plugin folder, found through sys.path as twistd finds it.
    assert str(ROOT / "twisted" / "plugins") in [str(Path(p).resolve()) for p in twisted.plugins.__path__]
    makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    assert makers["notifier"].module == "notifier.tap"
