from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    seq: int = Field(description="Position in the tenant's chain, from 1.")
    at: datetime
    actor: str = Field(examples=["3f9c2a1b7d4e8f60", "worker:host:1234"])
    action: str = Field(examples=["forget_request.created", "job.succeeded"])
    subject_type: str
    subject_id: str
    payload_digest: str
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None


class ChainOut(BaseModel):
    ok: bool
    checked: int
    first_broken_seq: int | None
    first_broken_id: int | None
    reason: str | None
