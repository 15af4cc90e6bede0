from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import lock_for_write
from app.core.pagination import Cursor, apply_keyset
from app.models import DatasetErasure, ForgetRequest, Job, ModelVersion
from app.models.forget_request import OPEN_STATUSES, RequestStatus
from app.models.job import JobKind, JobState
from app.models.model_version import ModelStatus

# Versions a request may start from: certified ones (an upload that passed its check counts),
# and uncertified ones only when the request asks for that explicitly.
CERTIFIED = (ModelStatus.ready,)
USABLE = (ModelStatus.ready, ModelStatus.uncertified)


def get(session: Session, tenant_id: str, request_id: str) -> ForgetRequest | None:
    fr = session.get(ForgetRequest, request_id)
    return fr if fr is not None and fr.tenant_id == tenant_id else None


def get_for_update(session: Session, tenant_id: str, request_id: str) -> ForgetRequest | None:
    lock_for_write(session)
    stmt = select(ForgetRequest).where(ForgetRequest.id == request_id).with_for_update()
    fr = session.scalars(stmt).first()
    return fr if fr is not None and fr.tenant_id == tenant_id else None


def orphaned_requests(session: Session, lineage_id: str) -> list[ForgetRequest]:
    """Pending requests of the lineage whose job was cancelled: no job will answer them."""
    stmt = (
        select(ForgetRequest)
        .join(Job, Job.id == ForgetRequest.job_id)
        .where(
            ForgetRequest.lineage_id == lineage_id,
            ForgetRequest.status == RequestStatus.pending,
            Job.state == JobState.cancelled,
        )
    )
    return list(session.scalars(stmt.order_by(ForgetRequest.created_at)))


def by_idempotency_key(session: Session, tenant_id: str, key: str) -> ForgetRequest | None:
    stmt = select(ForgetRequest).where(
        ForgetRequest.tenant_id == tenant_id, ForgetRequest.idempotency_key == key
    )
    return session.scalars(stmt).first()


def lineages_of_dataset(session: Session, dataset_id: str) -> list[str]:
    """Every lineage whose uploaded original was trained on the dataset (rejected ones aside)."""
    stmt = select(ModelVersion.lineage_id).where(
        ModelVersion.dataset_id == dataset_id,
        ModelVersion.parent_id.is_(None),
        ModelVersion.status != ModelStatus.rejected,
    )
    return list(session.scalars(stmt.order_by(ModelVersion.created_at)))


def group_requests(session: Session, tenant_id: str, group_id: str) -> list[ForgetRequest]:
    stmt = select(ForgetRequest).where(
        ForgetRequest.tenant_id == tenant_id, ForgetRequest.group_id == group_id
    )
    return list(session.scalars(stmt.order_by(ForgetRequest.created_at)))


def lineage_versions(session: Session, lineage_id: str) -> list[ModelVersion]:
    stmt = select(ModelVersion).where(ModelVersion.lineage_id == lineage_id)
    return list(session.scalars(stmt.order_by(ModelVersion.version)))


def lineage_head(
    session: Session, lineage_id: str, *, allow_uncertified: bool = False
) -> ModelVersion | None:
    """The newest certified version of the lineage (or the newest usable one)."""
    statuses = USABLE if allow_uncertified else CERTIFIED
    stmt = (
        select(ModelVersion)
        .where(ModelVersion.lineage_id == lineage_id, ModelVersion.status.in_(statuses))
        .order_by(ModelVersion.version.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def ancestry(session: Session, version: ModelVersion) -> list[ModelVersion]:
    """The chain from the uploaded original to ``version``, oldest first."""
    chain = [version]
    while chain[-1].parent_id is not None:
        parent = session.get(ModelVersion, chain[-1].parent_id)
        assert parent is not None  # versions are never deleted, only their bytes
        chain.append(parent)
    return chain[::-1]


def erasure_of(session: Session, dataset_id: str, sample_id: int) -> DatasetErasure | None:
    """The manifest rewrite that erased ``sample_id``, if one did."""
    rows = session.scalars(select(DatasetErasure).where(DatasetErasure.dataset_id == dataset_id))
    return next((e for e in rows if sample_id in set(e.erased_ids)), None)


def names_uncertified(session: Session, requests: list[ForgetRequest]) -> bool:
    """Whether any of these requests named an uncertified version, which a request may do only
    with ``allow_uncertified_base``: such a job may start from an uncertified version."""
    named = [r.model_id for r in requests]
    stmt = select(ModelVersion.id).where(
        ModelVersion.id.in_(named), ModelVersion.status == ModelStatus.uncertified
    )
    return session.scalars(stmt.limit(1)).first() is not None


def requests_applied_in(session: Session, chain: list[ModelVersion]) -> list[ForgetRequest]:
    """The requests whose results are versions of ``chain``: what that chain already forgot."""
    ids = [v.id for v in chain]
    stmt = select(ForgetRequest).where(ForgetRequest.result_model_id.in_(ids))
    return list(session.scalars(stmt.order_by(ForgetRequest.created_at)))


def forgotten_ids(requests: list[ForgetRequest]) -> set[int]:
    """Every training sample these (applied) requests removed, class-wise ones included."""
    return {int(i) for r in requests for i in (r.resolved_sample_ids or [])}


def forgotten_by(session: Session, version: ModelVersion) -> set[int]:
    """Every training sample ``version``'s chain forgot."""
    return forgotten_ids(requests_applied_in(session, ancestry(session, version)))


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
    lock_for_write(session)
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
            ForgetRequest.due_at < overdue_at, ForgetRequest.status.in_(OPEN_STATUSES)
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
