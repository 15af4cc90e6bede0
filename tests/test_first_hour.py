"""A newcomer's first hour, through the real `lethe` command in subprocesses: a fresh data folder
or an empty PostgreSQL database, a mistyped setting, a pipe into `head`, a missing file, a
refused upload. Every error is one line on stderr with the documented exit code (0 ok,
1 refused or failed, 2 bad local input or setting, 3 unreachable), never a traceback."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from fastapi.testclient import TestClient

from app.core.config import Environment, Mode, Settings
from app.core.migrate import alembic_config, upgrade
from app.core.tasks import worker_command
from app.main import create_app
from tests.conftest import REDIS_URL, fresh_database

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s" * 40


def _env(**values: str) -> dict[str, str]:
    """The environment of a process that sees only these LETHE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LETHE_", "PROMETHEUS_"))}
    env.update(values)
    return env


def _production(url: str, tmp: Path) -> dict[str, str]:
    return _env(
        LETHE_DATABASE_URL=url,
        LETHE_REDIS_URL=REDIS_URL,
        LETHE_ENVIRONMENT="production",
        LETHE_SECRET_KEY=SECRET,
        LETHE_DATA_DIR=str(tmp / "data"),
        LETHE_ARTIFACT_URI=(tmp / "artifacts").as_uri(),
    )


def lethe(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    # A timeout, not a hang, when a process that should refuse starts serving instead.
    res = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return res.returncode, res.stdout, res.stderr


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture()
def empty_database() -> Iterator[str]:
    """A PostgreSQL database that nobody ran `lethe db upgrade` on."""
    with fresh_database("lethe_first_hour", revision="base") as url:
        yield url


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 7. a fresh database ------------------------------------------------------------------------


def test_embedded_commands_migrate_a_fresh_data_folder(tmp_path: Path) -> None:
    """The README tour's first step on a fresh folder: no `lethe db upgrade` needed."""
    env = _env(LETHE_DATA_DIR=str(tmp_path / "lethe"))
    rc, out, err = lethe("admin", "create-tenant", "acme", env=env)
    assert rc == 0 and "Traceback" not in err, err
    assert "api_key:   lethe_" in out
    rc, out, err = lethe("admin", "list-tenants", env=env)  # at head: nothing to do
    assert rc == 0 and out.split()[1:] == ["acme"], err


def test_production_refuses_an_unmigrated_database(empty_database: str, tmp_path: Path) -> None:
    env = _production(empty_database, tmp_path)
    for args in (
        ("admin", "create-tenant", "acme"),
        ("admin", "list-tenants"),
        ("api", "--port", str(_free_port())),
        ("api", "--port", str(_free_port()), "--workers", "2"),
        ("worker",),
    ):
        rc, _, err = lethe(*args, env=env)
        line = one_line(err)
        assert rc == 1, (args, err)
        assert "lethe db upgrade" in line and "empty" in line, line

    # Celery started directly (not through `lethe worker`) refuses before it takes any job.
    res = subprocess.run(
        worker_command("cpu"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert "lethe db upgrade" in res.stderr.strip().splitlines()[-1]

    # A database that does not answer is exit 3, in one line.
    unreachable = env | {"LETHE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/lethe"}
    rc, _, err = lethe("admin", "list-tenants", env=unreachable)
    assert rc == 3 and "cannot reach the database" in one_line(err)
    rc, _, err = lethe("db", "upgrade", env=unreachable)
    assert rc == 3 and "cannot reach the database" in one_line(err)

    # The operator's step, and then the tour works.
    rc, out, err = lethe("db", "upgrade", env=env)
    assert rc == 0 and out.startswith("database at "), err
    rc, out, err = lethe("admin", "create-tenant", "acme", env=env)
    assert rc == 0 and "api_key:" in out, err
    # A schema an older release left (one migration behind) is named by its revision.
    command.downgrade(alembic_config(empty_database), "-1")
    rc, _, err = lethe("admin", "list-tenants", env=env)
    line = one_line(err)
    assert rc == 1 and "at revision " in line and "lethe db upgrade" in line, line


def test_readyz_checks_that_the_schema_is_at_head(empty_database: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=empty_database,
        redis_url=REDIS_URL,
        environment=Environment.production,
        secret_key=SECRET,  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
        artifact_uri=(tmp_path / "artifacts").as_uri(),
    )
    assert settings.mode is Mode.production and not settings.should_auto_migrate
    app = create_app(settings)
    # A process that is serving (without its start-up here: a database restored or replaced
    # under it) says it is not ready, naming the failing check ...
    client = TestClient(app)
    res = client.get("/readyz")
    assert res.status_code == 503, res.text
    body = res.json()
    assert body["checks"]["database"] == "ok"
    schema = body["checks"]["schema"]
    assert schema.startswith("error: ") and "lethe db upgrade" in schema, schema
    assert "schema" in body["detail"]
    # ... and starting refuses: the lifespan follows the same rule as the CLI.
    from app.core.migrate import SchemaNotCurrent

    with pytest.raises(SchemaNotCurrent, match="lethe db upgrade"), TestClient(app):
        pass
    upgrade(empty_database)
    res = client.get("/readyz")
    assert res.status_code == 200, res.text
    assert res.json()["checks"] == {"database": "ok", "schema": "ok", "broker": "ok"}
    app.state.engine.dispose()


# -- 8. errors a person can read ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"LETHE_MAX_UPLOAD_BYTES": "abc"}, "LETHE_MAX_UPLOAD_BYTES"),
        ({"LETHE_ENVIRONMENT": "production"}, "LETHE_SECRET_KEY"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    variables: dict[str, str], named: str, tmp_path: Path
) -> None:
    env = _env(LETHE_DATA_DIR=str(tmp_path / "lethe"), **variables)
    for args in (
        ("admin", "create-tenant", "acme"),
        ("admin", "list-tenants"),
        ("db", "upgrade"),
        ("api", "--port", str(_free_port())),
        ("worker",),
    ):
        rc, _, err = lethe(*args, env=env)
        line = one_line(err)
        assert rc == 2, (args, err)
        assert line.startswith("error: ") and named in line, line
    assert "(got 'abc')" in line or "LETHE_ENVIRONMENT=production" in line
    assert SECRET not in line
    if "LETHE_MAX_UPLOAD_BYTES" in variables:  # `lethe demo` builds Settings of its own
        rc, _, err = lethe("demo", "--data-dir", str(tmp_path / "demo"), env=env, timeout=120)
        assert rc == 2 and named in one_line(err), err
    res = subprocess.run(
        worker_command("cpu"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2 and named in one_line(res.stderr)


def test_a_listing_piped_into_head_stops_quietly(tmp_path: Path) -> None:
    data = tmp_path / "lethe"
    env = _env(LETHE_DATA_DIR=str(data))
    assert lethe("db", "upgrade", env=env)[0] == 0
    assert lethe("admin", "create-tenant", "first", env=env)[0] == 0
    # Far more than a pipe holds (64 KiB), so the command is still writing when head exits.
    from app.core.db import make_engine, make_sessionmaker
    from app.models import Tenant

    engine = make_engine(Settings(data_dir=data).resolved_database_url)
    with make_sessionmaker(engine)() as session:
        session.add_all(Tenant(name=f"tenant-{i:05d}") for i in range(4000))
        session.commit()
    engine.dispose()
    script = (
        f"'{sys.executable}' -m app.cli admin list-tenants 2>'{tmp_path / 'err'}' | head -n 1;"
        f" echo ${{PIPESTATUS[0]}} >'{tmp_path / 'rc'}'"
    )
    res = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert res.stdout.split()[1:] == ["first"], res.stdout
    assert (tmp_path / "err").read_text() == ""
    assert int((tmp_path / "rc").read_text()) in (0, 141)


def test_verify_with_a_missing_file_exits_2(tmp_path: Path) -> None:
    env = _env(LETHE_DATA_DIR=str(tmp_path / "lethe"))
    rc, out, err = lethe("keys", "generate", str(tmp_path / "signing.pem"), env=env)
    assert rc == 0, err
    public = tmp_path / "public.pem"
    public.write_text(out[out.index("-----BEGIN") :])
    cert = tmp_path / "cert.json"
    cert.write_text('{"payloadType": "x", "payload": "", "signatures": []}')
    missing = str(tmp_path / "missing")
    for args, what in (
        ((missing, "--key", str(public)), "certificate"),
        ((str(cert), "--key", missing), "public key"),
        ((str(cert), "--key", str(public), "--model", missing), "model"),
    ):
        rc, _, err = lethe("verify", *args, env=env)
        line = one_line(err)
        assert rc == 2, (args, err)
        assert f"cannot read the {what}" in line and "missing" in line, line
    # A certificate that is there but does not verify is a refusal (1), not bad input.
    rc, _, err = lethe("verify", str(cert), "--key", str(public), env=env)
    assert rc == 1 and "Traceback" not in err


def test_a_refusal_by_the_service_is_printed_once(tmp_path: Path) -> None:
    """A refusal whose detail is its one field error (an upload that is not safetensors):
    the message appears once, and the finished progress bar once."""
    env = _env(LETHE_DATA_DIR=str(tmp_path / "lethe"))
    assert lethe("db", "upgrade", env=env)[0] == 0
    rc, out, err = lethe("admin", "create-tenant", "acme", env=env)
    assert rc == 0, err
    key = out.split("api_key:")[1].split()[0]
    port = _free_port()
    log = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "api", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            started = proc.poll() is None and time.monotonic() < deadline
            assert started, (tmp_path / "api.log").read_text()
            time.sleep(0.2)
        garbage = tmp_path / "garbage.bin"
        garbage.write_bytes(secrets.token_bytes(3000))
        client = ("--url", url, "--api-key", key)
        rc, _, err = lethe("datasets", "upload", str(garbage), "--name", "x", *client, env=env)
        assert rc == 1 and "Traceback" not in err, err
        lines = err.strip().splitlines()
        assert len(lines) == 2 and "100.0%" in lines[0], err
        assert lines[1].startswith("error: HTTP 422: train: ") and "not a safetensors" in lines[1]
        assert err.count("not a safetensors") == 1, err
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        log.close()
