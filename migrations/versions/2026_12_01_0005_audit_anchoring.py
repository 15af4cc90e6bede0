"""audit_anchoring: signed checkpoints of each tenant's audit chain, readable payloads, and no
TRUNCATE of the audit tables

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# 0002's row triggers refuse UPDATE and DELETE on audit_events, but TRUNCATE fires no row
# trigger: a statement trigger refuses it. The checkpoints are append-only the same way.
PG_APPEND_ONLY = [
    """
    CREATE OR REPLACE FUNCTION lethe_append_only() RETURNS trigger AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP;
    END;
    $$ LANGUAGE plpgsql
    """,
    "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events"
    " FOR EACH STATEMENT EXECUTE FUNCTION lethe_append_only()",
    "CREATE TRIGGER audit_checkpoints_no_update_delete BEFORE UPDATE OR DELETE"
    " ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION lethe_append_only()",
    "CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints"
    " FOR EACH STATEMENT EXECUTE FUNCTION lethe_append_only()",
]
# SQLite has no TRUNCATE statement: an unqualified DELETE is its nearest thing, and a table with
# a DELETE trigger never takes the "truncate optimisation", so the row triggers cover it.
SQLITE_APPEND_ONLY = [
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints"
    " BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only (UPDATE refused)'); END;",
    "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints"
    " BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only (DELETE refused)'); END;",
]
# 0002's SQLite triggers, put back after the downgrade rebuilt audit_events without `payload`.
SQLITE_0002_TRIGGERS = [
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (UPDATE refused)'); END;",
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events"
    " BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (DELETE refused)'); END;",
]


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    # SQLite adds a column in place (ALTER TABLE ADD COLUMN): the table and its triggers stay.
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.JSON(none_as_null=True), nullable=True))

    op.create_table(
        "audit_checkpoints",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["signing_keys.key_id"],
            name=op.f("fk_audit_checkpoints_key_id_signing_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_audit_checkpoints_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_checkpoints_issued_at"), ["issued_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_checkpoints_tenant_id"), ["tenant_id"], unique=False
        )

    for stmt in PG_APPEND_ONLY if _postgres() else SQLITE_APPEND_ONLY:
        op.execute(stmt)


def downgrade() -> None:
    if _postgres():
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_no_truncate ON audit_checkpoints")
        op.execute("DROP TRIGGER IF EXISTS audit_checkpoints_no_update_delete ON audit_checkpoints")
        op.execute("DROP FUNCTION IF EXISTS lethe_append_only()")
    with op.batch_alter_table("audit_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_checkpoints_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_audit_checkpoints_issued_at"))
    op.drop_table("audit_checkpoints")  # SQLite drops the table's triggers with it
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_column("payload")
    if not _postgres():
        # The batch rebuild (copy, drop, rename) dropped the table's triggers: put them back.
        for stmt in SQLITE_0002_TRIGGERS:
            op.execute(stmt)
