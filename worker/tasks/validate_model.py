"""``lethe.validate_model``: claim the job row, run the deep check, record the verdict."""

from __future__ import annotations

import logging

from app.artifacts import service as artifacts
from app.core.db import session_scope
from app.core.tasks import VALIDATE_MODEL
from app.jobs import repository as jobs_repo
from app.jobs.service import transition
from app.models import Dataset, ModelVersion
from app.models.job import JobState
from app.models.model_version import ModelStatus
from worker.celery_app import celery_app
from worker.context import WorkerContext, apply_torch_threads, get_context
from worker.jobs import claim, job_log_context, report_progress
from worker.monitor import JobMonitor
from worker.snapshots import ModelSnapshot

log = logging.getLogger(__name__)


@celery_app.task(name=VALIDATE_MODEL, ignore_result=True)  # type: ignore[untyped-decorator]
def validate_model(job_id: str) -> None:
    ctx = get_context()
    apply_torch_threads(ctx.settings)
    with job_log_context(ctx, job_id):
        attempt = claim(ctx, job_id)
        if attempt is None:
            log.info("job %s is not queued any more; nothing to do", job_id)
            return
        beat = ctx.settings.heartbeat_interval_seconds
        with JobMonitor(ctx, job_id, attempt, heartbeat_every=beat):
            run_validation(ctx, job_id, attempt)


def run_validation(ctx: WorkerContext, job_id: str, attempt: int | None = None) -> None:
    # torch is imported here, inside the worker process, never at module import.
    from app.unlearning.device import default_device
    from worker.data import DatasetRef, load_manifest
    from worker.validation import ModelRejected, deep_check

    with session_scope(ctx.sessionmaker) as session:
        job = jobs_repo.get_for_update(session, job_id)
        assert job is not None and job.model_id is not None
        mv = session.get(ModelVersion, job.model_id)
        ds = session.get(Dataset, mv.dataset_id) if mv else None
        assert mv is not None and ds is not None
        spec = ModelSnapshot.of(mv)
        ref = DatasetRef(ds.train_digest, ds.test_digest, ds.num_classes)

    verdict: str
    baseline = None
    try:
        report_progress(ctx, job_id, {"phase": "loading", "step": 0, "total": 3})
        device = default_device()
        train, test = load_manifest(
            ctx.store, ref, num_classes=spec.num_classes, mean=spec.mean, std=spec.std
        )
        report_progress(ctx, job_id, {"phase": "evaluating", "step": 1, "total": 3})
        with ctx.store.local_file(spec.weights_digest) as weights_path:
            baseline = deep_check(weights_path, spec, train, test, device)
        verdict = "ready"
        reason = "weights load, forward pass finite, baseline measured"
    except ModelRejected as exc:
        verdict, reason = "rejected", str(exc)
    except Exception as exc:
        log.exception("validation of job %s failed unexpectedly", job_id)
        verdict = "rejected"
        reason = f"the model could not be checked ({type(exc).__name__}: {exc})"

    with session_scope(ctx.sessionmaker) as session:
        job = jobs_repo.get_for_update(session, job_id)
        assert job is not None and job.model_id is not None
        if job.state != JobState.running or (attempt is not None and job.attempts != attempt):
            return  # cancelled or taken over meanwhile: leave the row to its new owner
        mv = session.get(ModelVersion, job.model_id)
        assert mv is not None
        if verdict == "ready" and baseline is not None:
            mv.status = ModelStatus.ready
            mv.status_reason = None
            mv.baseline_metrics = baseline.metrics
            job.progress = {"phase": "done", "step": 3, "total": 3}
            transition(session, job, JobState.succeeded, reason, actor=f"worker:{ctx.name}")
        else:
            mv.status = ModelStatus.rejected
            mv.status_reason = reason
            digest = mv.weights_digest
            mv.weights_digest = None
            session.flush()
            # Nothing of a rejected upload is kept, unless another version shares the bytes.
            if digest and not artifacts.is_referenced(session, digest):
                artifacts.forget_artifact(session, ctx.store, digest)
            job.error = f"model rejected: {reason}"
            transition(session, job, JobState.failed, job.error, actor=f"worker:{ctx.name}")
