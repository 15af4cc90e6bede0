from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin, utcnow


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATES = frozenset({JobState.succeeded, JobState.failed, JobState.cancelled})


class JobKind(StrEnum):
    validate_model = "validate_model"
    unlearn = "unlearn"
    # Destroy what a certified forgetting superseded: retired versions' bytes, and the samples
    # every lineage on the dataset has forgotten (a new manifest); then sign a receipt.
    purge = "purge"
    # Train a reference kit's shadow models for the per-example membership audit.
    build_reference_kit = "build_reference_kit"


class Job(IdMixin, CreatedMixin, Base):
    """Work for a worker. The row, not the broker message, is the source of truth."""

    __tablename__ = "jobs"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), index=True, default=JobState.queued)
    # validate_model: the uploaded version. unlearn: the version the job started from.
    model_id: Mapped[str | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    lineage_id: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    result_model_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id"), default=None
    )
    method: Mapped[str | None] = mapped_column(String(32), default=None)
    method_config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reference_eval: Mapped[bool] = mapped_column(default=False)
    seed: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # Set when a request joined a queued job instead of starting its own.
    coalesced: Mapped[bool] = mapped_column(default=False)
    outcome: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The X-Request-ID of the API call that created the job: worker logs carry it too.
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    claimed_by: Mapped[str | None] = mapped_column(String(200), default=None)
    task_sent_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # Seconds from the last start to the end; kept so that /metrics can histogram run times in
    # one aggregate query instead of reading every finished job.
    run_seconds: Mapped[float | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobTransition(Base):
    """Append-only history of a job's states."""

    __tablename__ = "job_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16), default=None)
    to_state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")
