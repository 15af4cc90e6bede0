"""Claiming and finishing job rows from a worker. Every change is its own short transaction with
the row locked, so a redelivered or duplicated task cannot run a job twice."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from app.core.db import database_unavailable, session_scope, unavailable_reason
from app.core.observability import job_id_var, request_id_var
from app.core.storage import StagedBlob
from app.jobs import repository
from app.jobs.service import transition
from app.models import Job
from app.models.job import JobState
from worker.context import WorkerContext

log = logging.getLogger(__name__)

T = TypeVar("T")


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
    """Best effort: while the database is unreachable the update is dropped with a warning (the
    next one replaces it anyway) instead of failing the job over a progress bar."""
    try:
        with session_scope(ctx.sessionmaker) as session:
            job = repository.get_for_update(session, job_id)
            if job is not None and job.state == JobState.running:
                job.progress = progress
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        log.warning(
            "job %s: progress not recorded, the database is unreachable (%s)",
            job_id,
            unavailable_reason(exc),
        )


class Backoff:
    """Bounded exponential backoff: ``first``, twice that, … up to ``cap`` seconds, each delay
    scaled by a random factor in [0.5, 1] so that many workers do not knock in step on a
    database that has just come back.

    >>> b = Backoff(first=1, cap=4)
    >>> [0.5 * d <= b.next() <= d for d in (1, 2, 4, 4)]
    [True, True, True, True]
    """

    def __init__(self, first: float = 0.25, cap: float = 5.0) -> None:
        self.first = min(first, cap)
        self.cap = cap
        self._next = self.first

    def next(self) -> float:
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not a secret)

    def reset(self) -> None:
        self._next = self.first


def retry_while_database_away(
    fn: Callable[[], T],
    *,
    what: str,
    within: float = 60.0,
    backoff: Backoff | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` and, while it fails because the database is unreachable
    (:func:`app.core.db.database_unavailable`), run it again with bounded backoff for up to
    ``within`` seconds; after that, or on any other error, the error propagates.

    ``fn`` must be one whole unit of work: it opens its own :func:`session_scope`, re-reads the
    row with :func:`owned_for_update` and decides from what it finds. Then a retry is safe: a
    failed attempt rolled back entirely, and one whose COMMIT reached the database although the
    answer was lost finds the job no longer running for this attempt and does nothing.
    """
    backoff = backoff or Backoff()
    deadline = time.monotonic() + within
    while True:
        try:
            return fn()
        except Exception as exc:
            if not database_unavailable(exc) or time.monotonic() >= deadline:
                raise
            delay = min(backoff.next(), max(0.0, deadline - time.monotonic()))
            log.warning(
                "%s: the database is unreachable (%s); retrying in %.1f s",
                what,
                unavailable_reason(exc),
                delay,
            )
            sleep(delay)


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


def stage_bytes(ctx: WorkerContext, data: bytes) -> StagedBlob:
    """Stage ``data`` in the artifact store in 1 MiB parts (a multipart upload on S3); the
    caller ingests it in its transaction and discards it afterwards."""
    staged = ctx.store.stage()
    try:
        view = memoryview(data)
        for start in range(0, len(view), 1024 * 1024):
            staged.write(bytes(view[start : start + 1024 * 1024]))
        staged.finish()
    except BaseException:
        staged.discard()
        raise
    return staged
