"""A pytest plugin: exceptions raised in finalizers are reported later, never formatted in the
middle of whatever the interpreter was doing when the garbage collector ran them.

Why: pytest's unraisable-exception hook formats the traceback at once, and on Python 3.11
`traceback.format_exception` parses source lines with `ast.parse` to draw its carets. The
cycle collector can run a finalizer (`__del__`) while the interpreter is itself building an
AST (pytest rewriting a module's asserts, or rendering a failure): the nested `ast.parse`
resets the AST builder's recursion counter under the outer one, which then fails with
`SystemError: AST constructor recursion depth mismatch` (CPython gh-106905's family). Raised
inside pytest's own machinery that is an INTERNALERROR, and the rest of the suite never runs.
That is how one failing test (an openai client whose constructor raised, finalized later)
once stopped the whole run.

So this hook only records what it is given (the exception, its traceback and the finalized
object's repr, computed without parsing anything) and hands the record to pytest's hook at
the next safe point: before each test phase, at the end of the session, and at unconfigure
before pytest collects its own. The warning pytest shows is unchanged, only later.
`tests/test_unraisable.py` runs a suite that triggers the collision, with and without it.
"""

from __future__ import annotations

import reprlib
import sys
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

_pending: list[SimpleNamespace] = []
_forward: Callable[[Any], object] | None = None


class _Repr:
    """Stands for the finalized object in the record: its repr, taken when it was raised."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _safe_repr(obj: object) -> str:
    try:
        return reprlib.repr(obj)
    except BaseException as e:  # a half-built object's repr can raise: name it instead
        return f"<{type(obj).__name__} object (repr raised {type(e).__name__})>"


def _record(unraisable: Any) -> None:
    _pending.append(
        SimpleNamespace(
            exc_type=unraisable.exc_type,
            exc_value=unraisable.exc_value,
            exc_traceback=unraisable.exc_traceback,
            err_msg=unraisable.err_msg,
            object=_Repr(_safe_repr(unraisable.object)),
        )
    )


def flush() -> None:
    """Hand every recorded finalizer exception to pytest's own hook (formatting happens now)."""
    while _pending and _forward is not None:
        _forward(_pending.pop(0))


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    global _forward
    _forward = sys.unraisablehook  # pytest's, installed by its own configure
    sys.unraisablehook = _record


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    flush()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    flush()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    flush()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    flush()


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    global _forward
    flush()
    if sys.unraisablehook is _record and _forward is not None:
        sys.unraisablehook = _forward
    _forward = None
