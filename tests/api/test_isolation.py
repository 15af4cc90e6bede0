"""Every endpoint that names a resource answers 404 to another tenant, exactly as for a missing
resource. Routes are enumerated from the app, so a new endpoint is covered automatically."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.api.test_models import ARGS, real_weights, run_validation_claimed, upload
from tests.factories import dataset_arrays, make_tenant, model_spec, safetensors_bytes
from worker.context import WorkerContext

# Resources that exist for their tenant only after a worker produced them; here they answer 404
# to their own tenant too (the end-to-end worker tests cover them with real data).
PRODUCED_LATER = {
    "/v1/models/{model_id}/certificate",
    "/v1/erasure-receipts/{receipt_id}",
    "/v1/forget-request-groups/{group_id}",
    "/v1/reference-kits/{kit_id}",
}


def test_other_tenants_resources_answer_404_like_missing_ones(
    client: TestClient, db: Session, worker_ctx: WorkerContext
) -> None:
    acme = make_tenant(db, "acme")
    globex = make_tenant(db, "globex")
    ds = client.post(
        "/v1/datasets",
        files={"train": ("t", safetensors_bytes(dataset_arrays()), "application/octet-stream")},
        data={"name": "toy"},
        headers=acme.headers(),
    ).json()
    model = upload(client, acme, model_spec(ds["id"], args=ARGS), real_weights()).json()
    run_validation_claimed(worker_ctx, model["validation_job_id"])
    fr = client.post(
        f"/v1/models/{model['id']}/forget-requests",
        json={"class_ids": [1]},
        headers=acme.headers(),
    )
    assert fr.status_code == 202, fr.text
    acme_key_id = acme.member.split("_")[1]
    values = {
        "dataset_id": ds["id"],
        "model_id": model["id"],
        "job_id": model["validation_job_id"],
        "key_id": acme_key_id,
        "split": "train",
        "request_id": fr.json()["id"],
        # Produced by a purge (tests/api/test_erasure.py checks another tenant gets 404).
        "receipt_id": "00000000-0000-0000-0000-000000000001",
        # A dataset-wide request's group (tests/api/test_dataset_requests.py covers it).
        "group_id": "00000000-0000-0000-0000-000000000002",
        # A reference kit (tests/api/test_membership_gate.py builds one).
        "kit_id": "00000000-0000-0000-0000-000000000003",
        "sample_id": str(dataset_arrays()["sample_ids"][0]),
        "event_id": client.get("/v1/audit-events", headers=acme.headers("auditor")).json()["items"][
            0
        ]["id"],
    }
    missing = {k: "00000000-0000-0000-0000-000000000000" for k in values} | {"split": "train"}
    missing["sample_id"] = values["sample_id"]
    missing["event_id"] = 2**40
    missing["key_id"] = "0000000000000000"

    paths = client.get("/openapi.json").json()["paths"]
    routes = {path: ops for path, ops in paths.items() if "{" in path}
    assert len(routes) >= 5
    checked = 0
    for path, ops in routes.items():
        params = re.findall(r"{(\w+)}", path)
        unknown = set(params) - set(values)
        assert not unknown, f"add {unknown} to this test so {path} is covered"
        for method in ops:
            # A valid body, so that the answer is about the resource, not the input.
            valid = (
                {"reason": "x"}
                if path.endswith("/withdraw")
                else {"k": 2}
                if path.endswith("/reference-kits")
                else {"class_ids": [2]}
            )
            body: dict[str, object] = {"json": valid} if method == "post" else {}
            if path.endswith("/forget-requests/file"):  # multipart: the IDs as a text file
                ids = values["sample_id"].encode()
                body = {"files": {"sample_ids": ("ids.txt", ids)}, "data": {"request": "{}"}}
            own = client.request(
                method, path.format(**values), headers=acme.headers("admin"), **body
            )
            if path not in PRODUCED_LATER:
                assert own.status_code != 404, f"{method} {path} should exist for its tenant"
            theirs = client.request(
                method, path.format(**values), headers=globex.headers("admin"), **body
            )
            absent = client.request(
                method, path.format(**missing), headers=globex.headers("admin"), **body
            )
            assert theirs.status_code == 404, f"{method} {path}: {theirs.status_code}"
            assert theirs.headers["content-type"] == "application/problem+json"
            assert absent.status_code == 404
            # Same shape: nothing tells "exists elsewhere" from "does not exist".
            assert theirs.json().keys() == absent.json().keys()
            assert theirs.json()["type"] == absent.json()["type"]
            checked += 1
    assert checked >= 10
