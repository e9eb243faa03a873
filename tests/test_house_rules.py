"""The size rules hold (docs/architecture.md): no module in core/, trainer/ or local/ over
500 lines, and no function anywhere in core/, trainer/, local/, cli/ or components/ over
60 lines (its def line to its last line, decorators left out) unless the line directly
above it (above its first decorator, when it has some) is a `# long: <reason>` comment."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZED_MODULES = ("core", "trainer", "local")
SIZED_FUNCTIONS = ("core", "trainer", "local", "cli", "components")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
LONG_MARK = "# long:"


def _explained(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the line above the def (or above its first decorator) says why it is long."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    above = lines[first - 2].strip() if first >= 2 else ""
    return above.startswith(LONG_MARK) and bool(above[len(LONG_MARK) :].strip())


def long_functions(source: str, name: str = "<source>") -> list[str]:
    """`name:line function (n lines)` for every function over the limit without a reason."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > MAX_FUNCTION_LINES and not _explained(lines, node):
            found.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    return found


def _modules(folders: tuple[str, ...]) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_no_module_over_500_lines() -> None:
    over = []
    for path in _modules(SIZED_MODULES):
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES:
            over.append(f"{path.relative_to(ROOT)} ({n} lines)")
    assert not over, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(over)


def test_no_function_over_60_lines_without_a_reason() -> None:
    over = []
    for path in _modules(SIZED_FUNCTIONS):
        over += long_functions(path.read_text(), str(path.relative_to(ROOT)))
    assert not over, (
        f"functions over {MAX_FUNCTION_LINES} lines (split them, or put a "
        f"`{LONG_MARK} <reason>` comment on the line above):\n" + "\n".join(over)
    )


def _function(lines: int, above: str = "", decorated: bool = False) -> str:
    """A function of exactly `lines` lines, def to last line."""
    head = [above] if above else []
    if decorated:
        head.append("@staticmethod")
    body = [f"    x{i} = {i}" for i in range(lines - 1)]
    return "\n".join(["import os", "", *head, "def f():", *body, ""])


def test_the_checker_reports_a_long_function_without_a_reason() -> None:
    assert long_functions(_function(61)) == ["<source>:3 f (61 lines)"]
    assert long_functions(_function(61, above="# a comment")) == ["<source>:4 f (61 lines)"]
    assert long_functions(_function(61, above="# long:")) != []  # a reason is required
    assert long_functions(_function(60)) == []


def test_the_checker_accepts_a_long_function_with_a_reason() -> None:
    assert long_functions(_function(61, above="# long: a table of cases")) == []
    assert long_functions(_function(61, above="# long: a table", decorated=True)) == []
    # the decorator does not count towards the length
    assert long_functions(_function(60, decorated=True)) == []


def test_the_formatter_formats_everything() -> None:
    """`ruff format --check` runs in `make test`; no code opts out of it."""
    marks = ("fmt: " + "skip", "fmt: " + "off")  # spelled apart so this file has none
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = [
        f"{name}:{n}"
        for name in tracked
        if (ROOT / name).is_file()
        for n, line in enumerate((ROOT / name).read_text().splitlines(), start=1)
        if any(m in line for m in marks)
    ]
    assert not found, f"formatter exemptions: {found}"


# One table of methods (`trainer.shared.methods`): a method's name is written there, and in
# the worker's loss modules, nowhere else; everything else reads the table.
METHOD_TABLE = "trainer/shared/methods.py"
LOSS_MODULES = ("trainer/preference_loss.py", "trainer/kto_loss.py", "trainer/grpo_loss.py")
METHOD_FOLDERS = ("core", "trainer", "local", "cli", "components", "app_pages")


def method_literals(source: str, name: str = "<source>") -> list[str]:
    """`name:line 'method'` for every string constant that is exactly a method's name."""
    from trainer.shared.methods import Method

    names = {m.value for m in Method}
    return [
        f"{name}:{node.lineno} {node.value!r}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]


def test_method_names_are_written_only_in_the_table_and_the_losses() -> None:
    found = []
    for path in _modules(METHOD_FOLDERS) + [ROOT / "app.py"]:
        rel = str(path.relative_to(ROOT))
        if rel == METHOD_TABLE or rel in LOSS_MODULES:
            continue
        found += method_literals(path.read_text(), rel)
    assert not found, "method names outside trainer/shared/methods.py:\n" + "\n".join(found)


def test_the_method_checker_finds_a_literal() -> None:
    assert method_literals('x = "dpo"\ny = f"{x} dpo"\n') == ["<source>:1 'dpo'"]
    assert method_literals('x = "dpo2"') == []
