"""A committed world for the console's tests: two tenants, a model trained on scikit-learn's
digits, one forget request answered by the worker's own job code (with a retrained reference),
one pending request made overdue, and the API on a real uvicorn.

Rows are committed (a browser talks to the server over real sockets, from several connections
at once), so this module gets a PostgreSQL database of its own instead of a rolled-back
transaction, as the worker tests do.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.certificates.signing import generate_key_file
from app.core.config import Environment, Settings
from app.core.db import make_engine, make_sessionmaker, session_scope
from app.core.storage import open_store
from app.core.tasks import TaskSender
from app.main import create_app
from app.models import ForgetRequest, Job
from app.models.base import utcnow
from tests import digits
from tests.api.conftest import serve
from tests.conftest import REDIS_URL, fresh_database
from tests.factories import TenantKeys, make_tenant
from worker.context import WorkerContext
from worker.jobs import claim, claim_in_order
from worker.tasks.purge import run_purge
from worker.tasks.unlearn import run_job
from worker.tasks.validate_model import run_validation


@dataclass(frozen=True)
class World:
    url: str
    settings: Settings
    acme: TenantKeys
    other: TenantKeys
    original_id: str
    dataset_id: str
    answered_id: str  # the request the worker answered
    result_id: str  # the version it made
    overdue_id: str  # a pending request past its due date
    other_request_id: str  # a request of the other tenant
    forgotten_sample: int
    weights: bytes  # the result's weights, as a user would download them


def _ready_model(client: TestClient, keys: TenantKeys, ctx: WorkerContext) -> tuple[str, str]:
    ds = client.post(
        "/v1/datasets",
        files={"train": ("d", digits.dataset_bytes(), "application/octet-stream")},
        data={"name": "digits"},
        headers=keys.headers(),
    )
    assert ds.status_code == 201, ds.text
    weights, _ = digits.trained()
    mv = client.post(
        "/v1/models",
        files={"weights": ("w", weights, "application/octet-stream")},
        data={"spec": digits.spec(ds.json()["id"])},
        headers=keys.headers(),
    )
    assert mv.status_code == 202, mv.text
    job_id = mv.json()["validation_job_id"]
    assert claim(ctx, job_id)
    run_validation(ctx, job_id)
    return str(mv.json()["id"]), str(ds.json()["id"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("console")
    generate_key_file(root / "signing-key.pem")
    with fresh_database("lethe_console") as url:
        settings = Settings(
            environment=Environment.test,
            secret_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
            data_dir=root / "data",
            database_url=url,
            redis_url=REDIS_URL,
            artifact_uri=(root / "artifacts").as_uri(),
            signing_key_path=root / "signing-key.pem",
            auto_migrate=False,
        )
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        app = create_app(settings, engine=engine, tasks=TaskSender(settings))
        ctx = WorkerContext(
            settings=settings,
            engine=engine,
            sessionmaker=factory,
            store=open_store(settings.resolved_artifact_uri),
            name="console-test-worker",
        )
        with factory() as db:
            acme = make_tenant(db, "acme")
            other = make_tenant(db, "other")
        with TestClient(app) as client:
            original_id, dataset_id = _ready_model(client, acme, ctx)
            forget = digits.sample_ids_of_class(4)[:12]
            res = client.post(
                f"/v1/models/{original_id}/forget-requests",
                json={"sample_ids": forget, "reference_eval": True, "subject_ref": "ticket-17"},
                headers=acme.headers(),
            )
            assert res.status_code == 202, res.text
            answered = res.json()
            attempt = claim_in_order(ctx, answered["job_id"])
            assert attempt == 1
            run_job(ctx, answered["job_id"], attempt)
            # The superseded original is purged (its retention is zero here): a signed receipt.
            done = client.get(f"/v1/jobs/{answered['job_id']}", headers=acme.headers()).json()
            purge_job = done["outcome"]["purge_job_id"]
            purge_attempt = claim(ctx, purge_job)
            assert purge_attempt is not None
            assert run_purge(ctx, purge_job, purge_attempt)
            answered = client.get(
                f"/v1/forget-requests/{answered['id']}", headers=acme.headers()
            ).json()
            assert answered["result_model_id"], answered
            result_id = answered["result_model_id"]
            weights = client.get(f"/v1/models/{result_id}/weights", headers=acme.headers())
            assert weights.status_code == 200, weights.text

            # A second person's request, received 40 days ago and still owed: overdue.
            late = client.post(
                f"/v1/models/{original_id}/forget-requests",
                json={"sample_ids": digits.sample_ids_of_class(7)[:5], "subject_ref": "ticket-9"},
                headers=acme.headers(),
            )
            assert late.status_code == 202, late.text
            overdue_id = late.json()["id"]
            # A third, due in three days: the "next 7 days" count.
            soon = client.post(
                f"/v1/models/{original_id}/forget-requests",
                json={"sample_ids": digits.sample_ids_of_class(7)[5:8], "subject_ref": "ticket-21"},
                headers=acme.headers(),
            )
            assert soon.status_code == 202, soon.text

            other_model, _ = _ready_model(client, other, ctx)
            theirs = client.post(
                f"/v1/models/{other_model}/forget-requests",
                json={"class_ids": [1]},
                headers=other.headers(),
            )
            assert theirs.status_code == 202, theirs.text
        with session_scope(factory) as db:
            db.execute(
                update(ForgetRequest)
                .where(ForgetRequest.id == overdue_id)
                .values(
                    created_at=utcnow() - timedelta(days=40),
                    due_at=utcnow() - timedelta(days=10),
                )
            )
            db.execute(
                update(ForgetRequest)
                .where(ForgetRequest.id == soon.json()["id"])
                .values(due_at=utcnow() + timedelta(days=3))
            )
        with serve(app) as live:
            yield World(
                url=live,
                settings=settings,
                acme=acme,
                other=other,
                original_id=original_id,
                dataset_id=dataset_id,
                answered_id=answered["id"],
                result_id=result_id,
                overdue_id=overdue_id,
                other_request_id=theirs.json()["id"],
                forgotten_sample=forget[0],
                weights=weights.content,
            )
        engine.dispose()


def set_progress(world: World, job_id: str, progress: dict[str, object]) -> None:
    """What a worker writes while it trains: the live page must show it."""
    engine = make_engine(world.settings.resolved_database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as db:
            db.execute(update(Job).where(Job.id == job_id).values(progress=progress))
    finally:
        engine.dispose()


SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
