"""A manifest may carry its own validation split; every job says which samples each of its
figures covers, and the original's row is measured on the same samples as the new version's."""

from __future__ import annotations

import base64
import json

import numpy as np
from fastapi.testclient import TestClient

from tests import digits
from tests.api.test_models import run_validation_claimed
from tests.api.test_policy_and_progress import forget_and_run
from tests.factories import TenantKeys, safetensors_bytes
from worker.context import WorkerContext

PERSON = {"sample_ids": digits.sample_ids_of_class(2)[:10], "reason": "GDPR art. 17"}


def _digits_with_validation(n_val: int) -> bytes:
    """Digits with the last ``n_val`` test samples moved into a validation split."""
    a = dict(digits.arrays())
    a["validation_images"], a["validation_labels"] = (
        a["test_images"][-n_val:],
        a["test_labels"][-n_val:],
    )
    a["test_images"], a["test_labels"] = a["test_images"][:-n_val], a["test_labels"][:-n_val]
    return safetensors_bytes(a)


def _register(client: TestClient, acme: TenantKeys, ctx: WorkerContext, train: bytes) -> str:
    ds = client.post(
        "/v1/datasets",
        files={"train": ("d", train, "application/octet-stream")},
        data={"name": "digits"},
        headers=acme.headers(),
    )
    assert ds.status_code == 201, ds.text
    weights, _ = digits.trained()
    mv = client.post(
        "/v1/models",
        files={"weights": ("w", weights, "application/octet-stream")},
        data={"spec": digits.spec(ds.json()["id"])},
        headers=acme.headers(),
    ).json()
    run_validation_claimed(ctx, mv["validation_job_id"])
    return str(mv["id"])


def test_without_a_validation_split_the_job_names_its_carve_out(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext, digits_model_id: str
) -> None:
    n_test = len(digits.arrays()["test_labels"])
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, PERSON)
    assert job["state"] == "succeeded", job["error"]
    assert job["claimed_by"] == worker_ctx.name  # which worker ran it, as a field
    covers = job["outcome"]["evaluation_samples"]
    assert covers["validation"]["samples"] == round(0.2 * n_test)
    assert covers["test"]["samples"] == n_test - round(0.2 * n_test)
    assert "seeded 20%" in covers["test"]["what"] and covers["seed"] == 0
    assert covers["forget"]["samples"] == 10 and covers["same_samples_for_every_row"] is True
    # The model's baseline covers the whole test split, and says so by its count.
    model = client.get(f"/v1/models/{digits_model_id}", headers=acme.headers()).json()
    assert model["baseline_metrics"]["test_samples"] == n_test
    # The certificate carries the same description.
    cert = client.get(f"/v1/models/{job['result_model_id']}/certificate", headers=acme.headers())
    predicate = json.loads(base64.b64decode(cert.json()["payload"]))["predicate"]
    assert predicate["evaluation_samples"] == covers


def test_a_manifest_with_its_own_validation_split_is_reported_on_its_whole_test_split(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext
) -> None:
    n_test = len(digits.arrays()["test_labels"])
    model_id = _register(client, acme, worker_ctx, _digits_with_validation(100))
    model = client.get(f"/v1/models/{model_id}", headers=acme.headers()).json()
    ds = client.get(f"/v1/datasets/{model['dataset_id']}", headers=acme.headers()).json()
    assert ds["num_validation_samples"] == 100 and ds["num_test_samples"] == n_test - 100
    job = forget_and_run(client, acme, worker_ctx, model_id, PERSON)
    assert job["state"] == "succeeded", job["error"]
    covers = job["outcome"]["evaluation_samples"]
    assert covers["validation"] == {
        "samples": 100,
        "what": "the manifest's own validation split (tuning only, never reported)",
    }
    # Every test sample is reported, and the baseline and the job's original row agree.
    assert covers["test"]["samples"] == n_test - 100
    assert model["baseline_metrics"]["test_samples"] == n_test - 100
    original_ta = job["outcome"]["metrics"]["original"]["TA"]
    assert np.isclose(original_ta, model["baseline_metrics"]["test_accuracy"], atol=1e-6)


def test_a_validation_split_must_match_the_images_and_sit_beside_a_test_split(
    client: TestClient, acme: TenantKeys
) -> None:
    a = dict(digits.arrays())
    a["validation_images"] = a["test_images"][:5, :, :4]
    a["validation_labels"] = a["test_labels"][:5]
    res = client.post(
        "/v1/datasets",
        files={"train": ("d", safetensors_bytes(a), "application/octet-stream")},
        data={"name": "digits"},
        headers=acme.headers(),
    )
    assert res.status_code == 422, res.text
    assert "validation images" in res.json()["detail"]
    no_test = {k: v for k, v in a.items() if not k.startswith("test_")}
    no_test["validation_images"] = a["test_images"][:5]
    res = client.post(
        "/v1/datasets",
        files={"train": ("d", safetensors_bytes(no_test), "application/octet-stream")},
        data={"name": "digits"},
        headers=acme.headers(),
    )
    assert res.status_code == 422 and "needs a test split" in res.json()["detail"]
