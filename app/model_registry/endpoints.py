from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.artifacts.service import download_response
from app.audit import service as audit
from app.core.deps import SessionDep, SettingsDep, StoreDep, TasksDep
from app.core.errors import Conflict, Gone, InvalidInput
from app.core.openapi import multipart_body
from app.core.pagination import PageLimit, decode_cursor, finish_page
from app.core.params import Cursor, IdFilter, ResourceId, TextFilter
from app.core.uploads import receive_multipart
from app.generation import samples
from app.model_registry import repository, service
from app.model_registry.schemas import MODEL_SPEC_EXAMPLE, ModelOut, ModelPage
from app.models.model_version import ModelStatus
from app.tenants.dependencies import Reader, Writer

router = APIRouter(prefix="/v1/models", tags=["models"])

_UPLOAD_DOC = multipart_body(
    files={"weights": "The model's state dict as safetensors (never a pickle)."},
    fields={
        "spec": (
            "JSON model spec: name, architecture, args, input_shape, normalization, dataset_id,"
            " training.",
            MODEL_SPEC_EXAMPLE,
        )
    },
    required=["spec", "weights"],
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a model (weights + spec); it is validated by a worker",
    openapi_extra=_UPLOAD_DOC,
)
async def upload_model(
    request: Request,
    principal: Writer,
    session: SessionDep,
    store: StoreDep,
    tasks: TasksDep,
    settings: SettingsDep,
) -> ModelOut:
    async with receive_multipart(
        request,
        store,
        file_parts={"weights"},
        text_parts={"spec"},
        max_file_bytes=settings.max_upload_bytes,
    ) as form:
        for part, where in (("spec", form.fields), ("weights", form.files)):
            if part not in where:
                raise InvalidInput(
                    f"The `{part}` part is required.",
                    errors=[{"field": f"body.{part}", "message": "required"}],
                )
        mv, job_id = await run_in_threadpool(
            service.register,
            session,
            store,
            tasks,
            settings,
            principal.tenant_id,
            spec_raw=form.fields["spec"],
            weights=form.files["weights"],
            actor=principal.key_id,
        )
        out = ModelOut.model_validate(mv)
        out.validation_job_id = job_id
        return out


@router.get("", summary="List model versions, newest first")
def list_models(
    principal: Reader,
    session: SessionDep,
    settings: SettingsDep,
    cursor: Cursor = None,
    limit: PageLimit = 50,
    status: Annotated[ModelStatus | None, Query(description="Filter by status")] = None,
    dataset_id: IdFilter = None,
    architecture: TextFilter = None,
    lineage_id: IdFilter = None,
) -> ModelPage:
    secret = settings.secret_key.get_secret_value()
    rows = repository.page(
        session,
        principal.tenant_id,
        decode_cursor(secret, cursor) if cursor else None,
        limit,
        status=status.value if status else None,
        dataset_id=dataset_id,
        architecture=architecture,
        lineage_id=lineage_id,
    )
    rows, nxt = finish_page(rows, limit, secret)
    return ModelPage(items=[ModelOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.get("/{model_id}", summary="One model version")
def get_model(model_id: ResourceId, principal: Reader, session: SessionDep) -> ModelOut:
    mv = service.load(session, principal.tenant_id, model_id)
    out = ModelOut.model_validate(mv)
    out.validation_job_id = repository.validation_job_id(session, mv.id)
    return out


@router.get(
    "/{model_id}/weights",
    summary="Download the weights (safetensors; supports Range)",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Part"},
        410: {"description": "Retired: superseded by a version that forgot samples it holds"},
    },
)
def download_weights(
    model_id: ResourceId,
    request: Request,
    principal: Reader,
    session: SessionDep,
    store: StoreDep,
    allow_uncertified: Annotated[
        bool, Query(description="Also serve a version whose certificate failed the policy gate.")
    ] = False,
) -> Response:
    mv = service.load(session, principal.tenant_id, model_id)
    if mv.status in (ModelStatus.retired, ModelStatus.purged):
        when = mv.purged_at or mv.purge_due_at
        raise Gone(
            f"Model {model_id} (version {mv.version}) was retired: {mv.status_reason}."
            + (" Its bytes were destroyed" if mv.purged_at else " Its bytes will be destroyed")
            + (f" at {when.isoformat()}." if when else "."),
            model_status=mv.status,
        )
    if mv.status == ModelStatus.rejected:
        raise Conflict(
            f"Model {model_id} was rejected ({mv.status_reason}); its weights were not kept."
        )
    if mv.status == ModelStatus.uncertified and not allow_uncertified:
        raise Conflict(
            f"Model {model_id} failed the unlearning policy gate ({mv.status_reason}); pass"
            " allow_uncertified=true to download it anyway."
        )
    audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.key_id,
        action="model.downloaded",
        subject_type="model",
        subject_id=mv.id,
        payload={"digest": mv.weights_digest, "range": request.headers.get("range")},
    )
    return download_response(
        request, store, mv.weights_digest, f"{mv.name}-v{mv.version}.safetensors"
    )


@router.get(
    "/{model_id}/samples",
    summary="A PNG grid of a diffusion model's generated images (seeded, stored per class)",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The grid"},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
        410: {"description": "Purged: the version's generated images were destroyed with it"},
    },
)
def sample_grid(
    model_id: ResourceId,
    request: Request,
    principal: Reader,
    session: SessionDep,
    store: StoreDep,
    class_id: Annotated[
        int | None,
        Query(
            alias="class",
            ge=0,
            le=100_000,
            description="One class's images; unset: every class, one row each.",
        ),
    ] = None,
    n: Annotated[
        int | None, Query(ge=1, le=64, description="Images per class; unset: all stored.")
    ] = None,
) -> Response:
    """The images were generated by a worker when the version was checked or made (DDIM with
    the job's seed), so the same version, class and ``n`` always give the same picture. A
    retired version's grid stays visible until its purge destroys it with the weights."""
    mv = service.load(session, principal.tenant_id, model_id)
    # The stored images never change under a digest: a matching ETag needs no store read.
    etag = f'"{service.samples_digest(mv)}-{class_id if class_id is not None else "all"}-{n}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    stored = service.stored_samples(store, mv)
    if class_id is not None and class_id not in stored.by_class:
        raise InvalidInput(
            f"class {class_id} is not a class of this model (it has {stored.classes})",
            errors=[{"field": "query.class", "message": "not a class of this model"}],
        )
    if n is not None and n > stored.per_class:
        raise InvalidInput(
            f"{n} images per class asked for, {stored.per_class} are stored per class"
            " (LETHE_GENERATION_GRID_SAMPLES when the version was made)",
            errors=[{"field": "query.n", "message": f"at most {stored.per_class}"}],
        )
    png = samples.render(stored, class_id=class_id, n=stored.per_class if n is None else n)
    return Response(png, media_type="image/png", headers=headers)
