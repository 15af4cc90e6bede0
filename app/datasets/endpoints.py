from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from app.artifacts.service import download_response
from app.audit import service as audit
from app.core.deps import SessionDep, SettingsDep, StoreDep
from app.core.errors import InvalidInput, NotFound
from app.core.openapi import multipart_body
from app.core.pagination import PageLimit, decode_cursor, finish_page
from app.core.params import Cursor, ResourceId
from app.core.uploads import receive_multipart
from app.datasets import repository, service
from app.datasets.samples import sample_index
from app.datasets.schemas import DatasetOut, DatasetPage, SampleOut, SamplePage
from app.tenants.dependencies import Reader, Writer

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_UPLOAD_DOC = multipart_body(
    files={
        "train": "safetensors with `images` (uint8 NxCxHxW or NxHxW), `labels` (int64 N), optional"
        " `sample_ids` (int64 N, unique), optional embedded `test_images`/`test_labels` and"
        " `validation_images`/`validation_labels` (the split jobs tune on).",
        "test": "Optional separate test split: safetensors with `images` and `labels`.",
    },
    fields={"name": ("A name for the dataset.", "fashion-mnist")},
    required=["name", "train"],
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a training manifest (streamed multipart upload)",
    openapi_extra=_UPLOAD_DOC,
)
async def upload_dataset(
    request: Request,
    principal: Writer,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> DatasetOut:
    async with receive_multipart(
        request,
        store,
        file_parts={"train", "test"},
        text_parts={"name"},
        max_file_bytes=settings.max_upload_bytes,
    ) as form:
        if "train" not in form.files:
            raise InvalidInput(
                "The `train` file part is required.",
                errors=[{"field": "body.train", "message": "required"}],
            )
        ds = await run_in_threadpool(
            service.register,
            session,
            store,
            settings,
            principal.tenant_id,
            name=form.fields.get("name", ""),
            train=form.files["train"],
            test=form.files.get("test"),
            actor=principal.key_id,
        )
        return DatasetOut.model_validate(ds)


@router.get("", summary="List datasets, newest first")
def list_datasets(
    principal: Reader,
    session: SessionDep,
    settings: SettingsDep,
    cursor: Cursor = None,
    limit: PageLimit = 50,
    name: Annotated[
        str | None, Query(max_length=200, description="Only datasets with this name")
    ] = None,
) -> DatasetPage:
    secret = settings.secret_key.get_secret_value()
    parsed = decode_cursor(secret, cursor) if cursor else None
    rows, nxt = finish_page(
        repository.page(session, principal.tenant_id, parsed, limit, name), limit, secret
    )
    return DatasetPage(items=[DatasetOut.model_validate(r) for r in rows], next_cursor=nxt)


@router.get("/{dataset_id}", summary="One dataset")
def get_dataset(dataset_id: ResourceId, principal: Reader, session: SessionDep) -> DatasetOut:
    return DatasetOut.model_validate(service.load(session, principal.tenant_id, dataset_id))


@router.get(
    "/{dataset_id}/files/{split}",
    summary="Download the train or test file (supports Range)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Part"}},
)
def download_dataset_file(
    dataset_id: ResourceId,
    split: Literal["train", "test"],
    request: Request,
    principal: Reader,
    session: SessionDep,
    store: StoreDep,
) -> Response:
    ds = service.load(session, principal.tenant_id, dataset_id)
    digest = ds.train_digest if split == "train" else ds.test_digest
    if digest is None:
        raise NotFound(f"Dataset {dataset_id} has no test split.")
    audit.record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.key_id,
        action="dataset.downloaded",
        subject_type="dataset",
        subject_id=ds.id,
        payload={"split": split, "digest": digest, "range": request.headers.get("range")},
    )
    return download_response(request, store, digest, f"{ds.name}-{split}.safetensors")


@router.get("/{dataset_id}/samples", summary="The training samples' IDs and labels, in ID order")
def list_samples(
    dataset_id: ResourceId,
    principal: Reader,
    session: SessionDep,
    store: StoreDep,
    after: Annotated[
        int | None, Query(ge=-(2**63), le=2**63 - 1, description="`next_after` of the last page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    label: Annotated[int | None, Query(ge=0, le=100_000, description="Only this class")] = None,
) -> SamplePage:
    ds = service.load(session, principal.tenant_id, dataset_id)
    ids, labels = sample_index(store, ds).page(after=after, limit=limit + 1, label=label)
    more = len(ids) > limit
    ids, labels = ids[:limit], labels[:limit]
    return SamplePage(
        items=[SampleOut(sample_id=int(i), label=int(y)) for i, y in zip(ids, labels, strict=True)],
        next_after=int(ids[-1]) if more else None,
    )
