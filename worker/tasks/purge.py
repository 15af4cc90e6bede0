"""``lethe.purge``: destroy what a certified forgetting superseded, in idempotent steps (see
:mod:`app.erasure.service`); a worker killed half-way leaves a purge the next attempt finishes."""

from __future__ import annotations

import logging

from app.certificates import service as certificates
from app.core.db import session_scope
from app.core.tasks import PURGE
from app.erasure import service as erasure
from app.jobs import service as jobs
from app.models.job import JobState
from worker.celery_app import celery_app
from worker.context import WorkerContext, get_context
from worker.jobs import claim, job_log_context, owned_for_update
from worker.monitor import JobMonitor

log = logging.getLogger(__name__)


@celery_app.task(name=PURGE, ignore_result=True)  # type: ignore[untyped-decorator]
def purge(job_id: str) -> None:
    ctx = get_context()
    with job_log_context(ctx, job_id):
        attempt = claim(ctx, job_id)
        if attempt is None:
            log.info("job %s is not queued any more; nothing to do", job_id)
            return
        beat = ctx.settings.heartbeat_interval_seconds
        with JobMonitor(ctx, job_id, attempt, heartbeat_every=beat):
            try:
                run_purge(ctx, job_id, attempt)
            except Exception as exc:
                log.exception("purge %s failed", job_id)
                with session_scope(ctx.sessionmaker) as s:
                    job = owned_for_update(s, job_id, attempt)
                    if job is not None:
                        reason = f"purge failed ({type(exc).__name__}: {exc}); it can be re-run"
                        jobs.end(s, job, JobState.failed, reason, actor=f"worker:{ctx.name}")


def run_purge(ctx: WorkerContext, job_id: str, attempt: int | None) -> str | None:
    """Run the purge's steps, each in its own transaction and fenced by the attempt number.
    Returns the receipt's ID (None when nothing was destroyed or the job was taken over)."""
    actor = f"worker:{ctx.name}"
    with session_scope(ctx.sessionmaker) as s:
        job = owned_for_update(s, job_id, attempt)
        if job is None:
            return None
        erasure.purge_versions(s, job)
    for _ in range(3):  # redone only if the dataset moved on meanwhile
        with session_scope(ctx.sessionmaker) as s:
            job = owned_for_update(s, job_id, attempt)
            if job is None:
                return None
            plan = erasure.plan_manifest_erasure(s, job)
        if plan is None:
            break
        staged = erasure.rewrite_manifest(ctx.store, plan)
        try:
            with session_scope(ctx.sessionmaker) as s:
                job = owned_for_update(s, job_id, attempt)
                if job is None:
                    return None
                if erasure.record_manifest_erasure(s, ctx.store, job, plan, staged):
                    break
        finally:
            staged.discard()
    with session_scope(ctx.sessionmaker) as s:
        job = owned_for_update(s, job_id, attempt)
        if job is None:
            return None
        erasure.destroy_pending(s, ctx.store, job)
    with session_scope(ctx.sessionmaker) as s:
        job = owned_for_update(s, job_id, attempt)
        if job is None:
            return None
        return erasure.finish(s, certificates.signer_for(ctx.settings), job, actor=actor)
