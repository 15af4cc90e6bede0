"""Fixtures shared by the API tests: a tenant with a key per role, and a small dataset."""

from __future__ import annotations

import pytest
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
