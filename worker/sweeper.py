"""The sweeper: the database is the truth, the broker is only a doorbell.

- A job committed as ``queued`` whose task has not started within ``resend_after_seconds`` gets
  its task sent again (a lost message, a Redis restart, or a job that waited for its lineage).
- A ``running`` job whose heartbeat is older than ``heartbeat_timeout_seconds`` lost its worker:
  it goes back to ``queued`` and is re-sent, or fails once it has used ``max_attempts``. A
  database outage is not a worker's death: no worker can beat while the database is away, so a
  heartbeat counts as no older than the moment the database came back, which is the later of the
  server's start (a restart, whoever saw it) and this sweeper's first sweep that succeeded after
  one that could not reach it (any outage it witnessed, a fail-over included). A live worker
  thus gets a whole timeout to beat again (its monitor retries within seconds).
- Every ten minutes it deletes store files that no row names once they are past their grace
  period, and logs one line per problem it cannot repair (``app.artifacts.service.sweep_store``).

Every change is made under the row lock, so several sweepers (one per worker) are harmless, and a
duplicate send is harmless too: a task only claims a job that is still queued.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.artifacts import service as artifacts
from app.audit import checkpoints
from app.core.db import database_unavailable, session_scope, unavailable_reason
from app.erasure import service as erasure
from app.jobs import repository as jobs_repo
from app.jobs import service as jobs
from app.jobs.routing import service_only
from app.models import Job
from app.models.base import utcnow
from app.models.job import JobKind, JobState
from worker.context import WorkerContext

log = logging.getLogger(__name__)


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _beats_possible_since(s: Session, regained: datetime | None) -> datetime | None:
    """Since when a live worker could have written heartbeats: the later of the PostgreSQL
    server's start (nobody could beat while it was down) and ``regained``."""
    since = [regained] if regained is not None else []
    if s.get_bind().dialect.name == "postgresql":
        started = _aware(s.scalar(text("SELECT pg_postmaster_start_time()")))
        if started is not None:
            since.append(started)
    return max(since, default=None)


def sweep_once(
    ctx: WorkerContext, now: datetime | None = None, *, regained: datetime | None = None
) -> dict[str, int]:
    """One sweep. ``regained``: when the caller got the database back after losing it; no
    heartbeat counts as older than that (nor than the server's start)."""
    now = now or utcnow()
    settings = ctx.settings
    stale_before = now - timedelta(seconds=settings.heartbeat_timeout_seconds)
    resend_before = now - timedelta(seconds=settings.resend_after_seconds)
    counts = {"resent": 0, "requeued": 0, "failed": 0}
    to_send: list[tuple[str, str, str]] = []
    actor = f"sweeper:{ctx.name}"

    with session_scope(ctx.sessionmaker) as s:
        ids = list(s.scalars(select(Job.id).where(Job.state == JobState.running)))
        back: datetime | None = None
        for job_id in ids:
            job = jobs_repo.get_for_update(s, job_id)
            beat = _aware(job.heartbeat_at) if job else None
            if job is None or job.state != JobState.running or (beat and beat > stale_before):
                continue
            back = back or _beats_possible_since(s, regained)  # asked once, and only now
            if back is not None and back > stale_before:
                continue  # the database was away: its worker has not had a timeout to beat
            if job.attempts >= job.max_attempts:
                reason = (
                    f"the worker running this job stopped responding {job.attempts} times;"
                    " giving up (check the worker logs, e.g. for running out of memory)"
                )
                jobs.end(s, job, JobState.failed, reason, actor=actor, tasks=ctx.tasks)
                counts["failed"] += 1
            else:
                lost = f"worker {job.claimed_by} lost (no heartbeat since {beat}); retrying"
                task = jobs.requeue(s, job, lost, actor=actor, at=now)
                to_send.append((task, job.id, job.queue))
                counts["requeued"] += 1

        ids = list(
            s.scalars(
                select(Job.id).where(
                    Job.state == JobState.queued,
                    (Job.task_sent_at.is_(None)) | (Job.task_sent_at < resend_before),
                )
            )
        )
        for job_id in ids:
            job = jobs_repo.get_for_update(s, job_id)
            sent = _aware(job.task_sent_at) if job else None
            if job is None or job.state != JobState.queued or (sent and sent >= resend_before):
                continue
            job.task_sent_at = now
            to_send.append((jobs.TASK_OF[JobKind(job.kind)], job.id, job.queue))
            counts["resent"] += 1

    # Retired versions whose retention window ended: their purge jobs (sent after the commit).
    with session_scope(ctx.sessionmaker) as s:
        counts["purges"] = erasure.queue_due_purges(
            s, ctx.tasks, actor=actor, queue=service_only(settings.job_queue), now=now
        )

    # Sent only after the commit: a crash in between just means the next sweep sends them.
    for name, job_id, queue in to_send:
        if ctx.tasks is not None:
            try:
                ctx.tasks.send(name, job_id, queue)
            except Exception:
                log.warning("could not send %s for job %s; next sweep retries", name, job_id)
    if any(counts.values()):
        log.info("sweep: %s", counts)
    return counts


class SweeperThread(threading.Thread):
    """Runs :func:`sweep_once` every ``sweep_interval_seconds`` inside a worker process."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="lethe-sweeper", daemon=True)
        self.ctx = ctx
        self._stop_event = threading.Event()

    def run(self) -> None:
        next_checkpoint = next_store_sweep = 0.0
        regained: datetime | None = None  # when the last outage this sweeper saw ended
        away = False
        while not self._stop_event.wait(self.ctx.settings.sweep_interval_seconds):
            started = utcnow()
            try:
                # The first sweep after an outage counts every heartbeat as fresh (from now).
                sweep_once(self.ctx, started, regained=started if away else regained)
            except Exception as exc:
                if self._failed("sweep", exc, quiet=away):
                    away = True
                    continue  # the other chores would fail the same way
            else:
                if away:
                    away, regained = False, started
                    log.warning("sweep: the database answers again")
            # Sign the head of every tenant's audit chain that grew (app.audit.checkpoints).
            if time.monotonic() >= next_checkpoint:
                next_checkpoint = time.monotonic() + checkpoints.INTERVAL_SECONDS
                try:
                    checkpoints.issue_due_checkpoints(self.ctx.sessionmaker, self.ctx.settings)
                except Exception as exc:
                    self._failed("audit checkpoints", exc)
            # Delete orphan files past their grace period (app.artifacts.service.sweep_store).
            if time.monotonic() >= next_store_sweep:
                next_store_sweep = time.monotonic() + artifacts.STORE_SWEEP_INTERVAL_SECONDS
                grace = self.ctx.settings.store_orphan_grace_seconds
                try:
                    artifacts.sweep_store(
                        self.ctx.sessionmaker, self.ctx.store, grace_seconds=grace
                    )
                except Exception as exc:
                    self._failed("store sweep", exc)

    @staticmethod
    def _failed(what: str, exc: BaseException, *, quiet: bool = False) -> bool:
        """Log a chore's failure: one warning line when the database is unreachable (``quiet``:
        already said, so debug), a traceback otherwise. Returns whether it was the database."""
        if database_unavailable(exc):
            level = logging.DEBUG if quiet else logging.WARNING
            log.log(level, "%s: the database is unreachable (%s); will retry", what,
                    unavailable_reason(exc))  # fmt: skip
            return True
        log.exception("%s failed; will retry", what)
        return False

    def stop(self) -> None:
        self._stop_event.set()
