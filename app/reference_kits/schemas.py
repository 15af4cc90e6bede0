from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ReferenceKitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: int = Field(
        default=16,
        ge=2,
        le=64,
        description="Shadow models (each trained on half the manifest, about k/2 trainings in"
        " all); k bounds what the audit can resolve.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class ReferenceKitOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    model_id: str = Field(description="The model whose architecture and recipe the shadows follow.")
    train_digest: str
    architecture: str
    arch_args: dict[str, Any]
    recipe: dict[str, Any]
    k: int
    seed: int
    status: str = Field(examples=["building", "ready", "failed", "retired"])
    job_id: str | None
    digest: str | None
    size: int
    wall_time_s: float | None
    optimizer_steps: int | None
    created_at: datetime


class ReferenceKitList(BaseModel):
    items: list[ReferenceKitOut]
