"""A forget request's status as a small state machine.

:func:`transition` is the one function that changes a request's status. It stamps the time a
request left the clock and records an audit event with the change, so the log says what became
of every request and not only of its job.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.errors import Conflict
from app.models import ForgetRequest
from app.models.base import utcnow
from app.models.forget_request import OPEN_STATUSES, RequestStatus

ALLOWED: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.pending: frozenset(
        {
            RequestStatus.completed,
            RequestStatus.uncertified,
            RequestStatus.failed,
            RequestStatus.cancelled,
            RequestStatus.withdrawn,
        }
    ),
    # Retried: carried into a later job of the lineage; or taken back.
    RequestStatus.uncertified: frozenset({RequestStatus.pending, RequestStatus.withdrawn}),
    RequestStatus.completed: frozenset(),
    RequestStatus.failed: frozenset(),
    RequestStatus.cancelled: frozenset(),
    RequestStatus.withdrawn: frozenset(),
}


def transition(
    session: Session,
    request: ForgetRequest,
    to: RequestStatus,
    *,
    reason: str,
    actor: str,
    result_model_id: str | None = None,
) -> None:
    current = RequestStatus(request.status)
    if to not in ALLOWED[current]:
        raise Conflict(f"Forget request {request.id} cannot go from {current} to {to}.")
    request.status = to
    # Off the clock only once honoured or closed; a retried request is open again.
    request.completed_at = None if to in OPEN_STATUSES else utcnow()
    if result_model_id is not None:
        request.result_model_id = result_model_id
    session.flush()
    audit.record(
        session,
        tenant_id=request.tenant_id,
        actor=actor,
        action=f"forget_request.{to.value}",
        subject_type="forget_request",
        subject_id=request.id,
        payload={
            "from": current.value,
            "reason": reason,
            "job_id": request.job_id,
            "result_model_id": request.result_model_id,
        },
    )
