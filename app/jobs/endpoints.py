from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import read_session
from app.core.deps import SessionDep, SettingsDep
from app.core.errors import NotFound
from app.core.pagination import PageLimit, decode_cursor, finish_page
from app.jobs import repository, service
from app.jobs.schemas import JobOut, JobPage, JobSummary, Progress
from app.models.job import TERMINAL_STATES, JobKind, JobState
from app.tenants.dependencies import Reader, Writer

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _progress(raw: dict[str, Any]) -> Progress:
    p = Progress.model_validate(
        {k: raw.get(k) for k in ("phase", "step", "total", "updated_at")}
        | {"losses": raw.get("losses") or {}}
    )
    started = raw.get("phase_started_at")
    if started and p.step and p.total and p.step < p.total:
        elapsed = datetime.fromisoformat(str(raw.get("updated_at"))) - datetime.fromisoformat(
            str(started)
        )
        p.eta_seconds = round(elapsed.total_seconds() / p.step * (p.total - p.step), 1)
    return p


def job_view(session: Session, tenant_id: str, job_id: str) -> JobOut:
    data = repository.view_row(session, tenant_id, job_id)
    if data is None:
        raise NotFound(f"No job {job_id}.")
    data["progress"] = _progress(data["progress"] or {})
    return JobOut.model_validate(data)


def _read_job(factory: sessionmaker[Session], tenant_id: str, job_id: str) -> JobOut:
    with read_session(factory) as session:
        return job_view(session, tenant_id, job_id)


@router.get("", summary="List jobs, newest first, with filters")
def list_jobs(
    principal: Reader,
    session: SessionDep,
    settings: SettingsDep,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
    limit: PageLimit = 50,
    state: Annotated[JobState | None, Query()] = None,
    kind: Annotated[JobKind | None, Query()] = None,
    lineage_id: Annotated[str | None, Query(max_length=36)] = None,
    model_id: Annotated[
        str | None, Query(max_length=36, description="Jobs that started from or made it.")
    ] = None,
) -> JobPage:
    secret = settings.secret_key.get_secret_value()
    rows = repository.page(
        session,
        principal.tenant_id,
        decode_cursor(secret, cursor) if cursor else None,
        limit,
        state=state.value if state else None,
        kind=kind.value if kind else None,
        lineage_id=lineage_id,
        model_id=model_id,
    )
    rows, nxt = finish_page(rows, limit, secret)
    return JobPage(items=[JobSummary.model_validate(r) for r in rows], next_cursor=nxt)


# The status poll is the hottest path: async, so that it costs one worker-thread hop (the read)
# rather than one per dependency, and it opens no unit of work because it writes nothing.
@router.get("/{job_id}", summary="A job's state, phase, progress, ETA and history")
async def get_job(job_id: str, principal: Reader, request: Request) -> JobOut:
    return await run_in_threadpool(
        _read_job, request.app.state.sessionmaker, principal.tenant_id, job_id
    )


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job")
def cancel_job(job_id: str, principal: Writer, session: SessionDep) -> JobOut:
    service.cancel(session, principal.tenant_id, job_id, actor=principal.key_id)
    return job_view(session, principal.tenant_id, job_id)


@router.get(
    "/{job_id}/events",
    summary="Server-sent events: the job's state and progress until it finishes",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(job_id: str, request: Request, principal: Reader) -> StreamingResponse:
    factory, tenant_id = request.app.state.sessionmaker, principal.tenant_id

    def snapshot() -> str:
        return _read_job(factory, tenant_id, job_id).model_dump_json()

    first = await run_in_threadpool(snapshot)  # a 404 comes before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        last: str | None = None
        idle = 0.0
        body = first
        while True:
            if await request.is_disconnected():
                return
            state = json.loads(body)["state"]
            if body != last:
                yield f"event: job\ndata: {body}\n\n".encode()
                last, idle = body, 0.0
            elif idle >= 15:
                yield b": keep-alive\n\n"
                idle = 0.0
            if JobState(state) in TERMINAL_STATES:
                yield b"event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(0.5)
            idle += 0.5
            body = await run_in_threadpool(snapshot)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
