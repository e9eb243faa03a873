"""Jobs remember when their end-of-job notice was posted; versions their last Hub push.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("adapter_versions") as batch_op:
        batch_op.add_column(sa.Column("hub_repo", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("adapter_versions") as batch_op:
        batch_op.drop_column("hub_repo")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("notified_at")
