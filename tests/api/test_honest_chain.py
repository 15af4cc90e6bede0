"""An honest chain: a version that failed the gate honours nothing, later requests start from
the newest certified version and retry the failed samples, building on an uncertified version
needs an explicit flag, and every certificate discloses its whole chain. Real PostgreSQL, the
real engine, the worker's job code in this process, the CLI against a live uvicorn."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app import cli
from app.models import ForgetRequest
from app.models.base import utcnow
from tests import digits
from tests.api.conftest import Lethe
from tests.api.test_policy_and_progress import STRICT, forget_and_run
from tests.factories import TenantKeys
from worker.context import WorkerContext
from worker.jobs import claim_in_order
from worker.tasks.unlearn import run_job

FIRST = {"sample_ids": digits.sample_ids_of_class(0)[:20] + digits.sample_ids_of_class(9)[:20]}
SECOND = {"sample_ids": digits.sample_ids_of_class(4)[:15]}


def predicate(client: TestClient, keys: TenantKeys, model_id: str) -> dict[str, Any]:
    cert = client.get(f"/v1/models/{model_id}/certificate", headers=keys.headers()).json()
    return dict(json.loads(base64.b64decode(cert["payload"]))["predicate"])


def request(client: TestClient, keys: TenantKeys, request_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/forget-requests/{request_id}", headers=keys.headers()).json())


def verify(tmp: Path, client: TestClient, keys: TenantKeys, model_id: str, *extra: str) -> int:
    """`lethe verify` offline on the downloaded certificate and the service's public keys."""
    (tmp / "cert.json").write_text(
        client.get(f"/v1/models/{model_id}/certificate", headers=keys.headers()).text
    )
    (tmp / "keys.json").write_text(client.get("/v1/signing-keys").text)
    return cli.main(["verify", str(tmp / "cert.json"), "--key", str(tmp / "keys.json"), *extra])


def test_a_failed_gate_keeps_requests_open_and_the_next_request_retries_them(
    client: TestClient,
    acme: TenantKeys,
    worker_ctx: WorkerContext,
    digits_model_id: str,
    db: Session,
    lethe: Lethe,
    tmp_path: Path,
) -> None:
    admin = acme.headers("admin")
    assert client.put("/v1/tenant/settings", json=STRICT, headers=admin).status_code == 200
    failed = forget_and_run(client, acme, worker_ctx, digits_model_id, FIRST)
    assert failed["outcome"]["verdict"] == "fail"
    uncertified_id = failed["result_model_id"]
    (first_id,) = failed["request_ids"]
    first = request(client, acme, first_id)
    # Not honoured: not "completed", and still on the clock.
    assert first["status"] == "uncertified" and first["completed_at"] is None
    row = db.get(ForgetRequest, first_id)
    assert row is not None
    row.due_at = utcnow() - timedelta(days=1)
    db.commit()
    overdue = client.get("/v1/forget-requests", params={"overdue": True}, headers=acme.headers())
    assert [(i["id"], i["overdue"]) for i in overdue.json()["items"]] == [(first_id, True)]
    # The CLI says so with its exit codes.
    assert lethe("jobs", "watch", failed["id"], key=acme.admin)[0] == 1
    rc, out, _ = lethe("requests", "overdue", key=acme.admin)
    assert rc == 1 and first_id in out

    # Building on the uncertified version must be asked for.
    refused = client.post(
        f"/v1/models/{uncertified_id}/forget-requests", json=SECOND, headers=acme.headers()
    )
    assert refused.status_code == 409 and "allow_uncertified_base" in refused.json()["detail"]

    # The next request starts from the original (the newest certified version) and carries
    # the failed request's samples with it.
    assert client.put("/v1/tenant/settings", json={"policy": {}}, headers=admin).status_code == 200
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, SECOND)
    assert job["outcome"]["verdict"] == "pass", job["outcome"]
    assert job["model_id"] == digits_model_id
    assert first_id in job["request_ids"] and len(job["request_ids"]) == 2
    assert request(client, acme, first_id)["status"] == "completed"
    new_id = job["result_model_id"]
    pred = predicate(client, acme, new_id)
    assert pred["parent"]["id"] == digits_model_id
    assert [s["verdict"] for s in pred["chain"]] == ["uploaded", "pass"]
    assert pred["chain"][-1]["id"] == new_id and pred["uncertified_ancestors"] == []
    assert pred["forgotten"]["this_job"]["count"] == 55
    assert pred["forgotten"]["cumulative"]["count"] == 55
    assert verify(tmp_path, client, acme, new_id) == 0
    # The certificate pins the audit history it refers to with a signed checkpoint of its head.
    cp = pred["audit_checkpoint"]
    events = client.get("/v1/audit-events", params={"limit": 500}, headers=acme.headers("auditor"))
    at_head = [e for e in events.json()["items"] if e["seq"] == cp["size"]]
    assert at_head[0]["action"] == "job.succeeded" and at_head[0]["subject_id"] == job["id"]
    rc, out, err = lethe(
        "audit", "verify", "--checkpoint", str(tmp_path / "cert.json"), key=acme.admin
    )
    assert rc == 0, out + err


def test_building_on_an_uncertified_version_is_explicit_and_disclosed(
    client: TestClient,
    acme: TenantKeys,
    worker_ctx: WorkerContext,
    digits_model_id: str,
    tmp_path: Path,
) -> None:
    admin = acme.headers("admin")
    assert client.put("/v1/tenant/settings", json=STRICT, headers=admin).status_code == 200
    failed = forget_and_run(client, acme, worker_ctx, digits_model_id, FIRST)
    uncertified_id = failed["result_model_id"]
    assert client.put("/v1/tenant/settings", json={"policy": {}}, headers=admin).status_code == 200

    not_needed = client.post(
        f"/v1/models/{digits_model_id}/forget-requests",
        json={**SECOND, "allow_uncertified_base": True},
        headers=acme.headers(),
    )
    assert not_needed.status_code == 422
    job = forget_and_run(
        client, acme, worker_ctx, uncertified_id, {**SECOND, "allow_uncertified_base": True}
    )
    assert job["model_id"] == uncertified_id and job["outcome"]["verdict"] == "pass"
    (first_id,) = failed["request_ids"]
    assert first_id not in job["request_ids"]  # its samples are in the base already
    pred = predicate(client, acme, job["result_model_id"])
    assert [s["verdict"] for s in pred["chain"]] == ["uploaded", "fail", "pass"]
    assert pred["chain"][1]["id"] == uncertified_id and pred["uncertified_ancestors"] == [2]
    assert pred["forgotten"]["cumulative"]["count"] == 55

    assert verify(tmp_path, client, acme, job["result_model_id"]) == 1
    accepted = verify(
        tmp_path, client, acme, job["result_model_id"], "--accept-uncertified-ancestors"
    )
    assert accepted == 0


def test_a_failed_class_request_is_retried_before_a_later_sample_request(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext, digits_model_id: str
) -> None:
    """The scenario users met: a class request fails the gate, then a person's request comes.
    The class request is retried first (its own job: a class and samples are judged apart), from
    the original, and the person's request builds on that; the uncertified step is in no chain."""
    admin = acme.headers("admin")
    strict = {"policy": {"class_ta_drop_max": 0.0, "class_fa_max": 0.0}}
    assert client.put("/v1/tenant/settings", json=strict, headers=admin).status_code == 200
    failed = forget_and_run(client, acme, worker_ctx, digits_model_id, {"class_ids": [3]})
    assert failed["outcome"]["verdict"] == "fail"
    (class_request,) = failed["request_ids"]
    assert client.put("/v1/tenant/settings", json={"policy": {}}, headers=admin).status_code == 200

    res = client.post(
        f"/v1/models/{digits_model_id}/forget-requests", json=SECOND, headers=acme.headers()
    )
    assert res.status_code == 202, res.text
    retry_job = request(client, acme, class_request)["job_id"]
    assert retry_job not in (failed["id"], res.json()["job_id"])
    # Lineage order: the retry runs first; the person's job waits for it.
    assert claim_in_order(worker_ctx, res.json()["job_id"]) is None
    for job_id in (retry_job, res.json()["job_id"]):
        attempt = claim_in_order(worker_ctx, job_id)
        assert attempt == 1
        run_job(worker_ctx, job_id, attempt)
    person = client.get(f"/v1/jobs/{res.json()['job_id']}", headers=acme.headers()).json()
    assert person["outcome"]["verdict"] == "pass", person["outcome"]
    assert request(client, acme, class_request)["status"] == "completed"
    pred = predicate(client, acme, person["result_model_id"])
    chain = pred["chain"]
    assert [s["verdict"] for s in chain] == ["uploaded", "pass", "pass"]
    assert failed["result_model_id"] not in [s["id"] for s in chain]
    assert chain[1]["request_ids"] == [class_request]
    assert pred["forgotten"]["cumulative"]["count"] == pred["forgotten"]["this_job"]["count"] + (
        len(digits.sample_ids_of_class(3))
    )


def test_a_cancelled_jobs_request_stays_owed_and_rides_with_the_next(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext, digits_model_id: str
) -> None:
    url = f"/v1/models/{digits_model_id}/forget-requests"
    first = client.post(url, json=FIRST, headers=acme.headers()).json()
    cancel = client.post(f"/v1/jobs/{first['job_id']}/cancel", headers=acme.headers())
    assert cancel.json()["state"] == "cancelled"
    assert request(client, acme, first["id"])["status"] == "pending"

    job = forget_and_run(client, acme, worker_ctx, digits_model_id, SECOND)
    assert first["id"] in job["request_ids"] and job["outcome"]["verdict"] == "pass"
    assert request(client, acme, first["id"])["status"] == "completed"
