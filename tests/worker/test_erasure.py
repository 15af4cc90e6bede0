"""Erasure end to end through HTTP, a real Celery worker, Redis and PostgreSQL: after a class
request and a person's request on one lineage, no byte of the artifact store holds the forgotten
samples' images, the superseded versions answer 410, and the receipt and the chain verify
offline. This module has its own database, store and worker (the store is scanned whole)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app import cli
from app.core.config import Settings
from app.core.tasks import TaskSender
from tests import digits
from tests.worker.conftest import WorkerProcess
from tests.worker.helpers import Setup, register_digits_model, wait_job

PERSON = digits.sample_ids_of_class(0)[:25]


@pytest.fixture(scope="module")
def setup(
    celery_worker: WorkerProcess, worker_settings: Settings, committed_engine: Engine
) -> Setup:
    from app.main import create_app

    app = create_app(worker_settings, engine=committed_engine, tasks=TaskSender(worker_settings))
    with TestClient(app) as client:
        return register_digits_model(client, committed_engine)


def forget(c: TestClient, s: Setup, body: dict[str, object], worker: WorkerProcess) -> dict:  # type: ignore[type-arg]
    res = c.post(f"/v1/models/{s.model_id}/forget-requests", json=body, headers=s.keys.headers())
    assert res.status_code == 202, res.text
    job = wait_job(c, s.keys, res.json()["job_id"])
    assert job["state"] == "succeeded", (job["error"], worker.output()[-2000:])
    assert job["outcome"]["verdict"] == "pass", job["outcome"]
    purge = wait_job(c, s.keys, job["outcome"]["purge_job_id"])
    assert purge["state"] == "succeeded", (purge["error"], worker.output()[-2000:])
    return {"job": job, "purge": purge}


def store_bytes(settings: Settings) -> list[bytes]:
    root = Path(urlparse(settings.resolved_artifact_uri).path)
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


def verify(tmp: Path, name: str, envelope: str, keys: str, *extra: str) -> int:
    (tmp / name).write_text(envelope)
    (tmp / "keys.json").write_text(keys)
    return cli.main(["verify", str(tmp / name), "--key", str(tmp / "keys.json"), *extra])


def test_forgotten_samples_and_superseded_versions_are_gone(
    live_client: TestClient,
    setup: Setup,
    worker_settings: Settings,
    celery_worker: WorkerProcess,
    tmp_path: Path,
) -> None:
    c, s = live_client, setup
    a = digits.arrays()
    ids = np.asarray(a["sample_ids"])
    forgotten = np.isin(ids, PERSON) | (np.asarray(a["labels"]) == 3)
    # An image that is also a kept or test sample's stays in the store, rightly: skip those.
    kept = {bytes(x.tobytes()) for x in a["images"][~forgotten]}
    kept |= {bytes(x.tobytes()) for x in a["test_images"]}
    needles = [bytes(x.tobytes()) for x in a["images"][forgotten]]
    needles = [n for n in needles if n not in kept]
    assert len(needles) > 150
    before = store_bytes(worker_settings)
    assert any(needles[0] in blob for blob in before)

    exposure_url = f"/v1/datasets/{s.dataset_id}/samples/{PERSON[0]}/exposure"
    seen = c.get(exposure_url, headers=s.keys.headers()).json()
    assert seen["in_manifest"] and {a["kind"] for a in seen["stored_artifacts_holding"]} == {
        "model_weights",
        "dataset_manifest",
    }

    first = forget(c, s, {"class_ids": [3], "reason": "class withdrawn"}, celery_worker)
    second = forget(c, s, {"sample_ids": PERSON, "subject_ref": "person-17"}, celery_worker)
    newest = second["job"]["result_model_id"]

    # Nothing in the store holds the forgotten samples' images any more.
    after = store_bytes(worker_settings)
    found = [n for n in needles if any(n in blob for blob in after)]
    assert not found, f"{len(found)} forgotten images still stored"

    # The original and the class step's version are retired: 410 Gone, a problem document.
    for old in (s.model_id, first["job"]["result_model_id"]):
        gone = c.get(f"/v1/models/{old}/weights", headers=s.keys.headers())
        assert gone.status_code == 410, gone.text
        assert gone.headers["content-type"].startswith("application/problem+json")
        assert c.get(f"/v1/models/{old}", headers=s.keys.headers()).json()["status"] == "purged"
    assert c.get(f"/v1/models/{newest}/weights", headers=s.keys.headers()).status_code == 200

    # The truth after: the person's sample is held by no stored artifact.
    seen = c.get(exposure_url, headers=s.keys.headers()).json()
    assert not seen["in_manifest"] and seen["stored_artifacts_holding"] == []
    assert seen["lineages_holding"] == [] and seen["erased_at"]
    ds = c.get(f"/v1/datasets/{s.dataset_id}", headers=s.keys.headers()).json()
    assert ds["num_samples"] == len(ids) - int(forgotten.sum())

    # Receipts and the chain verify offline.
    keys = c.get("/v1/signing-keys").text
    receipt_id = second["purge"]["outcome"]["receipt_id"]
    receipt = c.get(f"/v1/erasure-receipts/{receipt_id}", headers=s.keys.headers("auditor"))
    assert receipt.status_code == 200
    assert verify(tmp_path, "receipt.json", receipt.text, keys) == 0
    tampered = receipt.json()
    tampered["payload"] = tampered["payload"][:-8] + "AAAAAAA="
    assert verify(tmp_path, "bad.json", json.dumps(tampered), keys) == 1
    cert = c.get(f"/v1/models/{newest}/certificate", headers=s.keys.headers()).text
    assert verify(tmp_path, "cert.json", cert, keys) == 0

    # Later requests keep working on the erased manifest (the retrain fallback too).
    third = forget(
        c, s, {"sample_ids": digits.sample_ids_of_class(5)[:10], "method": "retrain"}, celery_worker
    )
    assert third["job"]["outcome"]["metrics"]["unlearned"]["TA"] > 80
