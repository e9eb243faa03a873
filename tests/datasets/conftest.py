"""Dataset test fixtures: the tiny chat model's tokenizer (built once), a migrated SQLite
database and a local file store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core import db
from core.clients.storage import LocalBlobStore
from core.datasets import TokenizerChoice, load_tokenizer
from tests.state.db_fixtures import settings_for


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.shared.tiny import build_tiny_chat_model

    return Path(build_tiny_chat_model(tmp_path_factory.mktemp("models") / "tiny-chat", seed=0))


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path) -> TokenizerChoice:
    choice = load_tokenizer(str(tiny_dir))
    assert choice.tokenizer is not None, choice.reason
    return choice


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple]:
    """(settings, store) with a migrated SQLite database under a fresh data folder."""
    settings = settings_for(tmp_path / "data")
    db.upgrade(settings)
    yield settings, LocalBlobStore.from_settings(settings)
    db.dispose_engines()
