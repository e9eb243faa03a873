"""Jobs keep the throughput they measured (tokens per second of training), which the
planner's time estimate learns from; existing completed train jobs get it from the summary
their worker reported.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_jobs = sa.table(
    "jobs",
    sa.column("id", sa.String),
    sa.column("status", sa.String),
    sa.column("action", sa.String),
    sa.column("result", sa.JSON),
    sa.column("tokens_per_s", sa.Float),
)


def _rate(result: object) -> float | None:
    """Real tokens / training seconds from the completed event's summary (as stored by sync
    in `jobs.result["final"]`), or None when the summary lacks them."""
    if not isinstance(result, dict):
        return None
    final = result.get("final")
    data = final.get("data") if isinstance(final, dict) else None
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict):
        return None
    tokens, seconds = summary.get("tokens_seen_total"), summary.get("train_seconds")
    if not isinstance(tokens, int | float) or not isinstance(seconds, int | float):
        return None
    return float(tokens) / float(seconds) if tokens > 0 and seconds > 0 else None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("tokens_per_s", sa.Float(), nullable=True))
        batch_op.create_index("ix_jobs_owner_model", ["owner_id", "base_model"])
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_jobs.c.id, _jobs.c.result).where(
            _jobs.c.status == "COMPLETED", _jobs.c.action == "train"
        )
    ).all()
    for job_id, result in rows:
        rate = _rate(result)
        if rate is not None:
            conn.execute(sa.update(_jobs).where(_jobs.c.id == job_id).values(tokens_per_s=rate))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index("ix_jobs_owner_model")
        batch_op.drop_column("tokens_per_s")
