"""What each console page shows, read through the domains' own services and repositories.

Read-only: nothing here changes a row, except the audit events the API records for the same
disclosures (a certificate shown is a certificate downloaded) and the sign-in and sign-out.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.audit import service as audit
from app.certificates import service as certificates
from app.console import repository
from app.console.charts import Node, evidence_chart, lineage_graph
from app.core.errors import NotFound
from app.core.storage import ArtifactStore
from app.forget_requests import lineage as lineage_views
from app.forget_requests import repository as requests_repo
from app.forget_requests import service as requests
from app.forget_requests.endpoints import to_out
from app.forget_requests.schemas import Exposure, ForgetRequestOut, Lineage
from app.jobs.endpoints import job_view
from app.jobs.schemas import JobOut
from app.model_registry import service as models
from app.models import AuditEvent, Certificate, ErasureReceipt, ModelVersion
from app.models.base import utcnow
from app.tenants import repository as tenants
from app.tenants.dependencies import Principal
from app.tenants.schemas import Role

LIST_LIMIT = 200
AUDIT_ROLES = frozenset({Role.admin, Role.auditor})


def statement_of(envelope: dict[str, Any]) -> dict[str, Any]:
    """The in-toto statement inside a DSSE envelope the service signed itself."""
    statement: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return statement


# -- sessions ---------------------------------------------------------------------------------


def principal_of(session: Session, key_id: str, session_id: str) -> Principal | None:
    """The key behind a console session, as it is now: None once the key is revoked or the
    session was signed out."""
    key = tenants.get_key(session, key_id)
    if key is None or key.revoked_at is not None:
        return None
    if repository.signed_out(session, key.tenant_id, session_id):
        return None
    return Principal(key.tenant_id, key.id, Role(key.role))


def record_session(
    session: Session, principal: Principal, session_id: str, action: str, **payload: Any
) -> None:
    audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.key_id,
        action=action,
        subject_type=repository.SESSION_SUBJECT,
        subject_id=session_id,
        payload=payload or None,
    )


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFilters:
    status: str | None = None
    subject_ref: str | None = None
    model_id: str | None = None
    received_from: datetime | None = None
    received_to: datetime | None = None


@dataclass
class RequestsPage:
    items: list[ForgetRequestOut]
    overdue: int
    due_soon: int
    truncated: bool
    model_names: dict[str, str] = field(default_factory=dict)


def requests_page(session: Session, tenant_id: str, filters: RequestFilters) -> RequestsPage:
    now = utcnow()
    lineage_id = None
    if filters.model_id:
        # A model filter means its lineage: requests apply to lineages, not to one version.
        lineage_id = models.load(session, tenant_id, filters.model_id).lineage_id
    rows = repository.requests(
        session,
        tenant_id,
        now,
        LIST_LIMIT + 1,
        status=filters.status,
        subject_ref=filters.subject_ref,
        lineage_id=lineage_id,
        received_from=filters.received_from,
        received_to=filters.received_to,
    )
    overdue, soon = repository.clock_counts(session, tenant_id, now, now + timedelta(days=7))
    names = {
        mv.lineage_id: f"{mv.name} (v{mv.version})"
        for mv in repository.lineage_originals(session, tenant_id, LIST_LIMIT)
    }
    return RequestsPage(
        items=[to_out(r) for r in rows[:LIST_LIMIT]],
        overdue=overdue,
        due_soon=soon,
        truncated=len(rows) > LIST_LIMIT,
        model_names=names,
    )


def lineage_choices(session: Session, tenant_id: str) -> list[ModelVersion]:
    return repository.lineage_originals(session, tenant_id, LIST_LIMIT)


@dataclass
class Evidence:
    model_id: str
    verdict: str
    reasons: list[str]
    checks: dict[str, Any]
    thresholds: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    membership: dict[str, Any]
    chart: Any
    gaps: dict[str, float]


@dataclass
class RequestDetail:
    request: ForgetRequestOut
    job: JobOut | None
    evidence: Evidence | None
    receipts: list[dict[str, Any]]
    events: list[AuditEvent] | None  # None: the role may not read the audit history


def evidence_of(cert: Certificate) -> Evidence:
    predicate = statement_of(cert.envelope)["predicate"]
    policy = predicate.get("policy") or {}
    metrics: dict[str, dict[str, float]] = predicate.get("metrics") or {}
    unlearned = metrics.get("unlearned") or {}
    gaps = {
        k: float(v)
        for k, v in unlearned.items()
        if isinstance(v, int | float) and ("gap" in k.lower() or k == "kl_forget")
    }
    return Evidence(
        model_id=cert.model_id,
        verdict=str(policy.get("verdict")),
        reasons=list(policy.get("reasons") or []),
        checks=dict(policy.get("checks") or {}),
        thresholds=dict(policy.get("thresholds") or {}),
        metrics=metrics,
        membership=dict(predicate.get("membership_audit") or {}),
        chart=evidence_chart(metrics),
        gaps=gaps,
    )


def request_detail(session: Session, principal: Principal, request_id: str) -> RequestDetail:
    # Another tenant's ID raises the same NotFound as a missing one.
    fr = requests.load(session, principal.tenant_id, request_id)
    out = to_out(fr)
    job = job_view(session, principal.tenant_id, fr.job_id) if fr.job_id else None
    result_id = fr.result_model_id or (job.result_model_id if job else None)
    evidence = None
    if result_id:
        try:
            evidence = evidence_of(certificates.for_model(session, principal.tenant_id, result_id))
        except NotFound:
            evidence = None
    receipts: list[dict[str, Any]] = []
    for r in erasure_receipts(session, principal.tenant_id, fr.lineage_id):
        predicate = statement_of(r.envelope)["predicate"]
        receipts.append(
            {
                "id": r.id,
                "job_id": r.job_id,
                "created_at": r.created_at,
                "destroyed": predicate.get("destroyed") or [],
                "erased_count": (predicate.get("erased_samples") or {}).get("count"),
            }
        )
    events = None
    if principal.role in AUDIT_ROLES:
        # The request, its job, its version, and the purges that destroyed what it superseded.
        about = (
            [fr.id]
            + [i for i in (fr.job_id, result_id) if i]
            + [str(r["job_id"]) for r in receipts]
        )
        events = repository.events_about(session, principal.tenant_id, about, LIST_LIMIT)
    return RequestDetail(out, job, evidence, receipts, events)


def erasure_receipts(session: Session, tenant_id: str, lineage_id: str) -> list[ErasureReceipt]:
    return repository.receipts_of_lineage(session, tenant_id, lineage_id, 20)


# -- models -----------------------------------------------------------------------------------


@dataclass
class ModelDetail:
    model: ModelVersion
    lineage: Lineage
    graph: Any
    verdicts: dict[str, str]
    exposure: Exposure | None
    requests: dict[str, ForgetRequestOut]


def model_detail(
    session: Session, store: ArtifactStore, tenant_id: str, model_id: str, sample: int | None
) -> ModelDetail:
    mv = models.load(session, tenant_id, model_id)
    lin = lineage_views.lineage(session, tenant_id, mv.id)
    verdicts = certificates.verdicts_of(session, [v.id for v in lin.versions])
    graph = lineage_graph(
        [
            Node(
                v.id,
                v.version,
                v.parent_id,
                v.status,
                verdicts.get(v.id),
                len(v.request_ids),
                f"/console/models/{v.id}",
            )
            for v in lin.versions
        ],
        lin.head_id,
    )
    exposure = (
        lineage_views.exposure(session, store, tenant_id, mv.dataset_id, sample)
        if sample is not None
        else None
    )
    reqs = {r.id: to_out(r) for r in requests_repo.lineage_requests(session, mv.lineage_id)}
    return ModelDetail(mv, lin, graph, verdicts, exposure, reqs)


# -- certificates -----------------------------------------------------------------------------


@dataclass
class CertificateDetail:
    certificate: Certificate
    model: ModelVersion
    statement: dict[str, Any]
    evidence: Evidence
    envelope_json: str


def certificates_page(session: Session, tenant_id: str) -> list[tuple[Certificate, ModelVersion]]:
    out = []
    for cert in repository.certificates(session, tenant_id, LIST_LIMIT):
        mv = models.load(session, tenant_id, cert.model_id)
        out.append((cert, mv))
    return out


def certificate_detail(session: Session, principal: Principal, model_id: str) -> CertificateDetail:
    # Shown is downloaded: the same audit event as GET /v1/models/{id}/certificate.
    cert, mv = certificates.download(
        session, principal.tenant_id, principal.key_id, model_id, via="console"
    )
    return CertificateDetail(
        cert,
        mv,
        statement_of(cert.envelope),
        evidence_of(cert),
        json.dumps(cert.envelope, sort_keys=True),
    )
