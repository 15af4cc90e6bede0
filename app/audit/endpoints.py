from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from app.audit import service
from app.audit.schemas import AuditEventOut, AuditPage, ChainOut
from app.core.deps import SessionDep
from app.core.errors import InvalidInput, NotFound
from app.models import AuditEvent
from app.tenants.dependencies import Auditor

router = APIRouter(prefix="/v1/audit-events", tags=["audit"])


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _decode(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not raw.startswith("seq:"):
            raise ValueError(raw)
        seq = int(raw[4:])
        if not 0 <= seq < 2**62:
            raise ValueError(raw)
        return seq
    except ValueError:
        raise InvalidInput(
            "The cursor is not valid.",
            errors=[{"field": "query.cursor", "message": "invalid cursor"}],
        ) from None


@router.get("", summary="The tenant's audit history, oldest first (auditor, admin)")
def list_events(
    principal: Auditor,
    session: SessionDep,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    action: Annotated[str | None, Query(description="e.g. job.succeeded")] = None,
    subject_id: Annotated[str | None, Query()] = None,
    actor: Annotated[str | None, Query()] = None,
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


@router.get("/verify", summary="Recompute the hash chain and name the first broken link")
def verify_chain(principal: Auditor, session: SessionDep) -> ChainOut:
    report = service.verify(session, principal.tenant_id)
    return ChainOut(**report.__dict__)


@router.get("/{event_id}", summary="One audit event (auditor, admin)")
def get_event(
    event_id: Annotated[int, Path(ge=1, le=2**63 - 1)], principal: Auditor, session: SessionDep
) -> AuditEventOut:
    ev = session.get(AuditEvent, event_id)
    if ev is None or ev.tenant_id != principal.tenant_id:
        raise NotFound(f"No audit event {event_id}.")
    return AuditEventOut.model_validate(ev)
