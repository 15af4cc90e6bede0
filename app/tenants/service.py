"""Tenants and API keys. Never commits: the caller's unit of work does."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core import security
from app.core.config import Settings
from app.core.errors import Conflict, InvalidInput, NotFound, Unauthorized
from app.models import ApiKey, Tenant
from app.models.base import utcnow
from app.tenants import repository
from app.tenants.schemas import Role, TenantSettings


def create_tenant(session: Session, name: str, actor: str = "cli") -> tuple[Tenant, ApiKey, str]:
    """Create a tenant and its first admin key; returns the key's plaintext (shown once)."""
    name = name.strip()
    if not name:
        raise InvalidInput("A tenant needs a non-empty name.")
    if repository.get_tenant_by_name(session, name) is not None:
        raise Conflict(f"A tenant named {name!r} already exists.")
    tenant = Tenant(name=name, settings={})
    session.add(tenant)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant.id,
        actor=actor,
        action="tenant.created",
        subject_type="tenant",
        subject_id=tenant.id,
        payload={"name": name},
    )
    key, plaintext = create_key(session, tenant.id, Role.admin, "initial admin key", actor)
    return tenant, key, plaintext


def create_key(
    session: Session, tenant_id: str, role: Role, name: str = "", actor: str = "cli"
) -> tuple[ApiKey, str]:
    if repository.get_tenant(session, tenant_id) is None:
        raise NotFound(f"No tenant {tenant_id}.")
    new = security.generate_key()
    key = ApiKey(
        id=new.key_id, tenant_id=tenant_id, name=name, role=role.value, secret_hash=new.secret_hash
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="api_key.created",
        subject_type="api_key",
        subject_id=key.id,
        payload={"role": role.value, "name": name},
    )
    return key, new.plaintext


def revoke_key(session: Session, tenant_id: str, key_id: str, actor: str = "cli") -> ApiKey:
    key = repository.get_key(session, key_id)
    if key is None or key.tenant_id != tenant_id:
        raise NotFound(f"No API key {key_id}.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
        audit.record(
            session,
            tenant_id=tenant_id,
            actor=actor,
            action="api_key.revoked",
            subject_type="api_key",
            subject_id=key.id,
        )
    return key


def authenticate(session: Session, presented: str | None) -> ApiKey:
    """Resolve a presented key; every failure looks the same to the caller."""
    if not presented:
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.")
    parts = security.split_key(presented)
    key = repository.get_key(session, parts[0]) if parts else None
    if parts is None or key is None or not security.secret_matches(parts[1], key.secret_hash):
        raise Unauthorized("The API key is not valid.")
    if key.revoked_at is not None:
        raise Unauthorized("The API key has been revoked.")
    return key


def get_settings(session: Session, tenant_id: str) -> TenantSettings:
    tenant = repository.get_tenant(session, tenant_id)
    if tenant is None:
        raise NotFound(f"No tenant {tenant_id}.")
    return TenantSettings.model_validate(tenant.settings or {})


def effective_settings(
    session: Session, settings: Settings, tenant_id: str
) -> dict[str, dict[str, object]]:
    """Every tenant-adjustable value as it applies now, and where it comes from: the tenant's
    override, or the service's setting (``LETHE_*``) or built-in default."""
    own = get_settings(session, tenant_id)
    out: dict[str, dict[str, object]] = {
        "fallback_retrain": {
            "value": own.fallback_retrain,
            "source": "tenant" if own.fallback_retrain else "default",
        }
    }
    out["retention_days"] = (
        {"value": own.retention_days, "source": "tenant"}
        if own.retention_days is not None
        else {"value": settings.retention_days, "source": "service (LETHE_RETENTION_DAYS)"}
    )
    out["device"] = (
        {"value": own.device, "source": "tenant"}
        if own.device is not None
        else {"value": settings.job_queue, "source": "service (LETHE_JOB_QUEUE)"}
    )
    for name in type(own.policy).model_fields:
        mine = getattr(own.policy, name)
        out[f"policy.{name}"] = (
            {"value": mine, "source": "tenant"}
            if mine is not None
            else {
                "value": getattr(settings, f"policy_{name}"),
                "source": f"service (LETHE_POLICY_{name.upper()})",
            }
        )
    return out


def patch_settings(
    session: Session, tenant_id: str, changes: dict[str, Any], actor: str
) -> TenantSettings:
    """Merge ``changes`` into the tenant's settings (JSON merge patch: a null clears an
    override, so the service's value applies again; fields not named keep their value)."""
    current = get_settings(session, tenant_id).model_dump(mode="json", exclude_none=True)

    def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        for key, value in patch.items():
            if value is None:
                base.pop(key, None)
            elif isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = merge(dict(base[key]), value)
            else:
                base[key] = value
        return base

    try:
        new = TenantSettings.model_validate(merge(current, changes))
    except ValidationError as exc:
        raise InvalidInput(
            "Invalid tenant settings.",
            errors=[
                {"field": "body." + ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()
            ],
        ) from None
    return put_settings(session, tenant_id, new, actor)


def put_settings(
    session: Session, tenant_id: str, new: TenantSettings, actor: str
) -> TenantSettings:
    tenant = repository.get_tenant(session, tenant_id)
    if tenant is None:
        raise NotFound(f"No tenant {tenant_id}.")
    tenant.settings = new.model_dump(mode="json", exclude_none=True)
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="tenant.settings_changed",
        subject_type="tenant",
        subject_id=tenant_id,
        payload=tenant.settings,
    )
    return new
