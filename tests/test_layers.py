"""The layers point one way: the domain (publishers, centers, hubs,
presence, what they retain) imports nothing of HTTP or of the transports,
directly or through another of notifier's modules; the service wires them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import notifier

ROOT = Path(notifier.__file__).parent

#: The domain: what a node knows and does, whatever carries it (a pattern
#: ending in ``*`` names every module whose name begins so): the package
#: ``notifier.domain``, and the interfaces of the backends it is given.
DOMAIN = ("notifier.backends.interfaces", "notifier.domain", "notifier.domain.*")
#: The HTTP and transport layer, and the reactor-turn machinery the service injects.
OUTER = (
    "notifier.http", "notifier.http.*", "notifier.transports", "notifier.transports.*", "notifier.cli",
    "notifier.service", "notifier.end_of_turn", "notifier.webhooks",
    "autobahn", "httptools", "klein", "treq", "twisted.web",
)

def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """What the module at *path* imports, by full name (a name imported
    from a package counts as its module when it is one), and every package
    above each: importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names | {name.rsplit(".", n)[0] for name in names for n in range(1, name.count(".") + 1)}


def graph() -> dict[str, set[str]]:
    return {module_name(path): imported(path) for path in ROOT.rglob("*.py")}


def within(name: str, layer: tuple[str, ...]) -> bool:
    return any(name.startswith(module[:-1]) if module.endswith("*") else
               name == module or name.startswith(module + ".") for module in layer)


def reached(modules: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module *start* imports, directly or through notifier's own
    modules, each with the chain of imports that gets there."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        current = todo.pop()
        for name in sorted(modules.get(current, ())):
            if name in chains:
                continue
            chains[name] = chains[current] + [name]
            if name in modules and not within(name, OUTER):
                todo.append(name)
    return chains


#: The storage adapters: the domain's backends, and the journal process.
STORAGE = ("notifier.backends", "notifier.backends.journal")


@pytest.mark.parametrize("layer", [DOMAIN, STORAGE], ids=["domain", "storage"])
def test_the_domain_and_its_storage_import_nothing_of_http_or_transports(layer: tuple[str, ...]) -> None:
    modules = graph()
    inner = sorted(name for name in modules if within(name, layer))
    assert inner and ("notifier.domain.hub" in inner or "notifier.backends.sqlite" in inner)
    wrong = []
    for name in inner:
        for target, chain in reached(modules, name).items():
            if within(target, OUTER) and (target in modules or not target.startswith("notifier.")):
                wrong.append(" -> ".join(chain))
    assert not wrong, "the domain imports the outer layers:\n" + "\n".join(sorted(wrong))


def test_the_domain_loads_no_backend() -> None:
    # What the domain knows of the backends is their interfaces; the
    # configuration it reads parses store URLs (redis.addresses), nothing more.
    modules = graph()
    known = ("notifier.backends", "notifier.backends.interfaces", "notifier.backends.redis",
             "notifier.backends.redis.addresses")
    wrong = []
    for name in sorted(name for name in modules if within(name, DOMAIN)):
        for target, chain in reached(modules, name).items():
            if (target in modules and within(target, ("notifier.backends", "notifier.backends.journal"))
                    and target not in known) or within(target, ("txredisapi",)):
                wrong.append(" -> ".join(chain))
    assert not wrong, "the domain loads a backend:\n" + "\n".join(sorted(wrong))


def test_every_module_of_the_domain_is_there() -> None:
    modules = graph()
    assert [name for name in DOMAIN if not name.endswith("*") and name not in modules] == []


def test_every_module_of_the_outer_layers_is_there() -> None:
    # A module renamed or removed leaves no name here that guards nothing.
    modules = graph()
    assert [name for name in OUTER if name.startswith("notifier.") and not name.endswith("*")
            and name not in modules] == []
    # Each pattern names some module.
    assert all(any(within(module, (name,)) for module in modules) for name in OUTER + DOMAIN if name.endswith("*"))
