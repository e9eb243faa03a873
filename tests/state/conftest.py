"""State tests run twice: on SQLite and on the real PostgreSQL (a throwaway database)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core import db
from core.settings import Settings
from tests.state.db_fixtures import postgres_database, settings_for, truncate_all


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_migrated(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    db.upgrade(settings_for(tmp_path_factory.mktemp("pgdata"), pg_url))
    return pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings whose database is migrated to head and empty."""
    if request.param == "sqlite":
        s = settings_for(tmp_path / "data")
        db.upgrade(s)
        yield s
        db.dispose_engines()
    else:
        s = settings_for(tmp_path / "data", request.getfixturevalue("pg_migrated"))
        truncate_all(s)
        yield s


@pytest.fixture
def session(settings: Settings) -> Iterator[Session]:
    with db.session_scope(settings) as s:
        yield s
