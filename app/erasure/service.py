"""Erasure: once a version that forgot samples is certified, what still holds those samples is
destroyed, and a signed receipt says what, by digest, and when.

- Every other version of the lineage is *retired* at certification (they all hold samples the
  new version forgot): downloads answer 410 Gone at once, and the bytes are destroyed at
  ``purge_due_at``, after the tenant's retention window (0 days by default).
- A dataset may back several lineages: a sample leaves the stored manifest only when every
  lineage trained on the dataset has a certified version without it. The service then writes a
  new manifest (a dataset version: erased IDs recorded, counts and digests updated) and
  destroys the old bytes once nothing references them.
- The purge is a job (``JobKind.purge``) made of idempotent steps, each in its own transaction,
  so a worker killed half-way leaves a purge that the next attempt finishes once: what a step
  destroyed is written to the job row with the change, and files are deleted only after their
  rows are gone (a file whose row is gone is deleted again on resume).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.artifacts import service as artifacts
from app.audit import checkpoints
from app.audit import service as audit
from app.certificates import service as certificates
from app.certificates.signing import Signer, sign_erasure_receipt
from app.core.config import Settings
from app.core.digests import SAMPLE_SET_DIGEST_METHOD, sample_set_digest
from app.core.storage import ArtifactStore, StagedBlob
from app.core.tasks import PURGE, TaskSender
from app.datasets import manifest
from app.forget_requests import repository as lineages
from app.generation import evaluators
from app.jobs import service as jobs
from app.models import Dataset, DatasetErasure, ErasureReceipt, Job, ModelVersion, Tenant
from app.models.base import utcnow
from app.models.job import JobKind, JobState
from app.models.model_version import ModelStatus
from app.reference_kits import service as reference_kits

SAFETENSORS = "application/vnd.safetensors"
# A purge that failed is queued again after this long (the versions stay retired meanwhile).
PURGE_RETRY_AFTER = timedelta(minutes=10)
# Versions that may still hold data and whose bytes are still served or kept.
_LIVE = (ModelStatus.ready, ModelStatus.uncertified, ModelStatus.validating)


def retention_days(settings: Settings, tenant: Tenant) -> float:
    own = (tenant.settings or {}).get("retention_days")
    return float(settings.retention_days if own is None else own)


def retire_superseded(
    session: Session,
    settings: Settings,
    tasks: TaskSender | None,
    certified: ModelVersion,
    *,
    actor: str,
    queue: str,
) -> str | None:
    """Retire every other version of ``certified``'s lineage (they hold what it forgot), and
    queue the purge when the retention window is zero. Returns the purge job's ID, if one."""
    tenant = session.get(Tenant, certified.tenant_id)
    assert tenant is not None
    now = utcnow()
    days = retention_days(settings, tenant)
    due = now + timedelta(days=days)
    superseded = session.scalars(
        select(ModelVersion).where(
            ModelVersion.lineage_id == certified.lineage_id,
            ModelVersion.id != certified.id,
            ModelVersion.status.in_(_LIVE),
        )
    )
    for v in superseded:
        v.status, v.retired_at, v.purge_due_at = ModelStatus.retired, now, due
        v.status_reason = (
            f"superseded by version {certified.version}, which forgot samples this version"
            f" holds; its bytes are destroyed at {due.isoformat()}"
        )
        audit.record(
            session,
            tenant_id=v.tenant_id,
            actor=actor,
            action="model.retired",
            subject_type="model",
            subject_id=v.id,
            payload={"superseded_by": certified.id, "purge_due_at": due.isoformat()},
        )
    session.flush()
    if days > 0:
        return None  # the sweeper queues the purge when it falls due
    return _queue_purge(session, tasks, certified, actor=actor, queue=queue).id


def _queue_purge(
    session: Session, tasks: TaskSender | None, certified: ModelVersion, *, actor: str, queue: str
) -> Job:
    return jobs.create(
        session,
        tasks,
        tenant_id=certified.tenant_id,
        kind=JobKind.purge,
        task_name=PURGE,
        queue=queue,
        actor=actor,
        model_id=certified.id,
        lineage_id=certified.lineage_id,
    )


def queue_due_purges(
    session: Session,
    tasks: TaskSender | None,
    *,
    actor: str,
    queue: str,
    now: datetime | None = None,
) -> int:
    """For the sweeper: queue a purge for each lineage with retired versions now due and no
    purge queued or running. Returns how many were queued."""
    now = now or utcnow()
    due = session.scalars(
        select(ModelVersion.lineage_id)
        .where(ModelVersion.status == ModelStatus.retired, ModelVersion.purge_due_at <= now)
        .distinct()
    ).all()
    queued = 0
    for lineage_id in due:
        # One purge at a time per lineage, and a failed one is not retried in a tight loop.
        unfinished = session.scalars(
            select(Job.id).where(
                Job.lineage_id == lineage_id,
                Job.kind == JobKind.purge,
                (Job.state.in_((JobState.queued, JobState.running)))
                | ((Job.state == JobState.failed) & (Job.finished_at > now - PURGE_RETRY_AFTER)),
            )
        ).first()
        head = lineages.lineage_head(session, lineage_id)
        if unfinished is None and head is not None:
            _queue_purge(session, tasks, head, actor=actor, queue=queue)
            queued += 1
    return queued


# -- the purge job's steps ---------------------------------------------------------------------


def _outcome(job: Job) -> dict[str, Any]:
    out = dict(job.outcome or {})
    out.setdefault("destroyed", [])
    out.setdefault("pending_deletes", [])
    return out


def _drop_artifact(session: Session, digest: str, out: dict[str, Any]) -> None:
    """Remove the artifact's row when nothing references it any more; its file is deleted by
    :func:`destroy_pending` after this transaction commits. The check and the delete run under
    the digest's lock, which an upload of the same bytes also takes (see
    :mod:`app.artifacts.service`)."""
    if not artifacts.drop_row(session, digest):
        return
    if digest not in out["pending_deletes"]:
        out["pending_deletes"].append(digest)


def purge_versions(session: Session, job: Job) -> int:
    """Step 1: destroy the bytes of the lineage's retired versions that are due."""
    out = _outcome(job)
    now = utcnow()
    due = session.scalars(
        select(ModelVersion)
        .where(
            ModelVersion.lineage_id == job.lineage_id,
            ModelVersion.status == ModelStatus.retired,
            ModelVersion.purge_due_at <= now,
        )
        .order_by(ModelVersion.version)
    )
    count = 0
    for v in due:
        digest = v.weights_digest
        v.status, v.purged_at, v.weights_digest = ModelStatus.purged, now, None
        v.destroyed_digest = digest
        session.flush()
        if digest is not None:
            out["destroyed"].append(
                {
                    "kind": "model_weights",
                    "model_id": v.id,
                    "version": v.version,
                    "digest": {"sha256": digest},
                    "size": v.weights_size,
                    "retired_at": v.retired_at.isoformat() if v.retired_at else None,
                    "purged_at": now.isoformat(),
                }
            )
            _drop_artifact(session, digest, out)
        samples, v.samples_digest = v.samples_digest, None
        if samples is not None:
            # A diffusion version's generated images are the version's output: they go with it.
            session.flush()
            out["destroyed"].append(
                {
                    "kind": "generated_samples",
                    "model_id": v.id,
                    "version": v.version,
                    "digest": {"sha256": samples},
                    "purged_at": now.isoformat(),
                }
            )
            _drop_artifact(session, samples, out)
        count += 1
    job.outcome = out
    return count


@dataclass(frozen=True)
class ManifestErasure:
    """What step 2 will erase: read in one transaction, rewritten outside it."""

    dataset_id: str
    train_digest: str
    erase: list[int]
    held_by: list[str]  # lineages on the dataset that still hold some forgotten sample


def plan_manifest_erasure(session: Session, job: Job) -> ManifestErasure | None:
    """Step 2a: the samples every lineage trained on the dataset has forgotten in a certified
    version, less those already erased."""
    head = session.get(ModelVersion, job.model_id)
    assert head is not None
    ds = session.get(Dataset, head.dataset_id)
    assert ds is not None
    roots = session.scalars(
        select(ModelVersion.lineage_id).where(
            ModelVersion.dataset_id == ds.id,
            ModelVersion.parent_id.is_(None),
            ModelVersion.status != ModelStatus.rejected,
        )
    )
    gone: set[int] | None = None
    forgotten: dict[str, set[int]] = {}
    for lineage_id in roots:
        certified = lineages.lineage_head(session, lineage_id)
        forgotten[lineage_id] = lineages.forgotten_by(session, certified) if certified else set()
        gone = forgotten[lineage_id] if gone is None else gone & forgotten[lineage_id]
    erased = {int(i) for e in _erasures(session, ds.id) for i in e.erased_ids}
    everywhere = set().union(*forgotten.values()) if forgotten else set()
    held_by = sorted(k for k, v in forgotten.items() if v != everywhere)
    erase = sorted((gone or set()) - erased)
    if not erase:
        job.outcome = {**_outcome(job), "samples_held_by_lineages": held_by}
        return None
    return ManifestErasure(ds.id, ds.train_digest, erase, held_by)


def _erasures(session: Session, dataset_id: str) -> list[DatasetErasure]:
    stmt = select(DatasetErasure).where(DatasetErasure.dataset_id == dataset_id)
    return list(session.scalars(stmt.order_by(DatasetErasure.id)))


def erased_ids(session: Session, dataset_id: str) -> set[int]:
    return {int(i) for e in _erasures(session, dataset_id) for i in e.erased_ids}


def rewrite_manifest(store: ArtifactStore, plan: ManifestErasure) -> StagedBlob:
    """Step 2b (no transaction): stage the manifest without the erased samples."""
    with store.local_file(plan.train_digest) as path:
        data = manifest.without_samples(path, np.asarray(plan.erase, dtype=np.int64))
    staged = store.stage()
    staged.write(data)
    staged.finish()
    return staged


def _destroyed(out: dict[str, Any], digest: str, **entry: Any) -> None:
    """List a derived artifact the erasure destroys on the receipt, and queue its file."""
    out["destroyed"].append({**entry, "digest": {"sha256": digest}})
    if digest not in out["pending_deletes"]:
        out["pending_deletes"].append(digest)


def record_manifest_erasure(
    session: Session, store: ArtifactStore, job: Job, plan: ManifestErasure, staged: StagedBlob
) -> bool:
    """Step 2c: the dataset now names the new manifest; the old one's bytes are destroyed once
    nothing references them. False when the dataset moved on meanwhile (the step is redone)."""
    ds = session.get(Dataset, plan.dataset_id)
    assert ds is not None
    if ds.train_digest != plan.train_digest:
        return False
    out = _outcome(job)
    with store.local_file(plan.train_digest) as old_path:
        old_size = old_path.stat().st_size
    summary = manifest.summarize(staged.local_path(), None)  # before ingest moves the file
    new = artifacts.ingest(session, store, staged, SAFETENSORS)
    old = ds.train_digest
    embedded_test = ds.test_digest == old
    ds.train_digest = new.digest
    if embedded_test:
        ds.test_digest = new.digest
    ds.num_samples = summary.train.count
    ds.class_counts = {str(k): v for k, v in summary.train.class_counts.items()}
    ds.sample_ids_digest = summary.sample_ids_digest
    ds.erased_count += len(plan.erase)
    ds.manifest_version += 1
    session.add(
        DatasetErasure(
            tenant_id=ds.tenant_id,
            dataset_id=ds.id,
            job_id=job.id,
            erased_count=len(plan.erase),
            erased_ids=plan.erase,
            erased_digest=sample_set_digest(plan.erase),
            old_train_digest=old,
            new_train_digest=new.digest,
        )
    )
    session.flush()
    out["destroyed"].append(
        {
            "kind": "dataset_manifest",
            "dataset_id": ds.id,
            "manifest_version": ds.manifest_version - 1,
            "digest": {"sha256": old},
            "size": old_size,
            "replaced_by": {"sha256": new.digest, "manifest_version": ds.manifest_version},
        }
    )
    out["erased_sample_ids"] = sorted({*out.get("erased_sample_ids", []), *plan.erase})
    out["samples_held_by_lineages"] = plan.held_by
    _drop_artifact(session, old, out)
    # The reference kits of the old manifest were computed from shadows trained on the erased
    # samples: they go too (a new kit can be built on the new manifest).
    for kit in reference_kits.kits_of_manifest(session, ds.id, old):
        digest = reference_kits.retire(
            session, kit, actor=f"job:{job.id}", reason="its manifest lost erased samples"
        )
        if digest is not None:
            _destroyed(
                out, digest, kind="reference_kit", kit_id=kit.id, dataset_id=ds.id, size=kit.size
            )
    # So was the classifier the service trained to judge a diffusion model's images.
    for ev in evaluators.of_manifest(session, ds.id, old):
        size = ev.size
        digest = evaluators.retire(
            session, ev, actor=f"job:{job.id}", reason="its manifest lost erased samples"
        )
        if digest is not None:
            _destroyed(
                out, digest, kind="evaluator_classifier", evaluator_id=ev.id, dataset_id=ds.id,
                size=size,
            )  # fmt: skip
    job.outcome = out
    audit.record(
        session,
        tenant_id=ds.tenant_id,
        actor=f"job:{job.id}",
        action="dataset.samples_erased",
        subject_type="dataset",
        subject_id=ds.id,
        payload={
            "count": len(plan.erase),
            "sample_ids_digest": sample_set_digest(plan.erase),
            "old_train_digest": old,
            "new_train_digest": new.digest,
            "manifest_version": ds.manifest_version,
        },
    )
    return True


def destroy_pending(session: Session, store: ArtifactStore, job: Job) -> int:
    """Step 3: delete the files whose rows earlier steps removed, at once (no grace period). A
    digest whose row came back (the same bytes uploaded again) is kept: it is referenced again.
    Each file is deleted under the digest's lock, so an upload of the same bytes that is still
    committing either registers its row first (the file is kept) or puts the file back."""
    out = _outcome(job)
    deleted = 0
    for digest in out["pending_deletes"]:
        if artifacts.destroy_file(session, store, digest) == "deleted":
            deleted += 1
    out["deleted_files"] = sorted({*out.get("deleted_files", []), *out["pending_deletes"]})
    out["pending_deletes"] = []
    job.outcome = out
    return deleted


def finish(session: Session, signer: Signer, job: Job, *, actor: str) -> str | None:
    """Step 4: sign the receipt of everything destroyed (none when nothing was), and end the
    job. Returns the receipt's ID."""
    out = _outcome(job)
    receipt_id: str | None = None
    if out["destroyed"] and out.get("receipt_id") is None:
        head = session.get(ModelVersion, job.model_id)
        assert head is not None
        ds = session.get(Dataset, head.dataset_id)
        assert ds is not None
        erased = out.get("erased_sample_ids", [])
        audit.record(
            session,
            tenant_id=job.tenant_id,
            actor=actor,
            action="erasure.receipt_issued",
            subject_type="job",
            subject_id=job.id,
            payload={"destroyed": [d["digest"]["sha256"] for d in out["destroyed"]]},
        )
        jobs.transition(
            session, job, JobState.succeeded, f"destroyed {len(out['destroyed'])}", actor=actor
        )
        now = utcnow()
        predicate = {
            "lineage_id": job.lineage_id,
            "certified_version": {
                "id": head.id,
                "version": head.version,
                "digest": {"sha256": head.weights_digest},
            },
            "dataset": {
                "id": ds.id,
                "manifest_version": ds.manifest_version,
                "train_digest": ds.train_digest,
            },
            "destroyed": out["destroyed"],
            "erased_samples": {
                "count": len(erased),
                "sample_ids_sha256": sample_set_digest(erased),
                "digest_method": SAMPLE_SET_DIGEST_METHOD,
            },
            "samples_held_by_lineages": out.get("samples_held_by_lineages", []),
            "job": {"id": job.id, "finished_at": now.isoformat()},
            "issued_at": now.isoformat(),
            # Last: a checkpoint of the audit chain with this purge's events in it.
            "audit_checkpoint": checkpoints.issue(session, signer, job.tenant_id),
        }
        certificates.register_key(session, signer)
        receipt = ErasureReceipt(
            tenant_id=job.tenant_id,
            lineage_id=str(job.lineage_id),
            dataset_id=ds.id,
            job_id=job.id,
            key_id=signer.key_id,
            envelope=sign_erasure_receipt(signer, out["destroyed"], predicate),
        )
        session.add(receipt)
        session.flush()
        receipt_id = receipt.id
        job.outcome = {**out, "receipt_id": receipt_id}
        return receipt_id
    job.outcome = out
    jobs.transition(session, job, JobState.succeeded, "nothing left to destroy", actor=actor)
    return receipt_id
