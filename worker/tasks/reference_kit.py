"""``lethe.build_reference_kit``: train the kit's shadow models and store their table."""

from __future__ import annotations

import logging

from app.core.db import session_scope
from app.core.tasks import BUILD_REFERENCE_KIT
from app.jobs import service as jobs
from app.jobs.service import JobFailed
from app.models import Dataset, ModelVersion
from app.models.job import JobState
from app.models.reference_kit import KitStatus
from app.reference_kits import service as kits
from worker.celery_app import celery_app
from worker.context import WorkerContext, apply_torch_threads, get_context
from worker.jobs import claim, job_log_context, owned_for_update
from worker.monitor import JobMonitor

log = logging.getLogger(__name__)


@celery_app.task(name=BUILD_REFERENCE_KIT, ignore_result=True)  # type: ignore[untyped-decorator]
def build_reference_kit(job_id: str) -> None:
    ctx = get_context()
    apply_torch_threads(ctx.settings)
    with job_log_context(ctx, job_id):
        attempt = claim(ctx, job_id)
        if attempt is None:
            log.info("job %s is not queued any more; nothing to do", job_id)
            return
        beat = ctx.settings.heartbeat_interval_seconds
        with JobMonitor(ctx, job_id, attempt, heartbeat_every=beat) as monitor:
            run_build(ctx, job_id, attempt, monitor)


def run_build(ctx: WorkerContext, job_id: str, attempt: int | None, monitor: JobMonitor) -> None:
    # torch and the engine load here, in the worker process, never at import.
    from app.unlearning.architectures import build_model
    from app.unlearning.config import TrainingRecipe
    from app.unlearning.device import default_device
    from app.unlearning.engine import Cancelled
    from app.unlearning.reference_kit import build_reference_kit as build
    from worker.data import DatasetRef, load_splits

    actor = f"worker:{ctx.name}"
    try:
        with session_scope(ctx.sessionmaker) as s:
            job = owned_for_update(s, job_id, attempt)
            kit = kits.for_job(s, job_id) if job else None
            if job is None or kit is None:
                return
            mv = s.get(ModelVersion, kit.model_id)
            ds = s.get(Dataset, kit.dataset_id)
            assert mv is not None and ds is not None
            if ds.train_digest != kit.train_digest:
                raise JobFailed("the dataset's manifest changed since the kit was requested")
            # The model's spec only: its weights are not needed (and may be purged already).
            architecture, args = mv.architecture, dict(mv.arch_args)
            num_classes = mv.num_classes
            mean = [float(x) for x in mv.normalization["mean"]]
            std = [float(x) for x in mv.normalization["std"]]
            ref = DatasetRef(ds.train_digest, ds.test_digest, ds.num_classes)
            kit_id, k, seed, recipe = kit.id, kit.k, kit.seed, dict(kit.recipe)
        splits = load_splits(ctx.store, ref, num_classes=num_classes, mean=mean, std=std)
        train, test = splits.train, splits.test
        if test is None:
            raise JobFailed("the dataset has no test split: the audit calibrates on it")
        extra = {"test": test}
        if splits.validation is not None:
            # SFR-on's kit targets measure the model's shift on the validation split, kept
            # apart from the test split that the audit calibrates on.
            extra["validation"] = splits.validation
        table = build(
            lambda: build_model(architecture, args),
            train,
            extra,
            TrainingRecipe.model_validate(recipe),
            k=k,
            seed=seed,
            device=default_device(),
            progress=monitor.progress,
            should_stop=monitor.should_stop,
            meta={"kit_id": kit_id, "train_digest": ref.train_digest},
            # A manifest's test samples are numbered by position in their own file: their IDs
            # are another namespace than the training samples', not a subset of them.
            disjoint_ids=False,
        )
        staged = ctx.store.stage()
        try:
            staged.write(table.to_safetensors_bytes())
            staged.finish()
            with session_scope(ctx.sessionmaker) as s:
                job = owned_for_update(s, job_id, attempt)
                kit = kits.for_job(s, job_id) if job else None
                if job is None or kit is None:
                    return
                kits.record_built(
                    s,
                    ctx.store,
                    kit,
                    staged,
                    wall_time_s=table.wall_time_s,
                    optimizer_steps=table.optimizer_steps,
                    actor=actor,
                )
                job.progress = {"phase": "done", "step": 1, "total": 1}
                jobs.transition(s, job, JobState.succeeded, f"kit of {k} shadows", actor=actor)
        finally:
            staged.discard()
    except (JobFailed, Cancelled, Exception) as exc:
        cancelled = isinstance(exc, Cancelled)
        if not isinstance(exc, JobFailed | Cancelled):
            log.exception("reference kit job %s failed", job_id)
        with session_scope(ctx.sessionmaker) as s:
            job = owned_for_update(s, job_id, attempt)
            kit = kits.for_job(s, job_id) if job else None
            if job is None:
                return
            if kit is not None:
                kit.status = KitStatus.failed
            state = JobState.cancelled if cancelled else JobState.failed
            jobs.end(s, job, state, str(exc) or type(exc).__name__, actor=actor)
