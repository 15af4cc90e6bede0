"""Fixtures shared by the API tests: a tenant with a key per role, a small dataset, and the app
served by a real uvicorn server in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.factories import TenantKeys, dataset_arrays, make_tenant, safetensors_bytes


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
