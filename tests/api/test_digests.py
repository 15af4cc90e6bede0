"""One sample set, one digest: the audit log, the dataset and the certificate name the same set
of sample IDs with the same value, whatever the order or repeats the client sent."""

from __future__ import annotations

import base64
import json

from fastapi.testclient import TestClient

from app.core.digests import sample_set_digest
from tests import digits
from tests.api.test_policy_and_progress import forget_and_run
from tests.factories import TenantKeys
from worker.context import WorkerContext


def test_one_sample_set_has_one_digest_everywhere(
    client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext, digits_model_id: str
) -> None:
    ids = digits.sample_ids_of_class(6)[:12]
    shuffled = [*reversed(ids), ids[0]]  # another order, one repeat: the same set
    job = forget_and_run(client, acme, worker_ctx, digits_model_id, {"sample_ids": shuffled})
    expected = sample_set_digest(ids)

    (request_id,) = job["request_ids"]
    events = client.get(
        "/v1/audit-events",
        params={"subject_id": request_id, "action": "forget_request.created"},
        headers=acme.headers("auditor"),
    ).json()["items"]
    assert events[0]["payload"]["sample_ids_digest"] == expected

    cert = client.get(f"/v1/models/{job['result_model_id']}/certificate", headers=acme.headers())
    pred = json.loads(base64.b64decode(cert.json()["payload"]))["predicate"]
    assert pred["requests"][0]["sample_ids_digest"] == expected
    assert pred["forgotten"]["this_job"]["sample_ids_sha256"] == expected
    assert pred["forgotten"]["cumulative"]["sample_ids_sha256"] == expected

    model = client.get(f"/v1/models/{digits_model_id}", headers=acme.headers()).json()
    ds = client.get(f"/v1/datasets/{model['dataset_id']}", headers=acme.headers()).json()
    assert ds["sample_ids_digest"] == sample_set_digest(digits.arrays()["sample_ids"])
    new = client.get(f"/v1/models/{job['result_model_id']}", headers=acme.headers()).json()
    assert new["forgotten_digest"] == expected
