"""Driving the real service from tests: a tenant, the digits dataset, a trained model."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests import digits
from tests.factories import TenantKeys, make_tenant

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Setup:
    keys: TenantKeys
    dataset_id: str
    model_id: str


def register_digits_model(client: TestClient, engine: Engine, timeout: float = 120) -> Setup:
    with Session(engine) as db:
        keys = make_tenant(db, f"t-{secrets.token_hex(4)}")
    ds = client.post(
        "/v1/datasets",
        files={"train": ("digits", digits.dataset_bytes(), "application/octet-stream")},
        data={"name": "digits"},
        headers=keys.headers(),
    )
    assert ds.status_code == 201, ds.text
    weights, _ = digits.trained()
    mv = client.post(
        "/v1/models",
        files={"weights": ("w", weights, "application/octet-stream")},
        data={"spec": digits.spec(ds.json()["id"])},
        headers=keys.headers(),
    )
    assert mv.status_code == 202, mv.text
    model = wait_model(client, keys, mv.json()["id"], timeout)
    assert model["status"] == "ready", model
    return Setup(keys, ds.json()["id"], model["id"])


def wait_model(client: TestClient, keys: TenantKeys, model_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = client.get(f"/v1/models/{model_id}", headers=keys.headers()).json()
        if model["status"] != "validating":
            return model
        time.sleep(0.2)
    raise AssertionError(f"model {model_id} still validating after {timeout} s")


def wait_job(
    client: TestClient, keys: TenantKeys, job_id: str, timeout: float = 180, until: Any = None
) -> Any:
    """Poll until the job is terminal (or ``until(job)`` holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=keys.headers()).json()
        if (until and until(job)) or (until is None and job["state"] in TERMINAL):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")
