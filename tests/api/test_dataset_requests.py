"""A request that targets a dataset fans out to every lineage trained on it, and is complete
when all of them are; then the samples leave the manifest too."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests import digits
from tests.api.conftest import Lethe
from tests.api.test_erasure import exposure, purge, second_model
from tests.factories import TenantKeys, make_tenant
from worker.context import WorkerContext
from worker.jobs import claim_in_order
from worker.tasks.unlearn import run_job

PERSON = digits.sample_ids_of_class(8)[:10]


def test_a_dataset_request_reaches_every_lineage(
    client: TestClient,
    acme: TenantKeys,
    worker_ctx: WorkerContext,
    digits_model_id: str,
    db: Session,
) -> None:
    dataset_id = client.get(f"/v1/models/{digits_model_id}", headers=acme.headers()).json()[
        "dataset_id"
    ]
    other = second_model(client, acme, worker_ctx, dataset_id)
    weights, _ = digits.trained()
    pending = client.post(  # uploaded, not checked yet: it cannot take a request
        "/v1/models",
        files={"weights": ("w", weights, "application/octet-stream")},
        data={"spec": digits.spec(dataset_id)},
        headers=acme.headers(),
    ).json()

    res = client.post(
        f"/v1/datasets/{dataset_id}/forget-requests",
        json={"sample_ids": PERSON, "subject_ref": "person-8"},
        headers={**acme.headers(), "Idempotency-Key": "ticket-8"},
    )
    assert res.status_code == 202, res.text
    group = res.json()
    assert res.headers["location"] == f"/v1/forget-request-groups/{group['id']}"
    assert sorted(r["lineage_id"] for r in group["requests"]) == sorted([digits_model_id, other])
    assert [s["lineage_id"] for s in group["skipped"]] == [pending["id"]]
    assert group["status"] == "open"
    replay = client.post(
        f"/v1/datasets/{dataset_id}/forget-requests",
        json={"sample_ids": PERSON, "subject_ref": "person-8"},
        headers={**acme.headers(), "Idempotency-Key": "ticket-8"},
    ).json()
    assert replay["id"] == group["id"]
    assert sorted(r["id"] for r in replay["requests"]) == sorted(r["id"] for r in group["requests"])

    purges = []
    for r in group["requests"]:
        attempt = claim_in_order(worker_ctx, r["job_id"])
        assert attempt is not None
        run_job(worker_ctx, r["job_id"], attempt)
        job = client.get(f"/v1/jobs/{r['job_id']}", headers=acme.headers()).json()
        purges.append(job["outcome"]["purge_job_id"])
    done = client.get(f"/v1/forget-request-groups/{group['id']}", headers=acme.headers()).json()
    assert done["status"] == "completed"
    for job_id in purges:
        purge(worker_ctx, job_id)
    # The upload still being checked was trained on the samples too: the manifest keeps them
    # for it, and the exposure says so.
    seen = exposure(client, acme, dataset_id, PERSON[0])
    assert seen["in_manifest"] and seen["lineages_holding"] == [pending["id"]]
    globex = make_tenant(db, "globex")
    theirs = client.get(f"/v1/forget-request-groups/{group['id']}", headers=globex.headers())
    assert theirs.status_code == 404


def test_the_cli_forgets_from_a_dataset(
    lethe: Lethe, acme: TenantKeys, client: TestClient, digits_model_id: str
) -> None:
    dataset_id = client.get(f"/v1/models/{digits_model_id}", headers=acme.headers()).json()[
        "dataset_id"
    ]
    ids = ",".join(str(i) for i in PERSON)
    rc, out, err = lethe("datasets", "forget", dataset_id, "--samples", ids, key=acme.member)
    assert rc == 0, err
    group_id = out.split("group_id: ")[1].split()[0]
    group = client.get(f"/v1/forget-request-groups/{group_id}", headers=acme.headers()).json()
    assert [r["lineage_id"] for r in group["requests"]] == [digits_model_id]
    rc, _, err = lethe("datasets", "forget", "no-such-dataset", "--samples", ids, key=acme.member)
    assert rc == 1 and "No dataset" in err
