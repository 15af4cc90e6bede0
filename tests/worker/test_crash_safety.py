"""A request once accepted is never lost: not when its worker is killed mid-job, not when the
broker restarts empty. Real worker processes, a real (private) Redis server, PostgreSQL."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.core.config import Settings
from app.core.tasks import TaskSender
from app.main import create_app
from tests.private_servers import RedisServer, free_port
from tests.worker.conftest import WorkerProcess
from tests.worker.helpers import register_digits_model, wait_job

SLOW_RETRAIN = {"class_ids": [4], "method": "retrain", "config": {"epochs": 40}}


def _client(settings: Settings, engine: Engine) -> TestClient:
    return TestClient(create_app(settings, engine=engine, tasks=TaskSender(settings)))


def _lineage_versions(c: TestClient, headers: dict[str, str], model_id: str) -> list[dict]:  # type: ignore[type-arg]
    return list(c.get(f"/v1/models/{model_id}/lineage", headers=headers).json()["versions"])


def test_worker_killed_mid_job_finishes_once_after_restart(
    worker_settings: Settings, committed_engine: Engine, tmp_path: Path
) -> None:
    settings = worker_settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:6379/13", "data_dir": tmp_path / "data"}
    )
    redis.Redis.from_url(str(settings.redis_url)).flushdb()
    first = WorkerProcess(settings, tmp_path / "first.log")
    second = WorkerProcess(settings, tmp_path / "second.log")
    first.start()
    try:
        with _client(settings, committed_engine) as c:
            s = register_digits_model(c, committed_engine)
            res = c.post(
                f"/v1/models/{s.model_id}/forget-requests",
                json=SLOW_RETRAIN,
                headers=s.keys.headers(),
            )
            assert res.status_code == 202, res.text
            job_id = res.json()["job_id"]
            wait_job(c, s.keys, job_id, until=lambda j: (j["progress"].get("step") or 0) > 2)
            assert first.proc is not None
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait()
            second.start()
            job = wait_job(c, s.keys, job_id, timeout=240)
            assert job["state"] == "succeeded", (job["error"], second.output())
            states = [h["to_state"] for h in job["history"]]
            assert states == ["queued", "running", "queued", "running", "succeeded"], states
            assert "lost" in job["history"][2]["reason"]
            assert job["attempts"] == 2
            versions = _lineage_versions(c, s.keys.headers(), s.model_id)
            assert [v["version"] for v in versions] == [1, 2], "exactly one new version"
    finally:
        first.stop()
        second.stop()


@pytest.fixture()
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not installed")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


def test_job_queued_across_a_redis_restart_still_runs(
    worker_settings: Settings, committed_engine: Engine, tmp_path: Path, private_redis: RedisServer
) -> None:
    settings = worker_settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{private_redis.port}/0",
            "data_dir": tmp_path / "data",
        }
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    later = WorkerProcess(settings, tmp_path / "later.log")
    worker.start()
    try:
        with _client(settings, committed_engine) as c:
            s = register_digits_model(c, committed_engine)
            worker.stop()  # nobody consumes: the job's message waits in Redis
            res = c.post(
                f"/v1/models/{s.model_id}/forget-requests",
                json={"class_ids": [6]},
                headers=s.keys.headers(),
            )
            assert res.status_code == 202, res.text
            job_id = res.json()["job_id"]
            r = redis.Redis(port=private_redis.port)
            assert r.llen("cpu") == 1, "the task should be waiting in the broker"
            private_redis.kill()
            private_redis.start()  # restarted empty: the message is gone
            assert r.llen("cpu") == 0
            later.start()
            job = wait_job(c, s.keys, job_id, timeout=180)
            assert job["state"] == "succeeded", (job["error"], later.output())
            assert job["attempts"] == 1
    finally:
        worker.stop()
        later.stop()
