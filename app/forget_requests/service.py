"""Forget requests: validation against the model and its data, idempotency, and jobs.

Rules:
- A request applies to the newest usable version of the named model's lineage.
- Its job runs after every earlier job of that lineage (the worker enforces the order); a request
  that arrives while a compatible job of the lineage is still queued joins that job (coalescing),
  and both say so.
- Nothing is queued unless every check passed; the task is sent only after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.core.config import Settings
from app.core.digests import sample_set_digest
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.storage import ArtifactStore
from app.core.tasks import UNLEARN, TaskSender
from app.datasets import repository as datasets
from app.datasets.samples import sample_index
from app.forget_requests import repository
from app.forget_requests import states as request_states
from app.forget_requests.schemas import ForgetRequestIn
from app.jobs import routing
from app.jobs import service as jobs
from app.model_registry import service as models
from app.models import ForgetRequest, Job, ModelVersion
from app.models.base import new_id, utcnow
from app.models.forget_request import RequestStatus
from app.models.job import JobKind, JobState
from app.models.model_version import ModelStatus
from app.unlearning.config import MethodConfigError, parse_method_config
from app.unlearning.diffusion.config import DiffusionConfigError, parse_diffusion_method_config
from app.unlearning.diffusion.manifest import DIFFUSION_ARCHITECTURE, SAMPLE_WISE_REFUSAL

MAX_LISTED_UNKNOWN = 20
NAMES_A_LINEAGE = (
    ModelStatus.ready,
    ModelStatus.uncertified,
    ModelStatus.retired,
    ModelStatus.purged,
)


def _field(field: str, message: str, **extra: object) -> InvalidInput:
    return InvalidInput(
        f"{field}: {message}", errors=[{"field": field, "message": message}], **extra
    )


def _diffusion_config(body: ForgetRequestIn) -> dict[str, Any]:
    """A diffusion model forgets whole classes only (say why, for sample IDs). Its method's
    hyperparameters are checked here and stored as given: the job calibrates what the request
    left unset, so which values were explicit must survive to it."""
    if body.sample_ids is not None:
        raise _field("body.sample_ids", SAMPLE_WISE_REFUSAL)
    try:
        config = parse_diffusion_method_config(body.method, body.config)
    except DiffusionConfigError as exc:
        raise _field(f"body.{exc.field}", exc.message) from None
    return config.model_dump(mode="json", exclude_unset=True)


def _check_evaluator(
    session: Session, tenant_id: str, named: ModelVersion, evaluator_id: str | None
) -> None:
    """A request may name the classifier that judges a diffusion model's generated images: a
    checked classifier of the tenant, trained on the same dataset, with the same classes."""
    if evaluator_id is None:
        return
    field = "body.evaluator_model_id"
    if named.architecture != DIFFUSION_ARCHITECTURE:
        raise _field(field, "only a diffusion model's request names an evaluator classifier")
    ev = session.get(ModelVersion, evaluator_id)
    if ev is None or ev.tenant_id != tenant_id:
        raise _field(field, f"no model {evaluator_id}")
    if ev.architecture == DIFFUSION_ARCHITECTURE:
        raise _field(field, "the evaluator must be a classifier, not a diffusion model")
    if ev.status != ModelStatus.ready:
        raise _field(field, f"model {evaluator_id} is {ev.status}; the evaluator must be ready")
    if ev.dataset_id != named.dataset_id or ev.num_classes != named.num_classes:
        raise _field(
            field,
            f"model {evaluator_id} was not trained on this model's dataset and classes (it"
            f" names dataset {ev.dataset_id} with {ev.num_classes} classes)",
        )


def submit(
    session: Session,
    store: ArtifactStore,
    tasks: TaskSender,
    settings: Settings,
    *,
    tenant_id: str,
    actor: str,
    model_id: str,
    body: ForgetRequestIn,
    idempotency_key: str | None,
) -> tuple[ForgetRequest, bool]:
    """Validate and accept a request; returns it and whether it is a replay of an earlier one
    with the same Idempotency-Key and body (then nothing new was queued)."""
    body_digest = audit.digest({"model_id": model_id, **body.model_dump(mode="json")})
    if idempotency_key is not None:
        existing = repository.by_idempotency_key(session, tenant_id, idempotency_key)
        if existing is not None:
            if existing.body_digest != body_digest:
                raise Conflict(
                    "This Idempotency-Key was already used with a different request body.",
                    request_id=existing.id,
                )
            return existing, True

    named = models.load(session, tenant_id, model_id)
    # A retired version still names its lineage: the request applies to the newest certified.
    if named.status not in NAMES_A_LINEAGE:
        raise Conflict(
            f"Model {model_id} is {named.status}; only a ready model takes forget requests"
            + (f" ({named.status_reason})" if named.status_reason else "."),
            model_status=named.status,
        )
    _check_evaluator(session, tenant_id, named, body.evaluator_model_id)
    allow_uncertified = _base_policy(named, body)
    head = repository.lineage_head(session, named.lineage_id, allow_uncertified=allow_uncertified)
    assert head is not None  # the lineage's uploaded original is certified
    if named.architecture == DIFFUSION_ARCHITECTURE:
        method_config = _diffusion_config(body)
    else:
        try:
            method_config = parse_method_config(body.method, body.config).model_dump(mode="json")
        except MethodConfigError as exc:
            raise _field(f"body.{exc.field}", exc.message) from None

    dataset = datasets.get(session, tenant_id, named.dataset_id)
    if dataset is None:
        raise NotFound(f"The dataset of model {model_id} is gone.")
    chain = repository.ancestry(session, head)
    forgotten = repository.forgotten_ids(repository.requests_applied_in(session, chain))

    class_ids: list[int] | None = None
    sample_ids: list[int] | None = None
    if body.class_ids is not None:
        class_ids = sorted(set(body.class_ids))
        unknown = [c for c in class_ids if c not in set(dataset.classes) or c >= head.num_classes]
        if unknown:
            raise _field(
                "body.class_ids",
                f"classes {unknown} are not classes of this model's training data"
                f" (it has {dataset.classes})",
            )
        if len(class_ids) >= len(dataset.classes):
            raise _field("body.class_ids", "forgetting every class would leave nothing to keep")
        index = sample_index(store, dataset)
        remaining = set(index.ids_of_classes(class_ids).tolist()) - forgotten
        if not remaining:
            raise _field("body.class_ids", "every sample of these classes is already forgotten")
    else:
        assert body.sample_ids is not None
        sample_ids = sorted(set(body.sample_ids))
        if len(sample_ids) > settings.max_forget_samples:
            raise _field(
                "body.sample_ids",
                f"{len(sample_ids)} samples exceed the limit of {settings.max_forget_samples}"
                " per request; split the request or forget whole classes",
            )
        if set(sample_ids) <= forgotten:
            raise _field("body.sample_ids", "every one of these samples is already forgotten")
        index = sample_index(store, dataset)
        # Samples this lineage already forgot may be erased from the manifest: not unknown.
        wanted = np.asarray(sorted(set(sample_ids) - forgotten), dtype=np.int64)
        missing = wanted[~index.contains(wanted)]
        if missing.size:
            shown = [int(x) for x in missing[:MAX_LISTED_UNKNOWN]]
            raise _field(
                "body.sample_ids",
                f"{missing.size} sample IDs are not in the model's training data, e.g. {shown}",
                unknown_sample_ids=shown,
                unknown_count=int(missing.size),
            )

    now = utcnow()
    kind = "class" if class_ids is not None else "sample"
    request = ForgetRequest(
        tenant_id=tenant_id,
        model_id=named.id,
        lineage_id=named.lineage_id,
        kind=kind,
        class_ids=class_ids,
        sample_ids=sample_ids,
        method=body.method,
        method_config=method_config,
        reference_eval=body.reference_eval,
        evaluator_model_id=body.evaluator_model_id,
        reason=body.reason,
        subject_ref=body.subject_ref,
        idempotency_key=idempotency_key,
        body_digest=body_digest,
        status=RequestStatus.pending,
        created_at=now,
        due_at=now + timedelta(days=settings.forget_deadline_days),
    )
    try:
        with session.begin_nested():
            session.add(request)
            session.flush()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the race.
        if idempotency_key is None:
            raise
        existing = repository.by_idempotency_key(session, tenant_id, idempotency_key)
        if existing is None:
            raise
        if existing.body_digest != body_digest:
            raise Conflict("This Idempotency-Key was already used with a different body.") from None
        return existing, True

    # Requests whose versions failed the gate are retried from the certified base this one
    # starts from; with an explicit uncertified base they are part of its chain instead.
    retry = [] if allow_uncertified else _to_retry(session, named.lineage_id, chain)
    same_shape = [r for r in retry if _shape(r) == _shape(request)]
    for group in _groups([r for r in retry if _shape(r) != _shape(request)]):
        # Sent first, so it runs before this request's job; a new seed gives it a new draw.
        previous = session.get(Job, group[0].job_id) if group[0].job_id else None
        retry_job = _new_job(
            session, tasks, settings, group[0], head, actor, (previous.seed + 1) if previous else 0
        )
        _carry(session, group, retry_job, actor, f"retried in job {retry_job.id}")
    job = _join_queued_job(session, request, body.seed, allow_uncertified)
    if job is None:
        # (A request that joins a queued job runs on that job's queue.)
        job = _new_job(session, tasks, settings, request, head, actor, body.seed, body.device)
    request.job_id = job.id
    session.flush()
    _carry(session, same_shape, job, actor, f"retried with request {request.id} in job {job.id}")
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="forget_request.created",
        subject_type="forget_request",
        subject_id=request.id,
        payload={
            "model_id": named.id,
            "kind": kind,
            "class_ids": class_ids,
            "sample_ids_digest": sample_set_digest(sample_ids) if sample_ids else None,
            "sample_count": len(sample_ids) if sample_ids else None,
            "method": body.method,
            "job_id": job.id,
            "coalesced": request.coalesced,
            "reason": body.reason,
            "subject_ref": body.subject_ref,
            "allow_uncertified_base": allow_uncertified,
            "retried_request_ids": [r.id for r in retry],
        },
    )
    return request, False


def _base_policy(named: ModelVersion, body: ForgetRequestIn) -> bool:
    """Whether the request may start from an uncertified version: only when it names one and
    says so explicitly."""
    if named.status == ModelStatus.uncertified and not body.allow_uncertified_base:
        raise Conflict(
            f"Model {named.id} is uncertified (it failed the policy gate: {named.status_reason})."
            " Name a certified version of the lineage (the request then starts from the newest"
            " one and retries the failed step's samples), or set allow_uncertified_base to"
            " build on it; its certificate will then disclose the uncertified step.",
            model_status=named.status,
        )
    if body.allow_uncertified_base and named.status != ModelStatus.uncertified:
        raise _field(
            "body.allow_uncertified_base",
            f"model {named.id} is {named.status}, not uncertified: there is nothing to allow",
        )
    return body.allow_uncertified_base


def _shape(r: ForgetRequest) -> tuple[object, ...]:
    """Requests of one shape can share a job."""
    return (r.kind, r.method, r.method_config, r.reference_eval, r.evaluator_model_id)


def _groups(requests: list[ForgetRequest]) -> list[list[ForgetRequest]]:
    out: dict[str, list[ForgetRequest]] = {}
    for r in requests:
        # The shape holds a dict (the method config): its repr is the grouping key.
        out.setdefault(repr(_shape(r)), []).append(r)
    return list(out.values())


def _to_retry(session: Session, lineage_id: str, chain: list[ModelVersion]) -> list[ForgetRequest]:
    """Open requests that no live job will answer: uncertified ones whose versions are not in
    the chain the new job starts from, and pending ones whose job was cancelled."""
    in_chain = {v.id for v in chain}
    uncertified = [
        r
        for r in repository.lineage_requests(session, lineage_id, RequestStatus.uncertified)
        if r.result_model_id not in in_chain
    ]
    return uncertified + repository.orphaned_requests(session, lineage_id)


def _carry(
    session: Session, requests: list[ForgetRequest], job: Job, actor: str, reason: str
) -> None:
    for r in requests:
        r.job_id = job.id
        if r.status == RequestStatus.pending:  # its job was cancelled: it only moves
            audit.record(
                session,
                tenant_id=r.tenant_id,
                actor=actor,
                action="forget_request.carried",
                subject_type="forget_request",
                subject_id=r.id,
                payload={"job_id": job.id, "reason": reason},
            )
        else:
            request_states.transition(session, r, RequestStatus.pending, reason=reason, actor=actor)


def _new_job(
    session: Session,
    tasks: TaskSender,
    settings: Settings,
    request: ForgetRequest,
    head: ModelVersion,
    actor: str,
    seed: int,
    device: str | None = None,
) -> Job:
    where = routing.route(
        session, settings, tenant_id=request.tenant_id, model=head, request_device=device
    )
    return jobs.create(
        session,
        tasks,
        tenant_id=request.tenant_id,
        kind=JobKind.unlearn,
        task_name=UNLEARN,
        queue=where.queue,
        actor=actor,
        model_id=head.id,
        lineage_id=request.lineage_id,
        method=request.method,
        method_config=request.method_config,
        reference_eval=request.reference_eval,
        seed=seed,
    )


def _join_queued_job(
    session: Session, request: ForgetRequest, seed: int, allow_uncertified: bool
) -> Job | None:
    """Attach the request to a queued, compatible job of its lineage (same shape, method,
    config, reference flag, seed and base policy). The job row is locked, so no worker claims
    it half-way."""
    for job in repository.queued_jobs_for_update(session, request.lineage_id):
        members = repository.job_requests(session, job.id)
        if not members or members[0].kind != request.kind:
            continue
        if members[0].evaluator_model_id != request.evaluator_model_id:
            continue
        if repository.names_uncertified(session, members) != allow_uncertified:
            continue
        if (job.method, job.method_config, job.reference_eval, job.seed) != (
            request.method,
            request.method_config,
            request.reference_eval,
            seed,
        ):
            continue
        job.coalesced = True
        request.coalesced = True
        for other in members:
            other.coalesced = True
        session.flush()
        return job
    return None


def load(session: Session, tenant_id: str, request_id: str) -> ForgetRequest:
    fr = repository.get(session, tenant_id, request_id)
    if fr is None:
        raise NotFound(f"No forget request {request_id}.")
    return fr


@dataclass(frozen=True)
class GroupResult:
    id: str
    dataset_id: str
    requests: list[ForgetRequest]
    skipped: list[tuple[str, str]]


def submit_for_dataset(
    session: Session,
    store: ArtifactStore,
    tasks: TaskSender,
    settings: Settings,
    *,
    tenant_id: str,
    actor: str,
    dataset_id: str,
    body: ForgetRequestIn,
    idempotency_key: str | None,
) -> GroupResult:
    """Forget samples from every model trained on a dataset: one request per lineage (from its
    newest certified version), sharing a group ID. A lineage that already forgot them, or whose
    upload is not checked yet, is skipped and said so; none left to ask is an error."""
    ds = datasets.get(session, tenant_id, dataset_id)
    if ds is None:
        raise NotFound(f"No dataset {dataset_id}.")
    group_id = new_id()
    made: list[ForgetRequest] = []
    skipped: list[tuple[str, str]] = []
    first_error: InvalidInput | None = None
    for lineage_id in repository.lineages_of_dataset(session, ds.id):
        head = repository.lineage_head(session, lineage_id)
        if head is None:
            skipped.append((lineage_id, "no certified version yet (the upload is being checked)"))
            continue
        key = f"{idempotency_key}:{lineage_id}" if idempotency_key else None
        try:
            with session.begin_nested():
                fr, _ = submit(
                    session,
                    store,
                    tasks,
                    settings,
                    tenant_id=tenant_id,
                    actor=actor,
                    model_id=head.id,
                    body=body,
                    idempotency_key=key,
                )
        except InvalidInput as exc:
            first_error = first_error or exc
            skipped.append((lineage_id, exc.detail))
            continue
        # A replayed key brings back the first call's requests, and with them its group.
        group_id = fr.group_id or group_id
        fr.group_id = group_id
        made.append(fr)
    if not made:
        if first_error is not None:
            raise first_error
        raise Conflict(f"No model trained on dataset {dataset_id} can take a request yet.")
    for fr in made:
        fr.group_id = group_id
    session.flush()
    audit.record(
        session,
        tenant_id=tenant_id,
        actor=actor,
        action="forget_request_group.created",
        subject_type="forget_request_group",
        subject_id=group_id,
        payload={
            "dataset_id": ds.id,
            "request_ids": [r.id for r in made],
            "skipped": [{"lineage_id": k, "reason": v} for k, v in skipped],
        },
    )
    return GroupResult(group_id, ds.id, made, skipped)


def group_status(requests: list[ForgetRequest]) -> str:
    statuses = {RequestStatus(r.status) for r in requests}
    if statuses == {RequestStatus.completed}:
        return "completed"
    for final in (RequestStatus.failed, RequestStatus.cancelled):
        if final in statuses:
            return final.value
    return "open"


def withdraw(
    session: Session, tenant_id: str, request_id: str, *, reason: str, actor: str
) -> ForgetRequest:
    """The requester takes an open request back: off the clock, audited with the reason. A
    request whose job is running must wait for it (or cancel it first); a queued job left with
    no request is cancelled."""
    fr = repository.get_for_update(session, tenant_id, request_id)
    if fr is None:
        raise NotFound(f"No forget request {request_id}.")
    if RequestStatus(fr.status) not in (RequestStatus.pending, RequestStatus.uncertified):
        raise Conflict(
            f"Forget request {request_id} is {fr.status}; only an open one can be withdrawn."
        )
    job = session.get(Job, fr.job_id) if fr.job_id else None
    if job is not None and job.state == JobState.running and fr.status == RequestStatus.pending:
        raise Conflict(
            f"Forget request {request_id} is being worked on by job {job.id}; cancel the job"
            " first (the request then stays pending) or wait for it to end."
        )
    request_states.transition(session, fr, RequestStatus.withdrawn, reason=reason, actor=actor)
    if job is not None and job.state == JobState.queued:
        others = [r for r in repository.job_requests(session, job.id) if r.id != fr.id]
        if not any(r.status == RequestStatus.pending for r in others):
            jobs.end(
                session, job, JobState.cancelled, "its only request was withdrawn", actor=actor
            )
    return fr
