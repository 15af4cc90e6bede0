"""One unlearning job, start to finish: load, evaluate the original, (optionally) retrain a
reference, unlearn, judge against the policy, and commit the new version, its metrics and its
certificate in one transaction. Failures and cancellations leave no version behind."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import save
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import __version__
from app.artifacts import service as artifacts
from app.audit import service as audit
from app.certificates import service as certificates
from app.certificates.policy import Thresholds, Verdict, judge
from app.core.db import after_commit, session_scope
from app.core.tasks import UNLEARN
from app.datasets.manifest import sample_ids_digest
from app.forget_requests import repository as requests_repo
from app.jobs import repository as jobs_repo
from app.jobs.service import transition
from app.models import Dataset, Evaluation, Job, ModelVersion, Tenant
from app.models.base import utcnow
from app.models.forget_request import RequestStatus
from app.models.job import JobKind, JobState
from app.models.model_version import ModelStatus
from app.unlearning.config import (
    OriginalTraining,
    RetrainConfig,
    TrainingRecipe,
    parse_method_config,
)
from app.unlearning.data import build_split
from app.unlearning.device import default_device, library_versions
from app.unlearning.engine import Cancelled, UnlearnResult, evaluate, unlearn
from worker.context import WorkerContext
from worker.data import DatasetRef, load_manifest
from worker.monitor import JobMonitor
from worker.snapshots import ModelSnapshot
from worker.validation import ModelRejected, build_and_load

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """A failure the user can act on; the message says what to do."""


@dataclass
class JobPlan:
    job_id: str
    tenant_id: str
    lineage_id: str
    attempt: int
    method: str
    method_config: dict[str, Any]
    reference_eval: bool
    seed: int
    base: ModelSnapshot
    base_version: int
    base_name: str
    dataset_id: str
    dataset: DatasetRef
    dataset_train_digest: str
    request_ids: list[str]
    requests: list[dict[str, Any]]
    kind: str
    class_ids: list[int] | None
    sample_ids: list[int] | None
    exclude_ids: list[int]
    # Classes forgotten whole earlier in the lineage: the model no longer predicts them, so they
    # leave the test set too (else every later request would count them as errors).
    gone_classes: list[int]
    fallback_retrain: bool
    thresholds: Thresholds
    started_at: str
    extra: dict[str, Any] = field(default_factory=dict)


def plan(ctx: WorkerContext, job_id: str) -> JobPlan:
    """Read everything the job needs in one short transaction; start from the lineage's newest
    usable version, and exclude every sample forgotten earlier in the lineage."""
    try:
        certificates.signer_for(ctx.settings)
    except (OSError, ValueError) as exc:
        # Checked first: no point in unlearning what cannot be certified.
        raise JobFailed(f"the worker cannot sign certificates: {exc}") from None
    with session_scope(ctx.sessionmaker) as s:
        job = s.get(Job, job_id)
        assert job is not None and job.lineage_id is not None
        members = [r for r in requests_repo.job_requests(s, job_id)]
        if not members:
            raise JobFailed("the job has no forget requests attached")
        head = requests_repo.lineage_head(s, job.lineage_id)
        if head is None:
            raise JobFailed("the model lineage has no usable version to start from")
        job.model_id = head.id
        done = requests_repo.lineage_requests(s, job.lineage_id, RequestStatus.completed)
        exclude = sorted({int(i) for r in done for i in (r.resolved_sample_ids or [])})
        gone = sorted({int(c) for r in done if r.kind == "class" for c in (r.class_ids or [])})
        ds = s.get(Dataset, head.dataset_id)
        tenant = s.get(Tenant, job.tenant_id)
        assert ds is not None and tenant is not None
        kind = members[0].kind
        class_ids = sorted({int(c) for r in members for c in (r.class_ids or [])}) or None
        sample_ids = sorted({int(i) for r in members for i in (r.sample_ids or [])}) or None
        settings = ctx.settings
        overrides = dict((tenant.settings or {}).get("policy") or {})
        thresholds = Thresholds(
            class_fa_max=float(overrides.get("class_fa_max", settings.policy_class_fa_max)),
            class_ta_drop_max=float(
                overrides.get("class_ta_drop_max", settings.policy_class_ta_drop_max)
            ),
            sample_fa_gap_max=float(
                overrides.get("sample_fa_gap_max", settings.policy_sample_fa_gap_max)
            ),
            sample_ra_drop_max=float(
                overrides.get("sample_ra_drop_max", settings.policy_sample_ra_drop_max)
            ),
        )
        return JobPlan(
            job_id=job.id,
            tenant_id=job.tenant_id,
            lineage_id=job.lineage_id,
            attempt=job.attempts,
            method=str(job.method),
            method_config=dict(job.method_config),
            reference_eval=job.reference_eval,
            seed=job.seed,
            base=ModelSnapshot.of(head),
            base_version=head.version,
            base_name=head.name,
            dataset_id=ds.id,
            dataset=DatasetRef(ds.train_digest, ds.test_digest, ds.num_classes),
            dataset_train_digest=ds.train_digest,
            request_ids=[r.id for r in members],
            requests=[
                {
                    "id": r.id,
                    "kind": r.kind,
                    "class_ids": r.class_ids,
                    "sample_count": len(r.sample_ids) if r.sample_ids else None,
                    "sample_ids_digest": (
                        sample_ids_digest(np.asarray(r.sample_ids, dtype=np.int64))
                        if r.sample_ids
                        else None
                    ),
                    "subject_ref": r.subject_ref,
                    "received_at": r.created_at.isoformat(),
                    "due_at": r.due_at.isoformat(),
                }
                for r in members
            ],
            kind=kind,
            class_ids=class_ids,
            sample_ids=sample_ids,
            exclude_ids=exclude,
            gone_classes=gone,
            fallback_retrain=bool((tenant.settings or {}).get("fallback_retrain", False)),
            thresholds=thresholds,
            started_at=(job.started_at or utcnow()).isoformat(),
        )


def original_training(training: dict[str, Any], n_samples: int) -> OriginalTraining:
    recipe = TrainingRecipe.model_validate(
        {k: v for k, v in training.items() if k in TrainingRecipe.model_fields}
    )
    steps = training.get("optimizer_steps") or recipe.epochs * -(-n_samples // recipe.batch_size)
    return OriginalTraining(recipe=recipe, optimizer_steps=int(steps))


@dataclass
class Outcome:
    state_dict: dict[str, torch.Tensor]
    record: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    verdict: Verdict
    forget_ids: list[int]
    method: str
    fallback: bool


def compute(ctx: WorkerContext, p: JobPlan, monitor: JobMonitor) -> Outcome:
    device = default_device()
    monitor.progress({"phase": "loading", "step": 0, "total": 1})
    train, test = load_manifest(
        ctx.store, p.dataset, num_classes=p.base.num_classes, mean=p.base.mean, std=p.base.std
    )
    if test is None:
        raise JobFailed("the dataset has no test split; register it with one to unlearn")
    if p.gone_classes:
        test = test.take(~np.isin(test.labels, np.asarray(p.gone_classes, dtype=np.int64)))
    try:
        split = build_split(
            train,
            test,
            forget_ids=p.sample_ids,
            forget_classes=p.class_ids,
            exclude_ids=p.exclude_ids,
            seed=p.seed,
        )
    except ValueError as exc:
        raise JobFailed(f"cannot build the forget set: {exc}") from None
    try:
        with ctx.store.local_file(p.base.weights_digest) as path:
            model = build_and_load(p.base.architecture, p.base.args, path)
    except ModelRejected as exc:
        raise JobFailed(f"the starting version cannot be loaded: {exc}") from None
    original = original_training(p.base.training, len(train))
    monitor.progress({"phase": "loading", "step": 1, "total": 1})

    monitor.progress({"phase": "evaluating", "step": 0, "total": 1})
    original_metrics, _ = evaluate(model, split, device=device, seed=p.seed)
    if monitor.should_stop():
        raise Cancelled("stopped on request")

    def retrain(label: str) -> UnlearnResult:
        view = monitor.prefixed(label)
        return unlearn(
            model,
            split,
            RetrainConfig(),
            original=original,
            device=device,
            seed=p.seed,
            progress=view.progress,
            should_stop=view.should_stop,
        )

    reference = retrain("reference") if p.reference_eval else None
    config = parse_method_config(p.method, p.method_config)
    result = unlearn(
        model,
        split,
        config,
        original=original,
        device=device,
        seed=p.seed,
        progress=monitor.progress,
        should_stop=monitor.should_stop,
        reference=reference.as_reference() if reference else None,
    )
    verdict = judge(
        p.kind,
        original_metrics,
        result.metrics,
        p.thresholds,
        reference.metrics if reference else None,
    )
    final, method, fallback = result, p.method, False
    if not verdict.passed and p.fallback_retrain and p.method != "retrain":
        # The exact answer: train from scratch on the remain set, and certify that instead.
        log.info("job %s failed the policy gate (%s); retraining", p.job_id, verdict.reasons)
        if reference is None:
            reference = retrain("fallback")
        final, method, fallback = reference, "retrain", True
        verdict = Verdict(
            True,
            [],
            {
                "exact": "retrained from scratch on the remain set after the approximate"
                f" method failed: {'; '.join(verdict.reasons)}"
            },
        )
    metrics = {"original": original_metrics, "unlearned": final.metrics}
    if reference is not None:
        metrics["retrained"] = reference.metrics
    return Outcome(
        state_dict=final.state_dict,
        record=final.record,
        metrics=metrics,
        verdict=verdict,
        forget_ids=[int(i) for i in split.forget.sample_ids],
        method=method,
        fallback=fallback,
    )


def commit(ctx: WorkerContext, p: JobPlan, out: Outcome, monitor: JobMonitor) -> str | None:
    """Store the weights and record everything in one transaction. Returns the new version's ID,
    or None when this worker no longer owns the job."""
    monitor.progress({"phase": "saving", "step": 0, "total": 1})
    buf = io.BytesIO(save(out.state_dict))
    staged = ctx.store.stage()
    try:
        while chunk := buf.read(1024 * 1024):
            staged.write(chunk)
        staged.finish()
        with session_scope(ctx.sessionmaker) as s:
            job = jobs_repo.get_for_update(s, p.job_id)
            if job is None or job.state != JobState.running or job.attempts != p.attempt:
                return None
            if job.cancel_requested:
                raise Cancelled("stopped on request")
            artifact = artifacts.ingest(s, ctx.store, staged, "application/vnd.safetensors")
            version = max(v.version for v in requests_repo.lineage_versions(s, p.lineage_id)) + 1
            cumulative = np.asarray(sorted(set(p.exclude_ids) | set(out.forget_ids)), np.int64)
            status = ModelStatus.ready if out.verdict.passed else ModelStatus.uncertified
            new = ModelVersion(
                tenant_id=p.tenant_id,
                lineage_id=p.lineage_id,
                parent_id=p.base.id,
                version=version,
                name=p.base_name,
                status=status,
                status_reason=None if out.verdict.passed else "; ".join(out.verdict.reasons),
                architecture=p.base.architecture,
                arch_args=p.base.args,
                input_shape=p.base.input_shape,
                normalization={"mean": p.base.mean, "std": p.base.std},
                num_classes=p.base.num_classes,
                training=p.base.training,
                dataset_id=p.dataset_id,
                weights_digest=artifact.digest,
                weights_size=artifact.size,
                baseline_metrics=out.metrics["unlearned"],
                produced_by_request_id=p.request_ids[0],
                produced_by_job_id=p.job_id,
                forgotten_count=int(cumulative.size),
                forgotten_digest=sample_ids_digest(cumulative),
            )
            s.add(new)
            s.flush()
            for subject, values in out.metrics.items():
                s.add(
                    Evaluation(
                        tenant_id=p.tenant_id,
                        job_id=p.job_id,
                        model_id={"original": p.base.id, "unlearned": new.id}.get(subject),
                        subject=subject,
                        metrics=values,
                    )
                )
            now = utcnow()
            this = np.asarray(sorted(out.forget_ids), np.int64)
            predicate = {
                "model": {"id": new.id, "version": version, "lineage_id": p.lineage_id},
                "parent": {
                    "id": p.base.id,
                    "version": p.base_version,
                    "digest": {"sha256": p.base.weights_digest},
                },
                "dataset": {"id": p.dataset_id, "train_digest": p.dataset_train_digest},
                "forgotten": {
                    "this_job": {
                        "count": int(this.size),
                        "sample_ids_sha256": sample_ids_digest(this),
                        "classes": p.class_ids,
                    },
                    "cumulative": {
                        "count": int(cumulative.size),
                        "sample_ids_sha256": sample_ids_digest(cumulative),
                    },
                    "digest_method": "sha256 over the sorted sample IDs as little-endian int64",
                },
                "requests": p.requests,
                "job": {
                    "id": p.job_id,
                    "started_at": p.started_at,
                    "finished_at": now.isoformat(),
                    "attempt": p.attempt,
                },
                "method": {
                    "name": out.method,
                    "requested": p.method,
                    "fallback": out.fallback,
                    "config": out.record.get("config"),
                    "seed": p.seed,
                },
                "run": {
                    k: out.record.get(k)
                    for k in (
                        "steps",
                        "mask_density",
                        "wall_time_s",
                        "forward_passes",
                        "backward_passes",
                        "optimizer_steps",
                    )
                },
                "environment": {
                    "code_version": __version__,
                    "libraries": library_versions(),
                    "device": out.record.get("device"),
                },
                "metrics": out.metrics,
                "policy": {
                    "thresholds": p.thresholds.as_dict(),
                    "verdict": out.verdict.label,
                    "reasons": out.verdict.reasons,
                    "checks": out.verdict.checks,
                },
                "issued_at": now.isoformat(),
            }
            certificates.issue(
                s,
                certificates.signer_for(ctx.settings),
                tenant_id=p.tenant_id,
                model_id=new.id,
                model_name=f"{p.base_name}-v{version}.safetensors",
                model_digest=artifact.digest,
                job_id=p.job_id,
                verdict=out.verdict.label,
                predicate=predicate,
            )
            for r in requests_repo.job_requests(s, p.job_id):
                r.status = RequestStatus.completed
                r.completed_at = now
                r.result_model_id = new.id
                wanted = set(r.sample_ids or [])
                r.resolved_sample_ids = (
                    [i for i in out.forget_ids if i in wanted] if r.sample_ids else out.forget_ids
                )
            job.result_model_id = new.id
            job.outcome = {
                "verdict": out.verdict.label,
                "reasons": out.verdict.reasons,
                "method": out.method,
                "fallback": out.fallback,
                "new_version": version,
                "metrics": out.metrics,
            }
            job.progress = {**(job.progress or {}), "phase": "done", "step": 1, "total": 1}
            audit.record(
                s,
                tenant_id=p.tenant_id,
                actor=f"worker:{ctx.name}",
                action="model.created",
                subject_type="model",
                subject_id=new.id,
                payload={
                    "parent": p.base.id,
                    "digest": artifact.digest,
                    "job_id": p.job_id,
                    "verdict": out.verdict.label,
                },
            )
            transition(
                s,
                job,
                JobState.succeeded,
                f"version {version} ({status}); verdict {out.verdict.label}",
                actor=f"worker:{ctx.name}",
            )
            schedule_next(ctx, s, p.lineage_id)
            return new.id
    finally:
        staged.discard()


def schedule_next(ctx: WorkerContext, s: Session, lineage_id: str) -> None:
    """After this transaction commits, send the lineage's next queued job (it waited for us)."""
    row = s.execute(
        select(Job.id, Job.queue)
        .where(
            Job.lineage_id == lineage_id,
            Job.kind == JobKind.unlearn,
            Job.state == JobState.queued,
        )
        .order_by(Job.created_at)
        .limit(1)
    ).first()
    if row is None or ctx.tasks is None:
        return
    job_id, queue, tasks = str(row[0]), str(row[1]), ctx.tasks
    after_commit(s, lambda: tasks.send(UNLEARN, job_id, queue))


def finish_unsuccessfully(
    ctx: WorkerContext, p_job_id: str, attempt: int, state: JobState, reason: str
) -> None:
    with session_scope(ctx.sessionmaker) as s:
        job = jobs_repo.get_for_update(s, p_job_id)
        if job is None or job.state != JobState.running or job.attempts != attempt:
            return
        status = RequestStatus.cancelled if state is JobState.cancelled else RequestStatus.failed
        for r in requests_repo.job_requests(s, job.id):
            r.status = status
            r.completed_at = utcnow()
        if state is JobState.failed:
            job.error = reason
        transition(s, job, state, reason, actor=f"worker:{ctx.name}")
        if job.lineage_id:
            schedule_next(ctx, s, job.lineage_id)
