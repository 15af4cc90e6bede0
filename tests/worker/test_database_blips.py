"""A PostgreSQL restart is not a worker's death: the running attempt keeps training, its monitor
holds progress and retries the heartbeat until the database answers again, and no sweeper
re-queues the job meanwhile. A private PostgreSQL server (own data directory and port) is
stopped and started under a real worker process; the shared server is never touched."""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from app.certificates.signing import generate_key_file
from app.core.config import Environment, Settings
from app.core.db import make_engine, make_sessionmaker
from app.core.storage import open_store
from app.core.tasks import TaskSender
from app.main import create_app
from app.models import Job
from app.models.base import utcnow
from app.models.job import JobKind, JobState
from tests.factories import make_tenant
from tests.private_servers import PrivatePostgres, RedisServer, free_port, private_postgres
from tests.worker.conftest import WorkerProcess
from tests.worker.helpers import TERMINAL, register_digits_model, wait_job
from worker.context import WorkerContext
from worker.jobs import Backoff, retry_while_database_away
from worker.monitor import JobMonitor
from worker.sweeper import sweep_once

# Training must outlast both outages even on a quiet machine (there, on one torch thread, 500
# epochs take ~30 s; on a busy 2-core one a few times that): a job whose final commit meets the
# database down is the task's error handling's business (worker/pipeline.py), not the monitor's.
SLOW_RETRAIN = {"class_ids": [4], "method": "retrain", "config": {"epochs": 500}}
HEARTBEAT_TIMEOUT = 10  # seconds; the long outage below lasts longer than this
LONG_OUTAGE = 12


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    with private_postgres(tmp_path_factory.mktemp("private-pg")) as server:
        yield server


@pytest.fixture()
def pg_engine(private_pg: PrivatePostgres) -> Iterator[Engine]:
    engine = make_engine(private_pg.url)
    yield engine
    # Jobs this module made by hand must not reach the worker of the last test.
    private_pg.start()
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET state = 'failed' WHERE claimed_by = 'elsewhere'"))
    engine.dispose()


@dataclass
class Running:
    ctx: WorkerContext
    job_id: str


def _running_job(engine: Engine, tmp_path: Path, **fields: object) -> Running:
    settings = Settings(
        environment=Environment.test,
        secret_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
        database_url=engine.url.render_as_string(hide_password=False),
        artifact_uri=(tmp_path / "artifacts").as_uri(),
        auto_migrate=False,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT,
    )
    with Session(engine) as db:
        keys = make_tenant(db, f"t-{secrets.token_hex(4)}")
        values = {"heartbeat_at": utcnow(), **fields}
        job = Job(tenant_id=keys.tenant_id, kind=JobKind.purge, state=JobState.running,
                  attempts=1, claimed_by="elsewhere", **values)  # fmt: skip
        db.add(job)
        db.commit()
        job_id = job.id
    store = open_store(settings.resolved_artifact_uri)
    ctx = WorkerContext(settings, engine, make_sessionmaker(engine), store, "test-blips")
    return Running(ctx, job_id)


def _row(engine: Engine, job_id: str) -> Job:
    with Session(engine) as db:
        job = db.get(Job, job_id)
        assert job is not None
        return job


def test_the_monitor_rides_out_a_restart_and_is_fenced_only_by_an_answer(
    private_pg: PrivatePostgres,
    pg_engine: Engine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = _running_job(pg_engine, tmp_path)
    caplog.set_level(logging.WARNING, logger="worker")
    with JobMonitor(run.ctx, run.job_id, 1, interval=0.0, heartbeat_every=0.2) as monitor:
        monitor.progress({"phase": "training", "step": 1, "total": 100})
        assert _row(pg_engine, run.job_id).progress["step"] == 1
        private_pg.stop()
        try:
            started = time.monotonic()
            for step in range(2, 50):  # the training loop: none of this may raise or stall
                monitor.progress({"phase": "training", "step": step, "total": 100})
                assert monitor.should_stop() is False
            assert time.monotonic() - started < 5
            assert monitor.database_away and not monitor.lost
            time.sleep(1.0)  # the heartbeat thread backs off meanwhile
        finally:
            private_pg.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and monitor.database_away:
            time.sleep(0.1)
        assert not monitor.database_away, "the heartbeat did not resume"
        assert _row(pg_engine, run.job_id).progress["step"] == 49, "the held progress is written"
        assert not monitor.lost and monitor.should_stop() is False

        # A real answer still fences: another attempt owns the row now.
        with Session(pg_engine) as db:
            db.execute(text("UPDATE jobs SET attempts = 2 WHERE id = :id"), {"id": run.job_id})
            db.commit()
        assert monitor.should_stop() is True and monitor.lost

    records = [r for r in caplog.records if r.name.startswith("worker")]
    assert any("database is unreachable" in r.getMessage() for r in records), records
    assert any("answers again" in r.getMessage() for r in records), records
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in records), [
        (r.levelname, r.getMessage()) for r in records
    ]


def test_the_sweeper_gives_a_worker_a_whole_timeout_after_the_database_comes_back(
    private_pg: PrivatePostgres, pg_engine: Engine, tmp_path: Path
) -> None:
    # The worker's last beat is older than the timeout, because the database was away.
    stale = utcnow() - timedelta(seconds=3 * HEARTBEAT_TIMEOUT)
    run = _running_job(pg_engine, tmp_path, heartbeat_at=stale)
    private_pg.restart()
    with Session(pg_engine) as db:
        started = db.scalar(text("SELECT pg_postmaster_start_time()"))
    assert started is not None

    # Right after the restart: the server's start counts as the last beat.
    sweep_once(run.ctx)
    assert _row(pg_engine, run.job_id).state == JobState.running
    # An outage this sweeper saw itself (no restart needed): the same, from when it regained it.
    later = started + timedelta(seconds=HEARTBEAT_TIMEOUT + 5)
    sweep_once(run.ctx, later, regained=later - timedelta(seconds=1))
    assert _row(pg_engine, run.job_id).state == JobState.running
    # A whole timeout after the database came back without a beat: the worker is dead.
    assert sweep_once(run.ctx, later)["requeued"] >= 1
    job = _row(pg_engine, run.job_id)
    assert job.state == JobState.queued and job.attempts == 1


def test_a_whole_unit_of_work_is_retried_while_the_database_is_away(
    private_pg: PrivatePostgres, pg_engine: Engine, tmp_path: Path
) -> None:
    run = _running_job(pg_engine, tmp_path)
    calls: list[float] = []
    private_pg.stop()

    def restart_after_two(delay: float) -> None:
        if len(calls) == 2:
            private_pg.start()
        time.sleep(min(delay, 0.05))

    def finish() -> str | None:
        calls.append(time.monotonic())
        with Session(pg_engine) as db:
            return db.scalar(select(Job.state).where(Job.id == run.job_id))

    try:
        state = retry_while_database_away(
            finish, what="test", backoff=Backoff(0.01, 0.05), sleep=restart_after_two
        )
    finally:
        private_pg.start()
    assert state == JobState.running and len(calls) == 3
    with pytest.raises(ZeroDivisionError):  # any other error is not retried
        retry_while_database_away(lambda: 1 // 0, what="test")


def test_a_postgres_restart_mid_job_does_not_cost_an_attempt(
    private_pg: PrivatePostgres, pg_engine: Engine, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not installed")
    broker = RedisServer(free_port(), tmp_path)
    broker.start()
    generate_key_file(tmp_path / "signing-key.pem")
    settings = Settings(
        environment=Environment.test,
        secret_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
        database_url=private_pg.url,
        redis_url=f"redis://127.0.0.1:{broker.port}/0",
        artifact_uri=(tmp_path / "artifacts").as_uri(),
        signing_key_path=tmp_path / "signing-key.pem",
        auto_migrate=False,
        heartbeat_interval_seconds=1,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT,
        torch_threads=1,
        resend_after_seconds=3,
        sweep_interval_seconds=1,
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        app = create_app(settings, engine=pg_engine, tasks=TaskSender(settings))
        with TestClient(app) as c:
            s = register_digits_model(c, pg_engine)
            res = c.post(
                f"/v1/models/{s.model_id}/forget-requests",
                json=SLOW_RETRAIN,
                headers=s.keys.headers(),
            )
            assert res.status_code == 202, res.text
            job_id = res.json()["job_id"]

            def training_past(step: int) -> Callable[[dict[str, Any]], bool]:
                return lambda j: (
                    j["state"] in TERMINAL
                    or (
                        j["progress"].get("phase") == "training"
                        and (j["progress"].get("step") or 0) > step
                    )
                )

            job = wait_job(c, s.keys, job_id, until=training_past(2), timeout=120)
            assert job["state"] == "running", job
            timings["training"] = time.monotonic() - t0

            # 1. A fast restart (every connection dropped, back within a second or two).
            step = job["progress"]["step"]
            private_pg.restart()
            timings["restarted"] = time.monotonic() - t0
            job = wait_job(c, s.keys, job_id, until=training_past(step), timeout=60)
            assert job["state"] == "running", (job, worker.output())

            # 2. An outage longer than the heartbeat timeout: only the sweeper's rule that
            # nobody could beat while the database was away keeps the job from being re-queued.
            step = job["progress"]["step"]
            private_pg.stop()
            time.sleep(LONG_OUTAGE)
            private_pg.start()
            timings["long outage over"] = time.monotonic() - t0
            job = wait_job(c, s.keys, job_id, until=training_past(step), timeout=60)
            assert job["state"] == "running", (job, worker.output())
            assert job["progress"]["step"] > step + LONG_OUTAGE // 2, "it trained meanwhile"

            job = wait_job(c, s.keys, job_id, timeout=300)
            timings["finished"] = time.monotonic() - t0
            assert job["state"] == "succeeded", (job["error"], worker.output())
            assert job["attempts"] == 1
            states = [h["to_state"] for h in job["history"]]
            assert states == ["queued", "running", "succeeded"], states
    finally:
        worker.stop()
        broker.kill()
        print(f"timings (s since the worker started): {timings}")

    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "the database is unreachable" in log, log[-4000:]
    assert "answers again" in log, log[-4000:]
    assert "Traceback" not in log, log[-8000:]
    levels = {"error", "critical", "ERROR", "CRITICAL"}  # JSON lines or Celery's own banner
    assert not any(f'"level": "{lv}"' in log or f" {lv}/" in log for lv in levels), log[-8000:]
