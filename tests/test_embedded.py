"""The embedded default: SQLite, local artifacts and a broker spool on disk, no services."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app import cli
from app.core.config import Environment, Mode, Settings, get_settings
from app.core.storage import open_store
from app.main import create_app
from app.tenants import service as tenants
from tests.api.test_models import ARGS, real_weights
from tests.factories import dataset_arrays, model_spec, safetensors_bytes
from worker.context import WorkerContext
from worker.jobs import claim
from worker.tasks.validate_model import run_validation


def test_settings_modes_and_placeholder_secret(tmp_path: Path) -> None:
    embedded = Settings(data_dir=tmp_path)
    assert embedded.mode is Mode.embedded
    assert embedded.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'lethe.db'}"
    assert embedded.broker_url == "filesystem://"
    prod = Settings(
        database_url="postgres://u@db/lethe", redis_url="redis://r:6379/0",
        environment=Environment.production, secret_key="x" * 40,  # type: ignore[arg-type]
    )  # fmt: skip
    assert prod.mode is Mode.production
    assert prod.resolved_database_url.startswith("postgresql+psycopg://")
    with pytest.raises(ValueError, match="placeholder"):
        Settings(environment=Environment.production)
    with pytest.raises(ValueError, match="placeholder"):
        Settings(environment=Environment.test, secret_key="changethis")  # type: ignore[arg-type]


def test_embedded_flow_on_sqlite(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "lethe")
    app = create_app(settings)
    with TestClient(app) as client:  # the lifespan migrates the SQLite file
        with app.state.sessionmaker() as session:
            _, _, key = tenants.create_tenant(session, "solo")
            session.commit()
        headers = {"Authorization": f"Bearer {key}"}
        ds = client.post(
            "/v1/datasets",
            files={"train": ("t", safetensors_bytes(dataset_arrays()), "application/octet-stream")},
            data={"name": "toy"},
            headers=headers,
        )
        assert ds.status_code == 201, ds.text
        model = client.post(
            "/v1/models",
            files={"weights": ("w", real_weights(), "application/octet-stream")},
            data={"spec": model_spec(ds.json()["id"], args=ARGS)},
            headers=headers,
        )
        assert model.status_code == 202, model.text
        # The task went to the on-disk broker spool: no server involved.
        spool = settings.broker_spool_dir / "queue"
        assert any(spool.iterdir())

        ctx = WorkerContext(
            settings=settings,
            engine=app.state.engine,
            sessionmaker=app.state.sessionmaker,
            store=open_store(settings.resolved_artifact_uri),
            name="embedded-test",
        )
        job_id = model.json()["validation_job_id"]
        assert claim(ctx, job_id)
        run_validation(ctx, job_id)
        after = client.get(f"/v1/models/{model.json()['id']}", headers=headers).json()
        assert after["status"] == "ready"
        # The job view is one aggregate query with a SQLite flavour: same shape as on PostgreSQL.
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        assert [h["to_state"] for h in job["history"]] == ["queued", "running", "succeeded"]
        assert job["history"][0]["from_state"] is None and job["request_ids"] == []
        assert client.get("/v1/jobs/nope", headers=headers).status_code == 404
        assert client.get("/readyz").json()["checks"] == {"database": "ok", "schema": "ok"}


def test_cli_admin_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path / "cli"))
    for var in ("LETHE_DATABASE_URL", "LETHE_REDIS_URL", "LETHE_ARTIFACT_URI"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    try:
        assert cli.main(["db", "upgrade"]) == 0
        assert cli.main(["admin", "create-tenant", "acme"]) == 0
        out = capsys.readouterr().out
        assert "api_key:   lethe_" in out
        assert cli.main(["admin", "create-key", "--tenant", "acme", "--role", "auditor"]) == 0
        out = capsys.readouterr().out
        key_id = out.split("key_id:")[1].split()[0]
        assert cli.main(["admin", "revoke-key", key_id]) == 0
        assert cli.main(["admin", "create-tenant", "acme"]) == 1  # duplicate name
        assert "already exists" in capsys.readouterr().err
        assert cli.main(["admin", "create-key", "--tenant", "nope", "--role", "member"]) == 1
        with pytest.raises(SystemExit) as exc:
            cli.main(["admin", "create-key", "--tenant", "acme", "--role", "root"])
        assert exc.value.code == 2
    finally:
        get_settings.cache_clear()


def test_several_api_processes_share_one_metrics_view(tmp_path: Path) -> None:
    """`lethe api --workers 2`: the processes migrate once, log JSON, and every scrape of
    /metrics counts the requests all of them served, whichever one answers it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LETHE_", "PROMETHEUS_"))}
    env["LETHE_DATA_DIR"] = str(tmp_path / "lethe")
    log = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "api", "--workers", "2", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        settings = Settings(data_dir=tmp_path / "lethe")
        app = create_app(settings)
        with app.state.sessionmaker() as session:
            _, _, key = tenants.create_tenant(session, "multi")
            session.commit()
        headers = {"Authorization": f"Bearer {key}"}

        def served() -> list[dict[str, object]]:
            text = (tmp_path / "api.log").read_text()
            lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
            return [x for x in lines if x.get("route") == "/v1/whoami"]

        # New connections, eight at a time, so that both processes accept some; the kernel
        # decides who accepts, so on a busy machine a round may all go to one: try a few.
        sent = 0
        for _ in range(5):
            with ThreadPoolExecutor(8) as pool:
                codes = list(
                    pool.map(lambda _: httpx.get(f"{base}/v1/whoami", headers=headers), range(30))
                )
            assert {r.status_code for r in codes} == {200}
            sent += 30
            if len({x["pid"] for x in served()}) == 2:
                break
        line = f'lethe_http_requests_total{{method="GET",route="/v1/whoami",status="200"}} {sent}.0'
        for _ in range(6):
            assert line in httpx.get(f"{base}/metrics").text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        log.close()
    assert len(served()) == sent and len({x["pid"] for x in served()}) == 2


def test_concurrent_audit_appends_on_sqlite(tmp_path: Path) -> None:
    """SQLite ignores FOR UPDATE and its driver reads outside a transaction, so a second writer
    used to read the chain's last link while the first had appended but not committed, then
    append the same seq: a unique-key 500 (seen once under a fuzzer's concurrent load). Now
    the second waits for the first and extends the chain after it."""
    import threading

    from app.audit import service as audit

    app = create_app(Settings(data_dir=tmp_path / "lethe"))
    with TestClient(app):  # the lifespan migrates the SQLite file
        pass
    factory = app.state.sessionmaker
    with factory() as session:
        tenant, _, _ = tenants.create_tenant(session, "race")
        session.commit()
    first = factory()
    event = {"tenant_id": tenant.id, "subject_type": "tenant", "subject_id": tenant.id}
    a = audit.record(first, actor="a", action="test.first", **event)
    second: dict[str, object] = {}

    def append() -> None:
        with factory() as s:
            try:
                second["seq"] = audit.record(s, actor="b", action="test.second", **event).seq
                s.commit()
            except Exception as exc:  # the failure this test exists for
                second["error"] = exc

    thread = threading.Thread(target=append)
    thread.start()
    time.sleep(0.5)  # the second writer is now waiting on (or past) its read of the chain
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert "error" not in second, second
    assert second["seq"] == a.seq + 1
    with factory() as session:
        assert audit.verify(session, tenant.id).ok
