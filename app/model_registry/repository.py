from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.pagination import Cursor, apply_keyset
from app.models import Job, ModelVersion


def get(session: Session, tenant_id: str, model_id: str) -> ModelVersion | None:
    mv = session.get(ModelVersion, model_id)
    return mv if mv is not None and mv.tenant_id == tenant_id else None


def page(
    session: Session,
    tenant_id: str,
    cursor: Cursor | None,
    limit: int,
    *,
    status: str | None = None,
    dataset_id: str | None = None,
    architecture: str | None = None,
    lineage_id: str | None = None,
) -> list[ModelVersion]:
    stmt = select(ModelVersion).where(ModelVersion.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(ModelVersion.status == status)
    if dataset_id is not None:
        stmt = stmt.where(ModelVersion.dataset_id == dataset_id)
    if architecture is not None:
        stmt = stmt.where(ModelVersion.architecture == architecture)
    if lineage_id is not None:
        stmt = stmt.where(ModelVersion.lineage_id == lineage_id)
    return list(
        session.scalars(apply_keyset(stmt, ModelVersion.created_at, ModelVersion.id, cursor, limit))
    )


def validation_job_id(session: Session, model_id: str) -> str | None:
    stmt = (
        select(Job.id)
        .where(Job.model_id == model_id, Job.kind == "validate_model")
        .order_by(Job.created_at.desc())
    )
    return session.scalars(stmt).first()
