"""`brightrun db`: the database schema."""

from __future__ import annotations

import typer

app = typer.Typer(help="Database schema: upgrade to the newest migration, show the revision.")


@app.command()
def upgrade() -> None:
    """Apply every pending migration to the configured database (DATABASE_URL, default
    SQLite under the data folder). Existing rows are kept."""
    from core.db import current_revision
    from core.db import upgrade as run_upgrade
    from core.settings import load_settings

    settings = load_settings()
    before = current_revision(settings)
    run_upgrade(settings)
    after = current_revision(settings)
    if before == after:
        typer.echo(f"database is up to date (revision {after})")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to {after}")


@app.command()
def current() -> None:
    """Print the database's migration revision and the newest one this version knows."""
    from core.db import current_revision, head_revision
    from core.settings import load_settings

    rev = current_revision(load_settings())
    head = head_revision()
    typer.echo(f"revision {rev or 'none (empty database)'}; newest {head}")
    if rev != head:
        typer.echo("run `brightrun db upgrade` to apply the pending migrations")
