"""Diffusion models through the registry: a class-conditional UNet2DModel is uploaded as
safetensors plus JSON configs, checked without torch by the API and built offline and run by
the worker's deep check; forget requests on it name whole classes, a diffusion method and
optionally an evaluator classifier, and anything else is refused with the reason. The job itself
runs in tests/worker/test_generation_job.py."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from app.unlearning.diffusion.config import TINY_UNET, parse_unet_config
from app.unlearning.diffusion.ddpm import build_unet
from tests import digits
from tests.api.test_models import run_validation_claimed
from tests.factories import TenantKeys
from worker.context import WorkerContext


@pytest.fixture()
def digits_dataset_id(client: TestClient, acme: TenantKeys) -> str:
    ds = client.post(
        "/v1/datasets",
        files={"train": ("d", digits.dataset_bytes(), "application/octet-stream")},
        data={"name": "digits"},
        headers=acme.headers(),
    )
    assert ds.status_code == 201, ds.text
    return str(ds.json()["id"])


def _spec(dataset_id: str, **unet: object) -> str:
    return json.dumps(
        {
            "name": "digits-ddpm",
            "architecture": "ddpm_unet2d",
            "args": {"unet": {**TINY_UNET, **unet}, "scheduler": {"num_train_timesteps": 1000}},
            "input_shape": [1, 8, 8],
            "dataset_id": dataset_id,
        }
    )


def _weights() -> bytes:
    torch.manual_seed(0)
    model = build_unet(parse_unet_config(TINY_UNET, num_classes=10))
    return bytes(save({k: v.contiguous() for k, v in model.state_dict().items()}))


def _upload(client: TestClient, acme: TenantKeys, spec: str, weights: bytes):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/models",
        files={"weights": ("w", weights, "application/octet-stream")},
        data={"spec": spec},
        headers=acme.headers(),
    )


def test_a_diffusion_model_is_checked_and_takes_class_requests_only(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext, digits_dataset_id: str
) -> None:
    res = _upload(client, acme, _spec(digits_dataset_id), _weights())
    assert res.status_code == 202, res.text
    mv = res.json()
    assert mv["architecture"] == "ddpm_unet2d" and mv["num_classes"] == 10
    run_validation_claimed(worker_ctx, mv["validation_job_id"])
    checked = client.get(f"/v1/models/{mv['id']}", headers=acme.headers()).json()
    assert checked["status"] == "ready", checked["status_reason"]
    assert checked["baseline_metrics"]["probe_steps"] == 3
    # Untrained weights generate noise: the baseline says so instead of failing the upload.
    assert checked["baseline_metrics"]["evaluator"]["source"] == "trained"
    assert "kept_accuracy" in checked["baseline_metrics"]

    url = f"/v1/models/{mv['id']}/forget-requests"
    samples = client.post(url, json={"sample_ids": [0, 1]}, headers=acme.headers())
    assert samples.status_code == 422
    assert "whole classes only" in samples.json()["detail"]
    for body, field in [
        ({"class_ids": [3], "method": "l1_sparse"}, "body.method"),
        ({"class_ids": [3], "config": {"alpha0": -1}}, "body.config.alpha0"),
        ({"class_ids": [3], "config": {"momentum": 0.9}}, "body.config.momentum"),
        ({"class_ids": [3], "evaluator_model_id": mv["id"]}, "body.evaluator_model_id"),
        ({"class_ids": [3], "evaluator_model_id": "nope"}, "body.evaluator_model_id"),
    ]:
        bad = client.post(url, json=body, headers=acme.headers())
        assert bad.status_code == 422, (body, bad.text)
        assert bad.json()["errors"][0]["field"] == field, bad.json()
    classes = client.post(
        url, json={"class_ids": [3], "config": {"iterations": 40}}, headers=acme.headers()
    )
    assert classes.status_code == 202, classes.text
    # What the request set is kept as given: the job calibrates only what it left unset.
    assert classes.json()["method_config"] == {"iterations": 40}
    kit = client.post(
        f"/v1/models/{mv['id']}/reference-kits", json={"k": 2}, headers=acme.headers()
    )
    assert kit.status_code == 409


@pytest.mark.parametrize(
    ("unet", "field"),
    [
        ({"trust_remote_code": True}, "body.spec.args.unet"),
        ({"num_class_embeds": 7}, "body.spec.args.unet"),
        ({"sample_size": 16}, "body.spec.args.unet.sample_size"),
    ],
    ids=["remote-code", "classes-do-not-fit", "wrong-image-size"],
)
def test_a_bad_diffusion_config_is_refused_before_anything_is_stored(
    client: TestClient,
    acme: TenantKeys,
    digits_dataset_id: str,
    unet: dict[str, object],
    field: str,
) -> None:
    res = _upload(client, acme, _spec(digits_dataset_id, **unet), _weights())
    assert res.status_code == 422, res.text
    assert res.json()["errors"][0]["field"].startswith(field)
    assert client.get("/v1/models", headers=acme.headers()).json()["items"] == []
