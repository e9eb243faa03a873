"""Shared fixtures. Tests never reach the network beyond loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

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
