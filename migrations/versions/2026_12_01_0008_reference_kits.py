"""reference_kits: the per-example membership audit's shadow-model tables, by manifest and recipe

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reference_kits",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("train_digest", sa.String(length=64), nullable=False),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        sa.Column("arch_args", sa.JSON(), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("wall_time_s", sa.Double(), nullable=True),
        sa.Column("optimizer_steps", sa.Integer(), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_reference_kits_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["digest"], ["artifacts.digest"], name=op.f("fk_reference_kits_digest_artifacts")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_reference_kits_job_id_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["model_versions.id"],
            name=op.f("fk_reference_kits_model_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_reference_kits_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_kits")),
    )
    with op.batch_alter_table("reference_kits", schema=None) as batch_op:
        for column in ("created_at", "dataset_id", "status", "tenant_id", "train_digest"):
            batch_op.create_index(batch_op.f(f"ix_reference_kits_{column}"), [column])


def downgrade() -> None:
    op.drop_table("reference_kits")
