"""Claiming and finishing job rows from a worker. Every change is its own short transaction with
the row locked, so a redelivered or duplicated task cannot run a job twice."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.observability import job_id_var, request_id_var
from app.jobs import repository
from app.jobs.service import transition
from app.models import Job
from app.models.job import JobState
from worker.context import WorkerContext


def claim(ctx: WorkerContext, job_id: str, *, in_lineage_order: bool = False) -> int | None:
    """Move a queued job to running under a row lock and return its attempt number (the fencing
    token every later write checks). None when the job is missing, already claimed or finished,
    or (``in_lineage_order``) an earlier job of its lineage is unfinished: the caller then does
    nothing, and that earlier job sends this one when it ends."""
    with session_scope(ctx.sessionmaker) as session:
        job = repository.get_for_update(session, job_id)
        if job is None or job.state != JobState.queued:
            return None
        if (
            in_lineage_order
            and job.lineage_id is not None
            and repository.earlier_unfinished_in_lineage(session, job) is not None
        ):
            return None
        job.attempts += 1
        job.claimed_by = ctx.name
        transition(
            session,
            job,
            JobState.running,
            f"claimed by {ctx.name}, attempt {job.attempts}",
            actor=f"worker:{ctx.name}",
        )
        return job.attempts


def claim_in_order(ctx: WorkerContext, job_id: str) -> int | None:
    """:func:`claim` for unlearning jobs: one job per lineage at a time, in arrival order."""
    return claim(ctx, job_id, in_lineage_order=True)


def owned_for_update(session: Session, job_id: str, attempt: int | None) -> Job | None:
    """The job row, locked, if this attempt still owns it (running, same attempt number);
    None when it was cancelled or taken over meanwhile: then the caller leaves it alone."""
    job = repository.get_for_update(session, job_id)
    if job is None or job.state != JobState.running:
        return None
    return job if attempt is None or job.attempts == attempt else None


def report_progress(ctx: WorkerContext, job_id: str, progress: dict[str, Any]) -> None:
    with session_scope(ctx.sessionmaker) as session:
        job = repository.get_for_update(session, job_id)
        if job is not None and job.state == JobState.running:
            job.progress = progress


@contextmanager
def job_log_context(ctx: WorkerContext, job_id: str) -> Iterator[None]:
    """Tag every log line of this task with the job ID and the API request that created it."""
    with ctx.sessionmaker() as session:
        job = session.get(Job, job_id)
        request_id = job.request_id if job is not None else None
    tokens = (job_id_var.set(job_id), request_id_var.set(request_id))
    try:
        yield
    finally:
        job_id_var.reset(tokens[0])
        request_id_var.reset(tokens[1])
