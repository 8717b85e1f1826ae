"""What notifier's modules borrow of other libraries' private names: the
AST walk behind tests/test_compat.py's repository test (notifier.compat is
the one module allowed to).

A module borrows when it imports a private name of one of ``LIBRARIES``,
reads one off a module of theirs, sets an attribute of such a module,
defines or uses, in a class deriving from one of theirs, a private name
that class inherits, or reads, off anything not ``self``, a private name
notifier itself never defines."""

from __future__ import annotations

import ast
import importlib
import inspect
from functools import cache
from pathlib import Path

LIBRARIES = ("twisted", "autobahn", "txaio", "txredisapi", "klein", "treq")
PACKAGE = Path(__file__).resolve().parent.parent / "notifier"
ALLOWED = {"compat.py"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _library(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in LIBRARIES


@cache
def _module_names(module: str) -> frozenset[str]:
    """The private names a library's module defines or reads off anything."""
    try:
        tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    except (OSError, TypeError, ImportError):
        return frozenset()
    names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names |= {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return frozenset(name for name in names if _private(name) and name != "_")


@cache
def _class_names(module: str, qualname: str) -> frozenset[str]:
    """The private names a library's class defines or sets on ``self``."""
    try:
        tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    except (OSError, TypeError, ImportError):
        return frozenset()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == qualname.split(".")[-1]:
            for inner in ast.walk(node):
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(inner.name)
                elif isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) \
                        and inner.value.id == "self":
                    names.add(inner.attr)
                elif isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Store):
                    names.add(inner.id)
    return frozenset(name for name in names if _private(name) and name != "_")


def inherited(cls: type) -> frozenset[str]:
    """The private names *cls* inherits from another library's classes."""
    names: set[str] = set()
    for base in cls.__mro__:
        if _library(base.__module__):
            names |= {name for name in vars(base) if _private(name)}
            names |= _class_names(base.__module__, base.__qualname__)
    return frozenset(names)


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def _own_names(trees: dict[str, ast.Module]) -> set[str]:
    """The private names notifier's code defines itself."""
    own: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                    and isinstance(node.value, ast.Name) and node.value.id == "self":
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(target, ast.Name) and target.id == "__slots__" for target in node.targets):
                own |= {item.value for item in ast.walk(node.value)
                        if isinstance(item, ast.Constant) and isinstance(item.value, str)}
    return {name for name in own if _private(name)}


def _self_like(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id in ("self", "cls")) or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super")


def borrowings() -> list[str]:
    """Each place a module of notifier other than compat touches another
    library's private name, as ``path:line: name``."""
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in _modules()}
    for tree in trees.values():
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node  # type: ignore[attr-defined]
    own = _own_names(trees)
    found: list[str] = []
    # The private names of the library modules notifier imports, and of the
    # library classes its own derive from.
    known: set[str] = set()
    for name in trees:
        for value in vars(importlib.import_module(name)).values():
            if inspect.ismodule(value) and _library(value.__name__):
                known |= _module_names(value.__name__)
            elif isinstance(value, type) and value.__module__.startswith("notifier"):
                known |= inherited(value)
            elif isinstance(value, type) and _library(value.__module__):
                known |= _module_names(value.__module__)

    for (module, path), tree in zip(_modules(), trees.values(), strict=True):
        if path.name in ALLOWED and path.parent == PACKAGE:
            continue
        where = path.relative_to(PACKAGE.parent)
        libraries: set[str] = set()  # the names of library modules imported

        def report(node: ast.AST, name: str, where: Path = where) -> None:
            found.append(f"{where}:{getattr(node, 'lineno', 0)}: {name}")

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if _library(alias.name):
                        libraries.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.For) and isinstance(node.target, ast.Name) \
                    and isinstance(node.iter, (ast.Tuple, ast.List)) and node.iter.elts \
                    and all(isinstance(item, ast.Name) and item.id in libraries for item in node.iter.elts):
                libraries.add(node.target.id)  # for each of some library modules
            elif isinstance(node, ast.ImportFrom) and _library(node.module):
                for alias in node.names:
                    if _private(alias.name):
                        report(node, f"from {node.module} import {alias.name}")
                    elif alias.name[:1].islower() and inspect.ismodule(
                            getattr(importlib.import_module(node.module or ""), alias.name, None)):
                        libraries.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in libraries:
                if isinstance(node.ctx, ast.Store):
                    report(node, f"sets {node.value.id}.{node.attr}")
                elif _private(node.attr):
                    report(node, f"{node.value.id}.{node.attr}")
        imported = importlib.import_module(module)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            cls = getattr(imported, node.name, None)
            names = inherited(cls) if isinstance(cls, type) else frozenset()
            for inner in node.body:
                for target in ast.walk(inner) if isinstance(inner, (ast.Assign, ast.AnnAssign)) else ():
                    if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store) and target.id in names:
                        report(target, f"{node.name} sets {target.id}")
            for inner in ast.walk(node):
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)) and inner.name in names:
                    report(inner, f"{node.name} overrides {inner.name}")
                elif isinstance(inner, ast.Attribute) and _self_like(inner.value) and inner.attr in names:
                    report(inner, f"{node.name} uses {inner.attr}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and not _self_like(node.value) \
                    and not (isinstance(node.value, ast.Name) and node.value.id in libraries) \
                    and (node.attr not in own or node.attr in known):
                report(node, f"reads .{node.attr}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _private(node.value) \
                    and node.value.isidentifier() and (node.value in known or (
                        node.value not in own and isinstance(getattr(node, "parent", None), ast.Call))):
                report(node, f"names {node.value}")
    return sorted(set(found))


if __name__ == "__main__":
    print("\n".join(borrowings()))
