"""Streaming intake into the S3 store, against a real HTTP server and SeaweedFS: memory bounded
by the multipart part size whatever the upload's size, and a half-received upload aborted so
that the bucket holds nothing of it."""

from __future__ import annotations

import gc
import secrets
import socket
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Environment, Settings
from app.core.storage import open_store
from app.core.storage.s3 import S3Store
from app.models import Artifact, ModelVersion
from tests.api.test_models import ARGS
from tests.api.test_uploads import big_weights_stream
from tests.conftest import REDIS_URL
from tests.factories import TenantKeys, model_spec
from tests.s3_server import S3Server

PART = 8 * 1024**2  # the default LETHE_S3_PART_SIZE_BYTES
UPLOAD_SIZE = 160 * 1024**2
# One part buffered, one copy of it being sent, and the server's read chunks: independent of
# the upload's size (the bar is < 64 MiB for 1 GiB).
MEMORY_BOUND = 3 * PART


@pytest.fixture()
def settings(
    s3_server: S3Server, tmp_path: Path, database_url: str, signing_key_path: Path
) -> Settings:
    """The conftest's settings on a fresh prefix of the S3 server, whatever the test backend."""
    return Settings(
        **s3_server.settings(s3_server.fresh_uri()),
        environment=Environment.test,
        secret_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
        database_url=database_url,
        redis_url=REDIS_URL,
        signing_key_path=signing_key_path,
        max_upload_bytes=256 * 1024**2,
        auto_migrate=False,
        heartbeat_interval_seconds=3600,
    )


def bucket_state(settings: Settings) -> tuple[list[str], list[str]]:
    store = open_store(settings.resolved_artifact_uri, settings)
    assert isinstance(store, S3Store)
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}tmp/")
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return [o["Key"] for o in listed.get("Contents", [])], [
        u["Key"] for u in uploads.get("Uploads", [])
    ]


def test_large_upload_memory_stays_bounded_on_s3(
    live: str, acme: TenantKeys, dataset_id: str, settings: Settings
) -> None:
    boundary = "lethe-s3-boundary"
    spec = model_spec(dataset_id, args=ARGS)
    headers = {**acme.headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    # Warm up: imports, connection pools, the S3 client's first requests.
    warm = httpx.post(
        f"{live}/v1/models", content=big_weights_stream(boundary, spec, 4096), headers=headers
    )
    assert warm.status_code == 202, warm.text
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        res = httpx.post(
            f"{live}/v1/models",
            content=big_weights_stream(boundary, spec, UPLOAD_SIZE, chunk=1024**2),
            headers=headers,
            timeout=300,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.status_code == 202, res.text
    assert res.json()["weights_size"] > UPLOAD_SIZE
    growth = peak - base
    assert growth < MEMORY_BOUND, f"upload of {UPLOAD_SIZE} bytes grew memory by {growth}"
    assert bucket_state(settings) == ([], [])


def test_interrupted_upload_is_aborted_on_s3(
    live: str, acme: TenantKeys, dataset_id: str, db: Session, settings: Settings
) -> None:
    host, port = live.removeprefix("http://").split(":")
    boundary = "cut"
    before_models = db.scalar(select(func.count()).select_from(ModelVersion))
    before_artifacts = db.scalar(select(func.count()).select_from(Artifact))
    # Enough for two parts to reach the server before the client goes away.
    body = b"".join(big_weights_stream(boundary, model_spec(dataset_id, args=ARGS), 40 * 1024**2))
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"POST /v1/models HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {acme.member}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[: len(body) // 2])
        deadline = time.monotonic() + 20
        while bucket_state(settings)[1] == [] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bucket_state(settings)[1], "the server never started a multipart upload"
    deadline = time.monotonic() + 20
    while bucket_state(settings) != ([], []) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bucket_state(settings) == ([], []), "a half-received upload was left in the bucket"
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(ModelVersion)) == before_models
    assert db.scalar(select(func.count()).select_from(Artifact)) == before_artifacts
