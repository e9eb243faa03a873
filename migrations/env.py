"""Alembic environment for BrightRun.

Run programmatically by `core.db.upgrade(settings)` (which passes an open connection), or
by `alembic -c alembic.ini upgrade head`, which reads the URL from BrightRun's settings.
Batch mode is on so that column changes also work on SQLite.
"""

from __future__ import annotations

from alembic import context

from core.db import create_db_engine
from core.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return url
    from core.settings import load_settings

    return load_settings().db_url


def run_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_db_engine(_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
