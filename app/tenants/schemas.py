from __future__ import annotations

from datetime import datetime
from enum import StrEnum

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
