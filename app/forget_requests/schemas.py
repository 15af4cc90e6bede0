from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Sample IDs are int64 in the manifest; anything outside cannot name a sample.
SampleId = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
ClassId = Annotated[int, Field(ge=0, le=100_000)]


class ForgetRequestIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"class_ids": [3], "reason": "licence withdrawn for class 3"},
                {
                    "sample_ids": [1017, 20433, 40512],
                    "method": "sfr_on",
                    "config": {},
                    "reference_eval": True,
                    "reason": "GDPR art. 17 request",
                    "subject_ref": "ticket-8841",
                },
            ]
        },
    )

    class_ids: list[ClassId] | None = Field(
        default=None, max_length=100_000, description="Forget whole classes."
    )
    sample_ids: list[SampleId] | None = Field(
        default=None, max_length=1_000_000, description="Forget these training samples."
    )
    method: str = Field(default="sfr_on", max_length=64, examples=["sfr_on", "retrain", "salun"])
    config: dict[str, Any] = Field(
        default_factory=dict, max_length=64, description="The method's hyperparameters."
    )
    reference_eval: bool = Field(
        default=False, description="Also retrain from scratch and report the gap to it."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    reason: str = Field(default="", max_length=2000)
    subject_ref: str | None = Field(
        default=None, max_length=200, description="Opaque reference to the data subject."
    )
    device: Literal["auto", "cpu", "gpu"] | None = Field(
        default=None,
        description="Run this request's job on the gpu or cpu queue, or choose by the model's"
        " size (auto); unset uses the tenant's, then the service's, setting.",
    )
    evaluator_model_id: str | None = Field(
        default=None,
        max_length=64,
        description="Diffusion models only: a registered classifier of the same dataset that"
        " judges the generated images. Unset: the service trains one from the manifest once and"
        " reuses it; the job's result says which judged.",
    )
    allow_uncertified_base: bool = Field(
        default=False,
        description="Build on the named version although it failed the policy gate. Without"
        " it a request starts from the lineage's newest certified version, and the new"
        " version's certificate discloses every uncertified step of its chain.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ForgetRequestIn:
        if (self.class_ids is None) == (self.sample_ids is None):
            raise ValueError("give exactly one of class_ids or sample_ids")
        ids = self.class_ids if self.class_ids is not None else self.sample_ids
        if not ids:
            raise ValueError("the list of IDs is empty")
        return self


class ForgetRequestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    model_id: str
    lineage_id: str
    kind: str
    class_ids: list[int] | None
    sample_count: int | None = None
    method: str
    method_config: dict[str, Any]
    reference_eval: bool
    evaluator_model_id: str | None = None
    reason: str
    subject_ref: str | None
    status: str
    job_id: str | None
    coalesced: bool = Field(description="True when this request shares a job with others.")
    result_model_id: str | None
    group_id: str | None = Field(
        default=None, description="The dataset-wide request this one is a lineage's part of."
    )
    created_at: datetime = Field(description="When the request was received.")
    due_at: datetime
    completed_at: datetime | None
    overdue: bool = False


class DatasetForgetRequestIn(ForgetRequestIn):
    """A request that targets a dataset: every model trained on it forgets the samples."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"sample_ids": [1017, 20433], "reason": "GDPR art. 17 request"}]
        },
    )


class WithdrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, examples=["the data subject withdrew"])


class SkippedLineage(BaseModel):
    lineage_id: str
    reason: str


class ForgetRequestGroup(BaseModel):
    """One request per lineage trained on the dataset; complete when every one is."""

    id: str
    dataset_id: str
    status: str = Field(
        description="completed when every lineage's request is; else open (or failed/cancelled"
        " when one of them ended so)."
    )
    requests: list[ForgetRequestOut]
    skipped: list[SkippedLineage] = Field(
        default_factory=list,
        description="Lineages on the dataset that took no request (already forgot the samples,"
        " or not ready yet), with why.",
    )


class ForgetRequestPage(BaseModel):
    items: list[ForgetRequestOut]
    next_cursor: str | None


class LineageVersion(BaseModel):
    id: str
    version: int
    parent_id: str | None
    status: str
    status_reason: str | None
    weights_digest: str | None
    destroyed_digest: str | None = Field(
        default=None, description="Set once a purge destroyed the version's weights."
    )
    forgotten_count: int
    produced_by_job_id: str | None
    request_ids: list[str]
    created_at: datetime


class Lineage(BaseModel):
    lineage_id: str
    head_id: str = Field(
        description="The newest certified version; new requests apply to it by default."
    )
    versions: list[LineageVersion]
    pending_request_ids: list[str]


class ExposureVersion(BaseModel):
    model_id: str
    lineage_id: str
    version: int
    status: str
    exposed: bool = Field(
        description="The version's weights come from training that included the sample, and no"
        " request in its ancestry has removed it."
    )
    forgotten: bool = Field(description="A request in this version's ancestry removed it.")
    forgotten_by_request_id: str | None
    bytes_stored: bool = Field(description="The version's weights are still in the store.")


class StoredArtifact(BaseModel):
    kind: str = Field(examples=["model_weights", "dataset_manifest"])
    id: str
    version: int


class Exposure(BaseModel):
    dataset_id: str
    sample_id: int
    label: int | None = Field(description="None once the sample is erased from the manifest.")
    versions: list[ExposureVersion]
    in_manifest: bool = Field(description="The dataset's stored manifest still holds it.")
    erased_at: datetime | None = None
    erased_by_job_id: str | None = None
    lineages_holding: list[str] = Field(
        description="Lineages whose newest certified version still holds the sample."
    )
    stored_artifacts_holding: list[StoredArtifact] = Field(
        description="Every stored artifact that still holds the sample: the answer to"
        " 'which stored artifacts hold sample X'."
    )
