from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Role(StrEnum):
    admin = "admin"
    member = "member"
    auditor = "auditor"


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(examples=["3f9c2a1b7d4e8f60"])
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key. Shown once; store it now.")


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role = Field(examples=["member"])
    name: str = Field(default="", max_length=200, examples=["ci pipeline"])


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


class WhoAmI(BaseModel):
    tenant_id: str
    tenant_name: str
    key_id: str
    role: Role


class PolicyOverrides(BaseModel):
    """Per-tenant policy gate thresholds (accuracy points); unset fields use the service's."""

    model_config = ConfigDict(extra="forbid")

    class_fa_max: float | None = Field(default=None, ge=0, le=100)
    class_ta_drop_max: float | None = Field(default=None, ge=0, le=100)
    sample_fa_gap_max: float | None = Field(default=None, ge=0, le=100)
    sample_ra_drop_max: float | None = Field(default=None, ge=0, le=100)
    gen_fa_max: float | None = Field(default=None, ge=0, le=100)
    gen_fa_margin: float | None = Field(default=None, ge=0, le=100)
    gen_kept_drop_max: float | None = Field(default=None, ge=0, le=100)
    gen_fd_ratio_max: float | None = Field(default=None, ge=1, le=100)


class TenantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fallback_retrain: bool = Field(
        default=False,
        description="When an unlearned version fails the policy gate, retrain from scratch on"
        " the remain set (the exact answer) and certify that instead.",
    )
    policy: PolicyOverrides = Field(default_factory=PolicyOverrides)
    device: Literal["auto", "cpu", "gpu"] | None = Field(
        default=None,
        description="Queue of this tenant's jobs (auto: by the model's size); unset uses the"
        " service's LETHE_JOB_QUEUE. A request's own `device` wins.",
    )
    retention_days: float | None = Field(
        default=None,
        ge=0,
        le=30,
        description="Days superseded versions' bytes are kept after a certified forgetting"
        " (0: destroyed at certification); unset uses the service's LETHE_RETENTION_DAYS.",
    )


class EffectiveValue(BaseModel):
    value: bool | float | str | None
    source: str = Field(examples=["tenant", "service (LETHE_RETENTION_DAYS)", "default"])
