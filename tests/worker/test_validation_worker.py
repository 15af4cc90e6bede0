"""Model validation through a real Celery worker process, Redis broker and PostgreSQL."""

from __future__ import annotations

import secrets

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.tasks import VALIDATE_MODEL, TaskSender
from app.models import JobTransition
from tests.api.test_models import ARGS, real_weights
from tests.factories import dataset_arrays, make_tenant, model_spec, safetensors_bytes
from tests.worker.conftest import WorkerProcess, wait_until


def test_uploaded_model_becomes_ready_and_redelivery_is_harmless(
    celery_worker: WorkerProcess,
    live_client: TestClient,
    committed_engine: Engine,
    worker_settings: Settings,
) -> None:
    with Session(committed_engine) as db:
        keys = make_tenant(db, f"worker-{secrets.token_hex(4)}")
    ds = live_client.post(
        "/v1/datasets",
        files={"train": ("t", safetensors_bytes(dataset_arrays()), "application/octet-stream")},
        data={"name": "toy"},
        headers=keys.headers(),
    ).json()
    model = live_client.post(
        "/v1/models",
        files={"weights": ("w", real_weights(), "application/octet-stream")},
        data={"spec": model_spec(ds["id"], args=ARGS)},
        headers=keys.headers(),
    ).json()

    def status() -> str:
        res = live_client.get(f"/v1/models/{model['id']}", headers=keys.headers())
        return str(res.json()["status"])

    assert wait_until(lambda: status() != "validating", timeout=90), celery_worker.output()
    assert status() == "ready", celery_worker.output()

    # The same task delivered again (a broker redelivery) must change nothing.
    job_id = model["validation_job_id"]
    TaskSender(worker_settings).send(VALIDATE_MODEL, job_id, "cpu")
    TaskSender(worker_settings).send(VALIDATE_MODEL, job_id, "cpu")
    assert wait_until(lambda: "is not queued any more" in celery_worker.output(), timeout=30)
    with Session(committed_engine) as db:
        states = list(
            db.scalars(
                select(JobTransition.to_state)
                .where(JobTransition.job_id == job_id)
                .order_by(JobTransition.id)
            )
        )
    assert states == ["queued", "running", "succeeded"]
