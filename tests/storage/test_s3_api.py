"""The API on the S3 store: uploads staged in the bucket, downloads streamed with Range or
answered with a presigned URL of the bucket."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Environment, Settings
from app.core.storage.s3 import S3Store
from app.core.tasks import TaskSender
from app.core.uploads import content_digest_header
from app.main import create_app
from tests import digits
from tests.conftest import REDIS_URL
from tests.factories import TenantKeys, make_tenant
from tests.s3_server import S3Server


@pytest.fixture()
def s3_api(
    s3_server: S3Server,
    tmp_path: Path,
    database_url: str,
    signing_key_path: Path,
    db_engine: Engine,
    session_factory: sessionmaker[Session],
) -> Iterator[Callable[..., TestClient]]:
    """An API client on a fresh prefix of the S3 server, with extra settings as asked."""
    with ExitStack() as stack:

        def make(**extra: object) -> TestClient:
            settings = Settings(
                **s3_server.settings(s3_server.fresh_uri(), **extra),
                environment=Environment.test,
                secret_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
                data_dir=tmp_path / "data",
                database_url=database_url,
                redis_url=REDIS_URL,
                signing_key_path=signing_key_path,
                auto_migrate=False,
            )
            app = create_app(settings, engine=db_engine, tasks=TaskSender(settings))
            app.state.sessionmaker = session_factory
            assert isinstance(app.state.store, S3Store)
            return stack.enter_context(TestClient(app, raise_server_exceptions=False))

        yield make


@pytest.fixture()
def streamed(s3_api: Callable[..., TestClient]) -> TestClient:
    return s3_api()


@pytest.fixture()
def presigned(s3_api: Callable[..., TestClient]) -> TestClient:
    return s3_api(s3_presigned_downloads=True, s3_presign_seconds=30)


def upload_dataset(client: TestClient, keys: TenantKeys) -> dict[str, str]:
    res = client.post(
        "/v1/datasets",
        files={"train": ("digits", digits.dataset_bytes(), "application/octet-stream")},
        data={"name": "digits"},
        headers=keys.headers(),
    )
    assert res.status_code == 201, res.text
    return res.json()  # type: ignore[no-any-return]


def staging_left(client: TestClient) -> list[str]:
    store: S3Store = client.app.state.store  # type: ignore[attr-defined]
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}tmp/")
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return [o["Key"] for o in listed.get("Contents", [])] + [
        u["Key"] for u in uploads.get("Uploads", [])
    ]


def test_upload_and_ranged_download_through_the_api(streamed: TestClient, db: Session) -> None:
    keys = make_tenant(db, "s3-streamed")
    data = digits.dataset_bytes()
    ds = upload_dataset(streamed, keys)
    assert ds["train_digest"] == hashlib.sha256(data).hexdigest()
    assert staging_left(streamed) == []
    url = f"/v1/datasets/{ds['id']}/files/train"
    full = streamed.get(url, headers=keys.headers())
    assert full.status_code == 200 and full.content == data
    assert full.headers["etag"] == f'"{ds["train_digest"]}"'
    part = streamed.get(url, headers={**keys.headers(), "Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"


def test_a_refused_upload_leaves_nothing_in_the_bucket(streamed: TestClient, db: Session) -> None:
    keys = make_tenant(db, "s3-refused")
    res = streamed.post(
        "/v1/datasets",
        files={"train": ("bad", b"not a safetensors file" * 1000, "application/octet-stream")},
        data={"name": "bad"},
        headers=keys.headers(),
    )
    assert res.status_code == 422, res.text
    assert staging_left(streamed) == []
    store: S3Store = streamed.app.state.store  # type: ignore[attr-defined]
    assert list(store.iter_blobs()) == []


def test_a_presigned_download_redirects_with_the_digest(presigned: TestClient, db: Session) -> None:
    keys = make_tenant(db, "s3-presigned")
    data = digits.dataset_bytes()
    ds = upload_dataset(presigned, keys)
    res = presigned.get(
        f"/v1/datasets/{ds['id']}/files/train", headers=keys.headers(), follow_redirects=False
    )
    assert res.status_code == 307, res.text
    digest = ds["train_digest"]
    assert res.headers["etag"] == f'"{digest}"'
    assert res.headers["repr-digest"] == content_digest_header(digest)
    assert res.headers["cache-control"] == "no-store"
    location = res.headers["location"]
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=30" in location
    # What a client then does: fetch from the bucket, without the API key, and check the bytes.
    fetched = httpx.get(location)
    assert fetched.status_code == 200 and fetched.content == data
    assert hashlib.sha256(fetched.content).hexdigest() == digest
    ranged = httpx.get(location, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == data[:10]
    # A conditional request is still answered by the API itself.
    cached = presigned.get(
        f"/v1/datasets/{ds['id']}/files/train",
        headers={**keys.headers(), "If-None-Match": f'"{digest}"'},
        follow_redirects=False,
    )
    assert cached.status_code == 304
