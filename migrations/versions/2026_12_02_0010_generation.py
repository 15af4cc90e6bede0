"""generation: diffusion jobs' evaluator classifiers, generated samples per version, and the
evaluator a forget request names

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cached_evaluators",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("train_digest", sa.String(length=64), nullable=False),
        sa.Column("architecture", sa.String(length=64), nullable=False),
        sa.Column("arch_args", sa.JSON(), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("normalization", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("test_accuracy", sa.Double(), nullable=True),
        sa.Column("wall_time_s", sa.Double(), nullable=True),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_cached_evaluators_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["digest"], ["artifacts.digest"], name=op.f("fk_cached_evaluators_digest_artifacts")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_cached_evaluators_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cached_evaluators")),
    )
    with op.batch_alter_table("cached_evaluators", schema=None) as batch_op:
        for column in ("created_at", "dataset_id", "status", "tenant_id", "train_digest"):
            batch_op.create_index(batch_op.f(f"ix_cached_evaluators_{column}"), [column])
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("samples_digest", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_model_versions_samples_digest_artifacts"),
            "artifacts",
            ["samples_digest"],
            ["digest"],
        )
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("evaluator_model_id", sa.String(length=36), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_forget_requests_evaluator_model_id_model_versions"),
            "model_versions",
            ["evaluator_model_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_forget_requests_evaluator_model_id_model_versions"), type_="foreignkey"
        )
        batch_op.drop_column("evaluator_model_id")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_model_versions_samples_digest_artifacts"), type_="foreignkey"
        )
        batch_op.drop_column("samples_digest")
    op.drop_table("cached_evaluators")
