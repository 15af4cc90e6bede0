"""Fixtures shared by the API tests: a tenant with a key per role, a small dataset, and the app
served by a real uvicorn server in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app import cli
from tests import digits
from tests.factories import TenantKeys, dataset_arrays, make_tenant, safetensors_bytes
from worker.context import WorkerContext


@pytest.fixture()
def acme(db: Session) -> TenantKeys:
    return make_tenant(db, "acme")


@pytest.fixture()
def dataset_id(client: TestClient, acme: TenantKeys) -> str:
    res = client.post(
        "/v1/datasets",
        files={"train": ("t", safetensors_bytes(dataset_arrays()), "application/octet-stream")},
        data={"name": "toy"},
        headers=acme.headers(),
    )
    assert res.status_code == 201, res.text
    return str(res.json()["id"])


@pytest.fixture()
def live(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """``app`` behind a real uvicorn server in a thread (real sockets and chunked framing)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def digits_model_id(client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext) -> str:
    """The small CNN trained on scikit-learn's digits, registered and validated (ready)."""
    from tests.api.test_models import run_validation_claimed

    ds = client.post(
        "/v1/datasets",
        files={"train": ("d", digits.dataset_bytes(), "application/octet-stream")},
        data={"name": "digits"},
        headers=acme.headers(),
    ).json()
    weights, _ = digits.trained()
    mv = client.post(
        "/v1/models",
        files={"weights": ("w", weights, "application/octet-stream")},
        data={"spec": digits.spec(ds["id"])},
        headers=acme.headers(),
    ).json()
    run_validation_claimed(worker_ctx, mv["validation_job_id"])
    return str(mv["id"])


class Lethe:
    """Runs `lethe ...` in-process and returns (exit code, stdout, stderr)."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url, self.capsys = url, capsys

    def __call__(self, *argv: str, key: str | None = None) -> tuple[int, str, str]:
        extra = ["--url", self.url] + (["--api-key", key] if key else [])
        rc = cli.main([*argv, *extra])
        out = self.capsys.readouterr()
        return rc, out.out, out.err

    def json(self, *argv: str, key: str) -> Any:
        rc, out, err = self(*argv, key=key)
        assert rc == 0, err
        return json.loads(out)


@pytest.fixture()
def lethe(live: str, capsys: pytest.CaptureFixture[str]) -> Lethe:
    """The `lethe` command against the live server."""
    return Lethe(live, capsys)
