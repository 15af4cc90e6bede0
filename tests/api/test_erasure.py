"""Erasure rules with the worker's job code in this process (real PostgreSQL, real engine): a
dataset's bytes go only when every lineage on it forgot the samples, a purge killed half-way
finishes once, the retention window delays the purge, and a failed outcome erases nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.erasure import service as erasure
from app.models import ErasureReceipt, ModelVersion
from app.models.base import utcnow
from tests import digits
from tests.api.test_models import run_validation_claimed
from tests.api.test_policy_and_progress import STRICT, forget_and_run
from tests.factories import TenantKeys, make_tenant
from worker.context import WorkerContext
from worker.jobs import claim
from worker.sweeper import sweep_once
from worker.tasks.purge import run_purge

PERSON = {"sample_ids": digits.sample_ids_of_class(0)[:20], "subject_ref": "person-1"}


def purge(ctx: WorkerContext, job_id: str) -> str | None:
    attempt = claim(ctx, job_id)
    assert attempt is not None
    return run_purge(ctx, job_id, attempt)


def second_model(client: TestClient, keys: TenantKeys, ctx: WorkerContext, dataset_id: str) -> str:
    weights, _ = digits.trained()
    mv = client.post(
        "/v1/models",
        files={"weights": ("w", weights, "application/octet-stream")},
        data={"spec": digits.spec(dataset_id)},
        headers=keys.headers(),
    ).json()
    run_validation_claimed(ctx, mv["validation_job_id"])
    return str(mv["id"])


def exposure(client: TestClient, keys: TenantKeys, dataset_id: str, sample: int) -> Any:
    url = f"/v1/datasets/{dataset_id}/samples/{sample}/exposure"
    return client.get(url, headers=keys.headers()).json()


def test_the_manifest_keeps_a_sample_until_every_lineage_forgot_it(
    client: TestClient,
    acme: TenantKeys,
    worker_ctx: WorkerContext,
    digits_model_id: str,
    db: Session,
) -> None:
    dataset_id = client.get(f"/v1/models/{digits_model_id}", headers=acme.headers()).json()[
        "dataset_id"
    ]
    other = second_model(client, acme, worker_ctx, dataset_id)
    sample = PERSON["sample_ids"][0]

    job = forget_and_run(client, acme, worker_ctx, digits_model_id, PERSON)
    assert purge(worker_ctx, job["outcome"]["purge_job_id"])
    seen = exposure(client, acme, dataset_id, sample)
    # The first lineage's original is destroyed, but the other lineage still holds the sample,
    # so the manifest keeps it and says who holds it.
    assert seen["in_manifest"] and seen["lineages_holding"] == [other]
    assert {(a["kind"], a["id"]) for a in seen["stored_artifacts_holding"]} == {
        ("model_weights", other),
        ("dataset_manifest", dataset_id),
    }

    job = forget_and_run(client, acme, worker_ctx, other, PERSON)
    receipt_id = purge(worker_ctx, job["outcome"]["purge_job_id"])
    seen = exposure(client, acme, dataset_id, sample)
    assert not seen["in_manifest"] and seen["stored_artifacts_holding"] == []
    ds = client.get(f"/v1/datasets/{dataset_id}", headers=acme.headers()).json()
    assert ds["num_samples"] == 1438 - 20
    receipt = client.get(f"/v1/erasure-receipts/{receipt_id}", headers=acme.headers()).json()
    assert receipt["payloadType"] == "application/vnd.in-toto+json"
    globex = make_tenant(db, "globex")
    theirs = client.get(f"/v1/erasure-receipts/{receipt_id}", headers=globex.headers())
    assert theirs.status_code == 404
    assert client.get("/v1/erasure-receipts", headers=globex.headers()).json()["items"] == []

    # A later request on the erased manifest still works, including the retrain fallback.
    later = forget_and_run(
        client, acme, worker_ctx, other, {"sample_ids": digits.sample_ids_of_class(7)[:10]}
    )
    assert later["outcome"]["verdict"] == "pass"


def test_a_purge_killed_half_way_finishes_once(
    client: TestClient,
    acme: TenantKeys,
    worker_ctx: WorkerContext,
    digits_model_id: str,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker dies after the rows are gone and before the files are deleted (simulated by
    stopping the process's code there: the in-process stand-in for SIGKILL); the sweeper hands
    the job to the next attempt, which deletes the files and signs one receipt."""
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, PERSON)
    purge_id = job["outcome"]["purge_job_id"]
    original = db.get(ModelVersion, digits_model_id)
    assert original is not None and original.weights_digest
    digest = original.weights_digest

    class Killed(BaseException):
        pass

    def die(*args: object, **kwargs: object) -> int:
        raise Killed

    monkeypatch.setattr(erasure, "destroy_pending", die)
    with pytest.raises(Killed):
        purge(worker_ctx, purge_id)
    monkeypatch.undo()
    db.expire_all()
    assert worker_ctx.store.exists(digest), "the file is deleted only after its row"
    assert client.get(f"/v1/jobs/{purge_id}", headers=acme.headers()).json()["state"] == "running"

    counts = sweep_once(worker_ctx, now=utcnow() + timedelta(hours=1))
    assert counts["requeued"] == 1
    receipt_id = purge(worker_ctx, purge_id)
    done = client.get(f"/v1/jobs/{purge_id}", headers=acme.headers()).json()
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert not worker_ctx.store.exists(digest)
    receipts = list(db.scalars(select(ErasureReceipt).where(ErasureReceipt.job_id == purge_id)))
    assert [r.id for r in receipts] == [receipt_id]
    # Each destroyed artifact is listed once, though two attempts ran.
    digests = [d["digest"]["sha256"] for d in done["outcome"]["destroyed"]]
    assert len(digests) == len(set(digests)) and digest in digests


def test_the_retention_window_delays_the_purge_but_not_the_410(
    client: TestClient,
    acme: TenantKeys,
    worker_ctx: WorkerContext,
    digits_model_id: str,
    db: Session,
) -> None:
    res = client.put(
        "/v1/tenant/settings", json={"retention_days": 2}, headers=acme.headers("admin")
    )
    assert res.status_code == 200, res.text
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, PERSON)
    assert job["outcome"]["purge_job_id"] is None
    gone = client.get(f"/v1/models/{digits_model_id}/weights", headers=acme.headers())
    assert gone.status_code == 410 and "will be destroyed" in gone.json()["detail"]
    original = db.get(ModelVersion, digits_model_id)
    assert original is not None and original.weights_digest is not None
    assert original.purge_due_at is not None
    assert sweep_once(worker_ctx)["purges"] == 0  # not due yet

    counts = sweep_once(worker_ctx, now=utcnow() + timedelta(days=2, minutes=1))
    assert counts["purges"] == 1
    db.expire_all()
    # The sweeper queued it; run it as a worker would (due "now" is still two days away here,
    # so move the due time instead of the clock).
    original = db.get(ModelVersion, digits_model_id)
    assert original is not None
    original.purge_due_at = utcnow() - timedelta(seconds=1)
    db.commit()
    from app.models import Job

    purge_job = db.scalars(select(Job).where(Job.kind == "purge")).one()
    assert purge(worker_ctx, purge_job.id)
    model = client.get(f"/v1/models/{digits_model_id}", headers=acme.headers()).json()
    assert model["status"] == "purged"


def test_a_failed_outcome_erases_nothing(
    client: TestClient,
    acme: TenantKeys,
    worker_ctx: WorkerContext,
    digits_model_id: str,
    tmp_path: Path,
) -> None:
    assert client.put("/v1/tenant/settings", json=STRICT, headers=acme.headers("admin")).is_success
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, PERSON)
    assert job["outcome"]["verdict"] == "fail" and "purge_job_id" not in job["outcome"]
    weights = client.get(f"/v1/models/{digits_model_id}/weights", headers=acme.headers())
    assert weights.status_code == 200  # the retry starts from it
    model = client.get(f"/v1/models/{digits_model_id}", headers=acme.headers()).json()
    sample = PERSON["sample_ids"][0]
    assert exposure(client, acme, model["dataset_id"], sample)["in_manifest"]
