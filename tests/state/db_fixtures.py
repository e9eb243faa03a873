"""Database helpers for tests: a fresh SQLite file, or a throwaway PostgreSQL database on
the real server at 127.0.0.1:5432 (created on entry, dropped on exit).

Other test packages may import these (`from tests.state.db_fixtures import ...`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from core import db
from core.settings import Settings

PG_ADMIN_DSN = os.environ.get(
    "BRIGHTRUN_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
PG_URL_BASE = os.environ.get(
    "BRIGHTRUN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
)

TABLES = ("cost_records", "job_events", "adapter_versions", "adapters", "jobs", "datasets", "users")


def settings_for(data_dir: Path, database_url: str = "") -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, database_url=database_url)  # type: ignore[call-arg]


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new empty database on the test server; yields its SQLAlchemy URL, drops it after."""
    import psycopg

    name = "brightrun_test_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_URL_BASE}/{name}"
    finally:
        db.dispose_engines()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def truncate_all(settings: Settings) -> None:
    engine = db.get_engine(settings)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE"))
        else:
            for t in TABLES:
                conn.execute(text(f"DELETE FROM {t}"))
