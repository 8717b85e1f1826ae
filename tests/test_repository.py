"""The repository as people clone it: it stands alone, its documentation
covers its package, its editable install is what twistd finds, and its test
suite keeps its harness apart from its tests."""

from __future__ import annotations

import ast
import json
import pkgutil
import re
import subprocess
import sys
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


def _literal_lines(text: str) -> list[str]:
    """The lines of the literal blocks of a reStructuredText page, in order:
    the indented lines after a paragraph ending in ``::`` or a
    ``code-block`` directive."""
    found: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not (line.rstrip().endswith("::") or re.match(r"\s*\.\. code-block::", line)):
            continue
        opener = len(line) - len(line.lstrip())
        while index < len(lines) and (not lines[index].strip() or lines[index].lstrip().startswith(":")):
            index += 1
        while index < len(lines):
            text = lines[index]
            if text.strip() and len(text) - len(text.lstrip()) <= opener:
                break
            if text.strip():
                found.append(text.strip())
            index += 1
    return found


def test_the_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 300, "README.rst is a front page: under 300 lines, the rest in docs/"
    # The two commands that do everything on a fresh machine come before any other.
    commands = _literal_lines(readme)
    assert commands[:2] == ["make run", "make test"], commands[:2]
    for target in ("run", "test"):
        assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), re.M), f"no make {target}"
    # Every relative link points to a file of the repository.
    targets = re.findall(r"`[^`<]*<([^>`]+)>`__?", readme)
    targets += re.findall(r"^\.\. (?:image|figure|include|literalinclude):: (\S+)", readme, re.M)
    targets += re.findall(r"^\.\. _[^:]+: (\S+)", readme, re.M)
    relative = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]
    assert relative, "README.rst links into docs/"
    missing = [t for t in relative if not (ROOT / t.split("#")[0]).is_file()]
    assert missing == []
    # Every page of the documentation is linked.
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.rst")} - {"docs/index.rst"}
    assert pages - set(relative) == set(), "pages README.rst does not link"


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an ``import`` anywhere in *tree* names (in functions too),
    with its line: ``from tests import test_x`` names ``tests.test_x``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def test_no_test_module_imports_another() -> None:
    # What tests share lives in tests/support/, tests/*.py not named test_*,
    # or tests/conftest.py: a test module is collected, never imported.
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for line, module in _imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            if module.rsplit(".", 1)[-1].startswith("test_"):
                found.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert found == []


#: The markers of the tests ``make test-unit`` leaves out (the Makefile's UNIT).
NOT_UNIT = ("integration", "redis", "browser", "php", "node")

#: Counts the suite's tests by marker, collecting them in a pytest of its own.
_COUNT = """
import json, sys
import pytest

class Count:
    def pytest_collection_finish(self, session):
        self.counts = {"all": len(session.items)}
        for name in sys.argv[2:]:
            self.counts[name] = sum(1 for item in session.items if item.get_closest_marker(name))
        self.counts["unit"] = sum(1 for item in session.items
                                  if not any(item.get_closest_marker(name) for name in sys.argv[2:]))

count = Count()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", sys.argv[1]], plugins=[count])
print("COUNTS " + json.dumps(count.counts))
sys.exit(code)
"""


def test_the_in_memory_tests_are_most_of_the_suite() -> None:
    # make test-unit runs them in seconds: at least 60 % of all tests.
    assert re.search(r"^UNIT := not integration and not redis and not browser and not php and not node$",
                     (ROOT / "Makefile").read_text(), re.M), "the Makefile's UNIT is NOT_UNIT"
    ran = subprocess.run([sys.executable, "-c", _COUNT, str(ROOT / "tests"), *NOT_UNIT], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    counts = json.loads(ran.stdout.rsplit("COUNTS ", 1)[1])
    print(counts)
    assert counts["all"] > 0 and counts["unit"] * 100 >= 60 * counts["all"], counts
