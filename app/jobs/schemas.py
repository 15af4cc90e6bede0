from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TransitionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_state: str | None
    to_state: str
    at: datetime
    reason: str


class Progress(BaseModel):
    phase: str | None = Field(
        default=None, examples=["loading", "mask", "unlearning", "evaluating", "saving"]
    )
    step: int | None = None
    total: int | None = None
    losses: dict[str, float] = Field(default_factory=dict)
    eta_seconds: float | None = Field(default=None, description="Estimate for the current phase.")
    updated_at: datetime | None = None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    state: str
    model_id: str | None = Field(description="The version the job works on / started from.")
    lineage_id: str | None
    result_model_id: str | None
    method: str | None
    queue: str
    claimed_by: str | None = Field(
        default=None,
        description="The worker (host:pid) running the job, or the last one that ran it.",
        examples=["worker-a:4242"],
    )
    attempts: int
    max_attempts: int
    coalesced: bool
    cancel_requested: bool
    error: str | None
    progress: Progress = Field(default_factory=Progress)
    outcome: dict[str, Any]
    request_ids: list[str] = []
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    history: list[TransitionOut] = []


class JobSummary(BaseModel):
    """A job in a listing: its state and result, without history or progress detail."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    state: str
    model_id: str | None
    lineage_id: str | None
    result_model_id: str | None
    method: str | None
    queue: str
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None
