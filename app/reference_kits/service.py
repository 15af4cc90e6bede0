"""Reference kits for the per-example membership audit (``shared/spec/privacy_audit.md``).

A kit belongs to one training manifest (by digest), one architecture and one training recipe:
those of the model it was requested for. It is built once by a worker job and stored by digest;
every later unlearning job whose base matches it audits its forget set with it. A kit is computed
from shadow models trained on the manifest, so it holds information about every sample in it:
when samples are erased from the manifest, the kits of the old manifest are retired and their
bytes destroyed with the rest (the purge lists them on its receipt).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts import service as artifacts
from app.audit import service as audit
from app.core.config import Settings
from app.core.errors import Conflict, NotFound
from app.core.storage import ArtifactStore, StagedBlob
from app.core.tasks import BUILD_REFERENCE_KIT, TaskSender
from app.datasets import repository as datasets
from app.jobs import routing
from app.jobs import service as jobs
from app.model_registry import service as models
from app.models import Job, ModelVersion, ReferenceKit
from app.models.job import JobKind
from app.models.model_version import ModelStatus
from app.models.reference_kit import KitStatus
from app.unlearning.config import TrainingRecipe
from app.unlearning.diffusion.manifest import DIFFUSION_ARCHITECTURE

KIT_MEDIA_TYPE = "application/vnd.lethe.reference-kit+safetensors"


def recipe_of(training: dict[str, Any]) -> dict[str, Any]:
    """The part of a model's training record that shadows must repeat (not its step count)."""
    return TrainingRecipe.model_validate(
        {k: v for k, v in training.items() if k in TrainingRecipe.model_fields}
    ).model_dump(mode="json")


def _matches(kit: ReferenceKit, mv: ModelVersion, k: int | None = None) -> bool:
    return (
        kit.architecture == mv.architecture
        and kit.arch_args == mv.arch_args
        and kit.recipe == recipe_of(mv.training)
        and (k is None or kit.k == k)
    )


def _candidates(session: Session, mv: ModelVersion, train_digest: str) -> list[ReferenceKit]:
    stmt = select(ReferenceKit).where(
        ReferenceKit.dataset_id == mv.dataset_id,
        ReferenceKit.train_digest == train_digest,
        ReferenceKit.status.in_((KitStatus.ready, KitStatus.building)),
    )
    # JSON columns cannot be compared in SQL on every dialect: the few candidates are here.
    return [kit for kit in session.scalars(stmt.order_by(ReferenceKit.created_at.desc()))]


def ready_kit_for(session: Session, mv: ModelVersion) -> ReferenceKit | None:
    """The newest ready kit for ``mv``'s current manifest, architecture and recipe."""
    ds = datasets.get(session, mv.tenant_id, mv.dataset_id)
    if ds is None:
        return None
    for kit in _candidates(session, mv, ds.train_digest):
        if kit.status == KitStatus.ready and _matches(kit, mv):
            return kit
    return None


def request_build(
    session: Session,
    tasks: TaskSender | None,
    *,
    tenant_id: str,
    actor: str,
    model_id: str,
    k: int,
    seed: int,
    settings: Settings,
) -> tuple[ReferenceKit, bool]:
    """Queue a kit for the model's manifest, architecture and recipe; an equal kit that is
    ready or being built is returned instead (True: it already existed)."""
    mv = models.load(session, tenant_id, model_id)
    if mv.architecture == DIFFUSION_ARCHITECTURE:
        raise Conflict(
            "Reference kits audit classifiers' memberships; a diffusion model takes none (its"
            " class forgetting is judged on generated images)."
        )
    if mv.status not in (ModelStatus.ready, ModelStatus.uncertified, ModelStatus.retired):
        raise Conflict(f"Model {model_id} is {mv.status}; a kit follows a checked model.")
    ds = datasets.get(session, tenant_id, mv.dataset_id)
    if ds is None:
        raise NotFound(f"The dataset of model {model_id} is gone.")
    if ds.test_digest is None:
        raise Conflict("The dataset has no test split: the audit calibrates on it.")
    for kit in _candidates(session, mv, ds.train_digest):
        if _matches(kit, mv, k) and kit.seed == seed:
            return kit, True
    kit = ReferenceKit(
        tenant_id=tenant_id,
        dataset_id=ds.id,
        model_id=mv.id,
        train_digest=ds.train_digest,
        architecture=mv.architecture,
        arch_args=mv.arch_args,
        recipe=recipe_of(mv.training),
        k=k,
        seed=seed,
        status=KitStatus.building,
    )
    session.add(kit)
    session.flush()
    job = jobs.create(
        session,
        tasks,
        tenant_id=tenant_id,
        kind=JobKind.build_reference_kit,
        task_name=BUILD_REFERENCE_KIT,
        # K trainings of the model: the same routing as the model's own jobs.
        queue=routing.route(session, settings, tenant_id=tenant_id, model=mv).queue,
        actor=actor,
        model_id=mv.id,
    )
    kit.job_id = job.id
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="reference_kit.requested",
        subject_type="reference_kit",
        subject_id=kit.id,
        payload={"model_id": mv.id, "dataset_id": ds.id, "k": k, "seed": seed, "job_id": job.id},
    )
    return kit, False


def for_job(session: Session, job_id: str) -> ReferenceKit | None:
    return session.scalars(select(ReferenceKit).where(ReferenceKit.job_id == job_id)).first()


def record_built(
    session: Session,
    store: ArtifactStore,
    kit: ReferenceKit,
    staged: StagedBlob,
    *,
    wall_time_s: float,
    optimizer_steps: int,
    actor: str,
) -> None:
    artifact = artifacts.ingest(session, store, staged, KIT_MEDIA_TYPE)
    kit.digest, kit.size = artifact.digest, artifact.size
    kit.wall_time_s, kit.optimizer_steps = wall_time_s, optimizer_steps
    kit.status = KitStatus.ready
    session.flush()
    audit.record(
        session,
        tenant_id=kit.tenant_id,
        actor=actor,
        action="reference_kit.built",
        subject_type="reference_kit",
        subject_id=kit.id,
        payload={"digest": kit.digest, "k": kit.k, "wall_time_s": wall_time_s},
    )


def retire(session: Session, kit: ReferenceKit, *, actor: str, reason: str) -> str | None:
    """Retire a kit and drop its artifact row; returns the digest whose file the caller must
    destroy (after this transaction commits), if any."""
    digest, kit.digest = kit.digest, None
    kit.status = KitStatus.retired
    session.flush()
    audit.record(
        session,
        tenant_id=kit.tenant_id,
        actor=actor,
        action="reference_kit.retired",
        subject_type="reference_kit",
        subject_id=kit.id,
        payload={"digest": digest, "reason": reason},
    )
    if digest is not None and artifacts.drop_row(session, digest):
        return digest
    return None


def kits_of_manifest(session: Session, dataset_id: str, train_digest: str) -> list[ReferenceKit]:
    stmt = select(ReferenceKit).where(
        ReferenceKit.dataset_id == dataset_id,
        ReferenceKit.train_digest == train_digest,
        ReferenceKit.status != KitStatus.retired,
    )
    return list(session.scalars(stmt))


def load(session: Session, tenant_id: str, kit_id: str) -> ReferenceKit:
    kit = session.get(ReferenceKit, kit_id)
    if kit is None or kit.tenant_id != tenant_id:
        raise NotFound(f"No reference kit {kit_id}.")
    return kit


def delete(session: Session, store: ArtifactStore, tenant_id: str, kit_id: str, actor: str) -> None:
    kit = load(session, tenant_id, kit_id)
    if kit.status == KitStatus.building:
        job = session.get(Job, kit.job_id) if kit.job_id else None
        raise Conflict(
            f"Reference kit {kit_id} is being built (job {job.id if job else '?'}); cancel the"
            " job first."
        )
    digest = retire(session, kit, actor=actor, reason="deleted on request")
    if digest is not None:
        artifacts.forget_artifact(session, store, digest)
