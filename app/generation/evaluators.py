"""The classifiers that judge a diffusion model's generated images (``shared/spec/generation.md``).

A forget request on a diffusion model may name a registered classifier of the same dataset; else
the service trains one from the manifest the first time it needs one (a model's validation or a
forget job) and keeps it, by the manifest's digest, for every later job on that manifest. The
cached one learned from every sample of the manifest, so when samples are erased from the
manifest it is retired and its bytes destroyed with theirs (the purge's receipt lists it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts import service as artifacts
from app.audit import service as audit
from app.core.storage import ArtifactStore, StagedBlob
from app.models import CachedEvaluator, Dataset, ModelVersion
from app.models.cached_evaluator import EvaluatorStatus

MEDIA_TYPE = "application/vnd.safetensors"


@dataclass(frozen=True)
class NewEvaluator:
    """An evaluator a worker trained, to be recorded with the job's result."""

    staged: StagedBlob
    architecture: str
    arch_args: dict[str, Any]
    recipe: dict[str, Any]
    normalization: dict[str, Any]
    seed: int
    test_accuracy: float | None
    wall_time_s: float


def describe(ev: CachedEvaluator) -> dict[str, Any]:
    """What a job (and its certificate) says of a cached evaluator."""
    return {
        "source": "cached",
        "id": ev.id,
        "digest": {"sha256": ev.digest},
        "architecture": ev.architecture,
        "args": ev.arch_args,
        "normalization": ev.normalization,
        "train_digest": ev.train_digest,
        "test_accuracy": ev.test_accuracy,
    }


def describe_registered(mv: ModelVersion) -> dict[str, Any]:
    return {
        "source": "registered",
        "id": mv.id,
        "name": mv.name,
        "version": mv.version,
        "digest": {"sha256": mv.weights_digest},
        "architecture": mv.architecture,
        "args": mv.arch_args,
        "normalization": mv.normalization,
        "test_accuracy": (mv.baseline_metrics or {}).get("TA"),
    }


def ready_for(session: Session, ds: Dataset) -> CachedEvaluator | None:
    """The newest ready evaluator trained on the dataset's current manifest."""
    stmt = (
        select(CachedEvaluator)
        .where(
            CachedEvaluator.dataset_id == ds.id,
            CachedEvaluator.train_digest == ds.train_digest,
            CachedEvaluator.status == EvaluatorStatus.ready,
        )
        .order_by(CachedEvaluator.created_at.desc())
    )
    return session.scalars(stmt).first()


def record(
    session: Session,
    store: ArtifactStore,
    ds: Dataset,
    new: NewEvaluator,
    *,
    train_digest: str,
    job_id: str,
    actor: str,
) -> CachedEvaluator | None:
    """Keep a trained evaluator for the manifest it was trained on. None when that manifest is
    no longer the dataset's (samples were erased meanwhile: the evaluator saw them, so it is not
    kept) or when a concurrent job kept one first (that one is reused; ours is dropped)."""
    if ds.train_digest != train_digest:
        return None
    existing = ready_for(session, ds)
    if existing is not None:
        return existing
    artifact = artifacts.ingest(session, store, new.staged, MEDIA_TYPE)
    ev = CachedEvaluator(
        tenant_id=ds.tenant_id,
        dataset_id=ds.id,
        train_digest=train_digest,
        architecture=new.architecture,
        arch_args=new.arch_args,
        recipe=new.recipe,
        normalization=new.normalization,
        seed=new.seed,
        status=EvaluatorStatus.ready,
        digest=artifact.digest,
        size=artifact.size,
        test_accuracy=new.test_accuracy,
        wall_time_s=new.wall_time_s,
        job_id=job_id,
    )
    session.add(ev)
    session.flush()
    audit.record(
        session,
        tenant_id=ds.tenant_id,
        actor=actor,
        action="evaluator.created",
        subject_type="evaluator",
        subject_id=ev.id,
        payload={"dataset_id": ds.id, "train_digest": train_digest, "digest": artifact.digest},
    )
    return ev


def of_manifest(session: Session, dataset_id: str, train_digest: str) -> list[CachedEvaluator]:
    stmt = select(CachedEvaluator).where(
        CachedEvaluator.dataset_id == dataset_id,
        CachedEvaluator.train_digest == train_digest,
        CachedEvaluator.status != EvaluatorStatus.retired,
    )
    return list(session.scalars(stmt))


def retire(session: Session, ev: CachedEvaluator, *, actor: str, reason: str) -> str | None:
    """Retire an evaluator and drop its artifact row; returns the digest whose file the caller
    destroys after this transaction commits, if any."""
    digest, ev.digest = ev.digest, None
    ev.status = EvaluatorStatus.retired
    session.flush()
    audit.record(
        session,
        tenant_id=ev.tenant_id,
        actor=actor,
        action="evaluator.retired",
        subject_type="evaluator",
        subject_id=ev.id,
        payload={"digest": digest, "reason": reason},
    )
    if digest is not None and artifacts.drop_row(session, digest):
        return digest
    return None
