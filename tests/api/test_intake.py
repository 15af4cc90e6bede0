"""Intake details: one model has one digest (weights in the dtype the architecture holds),
names cannot smuggle paths into file names, and an idempotent replay answers 200."""

from __future__ import annotations

import json

import numpy as np
from fastapi.testclient import TestClient
from safetensors.numpy import save

from tests import digits
from tests.api.test_models import ARGS, real_weights, upload
from tests.factories import TenantKeys, model_spec


def test_weights_in_another_dtype_are_refused(
    client: TestClient, acme: TenantKeys, dataset_id: str
) -> None:
    from safetensors.numpy import load

    f32 = load(real_weights())
    f64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in f32.items()}
    res = upload(client, acme, model_spec(dataset_id, args=ARGS), bytes(save(f64)))
    assert res.status_code == 422, res.text
    assert "F64" in res.json()["detail"] and "float32" in res.json()["detail"]
    models = client.get("/v1/models", headers=acme.headers()).json()["items"]
    assert models == []


def test_names_that_would_be_paths_are_refused(
    client: TestClient, acme: TenantKeys, dataset_id: str
) -> None:
    for bad in ("../../x", "a/b", 'a"b', "..", "x\x00y", "x" * 201):
        spec = json.loads(model_spec(dataset_id, args=ARGS)) | {"name": bad}
        res = upload(client, acme, json.dumps(spec), real_weights())
        assert res.status_code == 422, (bad, res.text)
        ds = client.post(
            "/v1/datasets",
            files={"train": ("d", digits.dataset_bytes(), "application/octet-stream")},
            data={"name": bad},
            headers=acme.headers(),
        )
        assert ds.status_code == 422, (bad, ds.text)
    good = json.loads(model_spec(dataset_id, args=ARGS)) | {"name": "faces v2.1_final-b"}
    assert upload(client, acme, json.dumps(good), real_weights()).status_code == 202


def test_an_idempotent_replay_answers_200_with_the_original(
    client: TestClient, acme: TenantKeys, digits_model_id: str
) -> None:
    url = f"/v1/models/{digits_model_id}/forget-requests"
    headers = {**acme.headers(), "Idempotency-Key": "ticket-1"}
    body = {"sample_ids": digits.sample_ids_of_class(1)[:3]}
    first = client.post(url, json=body, headers=headers)
    again = client.post(url, json=body, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
