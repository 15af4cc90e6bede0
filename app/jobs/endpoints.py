from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import database_unavailable, read_session
from app.core.deps import SessionDep, SettingsDep
from app.core.errors import (
    RETRY_AFTER_SECONDS,
    LetheError,
    NotFound,
    database_unavailable_error,
    log_database_unavailable,
)
from app.core.pagination import PageLimit, decode_cursor, finish_page
from app.core.params import Cursor, ResourceId
from app.jobs import repository, service
from app.jobs.schemas import JobOut, JobPage, JobSummary, Progress
from app.models.job import TERMINAL_STATES, JobKind, JobState
from app.tenants.dependencies import Reader, Writer

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
log = logging.getLogger(__name__)


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
    cursor: Cursor = None,
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
async def get_job(job_id: ResourceId, principal: Reader, request: Request) -> JobOut:
    return await run_in_threadpool(
        _read_job, request.app.state.sessionmaker, principal.tenant_id, job_id
    )


@router.post("/{job_id}/cancel", summary="Cancel a queued or running job")
def cancel_job(job_id: ResourceId, principal: Writer, session: SessionDep) -> JobOut:
    service.cancel(session, principal.tenant_id, job_id, actor=principal.key_id)
    return job_view(session, principal.tenant_id, job_id)


EVENTS_DESCRIPTION = f"""\
A `text/event-stream` of the job's view (the body of `GET /v1/jobs/{{job_id}}`), sent when it
changes, until the job ends:

- `event: job`: the view, as JSON. Its `id:` names that snapshot (a digest of it).
- `event: end`: the job reached a final state; the stream closes. Close the client too: a browser's
  `EventSource` would otherwise reconnect (and be told `end` again).
- `event: error`: a problem document (RFC 9457) as JSON, for instance the 503 of a database that
  stopped answering; the stream closes cleanly. Reconnect after the `retry:` delay; while the
  database is still away the reconnect answers 503 with `Retry-After`.
- `: keep-alive` comments every 15 s of silence.

The first block carries `retry: {RETRY_AFTER_SECONDS * 1000}` (milliseconds). A reconnect that
sends `Last-Event-ID` (as `EventSource` does) resumes after that snapshot: the job's current view
is sent only if it differs from the one that ID names, so no event is repeated. Intermediate
views missed while disconnected are not replayed; the view's `history` lists every transition.
An unknown ID is ignored (the current view is sent).
"""


def _event_id(body: str) -> str:
    """A snapshot's ID: equal views have equal IDs, whichever process or connection sent them,
    so a reconnect to any API process resumes correctly. 16 hex digits of SHA-256."""
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    return (f"id: {event_id}\n" if event_id else "") + f"event: {event}\ndata: {data}\n\n"


def _stream_problem(request: Request, exc: Exception) -> dict[str, Any]:
    """The problem document of an error inside a running event stream, logged as the exception
    handlers log it: one line for a database that went away, a traceback for a bug."""
    path = request.url.path
    if database_unavailable(exc):
        log_database_unavailable(request.method, path, exc)
        return database_unavailable_error().to_problem(path)
    if isinstance(exc, LetheError):
        return exc.to_problem(path)
    log.exception("unhandled error in the event stream of %s", path)
    return LetheError("An unexpected error occurred; it has been logged.").to_problem(path)


@router.get(
    "/{job_id}/events",
    summary="Server-sent events: the job's state and progress until it finishes",
    description=EVENTS_DESCRIPTION,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: ResourceId,
    request: Request,
    principal: Reader,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=64,
            description="The `id:` of the last event received: resume after it.",
        ),
    ] = None,
) -> StreamingResponse:
    factory, tenant_id = request.app.state.sessionmaker, principal.tenant_id

    def snapshot() -> str:
        return _read_job(factory, tenant_id, job_id).model_dump_json()

    first = await run_in_threadpool(snapshot)  # a 404 (or a 503) comes before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        last, body, idle = last_event_id, first, 0.0
        head = f"retry: {RETRY_AFTER_SECONDS * 1000}\n"  # how long to wait before a reconnect
        while True:
            if await request.is_disconnected():
                return
            event_id = _event_id(body)
            if event_id != last:
                yield (head + _sse("job", body, event_id)).encode()
                last, head, idle = event_id, "", 0.0
            elif head or idle >= 15:
                yield (head + ": keep-alive\n\n").encode()
                head, idle = "", 0.0
            if JobState(json.loads(body)["state"]) in TERMINAL_STATES:
                yield _sse("end", "{}").encode()
                return
            await asyncio.sleep(0.5)
            idle += 0.5
            try:
                body = await run_in_threadpool(snapshot)
            except Exception as exc:
                # The response has started: no exception handler can answer any more, and an
                # exception here would cut the chunked body short. Say why, then end cleanly.
                yield _sse("error", json.dumps(_stream_problem(request, exc))).encode()
                return

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
