"""Erasure receipts: signed statements of what a purge destroyed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from app.audit import service as audit
from app.certificates.endpoints import Envelope
from app.core.deps import SessionDep
from app.core.errors import NotFound
from app.core.openapi import PROBLEM_RESPONSES
from app.core.params import ResourceId
from app.models import ErasureReceipt
from app.tenants.dependencies import Reader

router = APIRouter(tags=["erasure"], responses=PROBLEM_RESPONSES)


class ReceiptOut(BaseModel):
    id: str
    lineage_id: str
    dataset_id: str
    job_id: str
    key_id: str
    created_at: Any


class ReceiptList(BaseModel):
    items: list[ReceiptOut]


@router.get("/v1/erasure-receipts", summary="The tenant's erasure receipts, newest first")
def list_receipts(
    principal: Reader,
    session: SessionDep,
    lineage_id: Annotated[str | None, Query(max_length=36)] = None,
    dataset_id: Annotated[str | None, Query(max_length=36)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ReceiptList:
    stmt = select(ErasureReceipt).where(ErasureReceipt.tenant_id == principal.tenant_id)
    if lineage_id is not None:
        stmt = stmt.where(ErasureReceipt.lineage_id == lineage_id)
    if dataset_id is not None:
        stmt = stmt.where(ErasureReceipt.dataset_id == dataset_id)
    rows = session.scalars(stmt.order_by(ErasureReceipt.created_at.desc()).limit(limit))
    return ReceiptList(
        items=[
            ReceiptOut(
                id=r.id,
                lineage_id=r.lineage_id,
                dataset_id=r.dataset_id,
                job_id=r.job_id,
                key_id=r.key_id,
                created_at=r.created_at,
            )
            for r in rows
        ]
    )


@router.get(
    "/v1/erasure-receipts/{receipt_id}",
    summary="A signed erasure receipt (DSSE envelope); `lethe verify` checks it offline",
)
def get_receipt(receipt_id: ResourceId, principal: Reader, session: SessionDep) -> Envelope:
    receipt = session.get(ErasureReceipt, receipt_id)
    if receipt is None or receipt.tenant_id != principal.tenant_id:
        raise NotFound(f"No erasure receipt {receipt_id}.")
    audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.key_id,
        action="erasure_receipt.downloaded",
        subject_type="erasure_receipt",
        subject_id=receipt.id,
    )
    envelope: dict[str, Any] = receipt.envelope
    return Envelope.model_validate(envelope)
