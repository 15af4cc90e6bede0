"""Jobs can be listed and filtered, through the API and `lethe jobs list`."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests import digits
from tests.api.conftest import Lethe
from tests.factories import TenantKeys, make_tenant


def test_jobs_are_listed_newest_first_with_filters(
    client: TestClient, acme: TenantKeys, digits_model_id: str, db: Session, lethe: Lethe
) -> None:
    fr = client.post(
        f"/v1/models/{digits_model_id}/forget-requests",
        json={"sample_ids": digits.sample_ids_of_class(1)[:4]},
        headers=acme.headers(),
    ).json()
    everything = client.get("/v1/jobs", headers=acme.headers()).json()["items"]
    assert [j["kind"] for j in everything] == ["unlearn", "validate_model"]
    queued = client.get("/v1/jobs", params={"state": "queued"}, headers=acme.headers()).json()
    assert [j["id"] for j in queued["items"]] == [fr["job_id"]]
    of_model = client.get(
        "/v1/jobs", params={"model_id": digits_model_id, "kind": "validate_model"},
        headers=acme.headers(),
    ).json()["items"]  # fmt: skip
    assert len(of_model) == 1 and of_model[0]["state"] == "succeeded"
    page = client.get("/v1/jobs", params={"limit": 1}, headers=acme.headers()).json()
    nxt = client.get(
        "/v1/jobs", params={"limit": 1, "cursor": page["next_cursor"]}, headers=acme.headers()
    ).json()
    assert [page["items"][0]["id"], nxt["items"][0]["id"]] == [j["id"] for j in everything]
    assert (
        client.get("/v1/jobs", params={"state": "bogus"}, headers=acme.headers()).status_code == 422
    )
    globex = make_tenant(db, "globex")
    assert client.get("/v1/jobs", headers=globex.headers()).json()["items"] == []

    rc, out, err = lethe("jobs", "list", "--state", "queued", "--json", key=acme.member)
    assert rc == 0, err
    assert [j["id"] for j in json.loads(out)] == [fr["job_id"]]
