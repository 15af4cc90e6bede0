"""Read models over a lineage: its chain of versions, and which versions hold a sample."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.core.storage import ArtifactStore
from app.datasets import service as datasets
from app.datasets.samples import sample_index
from app.forget_requests import repository
from app.forget_requests.schemas import (
    Exposure,
    ExposureVersion,
    Lineage,
    LineageVersion,
    StoredArtifact,
)
from app.model_registry import service as models
from app.models import ForgetRequest, ModelVersion
from app.models.forget_request import RequestStatus
from app.models.model_version import ModelStatus


def lineage(session: Session, tenant_id: str, model_id: str) -> Lineage:
    named = models.load(session, tenant_id, model_id)
    versions = repository.lineage_versions(session, named.lineage_id)
    requests = repository.lineage_requests(session, named.lineage_id)
    by_result: dict[str, list[str]] = {}
    for r in requests:
        if r.result_model_id:
            by_result.setdefault(r.result_model_id, []).append(r.id)
    head = repository.lineage_head(session, named.lineage_id)
    return Lineage(
        lineage_id=named.lineage_id,
        head_id=head.id if head else named.id,
        versions=[
            LineageVersion(
                id=v.id,
                version=v.version,
                parent_id=v.parent_id,
                status=v.status,
                status_reason=v.status_reason,
                weights_digest=v.weights_digest,
                destroyed_digest=v.destroyed_digest,
                forgotten_count=v.forgotten_count,
                produced_by_job_id=v.produced_by_job_id,
                request_ids=by_result.get(v.id, []),
                created_at=v.created_at,
            )
            for v in versions
        ],
        pending_request_ids=[r.id for r in requests if r.status == RequestStatus.pending],
    )


def exposure(
    session: Session, store: ArtifactStore, tenant_id: str, dataset_id: str, sample_id: int
) -> Exposure:
    ds = datasets.load(session, tenant_id, dataset_id)
    label = sample_index(store, ds).label_of(sample_id)
    erasure = repository.erasure_of(session, ds.id, sample_id)
    if label is None and erasure is None:
        raise NotFound(f"Dataset {dataset_id} has no sample {sample_id}.")
    versions = list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.tenant_id == tenant_id, ModelVersion.dataset_id == ds.id)
            .order_by(ModelVersion.lineage_id, ModelVersion.version)
        )
    )
    done = session.scalars(
        select(ForgetRequest).where(
            ForgetRequest.tenant_id == tenant_id,
            ForgetRequest.status == RequestStatus.completed,
            ForgetRequest.result_model_id.is_not(None),
        )
    )
    # The request whose result version removed this sample, per version.
    removed_at: dict[str, str] = {
        str(r.result_model_id): r.id for r in done if sample_id in set(r.resolved_sample_ids or [])
    }
    parents = {v.id: v.parent_id for v in versions}
    out: list[ExposureVersion] = []
    for v in versions:
        node: str | None = v.id
        remover: str | None = None
        while node is not None:
            if node in removed_at:
                remover = removed_at[node]
                break
            node = parents.get(node)
        out.append(
            ExposureVersion(
                model_id=v.id,
                lineage_id=v.lineage_id,
                version=v.version,
                status=v.status,
                exposed=remover is None,
                forgotten=remover is not None,
                forgotten_by_request_id=remover,
                bytes_stored=v.weights_digest is not None,
            )
        )
    # Each lineage's newest version that is served or about to be (an upload being checked
    # holds everything it was trained on).
    heads = {
        v.lineage_id: v for v in out if v.status in (ModelStatus.ready, ModelStatus.validating)
    }
    holding: list[StoredArtifact] = [
        StoredArtifact(kind="model_weights", id=v.model_id, version=v.version)
        for v in out
        if v.exposed and v.bytes_stored
    ]
    if label is not None:
        holding.append(
            StoredArtifact(kind="dataset_manifest", id=ds.id, version=ds.manifest_version)
        )
    return Exposure(
        dataset_id=ds.id,
        sample_id=sample_id,
        label=label,
        versions=out,
        in_manifest=label is not None,
        erased_at=erasure.at if erasure else None,
        erased_by_job_id=erasure.job_id if erasure else None,
        lineages_holding=sorted(k for k, h in heads.items() if h.exposed),
        stored_artifacts_holding=holding,
    )
