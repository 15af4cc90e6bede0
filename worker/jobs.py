"""Claiming and finishing job rows from a worker. Every change is its own short transaction with
the row locked, so a redelivered or duplicated task cannot run a job twice."""

from __future__ import annotations

from typing import Any

from app.core.db import session_scope
from app.jobs import repository
from app.jobs.service import transition
from app.models.job import JobState
from worker.context import WorkerContext


def claim(ctx: WorkerContext, job_id: str) -> bool:
    """Move a queued job to running under a row lock. False when it is missing, already claimed
    or finished: the caller then does nothing."""
    with session_scope(ctx.sessionmaker) as session:
        job = repository.get_for_update(session, job_id)
        if job is None or job.state != JobState.queued:
            return False
        job.attempts += 1
        job.claimed_by = ctx.name
        transition(
            session,
            job,
            JobState.running,
            f"claimed by {ctx.name}, attempt {job.attempts}",
            actor=f"worker:{ctx.name}",
        )
        return True


def report_progress(ctx: WorkerContext, job_id: str, progress: dict[str, Any]) -> None:
    with session_scope(ctx.sessionmaker) as session:
        job = repository.get_for_update(session, job_id)
        if job is not None and job.state == JobState.running:
            job.progress = progress
