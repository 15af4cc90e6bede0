from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class AuditEvent(Base):
    """Append-only, hash-chained per tenant: ``hash = sha256(canonical(event) | prev_hash)``.
    The database refuses UPDATE, DELETE and TRUNCATE on this table (triggers in the migrations).

    ``payload`` is what happened, in full (NULL on events recorded before it was stored); the
    hash covers it through ``payload_digest``, so the hash definition is unchanged."""

    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("tenant_id", "seq"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    seq: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))  # key ID, "worker:<name>" or "system"
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64), index=True)
    payload_digest: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any | None] = mapped_column(JSON(none_as_null=True), default=None)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
