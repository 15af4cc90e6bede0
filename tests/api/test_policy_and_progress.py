"""The policy gate, the retrain fallback, server-sent events and overdue requests, with the
worker's job code run in this process on the test's transaction (real PostgreSQL, real engine)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import ForgetRequest
from app.models.base import utcnow
from tests import digits
from tests.factories import TenantKeys
from worker.context import WorkerContext
from worker.jobs import claim_in_order
from worker.tasks.unlearn import run_job

STRICT = {"policy": {"sample_fa_gap_max": 0.0, "sample_ra_drop_max": 0.0}}


def forget_and_run(
    client: TestClient, keys: TenantKeys, ctx: WorkerContext, model_id: str, body: dict[str, object]
) -> dict:  # type: ignore[type-arg]
    res = client.post(f"/v1/models/{model_id}/forget-requests", json=body, headers=keys.headers())
    assert res.status_code == 202, res.text
    job_id = res.json()["job_id"]
    attempt = claim_in_order(ctx, job_id)
    assert attempt == 1
    run_job(ctx, job_id, attempt)
    return dict(client.get(f"/v1/jobs/{job_id}", headers=keys.headers()).json())


SAMPLES = {"sample_ids": digits.sample_ids_of_class(0)[:20] + digits.sample_ids_of_class(9)[:20]}


def test_failing_the_gate_stores_an_uncertified_version(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext, digits_model_id: str
) -> None:
    assert client.put("/v1/tenant/settings", json=STRICT, headers=acme.headers()).status_code == 403
    res = client.put("/v1/tenant/settings", json=STRICT, headers=acme.headers("admin"))
    assert res.status_code == 200, res.text
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, SAMPLES)
    assert job["state"] == "succeeded", job["error"]
    assert job["outcome"]["verdict"] == "fail" and job["outcome"]["reasons"]
    new_id = job["result_model_id"]
    new = client.get(f"/v1/models/{new_id}", headers=acme.headers()).json()
    assert new["status"] == "uncertified" and new["status_reason"]
    refused = client.get(f"/v1/models/{new_id}/weights", headers=acme.headers())
    assert refused.status_code == 409
    assert "allow_uncertified" in refused.json()["detail"]
    ok = client.get(
        f"/v1/models/{new_id}/weights", params={"allow_uncertified": True}, headers=acme.headers()
    )
    assert ok.status_code == 200
    cert = client.get(f"/v1/models/{new_id}/certificate", headers=acme.headers()).json()
    pred = json.loads(base64.b64decode(cert["payload"]))["predicate"]
    assert pred["policy"]["verdict"] == "fail"
    assert pred["policy"]["thresholds"]["sample_fa_gap_max"] == 0.0


def test_fallback_retrain_certifies_the_exact_answer(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext, digits_model_id: str
) -> None:
    settings = {**STRICT, "fallback_retrain": True}
    assert client.put("/v1/tenant/settings", json=settings, headers=acme.headers("admin")).json()[
        "fallback_retrain"
    ]
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, SAMPLES)
    assert job["state"] == "succeeded", job["error"]
    assert job["outcome"]["fallback"] is True and job["outcome"]["method"] == "retrain"
    new = client.get(f"/v1/models/{job['result_model_id']}", headers=acme.headers()).json()
    assert new["status"] == "ready"
    cert = client.get(f"/v1/models/{new['id']}/certificate", headers=acme.headers()).json()
    pred = json.loads(base64.b64decode(cert["payload"]))["predicate"]
    assert pred["method"]["name"] == "retrain" and pred["method"]["requested"] == "sfr_on"
    assert pred["method"]["fallback"] is True and pred["policy"]["verdict"] == "pass"


def test_events_stream_and_overdue_requests(
    client: TestClient,
    acme: TenantKeys,
    worker_ctx: WorkerContext,
    digits_model_id: str,
    db: Session,
) -> None:
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, {"class_ids": [2]})
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=acme.headers()) as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        body = res.read().decode()
    events = [block for block in body.split("\n\n") if block.strip()]
    first = json.loads(events[0].split("data: ", 1)[1])
    assert first["state"] == "succeeded" and first["progress"]["phase"] == "done"
    assert events[-1].startswith("event: end")

    res = client.post(
        f"/v1/models/{digits_model_id}/forget-requests",
        json={"class_ids": [5]},
        headers=acme.headers(),
    )
    late = db.get(ForgetRequest, res.json()["id"])
    assert late is not None
    late.due_at = utcnow() - timedelta(days=1)
    db.commit()
    overdue = client.get("/v1/forget-requests", params={"overdue": True}, headers=acme.headers())
    items = overdue.json()["items"]
    assert [i["id"] for i in items] == [late.id] and items[0]["overdue"] is True
    # Cancelling the queued job answers at once, but does not answer the request: it stays
    # pending and on the clock until it is withdrawn (its own audited act) or carried.
    cancel = client.post(f"/v1/jobs/{res.json()['job_id']}/cancel", headers=acme.headers())
    assert cancel.json()["state"] == "cancelled"
    still = client.get(f"/v1/forget-requests/{late.id}", headers=acme.headers()).json()
    assert still["status"] == "pending" and still["overdue"]
    url = f"/v1/forget-requests/{late.id}/withdraw"
    assert client.post(url, json={"reason": ""}, headers=acme.headers()).status_code == 422
    gone = client.post(url, json={"reason": "subject withdrew"}, headers=acme.headers()).json()
    assert gone["status"] == "withdrawn" and not gone["overdue"] and gone["completed_at"]
    assert client.post(url, json={"reason": "again"}, headers=acme.headers()).status_code == 409
    events = client.get(
        "/v1/audit-events",
        params={"subject_id": late.id, "action": "forget_request.withdrawn"},
        headers=acme.headers("auditor"),
    ).json()["items"]
    assert events[0]["payload"]["reason"] == "subject withdrew"


def test_coalesced_requests_share_one_job(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext, digits_model_id: str
) -> None:
    a = client.post(
        f"/v1/models/{digits_model_id}/forget-requests",
        json={"sample_ids": digits.sample_ids_of_class(1)[:5]},
        headers=acme.headers(),
    ).json()
    b = client.post(
        f"/v1/models/{digits_model_id}/forget-requests",
        json={"sample_ids": digits.sample_ids_of_class(1)[5:10]},
        headers=acme.headers(),
    ).json()
    assert a["job_id"] == b["job_id"] and b["coalesced"]
    attempt = claim_in_order(worker_ctx, a["job_id"])
    assert attempt is not None
    run_job(worker_ctx, a["job_id"], attempt)
    job = client.get(f"/v1/jobs/{a['job_id']}", headers=acme.headers()).json()
    assert job["state"] == "succeeded" and job["coalesced"]
    assert job["request_ids"] == [a["id"], b["id"]]  # in the order they were received
    for r in (a, b):
        done = client.get(f"/v1/forget-requests/{r['id']}", headers=acme.headers()).json()
        assert done["coalesced"] and done["result_model_id"] == job["result_model_id"]
