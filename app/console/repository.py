"""The few queries only the console needs (everything else reuses the domains' repositories)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from app.models import AuditEvent, Certificate, ErasureReceipt, ForgetRequest, ModelVersion
from app.models.forget_request import OPEN_STATUSES

SIGNED_IN = "console.signed_in"
SIGNED_OUT = "console.signed_out"
SESSION_SUBJECT = "console_session"


def _overdue(now: datetime):  # type: ignore[no-untyped-def]
    return and_(ForgetRequest.status.in_(OPEN_STATUSES), ForgetRequest.due_at < now)


def requests(
    session: Session,
    tenant_id: str,
    now: datetime,
    limit: int,
    *,
    status: str | None = None,
    subject_ref: str | None = None,
    lineage_id: str | None = None,
    received_from: datetime | None = None,
    received_to: datetime | None = None,
) -> list[ForgetRequest]:
    """Forget requests, overdue ones first (most overdue first), then open ones by due date,
    then the answered ones, newest first."""
    stmt = select(ForgetRequest).where(ForgetRequest.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(ForgetRequest.status == status)
    if subject_ref is not None:
        stmt = stmt.where(ForgetRequest.subject_ref == subject_ref)
    if lineage_id is not None:
        stmt = stmt.where(ForgetRequest.lineage_id == lineage_id)
    if received_from is not None:
        stmt = stmt.where(ForgetRequest.created_at >= received_from)
    if received_to is not None:
        stmt = stmt.where(ForgetRequest.created_at < received_to)
    rank = case((_overdue(now), 0), (ForgetRequest.status.in_(OPEN_STATUSES), 1), else_=2)
    due_order = case((ForgetRequest.status.in_(OPEN_STATUSES), ForgetRequest.due_at))
    stmt = stmt.order_by(
        rank, due_order.asc(), ForgetRequest.created_at.desc(), ForgetRequest.id
    ).limit(limit)
    return list(session.scalars(stmt))


def clock_counts(
    session: Session, tenant_id: str, now: datetime, soon: datetime
) -> tuple[int, int]:
    """(open requests past their due date, open requests due before ``soon``)."""
    open_ = and_(ForgetRequest.tenant_id == tenant_id, ForgetRequest.status.in_(OPEN_STATUSES))
    overdue = func.count().filter(ForgetRequest.due_at < now)
    due_soon = func.count().filter(ForgetRequest.due_at >= now, ForgetRequest.due_at < soon)
    row = session.execute(select(overdue, due_soon).where(open_)).one()
    return int(row[0]), int(row[1])


def lineage_originals(session: Session, tenant_id: str, limit: int) -> list[ModelVersion]:
    """The uploaded original of each lineage, newest first."""
    stmt = (
        select(ModelVersion)
        .where(ModelVersion.tenant_id == tenant_id, ModelVersion.parent_id.is_(None))
        .order_by(ModelVersion.created_at.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def certificates(session: Session, tenant_id: str, limit: int) -> list[Certificate]:
    stmt = (
        select(Certificate)
        .where(Certificate.tenant_id == tenant_id)
        .order_by(Certificate.created_at.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def events_about(
    session: Session, tenant_id: str, subject_ids: list[str], limit: int
) -> list[AuditEvent]:
    stmt = (
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant_id, AuditEvent.subject_id.in_(subject_ids))
        .order_by(AuditEvent.seq)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def signed_out(session: Session, tenant_id: str, session_id: str) -> bool:
    stmt = select(AuditEvent.id).where(
        AuditEvent.tenant_id == tenant_id,
        AuditEvent.subject_id == session_id,
        AuditEvent.action == SIGNED_OUT,
    )
    return session.scalars(stmt.limit(1)).first() is not None


def receipts_of_lineage(
    session: Session, tenant_id: str, lineage_id: str, limit: int
) -> list[ErasureReceipt]:
    stmt = (
        select(ErasureReceipt)
        .where(ErasureReceipt.tenant_id == tenant_id, ErasureReceipt.lineage_id == lineage_id)
        .order_by(ErasureReceipt.created_at.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))
