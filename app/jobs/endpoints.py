from __future__ import annotations

from fastapi import APIRouter

from app.core.deps import SessionDep
from app.jobs import repository, service
from app.jobs.schemas import JobOut, TransitionOut
from app.tenants.dependencies import Reader

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", summary="A job's state, progress and history")
def get_job(job_id: str, principal: Reader, session: SessionDep) -> JobOut:
    job = service.load(session, principal.tenant_id, job_id)
    out = JobOut.model_validate(job)
    out.history = [TransitionOut.model_validate(t) for t in repository.transitions(session, job.id)]
    return out
