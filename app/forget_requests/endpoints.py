from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.core.config import Settings
from app.core.deps import SessionDep, SettingsDep, StoreDep, TasksDep
from app.core.errors import InvalidInput, NotFound
from app.core.openapi import multipart_body
from app.core.pagination import PageLimit, decode_cursor, finish_page
from app.core.params import Cursor, IdFilter, ResourceId
from app.core.storage import ArtifactStore
from app.core.tasks import TaskSender
from app.core.uploads import receive_multipart
from app.forget_requests import lineage as lineage_views
from app.forget_requests import repository, service
from app.forget_requests.id_file import max_file_bytes, read_sample_ids
from app.forget_requests.schemas import (
    DatasetForgetRequestIn,
    Exposure,
    ForgetRequestGroup,
    ForgetRequestIn,
    ForgetRequestOut,
    ForgetRequestPage,
    Lineage,
    SkippedLineage,
    WithdrawIn,
)
from app.models import ForgetRequest, ModelVersion
from app.models.base import utcnow
from app.models.forget_request import OPEN_STATUSES, RequestStatus
from app.tenants.dependencies import Principal, Reader, Writer

router = APIRouter(tags=["forget requests"])


def to_out(fr: ForgetRequest) -> ForgetRequestOut:
    out = ForgetRequestOut.model_validate(fr)
    out.sample_count = len(fr.sample_ids) if fr.sample_ids is not None else None
    due = fr.due_at if fr.due_at.tzinfo else fr.due_at.replace(tzinfo=utcnow().tzinfo)
    out.overdue = fr.status in OPEN_STATUSES and due < utcnow()
    return out


def _submit(
    session: Session,
    store: ArtifactStore,
    tasks: TaskSender,
    settings: Settings,
    principal: Principal,
    model_id: str,
    body: ForgetRequestIn,
    idempotency_key: str | None,
    response: Response,
) -> ForgetRequestOut:
    """Submit a model's request, from a JSON body or an uploaded ID file alike."""
    fr, replayed = service.submit(
        session,
        store,
        tasks,
        settings,
        tenant_id=principal.tenant_id,
        actor=principal.key_id,
        model_id=model_id,
        body=body,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = f"/v1/forget-requests/{fr.id}"
    if replayed:
        # The same key and body again: the original answer, as other idempotent APIs give it.
        response.status_code = status.HTTP_200_OK
    return to_out(fr)


@router.post(
    "/v1/models/{model_id}/forget-requests",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask a model's lineage to forget classes or samples",
    responses={
        200: {"description": "A replay: this Idempotency-Key and body were accepted before"},
        409: {"description": "Idempotency-Key reused with another body, or model not ready"},
    },
)
def submit_forget_request(
    model_id: ResourceId,
    body: ForgetRequestIn,
    response: Response,
    principal: Writer,
    session: SessionDep,
    store: StoreDep,
    tasks: TasksDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Same key and body: the same request comes back."),
    ] = None,
) -> ForgetRequestOut:
    return _submit(
        session, store, tasks, settings, principal, model_id, body, idempotency_key, response
    )


_FILE_DOC = multipart_body(
    files={
        "sample_ids": "The sample IDs to forget, as text: integers separated by newlines, commas"
        " or spaces (for lists longer than a JSON body may carry)."
    },
    fields={
        "request": (
            "The rest of the request as a JSON object: the fields of a JSON forget request"
            " except class_ids and sample_ids (method, config, reason, subject_ref, ...).",
            '{"reason": "GDPR art. 17 request", "subject_ref": "ticket-8841"}',
        )
    },
    required=["sample_ids"],
)


def _request_fields(raw: str) -> dict[str, object]:
    try:
        fields = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            "The `request` part is not JSON.",
            errors=[{"field": "body.request", "message": str(exc)}],
        ) from None
    if not isinstance(fields, dict):
        raise InvalidInput(
            "The `request` part must be a JSON object.",
            errors=[{"field": "body.request", "message": "not an object"}],
        )
    for key in ("class_ids", "sample_ids"):
        if key in fields:
            raise InvalidInput(
                f"`{key}` cannot be in the `request` part: the IDs come in the file.",
                errors=[{"field": f"body.request.{key}", "message": "not allowed here"}],
            )
    return fields


@router.post(
    "/v1/models/{model_id}/forget-requests/file",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask a model's lineage to forget samples listed in an uploaded file",
    openapi_extra=_FILE_DOC,
    responses={
        200: {"description": "A replay: this Idempotency-Key and body were accepted before"},
        409: {"description": "Idempotency-Key reused with another body, or model not ready"},
    },
)
async def submit_forget_request_file(
    model_id: ResourceId,
    request: Request,
    response: Response,
    principal: Writer,
    session: SessionDep,
    store: StoreDep,
    tasks: TasksDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=200, description="Same key and body: the same request comes back."),
    ] = None,
) -> ForgetRequestOut:
    async with receive_multipart(
        request,
        store,
        file_parts={"sample_ids"},
        text_parts={"request"},
        max_file_bytes=max_file_bytes(settings.max_forget_samples),
    ) as form:
        if "sample_ids" not in form.files:
            raise InvalidInput(
                "The `sample_ids` file part is required.",
                errors=[{"field": "body.sample_ids", "message": "required"}],
            )
        fields = _request_fields(form.fields.get("request", ""))
        ids = await run_in_threadpool(
            read_sample_ids,
            form.files["sample_ids"].staged.local_path(),
            settings.max_forget_samples,
        )
    # The staged file is gone now: only the parsed IDs go on, into the same path as JSON's.
    try:
        body = ForgetRequestIn.model_validate({**fields, "sample_ids": ids})
    except ValidationError as exc:
        raise InvalidInput(
            "Invalid forget request.",
            errors=[
                {"field": "body.request." + ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()
            ],
        ) from None
    return await run_in_threadpool(
        _submit,
        session,
        store,
        tasks,
        settings,
        principal,
        model_id,
        body,
        idempotency_key,
        response,
    )


@router.post(
    "/v1/datasets/{dataset_id}/forget-requests",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Forget samples or classes from every model trained on a dataset",
    responses={409: {"description": "No model trained on the dataset can take a request yet"}},
)
def submit_dataset_forget_request(
    dataset_id: ResourceId,
    body: DatasetForgetRequestIn,
    response: Response,
    principal: Writer,
    session: SessionDep,
    store: StoreDep,
    tasks: TasksDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=160, description="Same key and body: the same requests come back."),
    ] = None,
) -> ForgetRequestGroup:
    group = service.submit_for_dataset(
        session,
        store,
        tasks,
        settings,
        tenant_id=principal.tenant_id,
        actor=principal.key_id,
        dataset_id=dataset_id,
        body=body,
        idempotency_key=idempotency_key,
    )
    response.headers["Location"] = f"/v1/forget-request-groups/{group.id}"
    return ForgetRequestGroup(
        id=group.id,
        dataset_id=group.dataset_id,
        status=service.group_status(group.requests),
        requests=[to_out(r) for r in group.requests],
        skipped=[SkippedLineage(lineage_id=k, reason=v) for k, v in group.skipped],
    )


@router.get(
    "/v1/forget-request-groups/{group_id}",
    summary="A dataset-wide request: its lineages' requests, complete when all are",
)
def get_forget_request_group(
    group_id: Annotated[str, Path(max_length=36)], principal: Reader, session: SessionDep
) -> ForgetRequestGroup:
    members = repository.group_requests(session, principal.tenant_id, group_id)
    if not members:
        raise NotFound(f"No forget request group {group_id}.")
    model = session.get(ModelVersion, members[0].model_id)
    assert model is not None
    return ForgetRequestGroup(
        id=group_id,
        dataset_id=model.dataset_id,
        status=service.group_status(members),
        requests=[to_out(r) for r in members],
    )


@router.get("/v1/forget-requests", summary="List forget requests, newest first")
def list_forget_requests(
    principal: Reader,
    session: SessionDep,
    settings: SettingsDep,
    cursor: Cursor = None,
    limit: PageLimit = 50,
    overdue: Annotated[
        bool, Query(description="Only pending requests past their due date")
    ] = False,
    status: Annotated[RequestStatus | None, Query()] = None,
    lineage_id: IdFilter = None,
) -> ForgetRequestPage:
    secret = settings.secret_key.get_secret_value()
    rows = repository.page(
        session,
        principal.tenant_id,
        decode_cursor(secret, cursor) if cursor else None,
        limit,
        overdue_at=utcnow() if overdue else None,
        status=status.value if status else None,
        lineage_id=lineage_id,
    )
    rows, nxt = finish_page(rows, limit, secret)
    return ForgetRequestPage(items=[to_out(r) for r in rows], next_cursor=nxt)


@router.get("/v1/forget-requests/{request_id}", summary="One forget request")
def get_forget_request(
    request_id: ResourceId, principal: Reader, session: SessionDep
) -> ForgetRequestOut:
    return to_out(service.load(session, principal.tenant_id, request_id))


@router.post(
    "/v1/forget-requests/{request_id}/withdraw",
    summary="Take an open request back (audited, with a reason); it leaves the clock",
    responses={409: {"description": "Already answered, or its job is running"}},
)
def withdraw_forget_request(
    request_id: ResourceId, body: WithdrawIn, principal: Writer, session: SessionDep
) -> ForgetRequestOut:
    return to_out(
        service.withdraw(
            session, principal.tenant_id, request_id, reason=body.reason, actor=principal.key_id
        )
    )


@router.get("/v1/models/{model_id}/lineage", summary="The chain of versions and their requests")
def get_lineage(model_id: ResourceId, principal: Reader, session: SessionDep) -> Lineage:
    return lineage_views.lineage(session, principal.tenant_id, model_id)


@router.get(
    "/v1/datasets/{dataset_id}/samples/{sample_id}/exposure",
    summary="Which model versions still carry a sample, and which have forgotten it",
)
def get_exposure(
    dataset_id: ResourceId,
    sample_id: Annotated[int, Path(ge=-(2**63), le=2**63 - 1)],
    principal: Reader,
    session: SessionDep,
    store: StoreDep,
) -> Exposure:
    return lineage_views.exposure(session, store, principal.tenant_id, dataset_id, sample_id)
