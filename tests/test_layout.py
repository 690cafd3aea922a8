"""The package layout holds: no import cycle in luse/, no library module reaching into entry points or the
command line, every package installed as luse.*, each command in its own file under luse/cli/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

# The repo's augment/ folder installs as luse.augment (pyproject's package-dir).
SOURCES = ((REPO / "luse", "luse"), (REPO / "augment", "luse.augment"))


def modules() -> dict[str, Path]:
    found = {}
    for base, prefix in SOURCES:
        for path in base.rglob("*.py"):
            parts = [p for p in path.relative_to(base).with_suffix("").parts if p != "__init__"]
            found[".".join([prefix, *parts])] = path
    return found


def imported_names(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    return {name: {owner(n) for n in imported_names(path) if n.split(".")[0] == "luse"} - {None, name}
            for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_luse():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_library_never_imports_entry_points():
    """No recipe, runner or benchmark from luse/; the command line only from luse/cli/."""
    for name, path in modules().items():
        imported = imported_names(path)
        assert not {n for n in imported if n.split(".")[0] in ("recipes", "benchmarks", "augment")}, name
        assert "luse.runner" not in imported, name
        if not name.startswith("luse.cli"):
            assert not {n for n in imported if n.startswith("luse.cli")}, f"{name} imports the command line"
            assert "argparse" not in imported, f"{name}: library code and command line share a file"


def test_every_package_is_installed_under_luse():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert set(setuptools["packages"]) == packages
    assert all(name == "luse" or name.startswith("luse.") for name in setuptools["packages"])
    assert setuptools["package-dir"] == {"luse.augment": "augment"}


def test_each_command_lives_in_its_own_cli_module():
    from luse.cli.main import COMMANDS, build_parser

    assert all(module.startswith("luse.cli.") for module in COMMANDS)
    choices = build_parser()._subparsers._group_actions[0].choices
    owners = {name: parser.get_default("handler").__module__ for name, parser in choices.items()}
    assert owners == {"train": "luse.cli.train", "eval": "luse.cli.eval", "augment": "luse.cli.augment",
                      "encode": "luse.cli.retrieval", "search": "luse.cli.retrieval",
                      "generate": "luse.cli.generate", "mine-pairs": "luse.cli.mine",
                      "mine-negatives": "luse.cli.mine", "synonym-cache": "luse.cli.synonym_cache"}
