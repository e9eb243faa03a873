"""The schema comes only from migrations, matches the models, and upgrades keep rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from typer.testing import CliRunner

from core import db
from core.db import repo
from core.db.tables import Base
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.state.db_fixtures import postgres_database, settings_for


def test_models_match_the_migrated_schema(settings: Settings):
    with db.get_engine(settings).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert db.current_revision(settings) == db.head_revision()


def _upgrade_keeps_rows(s: Settings) -> None:
    db.upgrade(s, "0001")
    engine = db.get_engine(s)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, email, role, created_at) VALUES ('u1', 'a@b.c', 'member', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO datasets (id, owner_id, name, original_filename, file_format, layout, rows, valid_rows,"
                " size_bytes, sha256, stats, original_key, normalized_key, created_at)"
                " VALUES ('ds-1', 'u1', 'old data', 'f.jsonl', 'jsonl', 'messages', 10, 9, 100, '', '{}', 'k1', 'k2', CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO jobs (id, owner_id, action, dataset_id, base_model, adapter_name, spec, status, gpu_type,"
                " price_tier, rate_per_s, created_at, updated_at, cost_usd, progress, attempt, auto_relaunched, last_seq)"
                " VALUES ('job-1', 'u1', 'train', 'ds-1', 'tiny', 'bot', '{}', 'COMPLETED', 'LOCAL_CPU', 'flex', 0,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1.5, 1.0, 0, false, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO job_events (job_id, seq, type, ts, data) VALUES ('job-1', 0, 'started', 1.0, '{}')"
            )
        )
    assert db.current_revision(s) == "0001"
    db.upgrade(s)
    assert db.current_revision(s) == db.head_revision()
    user = repo.admin_actor_for(LOCAL_ACTOR, session := db.session_factory(s)(), "u1")
    try:
        assert repo.get_dataset(user, session, "ds-1").valid_rows == 9
        job = repo.get_job(user, session, "job-1")
        assert (job.cost_usd, job.notified_at, job.last_seq) == (1.5, None, 0)
        assert [e.type for e in repo.list_events(user, session, "job-1")] == ["started"]
        v = repo.create_adapter_version(
            user, session, adapter_name="bot", base_model="tiny", job_id="job-1"
        )
        repo.update_version(user, session, v.id, hub_repo="org/bot")  # the new column works
        session.commit()
    finally:
        session.close()


def test_sqlite_database_from_the_first_migration_upgrades_without_losing_rows(tmp_path: Path):
    _upgrade_keeps_rows(settings_for(tmp_path / "data"))
    db.dispose_engines()


def test_postgres_database_from_the_first_migration_upgrades_without_losing_rows(tmp_path: Path):
    with postgres_database() as url:
        _upgrade_keeps_rows(settings_for(tmp_path / "data", url))


def test_sqlite_gets_wal_and_foreign_keys(tmp_path: Path):
    s = settings_for(tmp_path / "data")
    db.upgrade(s)
    with db.get_engine(s).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose_engines()


def test_cli_db_upgrade_creates_and_reports(data_dir: Path):
    from cli import app

    runner = CliRunner()
    first = runner.invoke(app, ["db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert "upgraded from empty to" in first.output
    assert (data_dir / "brightrun.db").exists()
    again = runner.invoke(app, ["db", "upgrade"])
    assert "up to date" in again.output
    db.dispose_engines()


@pytest.mark.parametrize("url", ["postgres://u@h/d", "postgresql://u@h/d"])
def test_plain_postgres_urls_use_psycopg3(url: str):
    assert db.normalise_url(url) == "postgresql+psycopg://u@h/d"
