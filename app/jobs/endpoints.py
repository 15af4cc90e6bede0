from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.deps import SessionDep
from app.jobs import repository, service
from app.jobs.schemas import JobOut, Progress, TransitionOut
from app.models import ForgetRequest, Job
from app.models.job import TERMINAL_STATES, JobState
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


def job_view(session: Session, job: Job) -> JobOut:
    data = {c: getattr(job, c) for c in JobOut.model_fields if hasattr(job, c)}
    data["progress"] = _progress(job.progress or {})
    data["history"] = [
        TransitionOut.model_validate(t) for t in repository.transitions(session, job.id)
    ]
    data["request_ids"] = list(
        session.scalars(select(ForgetRequest.id).where(ForgetRequest.job_id == job.id))
    )
    return JobOut.model_validate(data)


@router.get("/{job_id}", summary="A job's state, phase, progress, ETA and history")
def get_job(job_id: str, principal: Reader, session: SessionDep) -> JobOut:
    return job_view(session, service.load(session, principal.tenant_id, job_id))


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job")
def cancel_job(job_id: str, principal: Writer, session: SessionDep) -> JobOut:
    job = service.cancel(session, principal.tenant_id, job_id, actor=principal.key_id)
    return job_view(session, job)


@router.get(
    "/{job_id}/events",
    summary="Server-sent events: the job's state and progress until it finishes",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: str, request: Request, principal: Reader, session: SessionDep
) -> StreamingResponse:
    service.load(session, principal.tenant_id, job_id)  # 404 before the stream starts
    factory = request.app.state.sessionmaker

    def snapshot() -> str:
        with factory() as s:
            job = s.get(Job, job_id)
            assert job is not None
            return job_view(s, job).model_dump_json()

    async def stream() -> AsyncIterator[bytes]:
        last = None
        idle = 0.0
        while True:
            if await request.is_disconnected():
                return
            body = await run_in_threadpool(snapshot)
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

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
