from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class AuditCheckpoint(Base):
    """A signed statement of one tenant's audit chain head: its size (the head's ``seq``) and the
    head's hash, as a C2SP signed note (``note``). Whoever keeps one can later prove that the
    chain still starts with those events. Append-only like the events (triggers in the
    migration)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    size: Mapped[int]
    head_hash: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("signing_keys.key_id"))
    note: Mapped[str] = mapped_column(Text)
