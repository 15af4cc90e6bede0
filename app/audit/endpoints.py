from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from app.audit import checkpoints, service
from app.audit.schemas import (
    AuditEventOut,
    AuditPage,
    ChainOut,
    CheckpointOut,
    CheckpointPage,
)
from app.core.deps import SessionDep
from app.core.errors import InvalidInput, NotFound
from app.core.openapi import PROBLEM_RESPONSES
from app.core.params import Cursor, IdFilter, TextFilter
from app.models import AuditEvent
from app.tenants.dependencies import Auditor

# Paths spelled out: the events and their checkpoints share this router.
router = APIRouter(tags=["audit"], responses=PROBLEM_RESPONSES)


def _cursor(n: int, kind: str = "seq") -> str:
    return base64.urlsafe_b64encode(f"{kind}:{n}".encode()).decode().rstrip("=")


def _decode(token: str, kind: str = "seq") -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not raw.startswith(f"{kind}:"):
            raise ValueError(raw)
        n = int(raw[len(kind) + 1 :])
        if not 0 <= n < 2**62:
            raise ValueError(raw)
        return n
    except ValueError:
        raise InvalidInput(
            "The cursor is not valid.",
            errors=[{"field": "query.cursor", "message": "invalid cursor"}],
        ) from None


@router.get("/v1/audit-events", summary="The tenant's audit history, oldest first (auditor, admin)")
def list_events(
    principal: Auditor,
    session: SessionDep,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    action: Annotated[str | None, Query(max_length=200, description="e.g. job.succeeded")] = None,
    subject_id: IdFilter = None,
    actor: TextFilter = None,
    since: Annotated[datetime | None, Query()] = None,
) -> AuditPage:
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == principal.tenant_id)
    if cursor:
        stmt = stmt.where(AuditEvent.seq > _decode(cursor))
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if subject_id:
        stmt = stmt.where(AuditEvent.subject_id == subject_id)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    rows = list(session.scalars(stmt.order_by(AuditEvent.seq).limit(limit + 1)))
    nxt = _cursor(rows[limit - 1].seq) if len(rows) > limit else None
    return AuditPage(items=[AuditEventOut.model_validate(r) for r in rows[:limit]], next_cursor=nxt)


@router.get(
    "/v1/audit-events/verify", summary="Recompute the hash chain and name the first broken link"
)
def verify_chain(
    principal: Auditor,
    session: SessionDep,
    through: Annotated[
        int | None,
        Query(
            ge=0,
            le=2**62,
            description="Stop at this seq and return its recomputed hash as head_hash (a"
            " checkpoint's size); a shorter chain is reported broken.",
        ),
    ] = None,
) -> ChainOut:
    report = service.verify(session, principal.tenant_id, through=through)
    return ChainOut(**report.__dict__)


@router.get("/v1/audit-events/{event_id}", summary="One audit event (auditor, admin)")
def get_event(
    event_id: Annotated[int, Path(ge=1, le=2**63 - 1)], principal: Auditor, session: SessionDep
) -> AuditEventOut:
    ev = session.get(AuditEvent, event_id)
    if ev is None or ev.tenant_id != principal.tenant_id:
        raise NotFound(f"No audit event {event_id}.")
    return AuditEventOut.model_validate(ev)


@router.get(
    "/v1/audit-checkpoints",
    summary="Signed checkpoints of the tenant's audit chain, newest first (auditor, admin)",
)
def list_checkpoints(
    principal: Auditor,
    session: SessionDep,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> CheckpointPage:
    before = _decode(cursor, "id") if cursor else None
    rows = checkpoints.page(session, principal.tenant_id, before_id=before, limit=limit)
    nxt = _cursor(rows[limit - 1].id, "id") if len(rows) > limit else None
    items = [CheckpointOut(**checkpoints.to_json(cp)) for cp in rows[:limit]]
    return CheckpointPage(items=items, next_cursor=nxt)


@router.get(
    "/v1/audit-checkpoints/latest",
    summary="The newest signed checkpoint of the tenant's audit chain (auditor, admin)",
)
def latest_checkpoint(principal: Auditor, session: SessionDep) -> CheckpointOut:
    cp = checkpoints.latest(session, principal.tenant_id)
    if cp is None:
        raise NotFound(
            "No checkpoint yet: one is issued with each certificate, and by the workers every"
            f" {checkpoints.INTERVAL_SECONDS:.0f} s when the chain has grown."
        )
    return CheckpointOut(**checkpoints.to_json(cp))
