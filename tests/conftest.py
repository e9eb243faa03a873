"""Shared fixtures. Tests never reach the network beyond loopback."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Finalizer exceptions are reported at safe points, never formatted mid-AST (see the module).
pytest_plugins = ("tests.unraisable",)

# Keep torch to one thread per test process so parallel tiers do not fight over 2 cores,
# and make sure nothing tries a hub.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty BrightRun data folder, set as BRIGHTRUN_DATA_DIR for the test."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("BRIGHTRUN_DATA_DIR", str(d))
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's checkout
    return d


@pytest.fixture
def pin_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[dt.datetime], dt.datetime]:
    """`pin_clock(when)`: BrightRun's clock (`core.db.tables.utcnow`, wherever it was imported
    by name) reads `when` for the rest of the test. Tests that depend on today's date pin it."""

    def pin(when: dt.datetime) -> dt.datetime:
        models = importlib.import_module("core.db.tables")
        for name in ("core.queries", "core.db.repo", "core.jobs", "core.actions"):
            importlib.import_module(name)  # bind their names before they are replaced
        original = models.utcnow
        for name, module in list(sys.modules.items()):
            if name.split(".")[0] == "core" and getattr(module, "utcnow", None) is original:
                monkeypatch.setattr(module, "utcnow", lambda: when)
        return when

    return pin


class _PageErrors(logging.Handler):
    """ERROR records of `brightrun.pages`: the errors the dashboard's page sections caught."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.expected = False

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def _no_hidden_page_errors() -> Iterator[_PageErrors]:
    """A page section turns an unexpected error into one line on the page, so `at.exception`
    stays empty: this fails any test during which a section caught one, unless the test
    asked for `page_errors` (then it gets them to check)."""
    handler, logger = _PageErrors(), logging.getLogger("brightrun.pages")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
    if handler.records and not handler.expected:
        r = handler.records[0]
        detail = "".join(traceback.format_exception(*r.exc_info)) if r.exc_info else ""
        pytest.fail(f"a page section caught an error: {r.getMessage()}\n{detail}")


@pytest.fixture
def page_errors(_no_hidden_page_errors: _PageErrors) -> list[logging.LogRecord]:
    """The unexpected errors the dashboard's page sections caught during the test (each
    shown to the user as "error <id>"). A test that asks for this fixture expects some."""
    _no_hidden_page_errors.expected = True
    return _no_hidden_page_errors.records
