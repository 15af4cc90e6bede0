"""Sample-ID lists as an uploaded file: a list too long for the JSON body limit still gets in,
through the same checks as JSON, and a bad file is refused with nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.forget_requests import id_file
from app.models import ForgetRequest
from tests.api.test_models import ARGS, real_weights, run_validation_claimed, upload
from tests.factories import TenantKeys, dataset_arrays, model_spec, safetensors_bytes
from worker.context import WorkerContext

SAMPLES = 400
IDS = [1000 + 7 * i for i in range(SAMPLES)]  # the factory's sample IDs


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    """A 1 KiB JSON limit: 400 four-digit IDs (2.4 KB as JSON) do not fit."""
    return settings.model_copy(update={"max_json_body_bytes": 1024})


@pytest.fixture()
def model_id(client: TestClient, acme: TenantKeys, worker_ctx: WorkerContext) -> str:
    ds = client.post(
        "/v1/datasets",
        files={"train": ("t", safetensors_bytes(dataset_arrays(n=SAMPLES)), "application/x")},
        data={"name": "toy"},
        headers=acme.headers(),
    )
    assert ds.status_code == 201, ds.text
    res = upload(client, acme, model_spec(ds.json()["id"], args=ARGS), real_weights())
    assert res.status_code == 202, res.text
    run_validation_claimed(worker_ctx, res.json()["validation_job_id"])
    return str(res.json()["id"])


def _send(
    client: TestClient, acme: TenantKeys, model_id: str, text: bytes, request: object, key: str
) -> httpx.Response:
    return client.post(
        f"/v1/models/{model_id}/forget-requests/file",
        files={"sample_ids": ("ids.txt", text, "text/plain")},
        data={"request": json.dumps(request)},
        headers={**acme.headers(), "Idempotency-Key": key},
    )


def _count(db: Session) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(ForgetRequest)) or 0


def test_a_list_too_long_for_json_goes_in_as_a_file(
    client: TestClient, acme: TenantKeys, model_id: str, db: Session, settings: Settings
) -> None:
    as_json = client.post(
        f"/v1/models/{model_id}/forget-requests",
        json={"sample_ids": IDS, "reason": "GDPR art. 17"},
        headers=acme.headers(),
    )
    assert as_json.status_code == 413
    # Mixed separators, as exports come: newlines, commas, spaces, CRLF.
    text = "\r\n".join(", ".join(map(str, IDS[i : i + 10])) for i in range(0, SAMPLES, 10))
    request = {"reason": "GDPR art. 17", "subject_ref": "ticket-1"}
    res = _send(client, acme, model_id, text.encode(), request, "k1")
    assert res.status_code == 202, res.text
    fr = res.json()
    assert fr["kind"] == "sample" and fr["sample_count"] == SAMPLES
    assert fr["subject_ref"] == "ticket-1" and fr["reason"] == "GDPR art. 17"
    assert res.headers["location"] == f"/v1/forget-requests/{fr['id']}"
    # The same key and file again: the original request, answered 200, nothing duplicated.
    again = _send(client, acme, model_id, text.encode(), request, "k1")
    assert again.status_code == 200 and again.json()["id"] == fr["id"]
    assert _count(db) == 1
    # Nothing of either upload stays in the store's staging area.
    staging = Path(settings.resolved_artifact_uri.removeprefix("file://")) / "staging"
    assert not staging.exists() or not any(staging.iterdir())


@pytest.mark.parametrize(
    ("text", "request_part", "field"),
    [
        (b"1000\n1007\nabc\n", {}, "body.sample_ids"),
        (b"1000\n" + b"9" * 30 + b"\n", {}, "body.sample_ids"),
        (b"99999999999999999999\n", {}, "body.sample_ids"),
        (b" \n\n", {}, "body.sample_ids"),
        (b"1000\n", {"sample_ids": [1]}, "body.request.sample_ids"),
        (b"1000\n", {"method": "no-such"}, None),
        (b"1000\n", [1, 2], "body.request"),
    ],
    ids=["not-a-number", "too-long", "outside-int64", "empty", "ids-in-json", "bad-method", "list"],
)
def test_a_bad_file_or_request_part_is_refused_and_nothing_is_recorded(
    client: TestClient,
    acme: TenantKeys,
    model_id: str,
    db: Session,
    text: bytes,
    request_part: object,
    field: str | None,
) -> None:
    res = _send(client, acme, model_id, text, request_part, "bad")
    assert res.status_code == 422, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    if field:
        assert res.json()["errors"][0]["field"] == field
    assert _count(db) == 0


def test_the_reader_streams_across_chunks_and_caps_the_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pure unit test of the parser (no service): IDs split across chunk boundaries parse
    whole, and one more than the limit is refused."""
    monkeypatch.setattr(id_file, "CHUNK_BYTES", 5)
    path = tmp_path / "ids.txt"
    path.write_bytes(b"123456789,-42\t7\n\n+8 9223372036854775807")
    assert id_file.read_sample_ids(path, 10) == [123456789, -42, 7, 8, 2**63 - 1]
    with pytest.raises(InvalidInput, match="more than the limit of 4"):
        id_file.read_sample_ids(path, 4)
