from __future__ import annotations

import hashlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.uploads import content_digest_header
from app.models import Artifact, Dataset
from tests.factories import (
    TenantKeys,
    dataset_arrays,
    pickle_bytes,
    safetensors_bytes,
    zip_of_pickle,
)


def _upload(client: TestClient, keys: TenantKeys, train: bytes, **extra: object):  # type: ignore[no-untyped-def]
    files: dict[str, tuple[str, bytes, str]] = {
        "train": ("train.safetensors", train, "application/octet-stream")
    }
    test = extra.pop("test", None)
    if isinstance(test, bytes):
        files["test"] = ("test.safetensors", test, "application/octet-stream")
    data = {"name": "toy", **{k: str(v) for k, v in extra.items()}}
    return client.post("/v1/datasets", files=files, data=data, headers=keys.headers())


def _nothing_stored(db: Session, settings_root: str) -> None:
    assert db.scalar(select(func.count()).select_from(Dataset)) == 0
    assert db.scalar(select(func.count()).select_from(Artifact)) == 0


def test_register_list_get_and_download(client: TestClient, acme: TenantKeys) -> None:
    arrays = dataset_arrays()
    body = safetensors_bytes(arrays)
    res = _upload(client, acme, body)
    assert res.status_code == 201, res.text
    ds = res.json()
    assert ds["num_samples"] == 64 and ds["num_test_samples"] == 16
    assert ds["classes"] == [0, 1, 2, 3] and ds["num_classes"] == 4
    assert ds["class_counts"] == {"0": 16, "1": 16, "2": 16, "3": 16}
    assert ds["image_shape"] == [1, 8, 8]
    assert ds["train_digest"] == hashlib.sha256(body).hexdigest()
    ids = np.sort(arrays["sample_ids"]).astype("<i8").tobytes()
    assert ds["sample_ids_digest"] == hashlib.sha256(ids).hexdigest()

    listed = client.get("/v1/datasets", headers=acme.headers("auditor")).json()
    assert [d["id"] for d in listed["items"]] == [ds["id"]]
    assert client.get(f"/v1/datasets/{ds['id']}", headers=acme.headers()).json() == ds

    dl = client.get(f"/v1/datasets/{ds['id']}/files/train", headers=acme.headers())
    assert dl.status_code == 200
    assert dl.content == body
    assert dl.headers["etag"] == f'"{ds["train_digest"]}"'
    assert dl.headers["content-length"] == str(len(body))
    assert dl.headers["repr-digest"] == content_digest_header(ds["train_digest"])


def test_separate_test_split(client: TestClient, acme: TenantKeys) -> None:
    arrays = dataset_arrays(test=0)
    test = {"images": arrays["images"][:8], "labels": arrays["labels"][:8]}
    res = _upload(client, acme, safetensors_bytes(arrays), test=safetensors_bytes(test))
    assert res.status_code == 201, res.text
    assert res.json()["num_test_samples"] == 8
    assert res.json()["test_digest"] != res.json()["train_digest"]


def test_grey_images_without_channel_axis(client: TestClient, acme: TenantKeys) -> None:
    arrays = dataset_arrays(shape=(28, 28))
    res = _upload(client, acme, safetensors_bytes(arrays))
    assert res.status_code == 201, res.text
    assert res.json()["image_shape"] == [1, 28, 28]


def test_pagination_with_cursor(client: TestClient, acme: TenantKeys) -> None:
    ids = []
    for seed in range(5):
        res = _upload(client, acme, safetensors_bytes(dataset_arrays(seed=seed)))
        ids.append(res.json()["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/datasets", params=params, headers=acme.headers()).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    bad = client.get("/v1/datasets", params={"cursor": "garbage"}, headers=acme.headers())
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda a: a.update(sample_ids=np.zeros(64, dtype=np.int64)), "unique"),
        (lambda a: a.update(labels=a["labels"][:10]), "counts must match"),
        (lambda a: a.update(images=a["images"].astype(np.float32)), "must be uint8"),
        (lambda a: a.update(labels=a["labels"].astype(np.int32)), "int64"),
        (lambda a: a.update(images=a["images"][:, 0, 0, :]), "N x H x W"),
        (lambda a: a.pop("labels"), "missing tensor 'labels'"),
        (lambda a: a.update(extra=np.zeros(3, dtype=np.int64)), "unexpected tensors"),
        (lambda a: a.update(labels=-a["labels"] - 1), "class indices"),
    ],
    ids=[
        "duplicate-ids",
        "count-mismatch",
        "dtype",
        "label-dtype",
        "rank",
        "missing",
        "extra-tensor",
        "negative-label",
    ],
)
def test_bad_manifests_are_refused_and_nothing_is_stored(
    client: TestClient,
    acme: TenantKeys,
    db: Session,
    mutate,
    needle: str,  # type: ignore[no-untyped-def]
) -> None:
    arrays = dataset_arrays()
    mutate(arrays)
    res = _upload(client, acme, safetensors_bytes(arrays))
    assert res.status_code == 422, res.text
    assert res.headers["content-type"] == "application/problem+json"
    problem = res.json()
    assert problem["type"].endswith("/invalid-artifact")
    assert needle in problem["detail"]
    _nothing_stored(db, "")


def test_duplicate_ids_are_listed(client: TestClient, acme: TenantKeys) -> None:
    arrays = dataset_arrays()
    arrays["sample_ids"][5] = arrays["sample_ids"][3]
    res = _upload(client, acme, safetensors_bytes(arrays))
    assert res.status_code == 422
    assert res.json()["duplicate_sample_ids"] == [int(arrays["sample_ids"][3])]


@pytest.mark.parametrize("payload", [pickle_bytes(), zip_of_pickle(), b"", b"\x01" * 7])
def test_non_safetensors_refused(
    client: TestClient, acme: TenantKeys, db: Session, payload: bytes
) -> None:
    res = _upload(client, acme, payload)
    assert res.status_code == 422
    assert res.json()["type"].endswith("/invalid-artifact")
    _nothing_stored(db, "")


def test_truncated_file_refused(client: TestClient, acme: TenantKeys, db: Session) -> None:
    body = safetensors_bytes(dataset_arrays())
    res = _upload(client, acme, body[:-100])
    assert res.status_code == 422
    assert "truncated" in res.json()["detail"]
    _nothing_stored(db, "")


def test_declared_digest_is_checked(client: TestClient, acme: TenantKeys, db: Session) -> None:
    body = safetensors_bytes(dataset_arrays())
    good = hashlib.sha256(body).hexdigest()
    res = _upload(client, acme, body, train_sha256="0" * 64)
    assert res.status_code == 422
    assert res.json()["type"].endswith("/digest-mismatch")
    assert res.json()["actual"] == good
    _nothing_stored(db, "")
    assert _upload(client, acme, body, train_sha256=good).status_code == 201


def test_missing_train_part_and_wrong_media_type(client: TestClient, acme: TenantKeys) -> None:
    res = client.post("/v1/datasets", data={"name": "x"}, headers=acme.headers())
    assert res.status_code in (415, 422)
    assert res.headers["content-type"] == "application/problem+json"
    res = client.post("/v1/datasets", content=b"{}", headers={
        **acme.headers(), "content-type": "application/json"})  # fmt: skip
    assert res.status_code == 415
    assert res.headers["content-type"] == "application/problem+json"


def test_auditor_cannot_upload(client: TestClient, acme: TenantKeys, db: Session) -> None:
    res = client.post(
        "/v1/datasets",
        files={"train": ("t", safetensors_bytes(dataset_arrays()), "application/octet-stream")},
        data={"name": "x"},
        headers=acme.headers("auditor"),
    )
    assert res.status_code == 403
    assert res.headers["content-type"] == "application/problem+json"
    _nothing_stored(db, "")
