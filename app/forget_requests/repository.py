from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.pagination import Cursor, apply_keyset
from app.models import ForgetRequest, Job, ModelVersion
from app.models.forget_request import RequestStatus
from app.models.job import JobKind, JobState
from app.models.model_version import ModelStatus

USABLE = (ModelStatus.ready, ModelStatus.uncertified)


def get(session: Session, tenant_id: str, request_id: str) -> ForgetRequest | None:
    fr = session.get(ForgetRequest, request_id)
    return fr if fr is not None and fr.tenant_id == tenant_id else None


def by_idempotency_key(session: Session, tenant_id: str, key: str) -> ForgetRequest | None:
    stmt = select(ForgetRequest).where(
        ForgetRequest.tenant_id == tenant_id, ForgetRequest.idempotency_key == key
    )
    return session.scalars(stmt).first()


def lineage_versions(session: Session, lineage_id: str) -> list[ModelVersion]:
    stmt = select(ModelVersion).where(ModelVersion.lineage_id == lineage_id)
    return list(session.scalars(stmt.order_by(ModelVersion.version)))


def lineage_head(session: Session, lineage_id: str) -> ModelVersion | None:
    stmt = (
        select(ModelVersion)
        .where(ModelVersion.lineage_id == lineage_id, ModelVersion.status.in_(USABLE))
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def lineage_requests(
    session: Session, lineage_id: str, status: RequestStatus | None = None
) -> list[ForgetRequest]:
    stmt = select(ForgetRequest).where(ForgetRequest.lineage_id == lineage_id)
    if status is not None:
        stmt = stmt.where(ForgetRequest.status == status)
    return list(session.scalars(stmt.order_by(ForgetRequest.created_at)))


def job_requests(session: Session, job_id: str) -> list[ForgetRequest]:
    stmt = select(ForgetRequest).where(ForgetRequest.job_id == job_id)
    return list(session.scalars(stmt.order_by(ForgetRequest.created_at)))


def queued_jobs_for_update(session: Session, lineage_id: str) -> list[Job]:
    stmt = (
        select(Job)
        .where(
            Job.lineage_id == lineage_id,
            Job.kind == JobKind.unlearn,
            Job.state == JobState.queued,
            Job.cancel_requested.is_(False),
        )
        .order_by(Job.created_at)
        .with_for_update()
    )
    return list(session.scalars(stmt))


def page(
    session: Session,
    tenant_id: str,
    cursor: Cursor | None,
    limit: int,
    *,
    overdue_at: datetime | None = None,
    status: str | None = None,
    lineage_id: str | None = None,
) -> list[ForgetRequest]:
    stmt = select(ForgetRequest).where(ForgetRequest.tenant_id == tenant_id)
    if overdue_at is not None:
        stmt = stmt.where(
            ForgetRequest.due_at < overdue_at, ForgetRequest.status == RequestStatus.pending
        )
    if status is not None:
        stmt = stmt.where(ForgetRequest.status == status)
    if lineage_id is not None:
        stmt = stmt.where(ForgetRequest.lineage_id == lineage_id)
    return list(
        session.scalars(
            apply_keyset(stmt, ForgetRequest.created_at, ForgetRequest.id, cursor, limit)
        )
    )
