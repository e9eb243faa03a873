"""Database engine, sessions and migrations.

`Settings.db_url` picks the database: SQLite (the default, `<data_dir>/brightrun.db`) or
PostgreSQL (`postgresql+psycopg://...`, Supabase's Postgres in production; a plain
`postgresql://` URL is read as psycopg 3). SQLite connections get WAL journaling, foreign
keys on, and a busy timeout so the dashboard, the syncer and the CLI can share the file.

Engines are cached per URL (one connection pool per database per process). Sessions do
not autocommit: use `session_scope(settings)`, which commits when the block ends cleanly
and rolls back on an error. Repository functions (`core.db.repo`) only flush.

`upgrade(settings)` runs the Alembic migrations in `migrations/` to head; `brightrun up`
and `brightrun db upgrade` call it. The schema is never created any other way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = ROOT / "migrations"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` become `postgresql+psycopg://` (psycopg 3)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _on_sqlite_connect(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
    # The driver's own transaction handling is switched off (it would not begin a
    # transaction before a SAVEPOINT, so releasing one would commit); `_on_sqlite_begin`
    # begins every transaction instead.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _on_sqlite_begin(conn) -> None:  # noqa: ANN001 - SQLAlchemy connection
    # IMMEDIATE takes the write lock up front: a transaction that reads and then writes
    # cannot fail half way because another process wrote in between; it waits instead
    # (busy_timeout). Transactions are short (one `session_scope`).
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_db_engine(url: str) -> Engine:
    """A new engine for `url` (uncached; prefer `get_engine`)."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(settings: Settings) -> Engine:
    url = normalise_url(settings.db_url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_db_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every cached pool (tests, and before a process forks)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False)


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error, always close."""
    session = session_factory(settings)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):  # noqa: ANN201 - alembic.config.Config, imported lazily
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not through the ini option: a URL may hold '%' characters.
    cfg.attributes["url"] = normalise_url(url)
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the database at `settings.db_url` to `revision` (default: the newest)."""
    from alembic import command

    engine = get_engine(settings)
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:
            # A migration that rebuilds a table (SQLite's batch mode) drops the old one;
            # with foreign keys on, that would cascade into the rows that reference it.
            # The pragma only takes effect outside a transaction, hence the DBAPI call.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg = alembic_config(settings.db_url)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(
                            f"the migration left {len(broken)} rows with broken references; "
                            "nothing was changed"
                        )
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


def current_revision(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with get_engine(settings).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head
