from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.models import Artifact, Job, ModelVersion
from app.unlearning.architectures import build_model
from tests.factories import (
    TenantKeys,
    dataset_arrays,
    fake_weights,
    lying_header,
    make_tenant,
    model_spec,
    pickle_bytes,
    safetensors_bytes,
    zip_of_pickle,
)
from worker.context import WorkerContext
from worker.tasks.validate_model import run_validation

ARGS = {"num_classes": 4, "width": 8, "hidden": 16}


def real_weights(seed: int = 0, **args: int) -> bytes:
    torch.manual_seed(seed)
    model = build_model("small_cnn", {**ARGS, **args})
    return bytes(save({k: v.contiguous() for k, v in model.state_dict().items()}))


def upload(client: TestClient, keys: TenantKeys, spec: str, weights: bytes, **data: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/models",
        files={"weights": ("w.safetensors", weights, "application/octet-stream")},
        data={"spec": spec, **data},
        headers=keys.headers(),
    )


def counts(db: Session) -> tuple[int, int, int]:
    return (
        db.scalar(select(func.count()).select_from(ModelVersion)) or 0,
        db.scalar(select(func.count()).select_from(Job)) or 0,
        db.scalar(select(func.count()).select_from(Artifact)) or 0,
    )


def test_upload_validates_to_ready_with_baseline(
    client: TestClient, acme: TenantKeys, dataset_id: str, worker_ctx: WorkerContext
) -> None:
    weights = real_weights()
    res = upload(client, acme, model_spec(dataset_id, args=ARGS), weights)
    assert res.status_code == 202, res.text
    model = res.json()
    assert model["status"] == "validating"
    assert model["weights_digest"] == hashlib.sha256(weights).hexdigest()
    assert model["version"] == 1 and model["parent_id"] is None
    job = client.get(f"/v1/jobs/{model['validation_job_id']}", headers=acme.headers()).json()
    assert job["state"] == "queued" and job["history"][0]["to_state"] == "queued"

    run_validation_claimed(worker_ctx, model["validation_job_id"])

    after = client.get(f"/v1/models/{model['id']}", headers=acme.headers()).json()
    assert after["status"] == "ready", after
    base = after["baseline_metrics"]
    assert 0 <= base["train_accuracy"] <= 100 and base["train_samples"] == 64
    assert set(base["train_accuracy_per_class"]) == {"0", "1", "2", "3"}
    assert base["test_samples"] == 16
    job = client.get(f"/v1/jobs/{model['validation_job_id']}", headers=acme.headers()).json()
    assert [h["to_state"] for h in job["history"]] == ["queued", "running", "succeeded"]


def run_validation_claimed(ctx: WorkerContext, job_id: str) -> None:
    from worker.jobs import claim

    assert claim(ctx, job_id)
    assert not claim(ctx, job_id), "a second delivery must not claim the job again"
    run_validation(ctx, job_id)


@pytest.mark.parametrize(
    ("weights", "needle"),
    [
        (fake_weights(), "do not fit the architecture"),
        (real_weights(width=16), "shapes do not fit"),
    ],
    ids=["wrong-names", "wrong-shapes"],
)
def test_weights_that_do_not_fit_are_rejected_and_dropped(
    client: TestClient,
    acme: TenantKeys,
    dataset_id: str,
    worker_ctx: WorkerContext,
    db: Session,
    weights: bytes,
    needle: str,
) -> None:
    res = upload(client, acme, model_spec(dataset_id, args=ARGS), weights)
    assert res.status_code == 202, res.text
    model = res.json()
    run_validation_claimed(worker_ctx, model["validation_job_id"])
    after = client.get(f"/v1/models/{model['id']}", headers=acme.headers()).json()
    assert after["status"] == "rejected"
    assert needle in after["status_reason"]
    assert after["weights_digest"] is None
    assert db.get(Artifact, model["weights_digest"]) is None
    assert not worker_ctx.store.exists(model["weights_digest"])
    job = client.get(f"/v1/jobs/{model['validation_job_id']}", headers=acme.headers()).json()
    assert job["state"] == "failed" and needle in job["error"]
    dl = client.get(f"/v1/models/{model['id']}/weights", headers=acme.headers())
    assert dl.status_code == 409
    assert dl.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("weights", "slug", "needle"),
    [
        (pickle_bytes(), "invalid-artifact", "pickle"),
        (zip_of_pickle(), "invalid-artifact", "zip"),
        (real_weights()[:-10], "invalid-artifact", "truncated"),
        (lying_header(real_weights()), "invalid-artifact", "need"),
        (safetensors_bytes({"x": dataset_arrays()["images"]}), "invalid-artifact", "holds float32"),
        (safetensors_bytes({}), "invalid-artifact", "no tensors"),
    ],
    ids=["pickle", "zip-of-pickle", "truncated", "lying-header", "uint8-tensor", "empty"],
)
def test_bad_weight_files_refused_at_intake(
    client: TestClient,
    acme: TenantKeys,
    dataset_id: str,
    db: Session,
    settings: Settings,
    weights: bytes,
    slug: str,
    needle: str,
) -> None:
    before = counts(db)
    res = upload(client, acme, model_spec(dataset_id, args=ARGS), weights)
    assert res.status_code == 422, res.text
    assert res.headers["content-type"] == "application/problem+json"
    assert res.json()["type"].endswith(slug)
    assert needle in res.json()["detail"]
    assert counts(db) == before
    assert_no_files_but_dataset(settings, db)


def assert_no_files_but_dataset(settings: Settings, db: Session) -> None:
    root = Path(settings.resolved_artifact_uri.removeprefix("file://"))
    stored = {p.name for p in (root / "sha256").rglob("*") if p.is_file()}
    registered = set(db.scalars(select(Artifact.digest)))
    assert stored == registered
    assert not any((root / "tmp").iterdir()), "staged upload files were left behind"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"architecture": "vgg"}, "body.spec.architecture"),
        ({"args": {"num_classes": 4, "depth": 3}}, "body.spec.args.depth"),
        ({"args": {"num_classes": 1}}, "body.spec.args.num_classes"),
        ({"args": {"num_classes": 3}}, "body.spec.args.num_classes"),
        ({"input_shape": [1, 28, 28]}, "body.spec.input_shape"),
        ({"input_shape": [3, 8, 8]}, "body.spec.input_shape"),
        ({"dataset_id": "00000000-0000-0000-0000-000000000000"}, "body.spec.dataset_id"),
        ({"normalization": {"mean": [0.5], "std": [0.0]}}, "body.spec.normalization"),
        ({"surprise": 1}, "body.spec.surprise"),
    ],
    ids=[
        "unknown-arch",
        "unknown-arg",
        "too-few-classes-arg",
        "classes-do-not-fit",
        "shape-mismatch",
        "channels",
        "missing-dataset",
        "zero-std",
        "unknown-field",
    ],
)
def test_bad_specs_refused_with_the_field_named(
    client: TestClient,
    acme: TenantKeys,
    dataset_id: str,
    db: Session,
    settings: Settings,
    change: dict[str, object],
    field: str,
) -> None:
    before = counts(db)
    spec = json.loads(model_spec(dataset_id, args=ARGS))
    spec.update(change)
    res = upload(client, acme, json.dumps(spec), real_weights())
    assert res.status_code == 422, res.text
    assert res.headers["content-type"] == "application/problem+json"
    fields = [e["field"] for e in res.json()["errors"]]
    assert any(f.startswith(field) for f in fields), fields
    assert counts(db) == before
    assert_no_files_but_dataset(settings, db)


def test_spec_not_json(client: TestClient, acme: TenantKeys, dataset_id: str) -> None:
    res = upload(client, acme, "{not json", real_weights())
    assert res.status_code == 422
    assert res.json()["errors"][0]["field"] == "body.spec"


def test_another_tenants_dataset_cannot_be_named(
    client: TestClient, acme: TenantKeys, dataset_id: str, db: Session
) -> None:
    other = make_tenant(db, "globex")
    res = upload(client, other, model_spec(dataset_id, args=ARGS), real_weights())
    assert res.status_code == 422
    assert res.json()["errors"][0]["field"] == "body.spec.dataset_id"


def test_list_filters_and_download_with_range(
    client: TestClient, acme: TenantKeys, dataset_id: str
) -> None:
    weights = real_weights()
    model = upload(client, acme, model_spec(dataset_id, args=ARGS), weights).json()
    listed = client.get("/v1/models", params={"status": "validating"}, headers=acme.headers())
    assert [m["id"] for m in listed.json()["items"]] == [model["id"]]
    assert (
        client.get("/v1/models", params={"status": "ready"}, headers=acme.headers()).json()["items"]
        == []
    )
    url = f"/v1/models/{model['id']}/weights"
    part = client.get(url, headers={**acme.headers(), "Range": "bytes=10-99"})
    assert part.status_code == 206
    assert part.content == weights[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(weights)}"
    assert part.headers["content-length"] == "90"
    suffix = client.get(url, headers={**acme.headers(), "Range": "bytes=-16"})
    assert suffix.status_code == 206 and suffix.content == weights[-16:]
    whole = client.get(url, headers=acme.headers())
    assert whole.status_code == 200 and whole.content == weights
    etag = whole.headers["etag"]
    assert client.get(url, headers={**acme.headers(), "If-None-Match": etag}).status_code == 304
    bad = client.get(url, headers={**acme.headers(), "Range": f"bytes={len(weights)}-"})
    assert bad.status_code == 416
    assert bad.headers["content-type"] == "application/problem+json"
