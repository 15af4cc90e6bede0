"""Registering training manifests."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.artifacts import service as artifacts
from app.audit import service as audit
from app.core.config import Settings
from app.core.errors import InvalidInput, NotFound
from app.core.names import unsafe_name_reason
from app.core.storage import ArtifactStore
from app.core.uploads import UploadedFile
from app.datasets import manifest, repository
from app.models import Dataset

SAFETENSORS = "application/vnd.safetensors"


def register(
    session: Session,
    store: ArtifactStore,
    settings: Settings,
    tenant_id: str,
    *,
    name: str,
    train: UploadedFile,
    test: UploadedFile | None,
    actor: str,
    source: str = "upload",
) -> Dataset:
    """Check the manifest, store its files by digest and record it. Raises before anything is
    stored when the files are refused."""
    name = name.strip()
    reason = unsafe_name_reason(name)
    if reason:
        raise InvalidInput(
            f"body.name: {reason}.", errors=[{"field": "body.name", "message": reason}]
        )
    summary = manifest.summarize(
        train.staged.local_path(),
        test.staged.local_path() if test else None,
        max_header_bytes=settings.max_header_bytes,
    )
    train_art = artifacts.ingest(session, store, train.staged, SAFETENSORS)
    test_digest: str | None = None
    if test is not None:
        test_digest = artifacts.ingest(session, store, test.staged, SAFETENSORS).digest
    elif summary.embedded_test:
        test_digest = train_art.digest
    ds = Dataset(
        tenant_id=tenant_id,
        name=name,
        source=source,
        train_digest=train_art.digest,
        test_digest=test_digest,
        num_samples=summary.train.count,
        num_test_samples=summary.test.count if summary.test else 0,
        num_validation_samples=summary.validation.count if summary.validation else 0,
        image_shape=list(summary.train.image_shape),
        num_classes=summary.num_classes,
        classes=summary.classes,
        class_counts={str(k): v for k, v in summary.train.class_counts.items()},
        test_class_counts=(
            {str(k): v for k, v in summary.test.class_counts.items()} if summary.test else {}
        ),
        sample_ids_digest=summary.sample_ids_digest,
    )
    session.add(ds)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="dataset.created",
        subject_type="dataset",
        subject_id=ds.id,
        payload={
            "train_digest": ds.train_digest,
            "test_digest": ds.test_digest,
            "sample_ids_digest": ds.sample_ids_digest,
        },
    )
    return ds


def load(session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    ds = repository.get(session, tenant_id, dataset_id)
    if ds is None:
        raise NotFound(f"No dataset {dataset_id}.")
    return ds
