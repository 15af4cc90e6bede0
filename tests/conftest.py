"""Shared fixtures: a real PostgreSQL database built through Alembic, a real Redis broker, and
per-test isolation by rolling back an outer transaction.

Environment:
- ``LETHE_TEST_DATABASE_URL``: an admin URL of a PostgreSQL server; a fresh ``lethe_test_*``
  database is created there for the session (default: postgres on 127.0.0.1:5432).
- ``LETHE_TEST_REDIS_URL``: Redis for the broker (default: redis://127.0.0.1:6379/15).
- ``LETHE_TEST_ARTIFACT_BACKEND``: ``file`` (default: a temporary folder per test) or ``s3``
  (a fresh prefix per test on the session's SeaweedFS, :mod:`tests.s3_server`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from app.certificates.signing import generate_key_file
from app.core.config import Environment, Settings
from app.core.db import make_engine
from app.core.migrate import upgrade
from app.core.storage import open_store
from app.core.tasks import TaskSender
from app.main import create_app
from tests.s3_server import s3_server  # noqa: F401  (the session's S3 server fixture)
from worker.context import WorkerContext

PG_ADMIN_URL = os.environ.get(
    "LETHE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ARTIFACT_BACKEND = os.environ.get("LETHE_TEST_ARTIFACT_BACKEND", "file")


def artifact_settings(request: pytest.FixtureRequest, folder: Path) -> dict[str, Any]:
    """``Settings`` fields for where a test's artifacts go, by ``LETHE_TEST_ARTIFACT_BACKEND``:
    ``folder``, or a fresh prefix on the session's S3 server (started only when asked for)."""
    if ARTIFACT_BACKEND == "file":
        return {"artifact_uri": folder.as_uri()}
    if ARTIFACT_BACKEND == "s3":
        server = request.getfixturevalue("s3_server")
        return server.settings(server.fresh_uri())  # type: ignore[no-any-return]
    raise pytest.UsageError(f"LETHE_TEST_ARTIFACT_BACKEND={ARTIFACT_BACKEND!r}: use file or s3")


def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@contextmanager
def fresh_database(prefix: str, revision: str = "head") -> Iterator[str]:
    """Create an empty PostgreSQL database, migrate it through Alembic (to head unless told
    otherwise), and drop it after."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _with_db(PG_ADMIN_URL, name)
    try:
        upgrade(url, revision)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    " AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head by Alembic."""
    with fresh_database("lethe_test") as url:
        yield url


@pytest.fixture(scope="session")
def db_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def connection(db_engine: Engine) -> Iterator[Connection]:
    """One connection inside a transaction that is rolled back after the test: every commit the
    app makes becomes a savepoint release, so tests never see each other's rows."""
    conn = db_engine.connect()
    outer = conn.begin()
    yield conn
    outer.rollback()
    conn.close()


@pytest.fixture()
def session_factory(connection: Connection) -> sessionmaker[Session]:
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture()
def db(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    session = session_factory()
    yield session
    session.close()


@pytest.fixture(scope="session")
def signing_key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "signing-key.pem"
    generate_key_file(path)
    return path


@pytest.fixture()
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str, signing_key_path: Path
) -> Settings:
    return Settings(
        **artifact_settings(request, tmp_path / "artifacts"),
        environment=Environment.test,
        secret_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
        database_url=database_url,
        redis_url=REDIS_URL,
        signing_key_path=signing_key_path,
        max_upload_bytes=64 * 1024**2,
        auto_migrate=False,
        # In-process worker code shares the test's single connection: no background heartbeat.
        heartbeat_interval_seconds=3600,
    )


@pytest.fixture()
def app(settings: Settings, db_engine: Engine, session_factory: sessionmaker[Session]):  # type: ignore[no-untyped-def]
    application = create_app(settings, engine=db_engine, tasks=TaskSender(settings))
    application.state.sessionmaker = session_factory
    return application


@pytest.fixture()
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def worker_ctx(settings: Settings, session_factory: sessionmaker[Session]) -> WorkerContext:
    """The worker's own code path, in this process, on the test's transaction."""
    return WorkerContext(
        settings=settings,
        engine=None,  # type: ignore[arg-type]
        sessionmaker=session_factory,
        store=open_store(settings.resolved_artifact_uri, settings),
        name="test-worker",
    )
