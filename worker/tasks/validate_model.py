"""``lethe.validate_model``: claim the job row, run the deep check, record the verdict."""

from __future__ import annotations

import logging
from typing import Any

from app.core.db import session_scope
from app.core.tasks import VALIDATE_MODEL
from app.generation import evaluators
from app.jobs.service import transition
from app.model_registry import service as models
from app.model_registry.snapshot import ModelSnapshot
from app.models import Dataset, ModelVersion
from app.models.job import JobState
from app.unlearning.diffusion.manifest import DIFFUSION_ARCHITECTURE
from worker.celery_app import celery_app
from worker.context import WorkerContext, apply_torch_threads, get_context
from worker.jobs import claim, job_log_context, owned_for_update, report_progress, stage_bytes
from worker.monitor import JobMonitor

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
    from app.unlearning.weights import ModelRejected, deep_check
    from worker.data import DatasetRef, load_manifest

    with session_scope(ctx.sessionmaker) as session:
        job = owned_for_update(session, job_id, attempt)
        mv = session.get(ModelVersion, job.model_id) if job and job.model_id else None
        ds = session.get(Dataset, mv.dataset_id) if mv else None
        if mv is None or ds is None:
            return
        spec = ModelSnapshot.of(mv)
        ref = DatasetRef(ds.train_digest, ds.test_digest, ds.num_classes)
        cached_ev = evaluators.ready_for(session, ds)
        cached = evaluators.describe(cached_ev) if cached_ev is not None else None

    samples: bytes | None = None
    trained: Any = None

    baseline: dict[str, Any] | None = None
    try:
        report_progress(ctx, job_id, {"phase": "loading", "step": 0, "total": 3})
        device = default_device()
        train, test = load_manifest(
            ctx.store, ref, num_classes=spec.num_classes, mean=spec.mean, std=spec.std
        )
        report_progress(ctx, job_id, {"phase": "evaluating", "step": 1, "total": 3})
        with ctx.store.local_file(spec.weights_digest) as weights_path:
            if spec.architecture == DIFFUSION_ARCHITECTURE:
                from worker.generation import upload_baseline

                baseline, samples, trained = upload_baseline(
                    ctx, weights_path, spec.args, train, test or train, cached, device
                )
                reason = (
                    "weights load into the UNet2DModel, a few denoising steps are finite,"
                    " generation baseline measured"
                )
            else:
                checked = deep_check(
                    weights_path,
                    spec.architecture,
                    spec.args,
                    spec.num_classes,
                    train,
                    test,
                    device,
                )
                baseline = checked.metrics
                reason = "weights load, forward pass finite, baseline measured"
    except ModelRejected as exc:
        reason = str(exc)
    except Exception as exc:
        log.exception("validation of job %s failed unexpectedly", job_id)
        reason = f"the model could not be checked ({type(exc).__name__}: {exc})"

    with session_scope(ctx.sessionmaker) as session:
        job = owned_for_update(session, job_id, attempt)
        if job is None or job.model_id is None:
            return  # cancelled or taken over meanwhile: leave the row to its new owner
        mv = session.get(ModelVersion, job.model_id)
        assert mv is not None
        staged = [stage_bytes(ctx, b) for b in (samples,) if b is not None]
        new_ev = None
        if trained is not None:
            staged.append(stage_bytes(ctx, trained.weights))
            new_ev = trained.staged_as(staged[-1])
        try:
            models.record_validation(
                session,
                ctx.store,
                mv,
                baseline=baseline,
                reason=reason,
                samples=staged[0] if samples is not None else None,
                evaluator=new_ev,
                train_digest=ref.train_digest,
                actor=f"worker:{ctx.name}",
                job_id=job_id,
            )
        finally:
            for blob in staged:
                blob.discard()
        actor = f"worker:{ctx.name}"
        if baseline is not None:
            job.progress = {"phase": "done", "step": 3, "total": 3}
            transition(session, job, JobState.succeeded, reason, actor=actor)
        else:
            job.error = f"model rejected: {reason}"
            transition(session, job, JobState.failed, job.error, actor=actor)
