from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class Evaluation(IdMixin, CreatedMixin, Base):
    """Metrics of one model on one job's forget/remain/test split (original, unlearned, or the
    retrained reference)."""

    __tablename__ = "evaluations"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    model_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    subject: Mapped[str] = mapped_column(String(16))  # original | unlearned | retrained
    metrics: Mapped[dict[str, Any]]
