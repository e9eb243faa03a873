"""BrightRun's state: tables, sessions, migrations and the repository.

- `core.db.tables`: the SQLAlchemy tables, the `JobStatus` enum and status sets, and
  `utcnow` (BrightRun's clock).
- `core.db.session`: engines, `session_scope`, Alembic `upgrade`; re-exported here, so
  `from core import db` then `db.session_scope(settings)` / `db.upgrade(settings)`.
- `core.db.repo`: every read and write of the tables, scoped to the acting user
  (`from core.db import repo` then `repo.get_job(actor, session, job_id)`).

This package imports nothing of `core.db.repo`: the repository imports the tables, never
the other way round.
"""

from core.db.session import (
    MIGRATIONS_DIR,
    ROOT,
    alembic_config,
    create_db_engine,
    current_revision,
    dispose_engines,
    get_engine,
    head_revision,
    normalise_url,
    session_factory,
    session_scope,
    upgrade,
)

__all__ = [
    "MIGRATIONS_DIR",
    "ROOT",
    "alembic_config",
    "create_db_engine",
    "current_revision",
    "dispose_engines",
    "get_engine",
    "head_revision",
    "normalise_url",
    "session_factory",
    "session_scope",
    "upgrade",
]
