"""The layers hold (docs/architecture.md): `lint-imports` checks the contracts in
pyproject.toml, and no module takes part in an import cycle, not even through an import
inside a function (grimp, which import-linter builds its graph with, sees those too)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
PACKAGES: list[str] = CONFIG["root_packages"]


def import_cycles(graph: grimp.ImportGraph, modules: Iterable[str]) -> list[list[str]]:
    """Each group of modules that import one another, directly or around a loop (the
    strongly connected components of the import graph with more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return sorted(cycles)


def test_no_import_cycle() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = import_cycles(graph, graph.modules)
    assert not cycles, "modules that import one another:\n" + "\n".join(map(" <-> ".join, cycles))


def test_a_cycle_behind_a_function_level_import_is_found(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "loop_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loop_probe import b\n")
    (package / "b.py").write_text("def late():\n    from loop_probe import a\n\n    return a\n")
    (package / "c.py").write_text("from loop_probe import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("loop_probe", cache_dir=None)
    assert import_cycles(graph, graph.modules) == [["loop_probe.a", "loop_probe.b"]]


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", script, "--no-cache", "--no-logo"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_contracts_fail_on_a_violation(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    ignore = shutil.ignore_patterns("__pycache__")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tree)
    kept = _lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr

    errors = tree / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport streamlit  # noqa: E402, F401\n")
    broken = _lint_imports(tree)
    assert broken.returncode != 0
    assert "Broken contracts" in broken.stdout
    assert "core never imports streamlit, local, components, app_pages or cli" in broken.stdout
    assert "core.errors -> streamlit" in broken.stdout
