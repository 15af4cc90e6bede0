from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin, utcnow


class ModelStatus(StrEnum):
    validating = "validating"
    ready = "ready"
    rejected = "rejected"
    uncertified = "uncertified"
    # Superseded by a certified version that forgot samples this one holds: no longer served
    # (410 Gone); its bytes are destroyed at ``purge_due_at`` (the tenant's retention window).
    retired = "retired"
    purged = "purged"  # retired, and its bytes are gone


class ModelVersion(IdMixin, CreatedMixin, Base):
    """One version in a model's lineage. The root is an upload; children come from requests."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("lineage_id", "version"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    lineage_id: Mapped[str] = mapped_column(String(36), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    version: Mapped[int] = mapped_column(default=1)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    architecture: Mapped[str] = mapped_column(String(64))
    arch_args: Mapped[dict[str, Any]]
    input_shape: Mapped[list[Any]]
    normalization: Mapped[dict[str, Any]]
    num_classes: Mapped[int]
    training: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    # Null once a rejected upload's bytes have been deleted.
    weights_digest: Mapped[str | None] = mapped_column(ForeignKey("artifacts.digest"), default=None)
    weights_size: Mapped[int] = mapped_column(BigInteger, default=0)
    baseline_metrics: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # A diffusion model's generated images per class (seeded; safetensors of uint8), from which
    # the samples endpoint draws its grids. Destroyed with the weights when the version is purged.
    samples_digest: Mapped[str | None] = mapped_column(ForeignKey("artifacts.digest"), default=None)
    # The forget request that produced this version (None for an uploaded root).
    produced_by_request_id: Mapped[str | None] = mapped_column(String(36), default=None)
    produced_by_job_id: Mapped[str | None] = mapped_column(String(36), default=None)
    # Every sample forgotten anywhere in this version's ancestry, and a digest of the set.
    forgotten_count: Mapped[int] = mapped_column(default=0)
    forgotten_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    retired_at: Mapped[datetime | None] = mapped_column(default=None)
    purge_due_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    purged_at: Mapped[datetime | None] = mapped_column(default=None)
    # The digest of the weights a purge destroyed: chains and receipts still name them.
    destroyed_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
