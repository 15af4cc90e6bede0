"""A real Celery worker process, on its own committed PostgreSQL database and Redis DB.

Rows must be committed for another process to see them, so these tests do not use the rollback
isolation of the API tests; they get a database of their own instead.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.certificates.signing import generate_key_file
from app.core.config import Environment, Settings
from app.core.db import make_engine
from app.core.tasks import TaskSender, worker_command
from app.main import create_app
from tests.conftest import artifact_settings, fresh_database

WORKER_REDIS = os.environ.get("LETHE_TEST_WORKER_REDIS_URL", "redis://127.0.0.1:6379/14")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def committed_url() -> Iterator[str]:
    with fresh_database("lethe_worker") as url:
        yield url


@pytest.fixture(scope="module")
def worker_settings(
    request: pytest.FixtureRequest, committed_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    root = tmp_path_factory.mktemp("worker")
    generate_key_file(root / "signing-key.pem")
    return Settings(
        **artifact_settings(request, root / "artifacts"),
        environment=Environment.test,
        secret_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        data_dir=root / "data",
        database_url=committed_url,
        redis_url=WORKER_REDIS,
        signing_key_path=root / "signing-key.pem",
        auto_migrate=False,
        # Fast failure detection, so crash-recovery tests take seconds, not minutes.
        heartbeat_interval_seconds=1,
        heartbeat_timeout_seconds=10,
        resend_after_seconds=3,
        sweep_interval_seconds=1,
    )


def worker_env(settings: Settings) -> dict[str, str]:
    """The same settings, as the environment of a worker process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"LETHE_{name.upper()}"] = str(value.value if hasattr(value, "value") else value)
    env["LETHE_ARTIFACT_URI"] = settings.resolved_artifact_uri
    return env


class WorkerProcess:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The child keeps its own copy of the descriptor; ours can close at once.
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                worker_command("cpu", name=f"test-{secrets.token_hex(3)}@%h"),
                cwd=ROOT,
                env=worker_env(self.settings),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def celery_worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    redis.Redis.from_url(WORKER_REDIS).flushdb()
    proc = WorkerProcess(worker_settings, tmp_path_factory.mktemp("logs") / "worker.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def committed_engine(committed_url: str) -> Iterator[Engine]:
    engine = make_engine(committed_url)
    yield engine
    engine.dispose()


@pytest.fixture()
def live_client(worker_settings: Settings, committed_engine: Engine) -> Iterator[TestClient]:
    app = create_app(worker_settings, engine=committed_engine, tasks=TaskSender(worker_settings))
    with TestClient(app) as client:
        yield client


def wait_until(predicate, timeout: float = 60, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
