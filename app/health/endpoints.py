from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from app import __version__
from app.core.config import Mode, Settings
from app.core.errors import PROBLEM_BASE, problem_response
from app.core.migrate import schema_problem

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str
    mode: str


class Ready(Health):
    checks: dict[str, str]


@router.get("/healthz", summary="Liveness: the process answers")
def healthz(request: Request) -> Health:
    settings: Settings = request.app.state.settings
    return Health(status="ok", version=__version__, mode=settings.mode.value)


@router.get(
    "/readyz",
    summary="Readiness: the database answers with its schema at head (and, in production mode,"
    " Redis answers)",
    response_model=Ready,
    responses={503: {"content": {"application/problem+json": {}}}},
)
async def readyz(request: Request) -> Ready | JSONResponse:
    settings: Settings = request.app.state.settings
    checks: dict[str, str] = {}

    def _db() -> None:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(_db)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if checks["database"] == "ok":
        # A database the code's migrations have not reached (a fresh one, or an upgrade that
        # was not run) answers SELECT 1 but not the first real request.
        try:
            problem = await run_in_threadpool(schema_problem, request.app.state.engine)
            checks["schema"] = f"error: {problem}" if problem else "ok"
        except Exception as exc:
            checks["schema"] = f"error: {type(exc).__name__}"
    else:
        checks["schema"] = "error: not checked (the database does not answer)"
    if settings.mode is Mode.production:
        try:
            await run_in_threadpool(request.app.state.tasks.ping)
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"error: {type(exc).__name__}"
    if all(v == "ok" for v in checks.values()):
        return Ready(status="ok", version=__version__, mode=settings.mode.value, checks=checks)
    failing = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem_response(
        503,
        {
            "type": PROBLEM_BASE + "unavailable",
            "title": "Not ready",
            "status": 503,
            "detail": f"Failing checks: {failing}",
            "checks": checks,
        },
    )
