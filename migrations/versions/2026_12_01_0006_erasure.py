"""erasure: retired and purged model versions, dataset manifest versions without erased samples,
and signed erasure receipts

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("purge_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("destroyed_digest", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_model_versions_purge_due_at"), ["purge_due_at"], unique=False
        )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("erased_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("manifest_version", sa.Integer(), nullable=False, server_default="1")
        )
    op.create_table(
        "dataset_erasures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_count", sa.Integer(), nullable=False),
        sa.Column("erased_ids", sa.JSON(), nullable=False),
        sa.Column("erased_digest", sa.String(length=64), nullable=False),
        sa.Column("old_train_digest", sa.String(length=64), nullable=False),
        sa.Column("new_train_digest", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_dataset_erasures_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_dataset_erasures_job_id_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_dataset_erasures_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_erasures")),
    )
    with op.batch_alter_table("dataset_erasures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dataset_erasures_dataset_id"), ["dataset_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dataset_erasures_tenant_id"), ["tenant_id"], unique=False
        )
    op.create_table(
        "erasure_receipts",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("lineage_id", sa.String(length=36), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("envelope", sa.JSON(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_erasure_receipts_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_erasure_receipts_job_id_jobs")
        ),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["signing_keys.key_id"],
            name=op.f("fk_erasure_receipts_key_id_signing_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_erasure_receipts_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasure_receipts")),
        sa.UniqueConstraint("job_id", name=op.f("uq_erasure_receipts_job_id")),
    )
    with op.batch_alter_table("erasure_receipts", schema=None) as batch_op:
        for column in ("created_at", "dataset_id", "lineage_id", "tenant_id"):
            batch_op.create_index(batch_op.f(f"ix_erasure_receipts_{column}"), [column])


def downgrade() -> None:
    op.drop_table("erasure_receipts")
    op.drop_table("dataset_erasures")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("manifest_version")
        batch_op.drop_column("erased_count")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_purge_due_at"))
        batch_op.drop_column("destroyed_digest")
        batch_op.drop_column("purged_at")
        batch_op.drop_column("purge_due_at")
        batch_op.drop_column("retired_at")
