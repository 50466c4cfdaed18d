"""The package's layers, read from its source: the CLI is the top floor, methods see one contract module,
adapters and the engine stay apart, and no module imports itself back through others."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"


def modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "trio_vlm").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports() -> dict[str, set[str]]:
    """Module -> the trio_vlm modules it imports (any import statement, at any depth, TYPE_CHECKING too).

    ``from package import name`` counts as importing ``package.name`` when that is a module, else ``package``."""
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [target, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_nothing_outside_the_cli_imports_it() -> None:
    bad = {m: sorted(d for d in deps if under(d, "trio_vlm.cli")) for m, deps in imports().items()}
    assert {m: d for m, d in bad.items() if d and not under(m, "trio_vlm.cli")} == {}


def test_there_is_no_import_cycle() -> None:
    graph = imports()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(modules()):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        # methods see the contract (plus the schedule and presets it is built on) and their own helpers
        (
            "trio_vlm.methods",
            ("trio_vlm.methods", "trio_vlm.contract", "trio_vlm.schedule", "trio_vlm.presets"),
        ),
        # adapters: model-family specifics, written against the contract only
        ("trio_vlm.adapters", ("trio_vlm.adapters", "trio_vlm.contract", "trio_vlm.presets")),
        # the engine: hooks and sequence surgery, written against the contract only
        ("trio_vlm.engine", ("trio_vlm.engine", "trio_vlm.contract")),
        ("trio_vlm.contract", ("trio_vlm.schedule",)),
        ("trio_vlm.presets", ("trio_vlm.schedule",)),
    ],
)
def test_layers_import_only_what_they_may(package: str, allowed: tuple[str, ...]) -> None:
    graph = imports()
    found = {
        m: sorted(d for d in deps if not any(under(d, a) for a in allowed))
        for m, deps in graph.items()
        if under(m, package)
    }
    assert {m: d for m, d in found.items() if d} == {}
