from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, status

from app.core.db import after_commit
from app.core.deps import SessionDep, SettingsDep
from app.core.params import ResourceId
from app.tenants import repository, service
from app.tenants.dependencies import Admin, Reader
from app.tenants.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyOut,
    EffectiveValue,
    Role,
    TenantSettings,
    WhoAmI,
)

router = APIRouter(prefix="/v1", tags=["tenants"])


@router.get("/whoami", summary="The tenant and role of the calling key")
def whoami(principal: Reader, session: SessionDep) -> WhoAmI:
    tenant = repository.get_tenant(session, principal.tenant_id)
    assert tenant is not None  # a key cannot outlive its tenant (foreign key)
    return WhoAmI(
        tenant_id=tenant.id, tenant_name=tenant.name, key_id=principal.key_id, role=principal.role
    )


@router.get("/tenant/settings", summary="The tenant's unlearning policy settings")
def get_tenant_settings(principal: Reader, session: SessionDep) -> TenantSettings:
    return service.get_settings(session, principal.tenant_id)


@router.get(
    "/tenant/settings/effective",
    summary="Every adjustable value as it applies now, and whether tenant or service set it",
)
def get_effective_settings(
    principal: Reader, session: SessionDep, settings: SettingsDep
) -> dict[str, EffectiveValue]:
    values = service.effective_settings(session, settings, principal.tenant_id)
    return {k: EffectiveValue.model_validate(v) for k, v in values.items()}


@router.patch(
    "/tenant/settings",
    summary="Change some settings (JSON merge patch: null returns a field to the service's value)",
)
def patch_tenant_settings(
    # A merge patch of TenantSettings: a handful of fields, so a few dozen keys is plenty.
    body: Annotated[
        dict[str, Any],
        Body(
            max_length=32,
            examples=[{"policy": {"sample_ra_drop_max": 2.0}, "retention_days": None}],
        ),
    ],
    principal: Admin,
    session: SessionDep,
) -> TenantSettings:
    return service.patch_settings(session, principal.tenant_id, body, actor=principal.key_id)


@router.put(
    "/tenant/settings",
    summary="Replace the tenant's settings (admin): fields left out return to the service's",
)
def put_tenant_settings(
    body: TenantSettings, principal: Admin, session: SessionDep
) -> TenantSettings:
    return service.put_settings(session, principal.tenant_id, body, actor=principal.key_id)


@router.get("/api-keys", summary="List the tenant's API keys (admin)")
def list_keys(principal: Admin, session: SessionDep) -> ApiKeyList:
    keys = repository.list_keys(session, principal.tenant_id)
    return ApiKeyList(items=[ApiKeyOut.model_validate(k) for k in keys])


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key (admin); the key is returned once",
)
def create_key(body: ApiKeyCreate, principal: Admin, session: SessionDep) -> ApiKeyCreated:
    key, plaintext = service.create_key(
        session, principal.tenant_id, body.role, body.name, actor=principal.key_id
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=plaintext)


@router.delete("/api-keys/{key_id}", summary="Revoke an API key (admin)")
def revoke_key(
    key_id: ResourceId, principal: Admin, session: SessionDep, request: Request
) -> ApiKeyOut:
    key = service.revoke_key(session, principal.tenant_id, key_id, actor=principal.key_id)
    # Only once the revocation is committed: dropping it earlier would let a concurrent request
    # re-cache the key from the old row.
    cache = request.app.state.key_cache
    after_commit(session, lambda: cache.forget(key.id))
    return ApiKeyOut.model_validate(key)


__all__ = ["Role", "router"]
