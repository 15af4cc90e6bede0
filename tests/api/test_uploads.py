"""Streaming intake against a real HTTP server (uvicorn in a thread): bounded memory, size
limits, interrupted uploads and RFC 9530 digests."""

from __future__ import annotations

import gc
import hashlib
import socket
import time
import tracemalloc
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.uploads import content_digest_header
from app.models import Artifact, ModelVersion
from tests.api.test_models import ARGS
from tests.factories import TenantKeys, dataset_arrays, model_spec, safetensors_bytes

# The documented bound: the store's write buffer (1 MiB) plus a few server read chunks. The test
# allows 4 MiB of Python allocations for a 48 MiB upload, client included.
MEMORY_BOUND = 4 * 1024**2
UPLOAD_SIZE = 48 * 1024**2


def big_weights_stream(boundary: str, spec: str, size: int, chunk: int = 64 * 1024):  # type: ignore[no-untyped-def]
    """A multipart body generated on the fly: a spec part, then a safetensors file holding one
    F32 tensor of ``size`` bytes, produced chunk by chunk (never held whole)."""
    n = size // 4
    header = f'{{"w":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{n * 4}]}}}}'.encode()
    header += b" " * (-len(header) % 8)
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{spec}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="weights"; filename="w"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield len(header).to_bytes(8, "little") + header
    zeros = bytes(chunk)
    remaining = n * 4
    while remaining:
        step = min(chunk, remaining)
        yield zeros[:step]
        remaining -= step
    yield f"\r\n--{boundary}--\r\n".encode()


def test_large_upload_memory_stays_bounded(
    live: str, acme: TenantKeys, dataset_id: str, db: Session
) -> None:
    boundary = "lethe-test-boundary"
    spec = model_spec(dataset_id, args=ARGS)
    headers = {**acme.headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    # Warm up first: imports and connection pools (broker client, DB) are one-off costs that
    # have nothing to do with the upload's size.
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
            content=big_weights_stream(boundary, spec, UPLOAD_SIZE),
            headers=headers,
            timeout=60,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.status_code == 202, res.text
    assert res.json()["weights_size"] > UPLOAD_SIZE
    growth = peak - base
    assert growth < MEMORY_BOUND, f"upload of {UPLOAD_SIZE} bytes grew memory by {growth}"


def test_interrupted_upload_leaves_nothing(
    live: str, acme: TenantKeys, dataset_id: str, db: Session, settings: Settings
) -> None:
    host, port = live.removeprefix("http://").split(":")
    boundary = "cut"
    before_models = db.scalar(select(func.count()).select_from(ModelVersion))
    before_artifacts = db.scalar(select(func.count()).select_from(Artifact))
    body = b"".join(big_weights_stream(boundary, model_spec(dataset_id, args=ARGS), 8 * 1024**2))
    with socket.create_connection((host, int(port))) as sock:
        head = (
            f"POST /v1/models HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {acme.member}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.5)  # let the server stage part of the file
    tmp = Path(settings.resolved_artifact_uri.removeprefix("file://")) / "tmp"
    deadline = time.monotonic() + 10
    while any(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(tmp.iterdir()), "a half-received upload was left in staging"
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(ModelVersion)) == before_models
    assert db.scalar(select(func.count()).select_from(Artifact)) == before_artifacts


def test_size_limit_answers_413_and_keeps_nothing(
    app: FastAPI, acme: TenantKeys, dataset_id: str, db: Session, settings: Settings
) -> None:
    app.state.settings = settings.model_copy(update={"max_upload_bytes": 1024**2})
    with TestClient(app) as client:
        res = client.post(
            "/v1/datasets",
            files={"train": ("t", bytes(2 * 1024**2), "application/octet-stream")},
            data={"name": "big"},
            headers=acme.headers(),
        )
    assert res.status_code == 413
    assert res.headers["content-type"] == "application/problem+json"
    assert res.json()["limit_bytes"] == 1024**2
    tmp = Path(settings.resolved_artifact_uri.removeprefix("file://")) / "tmp"
    assert not any(tmp.iterdir())


def test_request_content_digest_header(client: TestClient, acme: TenantKeys, db: Session) -> None:
    body = safetensors_bytes(dataset_arrays(seed=3))
    req = client.build_request(
        "POST",
        "/v1/datasets",
        files={"train": ("t", body, "application/octet-stream")},
        data={"name": "digested"},
        headers=acme.headers(),
    )
    raw = req.read()
    good = hashlib.sha256(raw).hexdigest()
    req.headers["Content-Digest"] = content_digest_header(good)
    assert client.send(req).status_code == 201
    req.headers["Content-Digest"] = content_digest_header("1" * 64)
    res = client.send(req)
    assert res.status_code == 422
    assert res.json()["type"].endswith("/digest-mismatch")
    req.headers["Content-Digest"] = "sha-256=:not base64:"
    assert client.send(req).status_code == 422


def test_part_content_digest_header(client: TestClient, acme: TenantKeys) -> None:
    body = safetensors_bytes(dataset_arrays(seed=4))
    boundary = "partdigest"
    digest = hashlib.sha256(body).hexdigest()

    def multipart(declared: str) -> bytes:
        return (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="train"; filename="t"\r\n'
                f"Content-Digest: {content_digest_header(declared)}\r\n\r\n"
            ).encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        )

    headers = {**acme.headers(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    ok = client.post("/v1/datasets", content=multipart(digest), headers=headers)
    assert ok.status_code == 201, ok.text
    bad = client.post("/v1/datasets", content=multipart("2" * 64), headers=headers)
    assert bad.status_code == 422 and bad.json()["part"] == "train"


def test_unexpected_and_duplicate_parts(client: TestClient, acme: TenantKeys) -> None:
    body = safetensors_bytes(dataset_arrays())
    res = client.post(
        "/v1/datasets",
        files={"train": ("t", body, "x"), "evil": ("e", b"1", "x")},
        data={"name": "x"},
        headers=acme.headers(),
    )
    assert res.status_code == 422
    assert res.json()["errors"][0]["field"] == "body.evil"
    _ = np  # numpy imported for fixtures' arrays


def test_cli_imports_digits_through_the_api(
    live: str, acme: TenantKeys, capsys: pytest.CaptureFixture[str]
) -> None:
    from app import cli

    rc = cli.main(["datasets", "import", "digits", "--url", live, "--api-key", acme.member])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "samples: 1438" in out and "classes: 10" in out
    listed = httpx.get(f"{live}/v1/datasets", headers=acme.headers()).json()["items"]
    assert [d["name"] for d in listed] == ["digits"]
    # A wrong key is a clean failure with a message, not a traceback.
    assert cli.main(["datasets", "import", "digits", "--url", live, "--api-key", "x"]) == 1
    assert "HTTP 401" in capsys.readouterr().err
