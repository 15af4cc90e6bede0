from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job, JobTransition


def get(session: Session, tenant_id: str, job_id: str) -> Job | None:
    job = session.get(Job, job_id)
    return job if job is not None and job.tenant_id == tenant_id else None


def get_for_update(session: Session, job_id: str) -> Job | None:
    """Lock the row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers)."""
    return session.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()


def transitions(session: Session, job_id: str) -> list[JobTransition]:
    stmt = select(JobTransition).where(JobTransition.job_id == job_id).order_by(JobTransition.id)
    return list(session.scalars(stmt))
