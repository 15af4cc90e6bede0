"""Issuing and serving certificates; the public keys that verify them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.certificates.signing import Signer, build_statement, public_pem
from app.core.config import Mode, Settings
from app.core.errors import NotFound
from app.models import Certificate, ModelVersion, SigningKey
from app.models.base import utcnow


def signer_for(settings: Settings) -> Signer:
    """The configured signing key; the embedded mode creates one on first use."""
    from app.certificates.signing import load_signer

    return load_signer(settings.resolved_signing_key_path, create=settings.mode is Mode.embedded)


def register_key(session: Session, signer: Signer) -> SigningKey:
    key = session.get(SigningKey, signer.key_id)
    if key is None:
        key = SigningKey(
            key_id=signer.key_id, public_key_pem=public_pem(signer.public), created_at=utcnow()
        )
        session.add(key)
        session.flush()
    return key


def issue(
    session: Session,
    signer: Signer,
    *,
    tenant_id: str,
    model_id: str,
    model_name: str,
    model_digest: str,
    job_id: str,
    verdict: str,
    predicate: dict[str, Any],
) -> Certificate:
    register_key(session, signer)
    statement = build_statement(
        model_name=model_name, model_digest=model_digest, predicate=predicate
    )
    cert = Certificate(
        tenant_id=tenant_id,
        model_id=model_id,
        job_id=job_id,
        key_id=signer.key_id,
        verdict=verdict,
        envelope=signer.sign(statement),
    )
    session.add(cert)
    session.flush()
    return cert


def for_model(session: Session, tenant_id: str, model_id: str) -> Certificate:
    cert = session.scalars(
        select(Certificate).where(
            Certificate.model_id == model_id, Certificate.tenant_id == tenant_id
        )
    ).first()
    if cert is None:
        raise NotFound(f"Model {model_id} has no certificate (only unlearned versions have one).")
    return cert


def download(
    session: Session, tenant_id: str, actor: str, model_id: str, *, via: str | None = None
) -> tuple[Certificate, ModelVersion]:
    """A version's certificate for someone who will read it (the API's download, the console's
    page), with the audit event that records who did."""
    from app.audit import service as audit
    from app.model_registry import service as models

    mv = models.load(session, tenant_id, model_id)
    cert = for_model(session, tenant_id, mv.id)
    payload: dict[str, Any] = {"certificate_id": cert.id}
    if via is not None:
        payload["via"] = via
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="certificate.downloaded",
        subject_type="model",
        subject_id=mv.id,
        payload=payload,
    )
    return cert, mv


def public_keys(session: Session) -> list[SigningKey]:
    return list(session.scalars(select(SigningKey).order_by(SigningKey.created_at)))


def verdicts_of(session: Session, model_ids: list[str]) -> dict[str, str]:
    """The certificate verdict of each of these versions that has a certificate."""
    rows = session.execute(
        select(Certificate.model_id, Certificate.verdict).where(Certificate.model_id.in_(model_ids))
    )
    return {str(m): str(v) for m, v in rows}
