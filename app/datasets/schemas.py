from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str = Field(examples=["fashion-mnist"])
    source: str = Field(examples=["upload"])
    train_digest: str = Field(description="SHA-256 of the train file.")
    test_digest: str | None = Field(
        description="SHA-256 of the test file (the train file's own"
        " digest when the test split is embedded)."
    )
    num_samples: int = Field(examples=[60000])
    num_test_samples: int = Field(examples=[10000])
    num_validation_samples: int = Field(
        default=0,
        description="The manifest's own validation split (0: jobs tune on a seeded 20% of the"
        " test split and report on the other 80%).",
    )
    image_shape: list[int] = Field(examples=[[1, 28, 28]])
    num_classes: int = Field(examples=[10])
    classes: list[int]
    class_counts: dict[str, int] = Field(description="Training samples per class.")
    test_class_counts: dict[str, int]
    sample_ids_digest: str = Field(description="SHA-256 of the sorted int64 sample IDs.")
    erased_count: int = Field(default=0, description="Samples erased from the manifest so far.")
    manifest_version: int = Field(default=1, description="Bumped by every erasure rewrite.")
    created_at: datetime


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class SampleOut(BaseModel):
    sample_id: int
    label: int


class SamplePage(BaseModel):
    """The manifest's training samples in ID order (what a forget request can name)."""

    items: list[SampleOut]
    next_after: int | None = Field(description="Pass as `after` for the next page.")
