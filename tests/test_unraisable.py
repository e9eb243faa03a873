"""A finalizer that raises while the interpreter builds an AST is reported as a warning, and
the test that happened to be running, and every test after it, still run and report
(tests/unraisable.py says why this needs a plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SUITE = '''
import ast
import gc


class HalfBuilt:
    """Like a client whose constructor raised: its finalizer reads what was never set."""

    def __del__(self):
        self.closed = 1 + self._state.count  # 3.11 draws carets here, parsing the line


def test_builds_an_ast_while_the_collector_finalizes_garbage():
    gc.collect()
    garbage = HalfBuilt()
    garbage.cycle = garbage  # only the cycle collector frees it: mid-way through ast.parse
    del garbage
    gc.set_threshold(5000)
    try:
        for _ in range(3):
            ast.parse("x = [" + ",".join(f"f({i}) + g[{i}]" for i in range(2000)) + "]")
    finally:
        gc.set_threshold(700, 10, 10)


def test_a_later_failure_is_reported():
    assert 1 == 2


def test_a_later_test_runs():
    pass
'''


def _run(tmp_path: Path, *plugin: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *plugin, "test_suite.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_finalizer_raising_during_ast_building_breaks_nothing(tmp_path: Path) -> None:
    plain = _run(tmp_path)
    if "AST constructor recursion depth mismatch" not in plain.stdout + plain.stderr:
        pytest.skip(f"Python {sys.version.split()[0]} builds ASTs re-entrantly without error")

    out = _run(tmp_path, "-p", "tests.unraisable")
    text = out.stdout + out.stderr
    assert "AST constructor recursion depth mismatch" not in text, text
    assert "INTERNALERROR" not in text, text
    assert "PASSED test_suite.py::test_builds_an_ast_while_the_collector_finalizes_garbage" in text
    assert "FAILED test_suite.py::test_a_later_failure_is_reported" in text
    assert "PASSED test_suite.py::test_a_later_test_runs" in text
    # the finalizer's exception is still reported, with its traceback
    assert "PytestUnraisableExceptionWarning" in text
    assert "has no attribute '_state'" in text
    assert out.returncode == 1
