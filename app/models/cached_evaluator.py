from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class EvaluatorStatus(StrEnum):
    ready = "ready"
    # Its manifest lost samples it was trained on: the bytes are destroyed with them.
    retired = "retired"


class CachedEvaluator(IdMixin, CreatedMixin, Base):
    """The classifier that judges a diffusion model's generated images when the forget request
    names none: trained once by a worker from one manifest (by digest) and reused by every later
    job on it. It learned from every sample of the manifest, so it is retired and destroyed when
    the manifest loses erased samples, like a reference kit."""

    __tablename__ = "cached_evaluators"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    train_digest: Mapped[str] = mapped_column(String(64), index=True)
    architecture: Mapped[str] = mapped_column(String(64))
    arch_args: Mapped[dict[str, Any]]
    recipe: Mapped[dict[str, Any]]
    normalization: Mapped[dict[str, Any]]
    seed: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default=EvaluatorStatus.ready, index=True)
    digest: Mapped[str | None] = mapped_column(ForeignKey("artifacts.digest"), default=None)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    test_accuracy: Mapped[float | None] = mapped_column(default=None)
    wall_time_s: Mapped[float | None] = mapped_column(default=None)
    # The job that trained it (a model's validation or a forget job).
    job_id: Mapped[str | None] = mapped_column(String(36), default=None)
