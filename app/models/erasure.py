from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin, utcnow


class DatasetErasure(Base):
    """One rewrite of a dataset's training manifest without samples that every lineage trained
    on it has forgotten: a dataset version. The erased sample IDs are kept (IDs, not data) so
    that the service can say a sample is gone rather than unknown."""

    __tablename__ = "dataset_erasures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    erased_count: Mapped[int]
    erased_ids: Mapped[list[Any]]
    erased_digest: Mapped[str] = mapped_column(String(64))
    # The manifest before and after; no foreign keys, since a later erasure destroys both.
    old_train_digest: Mapped[str] = mapped_column(String(64))
    new_train_digest: Mapped[str] = mapped_column(String(64))


class ErasureReceipt(IdMixin, CreatedMixin, Base):
    """A signed statement (DSSE envelope) of what a purge destroyed, by digest, and when."""

    __tablename__ = "erasure_receipts"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    lineage_id: Mapped[str] = mapped_column(String(36), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("signing_keys.key_id"))
    envelope: Mapped[dict[str, Any]]
