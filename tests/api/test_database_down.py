"""The database going away and coming back, against a PostgreSQL server of this module's own (so
that it can be stopped): requests answer 503 problem+json with Retry-After and log one line each,
not a 500 and a traceback; they answer again once it is back, with no restart; and a job's event
stream ends with an `event: error` and a clean close, and resumes by `Last-Event-ID`."""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from app.core.config import Environment, Settings
from app.core.db import make_engine, make_sessionmaker, session_scope
from app.core.errors import install_handlers
from app.core.openapi import document_unavailable
from app.core.tasks import TaskSender
from app.main import create_app
from app.models import Job
from tests.api.conftest import serve
from tests.conftest import REDIS_URL
from tests.factories import TenantKeys, make_tenant
from tests.private_servers import PrivatePostgres, private_postgres


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    with private_postgres(tmp_path_factory.mktemp("private-pg")) as server:
        yield server


@pytest.fixture()
def db_up(pg: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private server, running at the start and at the end of the test."""
    pg.start()  # a no-op when it runs
    yield pg
    pg.start()  # a no-op when it runs


@pytest.fixture()
def engine(db_up: PrivatePostgres) -> Iterator[Engine]:
    engine = make_engine(db_up.url)
    yield engine
    engine.dispose()


@pytest.fixture()
def down_app(engine: Engine, tmp_path: Path, signing_key_path: Path) -> FastAPI:
    settings = Settings(
        environment=Environment.test,
        secret_key=SecretStr(secrets.token_urlsafe(32)),
        data_dir=tmp_path / "data",
        database_url=engine.url.render_as_string(hide_password=False),
        redis_url=REDIS_URL,
        artifact_uri=(tmp_path / "artifacts").as_uri(),
        signing_key_path=signing_key_path,
        auto_migrate=False,
        # Long, so that "a key checked before the outage" is certain to be served from the cache.
        auth_cache_seconds=300,
    )
    return create_app(settings, engine=engine, tasks=TaskSender(settings))


@pytest.fixture()
def keys(engine: Engine) -> TenantKeys:
    with make_sessionmaker(engine)() as session:
        return make_tenant(session, f"down-{secrets.token_hex(4)}")


# The access log's one line per request, and the test's own HTTP client.
# httpx2: the TestClient's transport where that package is installed (huggingface_hub brings it).
_ROUTINE = ("lethe.access", "httpx", "httpx2", "httpcore")


def _problems(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """What the server logged besides its access line per request."""
    return [
        r for r in records if not any(r.name == n or r.name.startswith(n + ".") for n in _ROUTINE)
    ]


def _assert_unavailable(res: httpx.Response) -> None:
    assert res.status_code == 503, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert res.headers["retry-after"] == "5"
    body = res.json()
    assert body["status"] == 503 and body["type"].endswith("/unavailable")
    assert "database" in body["detail"]


def test_a_stopped_database_answers_503_and_recovers_without_a_restart(
    db_up: PrivatePostgres, down_app: FastAPI, keys: TenantKeys, caplog: pytest.LogCaptureFixture
) -> None:
    # raise_server_exceptions (the default): an error that reached no handler fails the test.
    with TestClient(down_app) as client:
        # The member's key is checked now and cached: during the outage its requests get past
        # authentication and fail in the endpoint. The others' keys fail in authentication.
        assert client.get("/v1/models", headers=keys.headers()).status_code == 200
        requests = [
            ("GET", "/v1/models", keys.headers(), None),
            ("GET", "/v1/models", keys.headers("auditor"), None),
            ("POST", "/v1/api-keys", keys.headers("admin"), {"role": "member"}),
        ]
        db_up.stop()
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for method, path, headers, body in requests:
                _assert_unavailable(client.request(method, path, headers=headers, json=body))
        lines = _problems(caplog.records)
        assert [r.levelno for r in lines] == [logging.WARNING] * len(requests), [
            r.getMessage() for r in lines
        ]
        assert all("database unavailable" in r.getMessage() for r in lines)
        assert all("\n" not in r.getMessage() for r in lines)
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"

        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")

        db_up.start()
        statuses = [client.request(m, p, headers=h, json=b).status_code for m, p, h, b in requests]
        assert statuses == [200, 200, 201]
        assert client.get("/readyz").status_code == 200


def test_ordinary_errors_keep_their_status_when_the_connection_dies_under_them(
    db_up: PrivatePostgres, engine: Engine, tmp_path: Path
) -> None:
    """The unit of work's rollback on a dead connection does not replace the error that ended it,
    and its rollback hooks still run."""
    ran: list[str] = []
    factory = make_sessionmaker(engine)
    with pytest.raises(KeyError), session_scope(factory) as session:
        session.execute(text("SELECT 1"))
        session.info.setdefault("on_rollback", []).append(lambda: ran.append("rolled back"))
        db_up.stop()
        raise KeyError("the endpoint's own error")
    assert ran == ["rolled back"]


def test_unavailable_is_documented_on_every_operation_that_reads_the_database(
    down_app: FastAPI,
) -> None:
    schema = json.loads(json.dumps(down_app.openapi()))
    document_unavailable(schema)  # what create_app's OpenAPI hook does (idempotent)
    paths = schema["paths"]
    unavailable = paths["/v1/models"]["get"]["responses"]["503"]
    assert unavailable["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert "application/problem+json" in unavailable["content"]
    assert "503" in paths["/v1/jobs/{job_id}/events"]["get"]["responses"]
    assert "503" not in paths["/healthz"]["get"]["responses"]
    assert paths["/readyz"]["get"]["responses"]["503"]["content"]  # its own, kept


# --- the job's event stream ------------------------------------------------------------------


@pytest.fixture()
def live_down(down_app: FastAPI) -> Iterator[str]:
    """The app behind a real uvicorn server, so that the chunked framing of a stream is real."""
    with serve(down_app) as url:
        yield url


def _events(res: httpx.Response) -> Iterator[dict[str, str]]:
    """Parse a text/event-stream into its blocks (field -> value; a comment as ``":"``). A body
    cut short raises httpx.RemoteProtocolError."""
    block: dict[str, str] = {}
    for line in res.iter_lines():
        if not line:
            if block:
                yield block
            block = {}
        elif line.startswith(":"):
            block[":"] = line[1:].strip()
        else:
            field, _, value = line.partition(":")
            block[field] = value.removeprefix(" ")
    if block:
        yield block


def _queued_job(engine: Engine, keys: TenantKeys) -> str:
    with session_scope(make_sessionmaker(engine)) as session:
        job = Job(tenant_id=keys.tenant_id, kind="unlearn", state="queued", queue="cpu")
        session.add(job)
        session.flush()
        return job.id


def test_an_event_stream_ends_with_an_error_event_and_resumes_by_last_event_id(
    db_up: PrivatePostgres,
    engine: Engine,
    live_down: str,
    keys: TenantKeys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_id = _queued_job(engine, keys)
    url = f"{live_down}/v1/jobs/{job_id}/events"
    with httpx.Client(timeout=30) as http:
        with caplog.at_level(logging.INFO), http.stream("GET", url, headers=keys.headers()) as res:
            assert res.status_code == 200
            events = _events(res)
            first = next(events)
            assert first["retry"] == "5000" and first["event"] == "job"
            assert json.loads(first["data"])["state"] == "queued" and first["id"]
            db_up.stop()
            rest = list(events)  # ends: no RemoteProtocolError, no truncated chunk
        assert [e.get("event") for e in rest] == ["error"]
        problem = json.loads(rest[0]["data"])
        assert problem["status"] == 503 and problem["type"].endswith("/unavailable")
        assert "id" not in rest[0]  # the client's last ID stays the last snapshot's
        lines = _problems(caplog.records)
        assert [r.levelno for r in lines] == [logging.WARNING], [r.getMessage() for r in lines]
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"

        # While the database is away a reconnect is refused with 503, not a broken stream.
        _assert_unavailable(http.get(url, headers={**keys.headers(), "Last-Event-ID": "x"}))

        db_up.start()

        # The job moves on a second after the client reconnects with the ID it last got.
        def finish() -> None:
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE jobs SET state = 'cancelled' WHERE id = :id"), {"id": job_id}
                )

        timer = threading.Timer(1.0, finish)
        resume = {**keys.headers(), "Last-Event-ID": first["id"]}
        with http.stream("GET", url, headers=resume) as res:
            assert res.status_code == 200
            timer.start()
            resumed = list(_events(res))
        timer.join()
        # Not the queued snapshot again: the retry delay (with a keep-alive), the change, the end.
        assert resumed[0] == {"retry": "5000", ":": "keep-alive"}
        assert [e.get("event") for e in resumed[1:]] == ["job", "end"]
        assert json.loads(resumed[1]["data"])["state"] == "cancelled"
        assert resumed[1]["id"] != first["id"]

        # A client that reconnects after the end with the last ID is told only that it ended.
        again = {**keys.headers(), "Last-Event-ID": resumed[1]["id"]}
        with http.stream("GET", url, headers=again) as res:
            assert [e.get("event") for e in _events(res)][-1:] == ["end"]
            # (the first block is the retry delay; no job event)


def test_ordinary_database_errors_keep_their_mapping() -> None:
    app = FastAPI()
    install_handlers(app)
    raised = {
        "integrity": IntegrityError("INSERT", {}, Exception("duplicate key")),
        "data": DataError("INSERT", {}, Exception("value out of range")),
        "lost": OperationalError("SELECT", {}, Exception("server closed the connection")),
    }

    @app.get("/{name}")
    def fail(name: str) -> None:
        raise raised[name]

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/integrity").status_code == 500
        assert client.get("/data").status_code == 422
        _assert_unavailable(client.get("/lost"))
