"""``lethe.unlearn``: claim the job (in lineage order), run it, record the result."""

from __future__ import annotations

import logging

from app.core.tasks import UNLEARN
from app.models.job import JobState
from worker.celery_app import celery_app
from worker.context import WorkerContext, apply_torch_threads, get_context
from worker.jobs import claim_in_order, job_log_context, retry_while_database_away

log = logging.getLogger(__name__)


@celery_app.task(name=UNLEARN, ignore_result=True)  # type: ignore[untyped-decorator]
def unlearn_task(job_id: str) -> None:
    ctx = get_context()
    apply_torch_threads(ctx.settings)
    with job_log_context(ctx, job_id):
        attempt = claim_in_order(ctx, job_id)
        if attempt is None:
            log.info("job %s is waiting for its lineage or already taken; nothing to do", job_id)
            return
        run_job(ctx, job_id, attempt)


def run_job(ctx: WorkerContext, job_id: str, attempt: int) -> None:
    # torch and the engine load here, in the worker process, never at import.
    from app.jobs.service import JobFailed
    from app.unlearning.diffusion.manifest import DIFFUSION_ARCHITECTURE
    from app.unlearning.engine import Cancelled
    from worker import generation
    from worker.monitor import JobMonitor
    from worker.pipeline import commit, compute, plan

    beat = ctx.settings.heartbeat_interval_seconds
    with JobMonitor(ctx, job_id, attempt, heartbeat_every=beat) as monitor:
        try:
            p = plan(ctx, job_id)
            side: generation.GenerationSide | None = None
            if p.base.architecture == DIFFUSION_ARCHITECTURE:
                weights, result, side = generation.compute(ctx, p, monitor)
            else:
                weights, result = compute(ctx, p, monitor)
            if monitor.lost:
                log.warning("job %s was taken over by another worker; dropping result", job_id)
                return
            # Training is done: a database outage now must not cost the attempt (the weights
            # are in memory, and a retry after a lost COMMIT reply finds the job fenced).
            retry_while_database_away(
                lambda: commit(ctx, p, weights, result, monitor, side),
                what=f"job {job_id}: recording the result",
            )
        except Cancelled:
            if monitor.lost:
                return
            finish(ctx, job_id, attempt, JobState.cancelled, "cancelled on request; no new version")
        except JobFailed as exc:
            finish(ctx, job_id, attempt, JobState.failed, str(exc))
        except Exception as exc:
            log.exception("job %s failed", job_id)
            finish(
                ctx,
                job_id,
                attempt,
                JobState.failed,
                f"internal error ({type(exc).__name__}: {exc}); nothing was changed, and the"
                " request can be submitted again",
            )


def finish(ctx: WorkerContext, job_id: str, attempt: int, state: JobState, reason: str) -> None:
    from worker.pipeline import finish_unsuccessfully

    retry_while_database_away(
        lambda: finish_unsuccessfully(ctx, job_id, attempt, state, reason),
        what=f"job {job_id}: recording its end",
    )
