"""job_run_seconds: a finished job's run time, for the /metrics histogram

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_seconds", sa.Double(), nullable=True))
    # Jobs that finished before this column existed.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE jobs SET run_seconds = EXTRACT(EPOCH FROM finished_at - started_at)"
            " WHERE finished_at IS NOT NULL AND started_at IS NOT NULL"
        )
    else:
        op.execute(
            "UPDATE jobs SET run_seconds = (julianday(finished_at) - julianday(started_at))"
            " * 86400.0 WHERE finished_at IS NOT NULL AND started_at IS NOT NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("run_seconds")
