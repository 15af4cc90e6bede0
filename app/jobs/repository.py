from __future__ import annotations

import json
from functools import cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from app.core.db import lock_for_write
from app.core.pagination import Cursor, apply_keyset
from app.models import ForgetRequest, Job, JobTransition
from app.models.job import JobKind, JobState


def get(session: Session, tenant_id: str, job_id: str) -> Job | None:
    job = session.get(Job, job_id)
    return job if job is not None and job.tenant_id == tenant_id else None


def page(
    session: Session,
    tenant_id: str,
    cursor: Cursor | None,
    limit: int,
    *,
    state: str | None = None,
    kind: str | None = None,
    lineage_id: str | None = None,
    model_id: str | None = None,
) -> list[Job]:
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    if kind is not None:
        stmt = stmt.where(Job.kind == kind)
    if lineage_id is not None:
        stmt = stmt.where(Job.lineage_id == lineage_id)
    if model_id is not None:
        stmt = stmt.where((Job.model_id == model_id) | (Job.result_model_id == model_id))
    return list(session.scalars(apply_keyset(stmt, Job.created_at, Job.id, cursor, limit)))


def get_for_update(session: Session, job_id: str) -> Job | None:
    """Lock the row (``SELECT ... FOR UPDATE``; on SQLite the database's write lock)."""
    lock_for_write(session)
    return session.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()


def earlier_unfinished_in_lineage(session: Session, job: Job) -> str | None:
    """The ID of a job of the same lineage that runs now or was queued before ``job``: jobs of
    one lineage run one at a time, in arrival order."""
    stmt = select(Job.id).where(
        Job.lineage_id == job.lineage_id,
        Job.kind == JobKind.unlearn,
        Job.id != job.id,
        or_(
            Job.state == JobState.running,
            and_(Job.state == JobState.queued, Job.created_at < job.created_at),
        ),
    )
    return session.scalars(stmt).first()


def next_queued_in_lineage(session: Session, lineage_id: str) -> tuple[str, str] | None:
    """The ID and queue of the lineage's oldest queued unlearning job."""
    row = session.execute(
        select(Job.id, Job.queue)
        .where(
            Job.lineage_id == lineage_id,
            Job.kind == JobKind.unlearn,
            Job.state == JobState.queued,
        )
        .order_by(Job.created_at)
        .limit(1)
    ).first()
    return None if row is None else (str(row[0]), str(row[1]))


# The columns a job view shows, besides its history and request IDs.
_VIEW_COLUMNS = (
    *("id", "kind", "state", "model_id", "lineage_id", "result_model_id", "method", "queue"),
    *("attempts", "max_attempts", "coalesced", "cancel_requested", "error", "progress"),
    *("outcome", "created_at", "started_at", "finished_at", "claimed_by"),
)
_HISTORY_COLUMNS = ("from_state", "to_state", "at", "reason")


@cache
def _view_statement(dialect: str) -> Select[Any]:
    """Built once per dialect: constructing the statement costs more than running it."""
    t, fr = JobTransition.__table__, ForgetRequest.__table__
    if dialect == "postgresql":
        agg, array = func.json_agg, func.json_build_array
    else:
        agg, array = func.json_group_array, func.json_array
    history = select(agg(array(t.c.id, *(t.c[n] for n in _HISTORY_COLUMNS)))).where(
        t.c.job_id == Job.id
    )
    requests = select(agg(array(fr.c.created_at, fr.c.id))).where(fr.c.job_id == Job.id)
    return select(
        *(Job.__table__.c[name] for name in _VIEW_COLUMNS),
        history.scalar_subquery().label("history"),
        requests.scalar_subquery().label("request_ids"),
    ).where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))


def view_row(session: Session, tenant_id: str, job_id: str) -> dict[str, Any] | None:
    """A job as its view needs it, with its history and request IDs, in one statement.

    A status poll is the most frequent request; three ORM queries cost most of its time, so
    history and request IDs are aggregated as JSON arrays in the database (``json_agg`` on
    PostgreSQL, ``json_group_array`` on SQLite) and read in one round trip. Each element carries
    its sort key, and the rows are ordered here: SQLite's aggregate takes no ORDER BY.
    """
    stmt = _view_statement(session.get_bind().dialect.name)
    row = session.execute(stmt, {"job_id": job_id, "tenant_id": tenant_id}).mappings().first()
    if row is None:
        return None
    data = dict(row)
    for name in ("history", "request_ids"):
        # PostgreSQL's json comes back decoded and SQLite's as text; an empty json_agg is NULL.
        value = json.loads(data[name]) if isinstance(data[name], str) else data[name]
        data[name] = sorted(value or [])  # by transition ID; by (received at, ID)
    data["history"] = [dict(zip(_HISTORY_COLUMNS, h[1:], strict=True)) for h in data["history"]]
    data["request_ids"] = [r[1] for r in data["request_ids"]]
    return data
