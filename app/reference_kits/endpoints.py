from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select

from app.core.deps import SessionDep, SettingsDep, StoreDep, TasksDep
from app.core.openapi import PROBLEM_RESPONSES
from app.core.params import ResourceId
from app.models import ReferenceKit
from app.reference_kits import service
from app.reference_kits.schemas import ReferenceKitIn, ReferenceKitList, ReferenceKitOut
from app.tenants.dependencies import Reader, Writer

router = APIRouter(tags=["reference kits"], responses=PROBLEM_RESPONSES)


@router.post(
    "/v1/models/{model_id}/reference-kits",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Build the per-example membership audit's reference kit for a model's manifest,"
    " architecture and recipe (once; later requests reuse it)",
    responses={200: {"description": "An equal kit is ready or being built already"}},
)
def request_kit(
    model_id: ResourceId,
    body: ReferenceKitIn,
    response: Response,
    principal: Writer,
    session: SessionDep,
    tasks: TasksDep,
    settings: SettingsDep,
) -> ReferenceKitOut:
    kit, existed = service.request_build(
        session,
        tasks,
        tenant_id=principal.tenant_id,
        actor=principal.key_id,
        model_id=model_id,
        k=body.k,
        seed=body.seed,
        settings=settings,
    )
    if existed:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/reference-kits/{kit.id}"
    return ReferenceKitOut.model_validate(kit)


@router.get("/v1/reference-kits", summary="The tenant's reference kits, newest first")
def list_kits(
    principal: Reader,
    session: SessionDep,
    dataset_id: Annotated[str | None, Query(max_length=36)] = None,
) -> ReferenceKitList:
    stmt = select(ReferenceKit).where(ReferenceKit.tenant_id == principal.tenant_id)
    if dataset_id is not None:
        stmt = stmt.where(ReferenceKit.dataset_id == dataset_id)
    rows = session.scalars(stmt.order_by(ReferenceKit.created_at.desc()).limit(500))
    return ReferenceKitList(items=[ReferenceKitOut.model_validate(r) for r in rows])


@router.get("/v1/reference-kits/{kit_id}", summary="One reference kit")
def get_kit(kit_id: ResourceId, principal: Reader, session: SessionDep) -> ReferenceKitOut:
    return ReferenceKitOut.model_validate(service.load(session, principal.tenant_id, kit_id))


@router.delete(
    "/v1/reference-kits/{kit_id}",
    summary="Retire a kit and destroy its bytes (jobs then report population-only evidence)",
)
def delete_kit(
    kit_id: ResourceId, principal: Writer, session: SessionDep, store: StoreDep
) -> ReferenceKitOut:
    service.delete(session, store, principal.tenant_id, kit_id, principal.key_id)
    return ReferenceKitOut.model_validate(service.load(session, principal.tenant_id, kit_id))
