from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.certificates import service
from app.core.deps import SessionDep
from app.core.params import ResourceId
from app.tenants.dependencies import Reader

router = APIRouter(tags=["certificates"])


class Envelope(BaseModel):
    """A DSSE envelope whose payload is an in-toto Statement v1 (base64 JSON)."""

    payloadType: str = Field(examples=["application/vnd.in-toto+json"])
    payload: str
    signatures: list[dict[str, str]]


class SigningKeyOut(BaseModel):
    key_id: str
    algorithm: str
    public_key_pem: str
    created_at: datetime
    retired_at: datetime | None


class SigningKeys(BaseModel):
    items: list[SigningKeyOut]


@router.get(
    "/v1/models/{model_id}/certificate",
    summary="The signed certificate of an unlearned version (DSSE envelope)",
)
def get_certificate(model_id: ResourceId, principal: Reader, session: SessionDep) -> Envelope:
    cert, _ = service.download(session, principal.tenant_id, principal.key_id, model_id)
    envelope: dict[str, Any] = cert.envelope
    return Envelope.model_validate(envelope)


@router.get(
    "/v1/signing-keys",
    summary="Public keys that sign certificates, by key ID (no authentication needed)",
)
def list_signing_keys(session: SessionDep) -> SigningKeys:
    return SigningKeys(
        items=[
            SigningKeyOut(
                key_id=k.key_id,
                algorithm=k.algorithm,
                public_key_pem=k.public_key_pem,
                created_at=k.created_at,
                retired_at=k.retired_at,
            )
            for k in service.public_keys(session)
        ]
    )
