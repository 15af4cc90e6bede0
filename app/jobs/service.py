"""Jobs as a state machine stored in the database; the broker only carries job IDs.

:func:`transition` is the one function that changes a job's state, and it writes the history row
with it, so the history cannot disagree with the state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.db import after_commit
from app.core.errors import Conflict, NotFound
from app.core.observability import request_id_var
from app.core.tasks import BUILD_REFERENCE_KIT, PURGE, UNLEARN, VALIDATE_MODEL, TaskSender
from app.forget_requests import repository as requests_repo
from app.forget_requests import states as request_states
from app.jobs import repository
from app.models import Job, JobTransition
from app.models.base import utcnow
from app.models.forget_request import RequestStatus
from app.models.job import TERMINAL_STATES, JobKind, JobState

# The task that runs each kind of job.
TASK_OF: dict[JobKind, str] = {
    JobKind.unlearn: UNLEARN,
    JobKind.validate_model: VALIDATE_MODEL,
    JobKind.purge: PURGE,
    JobKind.build_reference_kit: BUILD_REFERENCE_KIT,
}


class JobFailed(Exception):
    """A failure the user can act on; the message says what to do. The job ends ``failed``."""


ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.queued: frozenset({JobState.running, JobState.failed, JobState.cancelled}),
    # running -> queued: a retry after the worker died.
    JobState.running: frozenset(
        {JobState.succeeded, JobState.failed, JobState.cancelled, JobState.queued}
    ),
    JobState.succeeded: frozenset(),
    JobState.failed: frozenset(),
    JobState.cancelled: frozenset(),
}


def transition(
    session: Session, job: Job, to: JobState, reason: str = "", actor: str = "system"
) -> None:
    current = JobState(job.state)
    if to not in ALLOWED[current]:
        raise Conflict(f"Job {job.id} cannot go from {current} to {to}.")
    now = utcnow()
    job.state = to
    if to is JobState.running:
        job.started_at = now
        job.heartbeat_at = now
    if to in TERMINAL_STATES:
        job.finished_at = now
        if job.started_at is not None:
            started = job.started_at
            if started.tzinfo is None:  # SQLite hands back naive UTC
                started = started.replace(tzinfo=UTC)
            job.run_seconds = max(0.0, (now - started).total_seconds())
    session.add(
        JobTransition(job_id=job.id, from_state=current, to_state=to, at=now, reason=reason)
    )
    session.flush()
    audit.record(
        session,
        tenant_id=job.tenant_id,
        actor=actor,
        action=f"job.{to.value}",
        subject_type="job",
        subject_id=job.id,
        payload={"from": current.value, "reason": reason},
    )


def end(
    session: Session,
    job: Job,
    to: JobState,
    reason: str,
    *,
    actor: str,
    tasks: TaskSender | None = None,
) -> None:
    """End a job without a result (``failed`` or ``cancelled``) together with its requests, and
    send the lineage's next job once this transaction commits (it waited for this one). The
    pipeline, the sweeper and a cancel all end jobs through here."""
    if to not in (JobState.failed, JobState.cancelled):
        raise ValueError(f"end() takes failed or cancelled, not {to}")
    if to is JobState.failed:
        job.error = reason
    transition(session, job, to, reason, actor=actor)
    for request in requests_repo.job_requests(session, job.id):
        if request.status != RequestStatus.pending:
            continue
        if to is JobState.failed:
            request_states.transition(
                session, request, RequestStatus.failed, reason=reason, actor=actor
            )
            continue
        # A cancelled job does not answer its requests: they stay pending, on the clock, and
        # the lineage's next request carries them; withdrawing one is its own audited act.
        audit.record(
            session,
            tenant_id=request.tenant_id,
            actor=actor,
            action="forget_request.job_cancelled",
            subject_type="forget_request",
            subject_id=request.id,
            payload={"job_id": job.id, "reason": reason, "status": request.status},
        )
    if job.lineage_id is not None and tasks is not None:
        send_next_in_lineage(session, tasks, job.lineage_id)


def requeue(
    session: Session, job: Job, reason: str, *, actor: str, at: datetime | None = None
) -> str:
    """Put a running job whose worker was lost back in the queue; its requests stay pending.
    Returns the task name, which the caller sends once the transaction commits (``at``)."""
    transition(session, job, JobState.queued, reason, actor=actor)
    job.task_sent_at = at or utcnow()
    return TASK_OF[JobKind(job.kind)]


def send_next_in_lineage(session: Session, tasks: TaskSender, lineage_id: str) -> None:
    """After this transaction commits, send the lineage's oldest queued job."""
    row = repository.next_queued_in_lineage(session, lineage_id)
    if row is not None:
        job_id, queue = row
        after_commit(session, lambda: tasks.send(UNLEARN, job_id, queue))


def create(
    session: Session,
    tasks: TaskSender | None,
    *,
    tenant_id: str,
    kind: str,
    task_name: str,
    queue: str,
    actor: str,
    model_id: str | None = None,
    **fields: Any,
) -> Job:
    """Add a queued job; its task is sent only once the surrounding transaction commits
    (without a sender, e.g. in a worker's tests, the sweeper sends it later)."""
    job = Job(
        tenant_id=tenant_id,
        kind=kind,
        state=JobState.queued,
        model_id=model_id,
        queue=queue,
        task_sent_at=utcnow(),
        request_id=request_id_var.get(),
        **fields,
    )
    session.add(job)
    session.flush()
    session.add(
        JobTransition(
            job_id=job.id,
            from_state=None,
            to_state=JobState.queued,
            at=job.created_at,
            reason="submitted",
        )
    )
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="job.queued",
        subject_type="job",
        subject_id=job.id,
        payload={"kind": kind, "queue": queue},
    )
    job_id = job.id
    if tasks is None:
        job.task_sent_at = None
        return job
    sender = tasks

    def _send() -> None:
        sender.send(task_name, job_id, queue)

    after_commit(session, _send)
    return job


def load(session: Session, tenant_id: str, job_id: str) -> Job:
    job = repository.get(session, tenant_id, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}.")
    return job


def cancel(session: Session, tenant_id: str, job_id: str, actor: str) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker checks within a
    second and leaves no version). A finished job cannot be cancelled."""
    job = repository.get_for_update(session, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(f"No job {job_id}.")
    state = JobState(job.state)
    if state in TERMINAL_STATES:
        raise Conflict(f"Job {job_id} already {state.value}; nothing to cancel.")
    if state is JobState.queued:
        end(session, job, JobState.cancelled, "cancelled before it started", actor=actor)
    elif not job.cancel_requested:
        job.cancel_requested = True
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="job.cancel_requested",
            subject_type="job",
            subject_id=job.id,
        )
    session.flush()
    return job
