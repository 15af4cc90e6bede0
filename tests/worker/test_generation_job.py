"""A class forgotten by a diffusion model, through HTTP, a real Celery worker, Redis and
PostgreSQL: a tiny denoiser trained on scikit-learn's 8x8 digits is uploaded and checked (with a
generation baseline and an evaluator the service trains and keeps), class 3 is forgotten with
SFR-on, and the user sees the verdict, the generative metrics in a certificate that verifies
offline, and before/after sample grids."""

from __future__ import annotations

import base64
import json
import secrets
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app import cli
from app.core.config import Settings
from app.core.tasks import TaskSender
from tests import digits
from tests.factories import TenantKeys, make_tenant
from tests.worker.conftest import WorkerProcess
from tests.worker.helpers import wait_job, wait_model

FORGET = 3


@pytest.fixture(scope="module")
def worker_settings(worker_settings: Settings) -> Settings:
    # Fewer and shorter generations than the service's defaults: this is about the flow, on a
    # shared CPU; the engine tests and bench/generation.py measure the method.
    return worker_settings.model_copy(
        update={
            "generation_forget_samples": 32,
            "generation_kept_samples": 8,
            "generation_sampling_steps": 10,
            "generation_grid_samples": 8,
            "generation_evaluator_epochs": 8,
            # Small convolutions on a shared CPU run much slower on two threads than on one.
            "torch_threads": 1,
        }
    )


def decode_png(data: bytes) -> np.ndarray:
    """Grey 8-bit PNGs as the service writes them (filter 0 on every row)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", payload[:8])
        elif kind == b"IDAT":
            idat += payload
        pos += 12 + length
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, w + 1)
    return rows[:, 1:]


@pytest.fixture(scope="module")
def uploaded(
    celery_worker: WorkerProcess, worker_settings: Settings, committed_engine: Engine
) -> tuple[TenantKeys, str, str]:
    from app.main import create_app

    app = create_app(worker_settings, engine=committed_engine, tasks=TaskSender(worker_settings))
    with TestClient(app) as client, Session(committed_engine) as db:
        keys = make_tenant(db, f"t-{secrets.token_hex(4)}")
        # Keep superseded versions (and their grids) a day before the purge destroys them.
        patch = client.patch(
            "/v1/tenant/settings", json={"retention_days": 1}, headers=keys.headers("admin")
        )
        assert patch.status_code == 200, patch.text
        ds = client.post(
            "/v1/datasets",
            files={"train": ("digits", digits.dataset_bytes(), "application/octet-stream")},
            data={"name": "digits"},
            headers=keys.headers(),
        )
        assert ds.status_code == 201, ds.text
        mv = client.post(
            "/v1/models",
            files={"weights": ("w", digits.trained_denoiser(), "application/octet-stream")},
            data={"spec": digits.denoiser_spec(ds.json()["id"])},
            headers=keys.headers(),
        )
        assert mv.status_code == 202, mv.text
        model = wait_model(client, keys, mv.json()["id"], 300)
        assert model["status"] == "ready", (model, celery_worker.output()[-2000:])
        return keys, ds.json()["id"], model["id"]


def test_upload_check_records_a_generation_baseline_and_sample_grids(
    live_client: TestClient, uploaded: tuple[TenantKeys, str, str]
) -> None:
    c, (keys, _, model_id) = live_client, uploaded
    model = c.get(f"/v1/models/{model_id}", headers=keys.headers()).json()
    baseline = model["baseline_metrics"]
    # The denoiser draws its classes: the evaluator recognises most of what it generates.
    assert baseline["kept_accuracy"] >= 60, baseline
    assert baseline["evaluator"]["source"] == "trained"
    assert baseline["evaluator"]["test_accuracy"] >= 85
    assert baseline["evaluator"]["kept_as"]

    every = c.get(f"/v1/models/{model_id}/samples", headers=keys.headers())
    assert every.status_code == 200 and every.headers["content-type"] == "image/png"
    grid = decode_png(every.content)
    # One row per class of the 8 images stored, 8x8 tiles scaled 6x with 1-pixel gaps.
    assert grid.shape == (10 * 49 + 1, 8 * 49 + 1)
    one = c.get(
        f"/v1/models/{model_id}/samples", params={"class": FORGET, "n": 4}, headers=keys.headers()
    )
    assert decode_png(one.content).shape == (2 * 49 + 1, 2 * 49 + 1)
    again = c.get(
        f"/v1/models/{model_id}/samples",
        params={"class": FORGET, "n": 4},
        headers={**keys.headers(), "If-None-Match": one.headers["etag"]},
    )
    assert again.status_code == 304
    too_many = c.get(f"/v1/models/{model_id}/samples", params={"n": 64}, headers=keys.headers())
    assert too_many.status_code == 422 and "8 are stored" in too_many.json()["detail"]


def test_forget_a_class_of_a_diffusion_model_end_to_end(
    live_client: TestClient,
    uploaded: tuple[TenantKeys, str, str],
    celery_worker: WorkerProcess,
    tmp_path: Path,
) -> None:
    c, (keys, _, model_id) = live_client, uploaded
    res = c.post(
        f"/v1/models/{model_id}/forget-requests",
        json={
            "class_ids": [FORGET],
            "config": {"iterations": 60},
            "reason": "licence withdrawn for class 3",
        },
        headers=keys.headers(),
    )
    assert res.status_code == 202, res.text
    job = wait_job(c, keys, res.json()["job_id"], timeout=600)
    assert job["state"] == "succeeded", (job["error"], celery_worker.output()[-3000:])
    outcome = job["outcome"]
    original, unlearned = outcome["metrics"]["original"], outcome["metrics"]["unlearned"]
    # The original draws the class; the new version does not, and still draws the others.
    assert original["FA"] >= 50, original
    assert unlearned["FA"] <= original["FA"] - 30, (original["FA"], unlearned["FA"])
    assert unlearned["kept_accuracy"] >= original["kept_accuracy"] - 15
    # The evaluator the upload check trained was reused, not trained again.
    gen = outcome["generation"]
    assert gen["evaluator"]["source"] == "cached"
    assert gen["forgotten_classes"] == [FORGET]

    new_id = job["result_model_id"]
    before = c.get(gen["grids"]["forgotten"][str(FORGET)]["before"], headers=keys.headers())
    after = c.get(gen["grids"]["forgotten"][str(FORGET)]["after"], headers=keys.headers())
    assert before.status_code == after.status_code == 200
    assert before.content != after.content
    assert c.get(gen["grids"]["after"], headers=keys.headers()).status_code == 200
    # The original is retired (it still draws class 3); its grids stay until its purge.
    old = c.get(f"/v1/models/{model_id}", headers=keys.headers()).json()
    assert old["status"] == "retired"
    assert c.get(f"/v1/models/{model_id}/weights", headers=keys.headers()).status_code == 410

    cert = c.get(f"/v1/models/{new_id}/certificate", headers=keys.headers("auditor"))
    assert cert.status_code == 200
    pred = json.loads(base64.b64decode(cert.json()["payload"]))["predicate"]
    assert pred["metrics"]["unlearned"]["FA"] == unlearned["FA"]
    assert pred["generation"]["evaluator"]["source"] == "cached"
    # Every training sample of the class counts as forgotten (and is erased with the purge).
    assert pred["forgotten"]["this_job"]["count"] == len(digits.sample_ids_of_class(FORGET))
    assert pred["forgotten"]["this_job"]["classes"] == [FORGET]
    assert set(pred["policy"]["thresholds"]) == {
        "gen_fa_max", "gen_fa_margin", "gen_kept_drop_max", "gen_fd_ratio_max"
    }  # fmt: skip
    assert pred["policy"]["verdict"] == outcome["verdict"]
    assert pred["membership_audit"]["status"] == "not-applicable"
    new = c.get(f"/v1/models/{new_id}", headers=keys.headers()).json()
    assert new["status"] == ("ready" if outcome["verdict"] == "pass" else "uncertified")

    weights = c.get(
        f"/v1/models/{new_id}/weights",
        params={"allow_uncertified": True},
        headers=keys.headers(),
    )
    (tmp_path / "model.safetensors").write_bytes(weights.content)
    (tmp_path / "cert.json").write_text(cert.text)
    (tmp_path / "keys.json").write_text(c.get("/v1/signing-keys").text)
    args = ["verify", str(tmp_path / "cert.json"), "--model", str(tmp_path / "model.safetensors")]
    assert cli.main([*args, "--key", str(tmp_path / "keys.json")]) == 0
