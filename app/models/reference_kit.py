from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class KitStatus(StrEnum):
    building = "building"
    ready = "ready"
    failed = "failed"
    # Its dataset's manifest lost samples the shadows were trained on: the table is destroyed
    # (it was computed from models that saw them) and a new kit must be built.
    retired = "retired"


class ReferenceKit(IdMixin, CreatedMixin, Base):
    """The per-example membership audit's reference: K shadow models' logit margins on every
    training and test sample of one manifest, for one architecture and training recipe. Built
    once by a worker job; every later request on that manifest and recipe is audited with it."""

    __tablename__ = "reference_kits"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    # The manifest, architecture and recipe the shadows follow (a model's, at request time).
    model_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    train_digest: Mapped[str] = mapped_column(String(64), index=True)
    architecture: Mapped[str] = mapped_column(String(64))
    arch_args: Mapped[dict[str, Any]]
    recipe: Mapped[dict[str, Any]]
    k: Mapped[int]
    seed: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default=KitStatus.building, index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), default=None)
    digest: Mapped[str | None] = mapped_column(ForeignKey("artifacts.digest"), default=None)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    wall_time_s: Mapped[float | None] = mapped_column(default=None)
    optimizer_steps: Mapped[int | None] = mapped_column(default=None)
