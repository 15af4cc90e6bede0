from __future__ import annotations

from datetime import datetime
from typing import Any

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
    payload: Any = Field(
        None,
        description="What happened, in full; its SHA-256 (canonical JSON) is payload_digest."
        " null on events recorded before payloads were stored.",
        examples=[{"role": "auditor", "name": "compliance"}],
    )
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
    head_hash: str | None = Field(
        None,
        description="When ok: the recomputed hash of the event at seq = checked (with"
        " ?through=N, at seq N); compare it with a signed checkpoint's head_hash.",
    )


class CheckpointOut(BaseModel):
    """A signed checkpoint of the tenant's audit chain. Only ``note`` is signed (a C2SP signed
    note); the other fields repeat what it says."""

    origin: str = Field(examples=["lethe.audit/6f1c0e9a-2b1d-4c36-9a57-1f0e8f3f2c11"])
    size: int = Field(description="Events in the chain: the head's seq.")
    head_hash: str = Field(description="The head event's hash (hex).")
    issued_at: str = Field(examples=["2026-12-01T09:00:00.123456Z"])
    key_id: str = Field(description="The signing key, as /v1/signing-keys lists it.")
    note: str = Field(
        description="origin, size, base64 head hash and a time line, a blank line, then"
        " '— <origin> <base64(4-byte key hash + Ed25519 signature)>'."
    )


class CheckpointPage(BaseModel):
    items: list[CheckpointOut]
    next_cursor: str | None
