from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class RequestStatus(StrEnum):
    pending = "pending"  # accepted, its job has not finished
    completed = "completed"  # a certified version forgets it
    # Its job made a version that failed the policy gate: not honoured yet, still on the clock,
    # and carried into the lineage's next job (back to pending) to be retried.
    uncertified = "uncertified"
    failed = "failed"
    cancelled = "cancelled"  # before requests outlived their cancelled jobs; no longer set
    withdrawn = "withdrawn"  # the requester took it back (audited, with a reason)


# Statuses of a request the service still owes an answer: they count against the deadline.
OPEN_STATUSES = (RequestStatus.pending, RequestStatus.uncertified)


class ForgetRequest(IdMixin, CreatedMixin, Base):
    """A deletion request against a model lineage. ``created_at`` is when it was received."""

    __tablename__ = "forget_requests"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    # The version named in the URL, and the lineage the request applies to (its newest version).
    model_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"))
    lineage_id: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "class" or "sample"
    class_ids: Mapped[list[Any] | None] = mapped_column(default=None)
    sample_ids: Mapped[list[Any] | None] = mapped_column(default=None)
    # Filled by the worker: every training sample this request removed (class-wise included).
    resolved_sample_ids: Mapped[list[Any] | None] = mapped_column(default=None)
    method: Mapped[str] = mapped_column(String(32))
    method_config: Mapped[dict[str, Any]]
    reference_eval: Mapped[bool] = mapped_column(default=False)
    # A diffusion model's request may name a registered classifier to judge generated images.
    evaluator_model_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id"), default=None
    )
    reason: Mapped[str] = mapped_column(Text, default="")
    subject_ref: Mapped[str | None] = mapped_column(String(200), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    body_digest: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.pending, index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), default=None, index=True)
    coalesced: Mapped[bool] = mapped_column(default=False)
    result_model_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id"), default=None
    )
    # Set when the request is one lineage's part of a request that targeted a whole dataset.
    group_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    due_at: Mapped[datetime] = mapped_column(index=True)
    completed_at: Mapped[datetime | None] = mapped_column(default=None)
