from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.core.names import RULE, unsafe_name_reason
from app.unlearning.config import TrainingRecipe


class Normalization(BaseModel):
    """Per-channel ``(x / 255 - mean) / std`` applied to uint8 images before the model."""

    model_config = ConfigDict(extra="forbid")

    mean: list[float] = Field(min_length=1, max_length=16, examples=[[0.2860]])
    std: list[float] = Field(min_length=1, max_length=16, examples=[[0.3530]])

    @model_validator(mode="after")
    def _check(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std need one value per channel each")
        if any(not (s > 0) for s in self.std):
            raise ValueError("std values must be > 0")
        return self


class TrainingInfo(TrainingRecipe):
    """How the uploaded model was trained (the engine's recipe). Retraining reuses it, and
    unlearning budgets are fractions of its optimizer steps (computed from it when not given)."""

    optimizer_steps: int | None = Field(
        default=None, ge=1, description="Total optimizer steps of the original training."
    )


MODEL_SPEC_EXAMPLE: dict[str, Any] = {
    "name": "fmnist-cnn",
    "architecture": "small_cnn",
    "args": {"num_classes": 10},
    "input_shape": [1, 28, 28],
    "normalization": {"mean": [0.286], "std": [0.353]},
    "dataset_id": "5d0c1f0e-3b7e-4c61-9a55-0f3f6f2b9a10",
    "training": {"epochs": 20, "batch_size": 128, "lr": 0.05},
}


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [MODEL_SPEC_EXAMPLE]})

    name: str = Field(min_length=1, max_length=200, description=f"The model's name: {RULE}.")
    architecture: str = Field(examples=["small_cnn", "resnet18_cifar"])
    args: dict[str, Any] = Field(default_factory=dict)
    input_shape: list[int] = Field(min_length=3, max_length=3, examples=[[1, 28, 28]])
    normalization: Normalization | None = None
    dataset_id: str
    training: TrainingInfo = Field(default_factory=TrainingInfo)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        reason = unsafe_name_reason(name)
        if reason:
            raise ValueError(reason)
        return name


class ModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    lineage_id: str
    parent_id: str | None
    version: int
    status: str = Field(examples=["validating", "ready", "rejected"])
    status_reason: str | None
    architecture: str
    arch_args: dict[str, Any]
    input_shape: list[int]
    normalization: dict[str, Any]
    num_classes: int
    training: dict[str, Any]
    dataset_id: str
    weights_digest: str | None
    weights_size: int
    baseline_metrics: dict[str, Any] | None
    produced_by_request_id: str | None
    produced_by_job_id: str | None
    forgotten_count: int = Field(description="Samples forgotten anywhere in this ancestry.")
    forgotten_digest: str | None = Field(description="SHA-256 of those sorted sample IDs.")
    retired_at: datetime | None = None
    purge_due_at: datetime | None = Field(
        default=None, description="When a retired version's bytes are (or were) destroyed."
    )
    purged_at: datetime | None = None
    destroyed_digest: str | None = Field(
        default=None, description="The SHA-256 of the weights the purge destroyed."
    )
    validation_job_id: str | None = None
    created_at: datetime
    updated_at: datetime


class ModelPage(BaseModel):
    items: list[ModelOut]
    next_cursor: str | None
