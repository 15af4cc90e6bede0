"""The cap on non-multipart request bodies (``LETHE_MAX_JSON_BODY_BYTES``): refused with 413
before authentication and before a byte is parsed, by declared length or by counting a chunked
body; at the limit nothing changes; streamed multipart uploads are not subject to it."""

from __future__ import annotations

import gc
import json
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from app.core.body_limit import BodyLimitMiddleware
from app.core.config import Settings
from app.models import ForgetRequest
from tests.api.test_models import ARGS, real_weights, run_validation_claimed, upload
from tests.factories import TenantKeys, dataset_arrays, model_spec, safetensors_bytes
from worker.context import WorkerContext

LIMIT = 64 * 1024
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "limit_bytes"}


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    """The shared test settings with a small body limit, so that tests send little."""
    return settings.model_copy(update={"max_json_body_bytes": LIMIT})


@pytest.fixture()
def model_id(
    client: TestClient, acme: TenantKeys, dataset_id: str, worker_ctx: WorkerContext
) -> str:
    """A validated (ready) model that accepts forget requests."""
    res = upload(client, acme, model_spec(dataset_id, args=ARGS), real_weights())
    assert res.status_code == 202, res.text
    run_validation_claimed(worker_ctx, res.json()["validation_job_id"])
    return str(res.json()["id"])


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON followed by whitespace, ``size`` bytes in all: still valid JSON, so a
    server that parsed any prefix of it would accept it."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def forget_requests(db: Session) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(ForgetRequest)) or 0


def assert_problem_413(res: httpx.Response, path: str, limit: int = LIMIT) -> None:
    assert res.status_code == 413, res.text
    assert res.headers["content-type"] == "application/problem+json"
    problem = res.json()
    assert set(problem) == PROBLEM_KEYS
    assert problem["type"] == "https://lethe.dev/problems/payload-too-large"
    assert problem["status"] == 413 and problem["limit_bytes"] == limit
    assert problem["instance"] == path
    assert res.headers["connection"] == "close"


def test_the_default_carries_the_largest_sample_list_of_the_widest_ids() -> None:
    fields = Settings.model_fields
    limit, samples = fields["max_json_body_bytes"].default, fields["max_forget_samples"].default
    body = {
        "sample_ids": [-(2**63)] * samples,  # 20 characters each, the widest an int64 prints
        "method": "sfr_on",
        "config": {},
        "reason": "r" * 2000,
        "subject_ref": "s" * 200,
    }
    assert len(json.dumps(body).encode()) <= limit


def test_declared_length_over_the_limit_is_refused_before_auth_and_creates_nothing(
    client: TestClient, acme: TenantKeys, model_id: str, db: Session
) -> None:
    path = f"/v1/models/{model_id}/forget-requests"
    body = padded({"class_ids": [1]}, LIMIT + 1)
    json_type = {"Content-Type": "application/json"}
    anonymous = client.post(path, content=body, headers=json_type)
    assert_problem_413(anonymous, path)  # not 401: the key is never looked at
    assert anonymous.headers["x-request-id"]  # refused inside the request context
    res = client.post(path, content=body, headers={**acme.headers(), **json_type})
    assert_problem_413(res, path)
    assert forget_requests(db) == 0


def test_a_body_at_the_limit_is_served_as_usual(
    client: TestClient, acme: TenantKeys, model_id: str, db: Session
) -> None:
    path = f"/v1/models/{model_id}/forget-requests"
    headers = {**acme.headers(), "Content-Type": "application/json"}
    anonymous = client.post(path, content=padded({"class_ids": [1]}, LIMIT))
    assert anonymous.status_code == 401
    invalid = client.post(path, content=padded({"class_ids": []}, LIMIT), headers=headers)
    assert invalid.status_code == 422, invalid.text
    res = client.post(path, content=padded({"class_ids": [1]}, LIMIT), headers=headers)
    assert res.status_code == 202, res.text
    assert forget_requests(db) == 1


def test_a_chunked_body_is_cut_off_at_the_limit_before_it_ends(
    live: str, acme: TenantKeys, model_id: str, db: Session
) -> None:
    """No Content-Length: the server counts. The client sends a little more than the limit and
    never ends the body; the 413 comes anyway, so the server did not wait for the rest."""
    host, port = live.removeprefix("http://").split(":")
    path = f"/v1/models/{model_id}/forget-requests"
    body = padded({"class_ids": [1]}, LIMIT + 1)
    chunk = 8 * 1024
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {acme.member}\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        for start in range(0, len(body), chunk):
            piece = body[start : start + chunk]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        # No terminating zero-length chunk: the body is still open when the answer comes.
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    res = httpx.Response(
        int(status_line.split()[1]),
        headers=headers,
        content=payload[: int(headers["content-length"])],
    )
    assert_problem_413(res, path)
    assert forget_requests(db) == 0


def test_a_large_streamed_body_is_neither_read_whole_nor_buffered(
    live: str, acme: TenantKeys, model_id: str, db: Session
) -> None:
    """The issue's case, 64 MiB of body: the server stops reading at the limit, so the client
    can hand over only what the sockets' buffers hold, and the process's memory does not grow
    with the body. The answer is a 413, or a reset when the server's close overtakes it."""
    total, step = 64 * 1024**2, 64 * 1024
    block = b" " * step
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"class_ids": [1]}'
        while sent < total:
            sent += step
            yield block

    url = f"{live}/v1/models/{model_id}/forget-requests"
    headers = {**acme.headers(), "Content-Type": "application/json"}
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        try:
            res: httpx.Response | None = httpx.post(
                url, content=body(), headers=headers, timeout=30
            )
        except httpx.TransportError:
            res = None  # the connection was reset under the client while it was still sending
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if res is not None:
        assert_problem_413(res, f"/v1/models/{model_id}/forget-requests")
    assert sent < total // 2, f"the server accepted {sent} of {total} bytes"
    assert peak - base < 4 * 1024**2, f"a refused body grew memory by {peak - base} bytes"
    assert forget_requests(db) == 0


def test_a_chunked_body_over_the_limit_in_process_gets_413(
    client: TestClient, acme: TenantKeys, model_id: str, db: Session
) -> None:
    path = f"/v1/models/{model_id}/forget-requests"

    def chunks() -> Iterator[bytes]:
        body = padded({"class_ids": [1]}, LIMIT + 1)
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    res = client.post(
        path, content=chunks(), headers={**acme.headers(), "Content-Type": "application/json"}
    )
    assert "content-length" not in res.request.headers
    assert_problem_413(res, path)
    assert forget_requests(db) == 0


def test_a_multipart_upload_over_the_limit_streams_as_before(
    client: TestClient, acme: TenantKeys, settings: Settings
) -> None:
    train = safetensors_bytes(dataset_arrays(n=4096))
    assert LIMIT < len(train) < settings.max_upload_bytes
    res = client.post(
        "/v1/datasets",
        files={"train": ("t", train, "application/octet-stream")},
        data={"name": "big"},
        headers=acme.headers(),
    )
    assert res.status_code == 201, res.text
    assert res.json()["num_samples"] == 4096


def test_a_multipart_label_on_a_json_operation_is_limited_like_any_body(
    client: TestClient, acme: TenantKeys, model_id: str, db: Session
) -> None:
    """Only operations that stream multipart are exempt: FastAPI would read this body whole."""
    path = f"/v1/models/{model_id}/forget-requests"
    multipart = {"Content-Type": "multipart/form-data; boundary=x"}
    res = client.post(path, content=bytes(LIMIT + 1), headers={**acme.headers(), **multipart})
    assert_problem_413(res, path)
    assert forget_requests(db) == 0


def test_other_bodies_and_unknown_routes_are_limited_too(client: TestClient) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    res = client.post("/v1/no-such-route", content=b"a=" + b"b" * LIMIT, headers=form)
    assert_problem_413(res, "/v1/no-such-route")  # before routing: not a 404
    assert client.post("/v1/no-such-route", content=b"a=b", headers=form).status_code == 404


def test_the_413_is_documented_on_operations_with_a_json_body(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    forget = paths["/v1/models/{model_id}/forget-requests"]["post"]["responses"]
    assert str(LIMIT) in forget["413"]["description"]
    # A streamed upload is not held to the JSON limit: its 413 is the per-part upload cap.
    upload = paths["/v1/datasets"]["post"]["responses"]
    assert str(LIMIT) not in upload["413"]["description"]


@pytest.mark.parametrize("swallow", [False, True], ids=["lets-the-error-escape", "swallows-it"])
def test_an_app_that_mishandles_the_cut_still_answers_413(swallow: bool) -> None:
    """Whatever the app does with its failed read, it never answers from part of the body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            body = await request.body()
        except Exception:
            if not swallow:
                raise
            body = b"partial"
        await PlainTextResponse(f"read {len(body)}")(scope, receive, send)

    def chunks() -> Iterator[bytes]:
        yield from [b"x" * 1024] * 3

    client = TestClient(BodyLimitMiddleware(app, max_bytes=2048))  # no lifespan: a bare app
    assert_problem_413(client.post("/x", content=chunks()), "/x", limit=2048)
    assert client.post("/x", content=b"x" * 2048).text == "read 2048"
