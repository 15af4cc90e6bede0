from __future__ import annotations

import json
import logging

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.core.observability import JsonFormatter, request_id_var
from app.models import Job
from tests.api.test_models import ARGS, real_weights, run_validation_claimed, upload
from tests.factories import dataset_arrays, make_tenant, model_spec, safetensors_bytes
from worker.context import WorkerContext


def test_request_id_follows_the_request_into_its_job(client: TestClient, db: Session) -> None:
    keys = make_tenant(db, "acme")
    res = client.get("/healthz")
    assert len(res.headers["x-request-id"]) == 32
    ds = client.post(
        "/v1/datasets",
        files={"train": ("t", safetensors_bytes(dataset_arrays()), "application/octet-stream")},
        data={"name": "toy"},
        headers={**keys.headers(), "X-Request-ID": "upload-123"},
    )
    assert ds.headers["x-request-id"] == "upload-123"
    model = upload(client, keys, model_spec(ds.json()["id"], args=ARGS), real_weights())
    rid = model.headers["x-request-id"]
    job = db.get(Job, model.json()["validation_job_id"])
    assert job is not None and job.request_id == rid


def test_metrics_endpoint(client: TestClient, db: Session, worker_ctx: WorkerContext) -> None:
    keys = make_tenant(db, "acme")
    ds = client.post(
        "/v1/datasets",
        files={"train": ("t", safetensors_bytes(dataset_arrays()), "application/octet-stream")},
        data={"name": "toy"},
        headers=keys.headers(),
    )
    model = upload(client, keys, model_spec(ds.json()["id"], args=ARGS), real_weights()).json()
    upload(client, keys, model_spec(ds.json()["id"], args=ARGS), real_weights())
    run_validation_claimed(worker_ctx, model["validation_job_id"])
    client.get("/v1/nothing", headers=keys.headers())
    text = client.get("/metrics").text
    assert 'lethe_http_requests_total{method="POST",route="/v1/datasets",status="201"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert 'lethe_jobs{kind="validate_model",state="queued"}' in text
    assert 'lethe_queue_depth{queue="cpu"}' in text
    assert 'lethe_queue_depth{queue="gpu"} 0.0' in text  # an empty queue reads 0, not nothing
    assert "lethe_http_request_duration_seconds_bucket" in text
    done = '{kind="validate_model",state="succeeded"}'
    assert f"lethe_job_duration_seconds_count{done} 1.0" in text
    inf = 'lethe_job_duration_seconds_bucket{kind="validate_model",le="+Inf",state="succeeded"}'
    assert f"{inf} 1.0" in text
    assert f"lethe_jobs{done} 1.0" in text


def test_json_log_lines_carry_the_request_id() -> None:
    token = request_id_var.set("abc")
    try:
        record = logging.LogRecord(
            "lethe.test", logging.INFO, __file__, 1, "hello %s", ("x",), None
        )
        record.status = 201
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello x" and line["request_id"] == "abc" and line["status"] == 201
    assert line["level"] == "info" and line["ts"].endswith("+00:00")
