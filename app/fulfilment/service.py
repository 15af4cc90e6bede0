"""Fulfilling forget requests: what an unlearning job starts from, and recording what it made.

The worker calls :func:`plan` before it runs the engine and :func:`record` after it, each in its
own transaction. The rules live here: which version a job starts from, which samples earlier
requests already removed, how a new version, its metrics, its certificate and its requests'
completion are written together. The worker only runs the engine in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from app.artifacts import service as artifacts
from app.audit import checkpoints
from app.audit import service as audit
from app.certificates import predicate as certificate_predicate
from app.certificates import service as certificates
from app.certificates.policy import Thresholds, Verdict
from app.certificates.signing import Signer
from app.core.config import Settings
from app.core.digests import sample_set_digest
from app.core.storage import ArtifactStore, StagedBlob
from app.core.tasks import TaskSender
from app.erasure import service as erasure
from app.forget_requests import repository
from app.forget_requests import states as request_states
from app.generation import evaluators
from app.jobs import routing
from app.jobs import service as jobs
from app.jobs.service import JobFailed
from app.model_registry.service import SAMPLES_MEDIA
from app.model_registry.snapshot import ModelSnapshot
from app.models import Dataset, Evaluation, ForgetRequest, Job, ModelVersion, Tenant
from app.models.base import utcnow
from app.models.forget_request import RequestStatus
from app.models.job import JobState
from app.models.model_version import ModelStatus
from app.reference_kits import service as reference_kits


@dataclass(frozen=True)
class UnlearnPlan:
    """Everything an unlearning job needs, copied out of one short transaction."""

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
    train_digest: str
    test_digest: str | None
    dataset_classes: int
    request_ids: list[str]
    # What the certificate says of each request.
    requests: list[dict[str, Any]]
    kind: str
    class_ids: list[int] | None
    sample_ids: list[int] | None
    # Samples forgotten earlier in the lineage: they stay out of the remain set.
    exclude_ids: list[int]
    # Classes forgotten whole earlier in the lineage: the model no longer predicts them, so they
    # leave the test set too (else every later request would count them as errors).
    gone_classes: list[int]
    fallback_retrain: bool
    thresholds: Thresholds
    started_at: str
    # The steps from the uploaded original to ``base``, for the certificate.
    chain: list[dict[str, Any]] = field(default_factory=list)
    # The reference kit for the base's manifest and recipe (id, digest, k), when one is ready:
    # then the job audits its forget set per example.
    kit: dict[str, Any] | None = None
    # Diffusion: the classifier that judges generated images (the request's registered one, or
    # the service's cached one for this manifest; None: the job trains one and keeps it), and
    # whether the base already has stored samples (the "before" grids).
    evaluator: dict[str, Any] | None = None
    base_has_samples: bool = False


@dataclass(frozen=True)
class JobResult:
    """What the engine produced, as plain values (the weights travel as a staged blob)."""

    run: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    verdict: Verdict
    forget_ids: list[int]
    method: str
    fallback: bool
    environment: dict[str, Any] = field(default_factory=dict)
    # The per-example membership audit (see the certificate's ``membership_audit``).
    membership: dict[str, Any] | None = None
    # Diffusion: how the generation metrics were measured (evaluator, sampling, images).
    generation: dict[str, Any] | None = None


@dataclass(frozen=True)
class SideArtifacts:
    """Blobs a job recorded besides the weights: generated samples of the new version (and of
    the base when it had none), and an evaluator classifier the job trained."""

    new_samples: StagedBlob | None = None
    base_samples: StagedBlob | None = None
    evaluator: evaluators.NewEvaluator | None = None


def _request_facts(r: ForgetRequest) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind,
        "class_ids": r.class_ids,
        "sample_count": len(r.sample_ids) if r.sample_ids else None,
        "sample_ids_digest": sample_set_digest(r.sample_ids) if r.sample_ids else None,
        "subject_ref": r.subject_ref,
        "received_at": r.created_at.isoformat(),
        "due_at": r.due_at.isoformat(),
    }


def plan(session: Session, settings: Settings, job_id: str) -> UnlearnPlan:
    """Start from the lineage's newest usable version, and exclude every sample forgotten
    earlier in the lineage. Raises :class:`JobFailed` when there is nothing to work on."""
    job = session.get(Job, job_id)
    assert job is not None and job.lineage_id is not None
    members = repository.job_requests(session, job_id)
    if not members:
        raise JobFailed("the job has no forget requests attached")
    allow_uncertified = repository.names_uncertified(session, members)
    head = repository.lineage_head(session, job.lineage_id, allow_uncertified=allow_uncertified)
    if head is None:
        raise JobFailed("the model lineage has no usable version to start from")
    job.model_id = head.id
    ancestry = repository.ancestry(session, head)
    done = repository.requests_applied_in(session, ancestry)
    exclude = sorted(repository.forgotten_ids(done))
    gone = sorted({int(c) for r in done if r.kind == "class" for c in (r.class_ids or [])})
    ds = session.get(Dataset, head.dataset_id)
    tenant = session.get(Tenant, job.tenant_id)
    assert ds is not None and tenant is not None
    return UnlearnPlan(
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
        train_digest=ds.train_digest,
        test_digest=ds.test_digest,
        dataset_classes=ds.num_classes,
        request_ids=[r.id for r in members],
        requests=[_request_facts(r) for r in members],
        kind=members[0].kind,
        class_ids=sorted({int(c) for r in members for c in (r.class_ids or [])}) or None,
        # Samples the base already forgot are not forgotten again (they may be erased).
        sample_ids=sorted({int(i) for r in members for i in (r.sample_ids or [])} - set(exclude))
        or None,
        exclude_ids=exclude,
        gone_classes=gone,
        fallback_retrain=bool((tenant.settings or {}).get("fallback_retrain", False)),
        thresholds=Thresholds.effective(settings, tenant.settings),
        started_at=(job.started_at or utcnow()).isoformat(),
        chain=_chain(session, ancestry, done),
        kit=_kit_of(session, head),
        evaluator=_evaluator_of(session, members[0], ds),
        base_has_samples=head.samples_digest is not None,
    )


def _evaluator_of(session: Session, request: ForgetRequest, ds: Dataset) -> dict[str, Any] | None:
    if request.evaluator_model_id is not None:
        mv = session.get(ModelVersion, request.evaluator_model_id)
        if mv is None or mv.weights_digest is None or mv.status != ModelStatus.ready:
            raise JobFailed(
                f"the evaluator classifier {request.evaluator_model_id} the request names is no"
                " longer ready (retired or purged since); submit the request again without it"
                " or with another"
            )
        return evaluators.describe_registered(mv)
    cached = evaluators.ready_for(session, ds)
    return evaluators.describe(cached) if cached is not None else None


def _kit_of(session: Session, head: ModelVersion) -> dict[str, Any] | None:
    kit = reference_kits.ready_kit_for(session, head)
    if kit is None or kit.digest is None:
        return None
    return {"id": kit.id, "digest": kit.digest, "k": kit.k}


def _chain(
    session: Session, ancestry: list[ModelVersion], applied: list[ForgetRequest]
) -> list[dict[str, Any]]:
    """Each step from the uploaded original to the job's base: what a certificate discloses."""
    verdicts = certificates.verdicts_of(session, [v.id for v in ancestry])
    by_result: dict[str, list[str]] = {}
    for r in applied:
        by_result.setdefault(str(r.result_model_id), []).append(r.id)
    return [
        {
            "version": v.version,
            "id": v.id,
            "digest": {"sha256": v.weights_digest or v.destroyed_digest},
            "request_ids": by_result.get(v.id, []),
            # The original is certified by its upload check; each later step by its own gate.
            "verdict": "uploaded" if v.parent_id is None else verdicts.get(v.id, "none"),
            "status": v.status,
        }
        for v in ancestry
    ]


def record(
    session: Session,
    settings: Settings,
    store: ArtifactStore,
    signer: Signer,
    job: Job,
    p: UnlearnPlan,
    result: JobResult,
    weights: StagedBlob,
    *,
    actor: str,
    tasks: TaskSender | None,
    side: SideArtifacts | None = None,
) -> ModelVersion:
    """Commit the job's result with the caller's transaction: the new version (stored by
    digest), its evaluations, its certificate, the requests' completion and the audit events.
    ``job`` is the caller's locked row; the version is ``uncertified`` when the verdict failed."""
    artifact = artifacts.ingest(session, store, weights, "application/vnd.safetensors")
    version = max(v.version for v in repository.lineage_versions(session, p.lineage_id)) + 1
    cumulative = sorted(set(p.exclude_ids) | set(result.forget_ids))
    passed = result.verdict.passed
    status = ModelStatus.ready if passed else ModelStatus.uncertified
    new = ModelVersion(
        tenant_id=p.tenant_id,
        lineage_id=p.lineage_id,
        parent_id=p.base.id,
        version=version,
        name=p.base_name,
        status=status,
        status_reason=None if passed else "; ".join(result.verdict.reasons),
        architecture=p.base.architecture,
        arch_args=p.base.args,
        input_shape=p.base.input_shape,
        normalization={"mean": p.base.mean, "std": p.base.std},
        num_classes=p.base.num_classes,
        training=p.base.training,
        dataset_id=p.dataset_id,
        weights_digest=artifact.digest,
        weights_size=artifact.size,
        baseline_metrics=result.metrics["unlearned"],
        produced_by_request_id=p.request_ids[0],
        produced_by_job_id=p.job_id,
        forgotten_count=len(cumulative),
        forgotten_digest=sample_set_digest(cumulative),
    )
    session.add(new)
    session.flush()
    generation = _record_side(session, store, p, job, result, side, new, actor)
    for subject, values in result.metrics.items():
        session.add(
            Evaluation(
                tenant_id=p.tenant_id,
                job_id=p.job_id,
                model_id={"original": p.base.id, "unlearned": new.id}.get(subject),
                subject=subject,
                metrics=values,
            )
        )
    now = utcnow()
    predicate = certificate_predicate.build(
        model={"id": new.id, "version": version, "lineage_id": p.lineage_id},
        parent=p.base,
        parent_version=p.base_version,
        dataset={"id": p.dataset_id, "train_digest": p.train_digest},
        this_job_ids=result.forget_ids,
        cumulative_ids=cumulative,
        class_ids=p.class_ids,
        requests=p.requests,
        job={
            "id": p.job_id,
            "started_at": p.started_at,
            "finished_at": now.isoformat(),
            "attempt": p.attempt,
        },
        method={
            "name": result.method,
            "requested": p.method,
            "fallback": result.fallback,
            "config": result.run.get("config"),
            "seed": p.seed,
        },
        run=result.run,
        environment=result.environment,
        metrics=result.metrics,
        thresholds=p.thresholds,
        verdict=result.verdict,
        membership=result.membership,
        generation=generation,
        chain=[
            *p.chain,
            {
                "version": version,
                "id": new.id,
                "digest": {"sha256": artifact.digest},
                "request_ids": p.request_ids,
                "verdict": result.verdict.label,
                "status": status,
            },
        ],
        issued_at=now.isoformat(),
    )
    # A version that failed the gate honours nothing: its requests stay open, to be retried.
    honoured = RequestStatus.completed if passed else RequestStatus.uncertified
    for r in repository.job_requests(session, p.job_id):
        wanted = set(r.sample_ids or [])
        r.resolved_sample_ids = (
            [i for i in result.forget_ids if i in wanted] if r.sample_ids else result.forget_ids
        )
        request_states.transition(
            session,
            r,
            honoured,
            reason=f"version {version} ({status}); verdict {result.verdict.label}",
            actor=actor,
            result_model_id=new.id,
        )
    job.result_model_id = new.id
    job.outcome = {
        "verdict": result.verdict.label,
        "reasons": result.verdict.reasons,
        "method": result.method,
        "fallback": result.fallback,
        "new_version": version,
        "metrics": result.metrics,
        # Which samples each row of `metrics` covers (the same for every row).
        "evaluation_samples": result.run.get("evaluation_samples"),
    }
    if generation is not None:
        job.outcome = {**job.outcome, "generation": generation}
    job.progress = {**(job.progress or {}), "phase": "done", "step": 1, "total": 1}
    if passed:
        # Everything else in the lineage holds what this version forgot: retire it, and purge
        # it now or after the tenant's retention window.
        purge_job_id = erasure.retire_superseded(
            session,
            settings,
            tasks,
            new,
            actor=actor,
            queue=routing.service_only(settings.job_queue),
        )
        job.outcome = {**job.outcome, "purge_job_id": purge_job_id}
    audit.record(
        session,
        tenant_id=p.tenant_id,
        actor=actor,
        action="model.created",
        subject_type="model",
        subject_id=new.id,
        payload={
            "parent": p.base.id,
            "digest": artifact.digest,
            "job_id": p.job_id,
            "verdict": result.verdict.label,
        },
    )
    jobs.transition(
        session,
        job,
        JobState.succeeded,
        f"version {version} ({status}); verdict {result.verdict.label}",
        actor=actor,
    )
    # Last, after every audit event of this transaction: the certificate embeds a signed
    # checkpoint of the audit chain's head, so the history it refers to is pinned with it.
    predicate["audit_checkpoint"] = checkpoints.issue(session, signer, p.tenant_id)
    certificates.issue(
        session,
        signer,
        tenant_id=p.tenant_id,
        model_id=new.id,
        model_name=f"{p.base_name}-v{version}.safetensors",
        model_digest=artifact.digest,
        job_id=p.job_id,
        verdict=result.verdict.label,
        predicate=predicate,
    )
    if tasks is not None:
        jobs.send_next_in_lineage(session, tasks, p.lineage_id)
    return new


def _record_side(
    session: Session,
    store: ArtifactStore,
    p: UnlearnPlan,
    job: Job,
    result: JobResult,
    side: SideArtifacts | None,
    new: ModelVersion,
    actor: str,
) -> dict[str, Any] | None:
    """Store a diffusion job's generated samples and trained evaluator with its version; returns
    the generation facts for the certificate and the job's result (None for a classifier)."""
    if result.generation is None:
        return None
    generation = dict(result.generation)
    side = side or SideArtifacts()
    if side.new_samples is not None:
        new.samples_digest = artifacts.ingest(
            session, store, side.new_samples, SAMPLES_MEDIA
        ).digest
    base = session.get(ModelVersion, p.base.id)
    if side.base_samples is not None and base is not None and base.samples_digest is None:
        base.samples_digest = artifacts.ingest(
            session, store, side.base_samples, SAMPLES_MEDIA
        ).digest
    if side.evaluator is not None:
        ds = session.get(Dataset, p.dataset_id)
        assert ds is not None
        kept = evaluators.record(
            session,
            store,
            ds,
            side.evaluator,
            train_digest=p.train_digest,
            job_id=p.job_id,
            actor=actor,
        )
        generation["evaluator"] = {
            **generation.get("evaluator", {}),
            "kept_as": kept.id if kept is not None else None,
        }
    session.flush()
    classes = p.class_ids or []
    # Every class (one row each) before and after, and the forgotten classes on their own.
    generation["grids"] = {
        "before": f"/v1/models/{p.base.id}/samples",
        "after": f"/v1/models/{new.id}/samples",
        "forgotten": {
            str(c): {
                "before": f"/v1/models/{p.base.id}/samples?class={c}",
                "after": f"/v1/models/{new.id}/samples?class={c}",
            }
            for c in classes
        },
    }
    return generation
