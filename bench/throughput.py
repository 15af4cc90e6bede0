"""Jobs per hour with 1 and with 2 workers: how a setup of N workers scales.

    .venv/bin/python bench/throughput.py            # 8 jobs per setting
    .venv/bin/python bench/throughput.py --jobs 4   # quicker

Production mode, as bench/service.py runs it: a fresh PostgreSQL database on 127.0.0.1:5432,
Redis DB 11, one API process, and 1 then 2 Celery worker processes on the cpu queue with one
torch thread each (so that two workers on a 2-core machine use the cores a 2-GPU host would
give them as devices). Each job forgets a class from its own model (one lineage each: jobs of
one lineage run one after the other by design): a retrain of the digits CNN for ``--epochs``
epochs, long enough that the job's compute, not the broker or the polling, sets the pace. Measured:
the wall time from the first submission to the last job's end, as jobs per hour, and the ratio
of 2 workers to 1 in the same run. Results: a Markdown table and bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.db import make_engine, make_sessionmaker, session_scope  # noqa: E402
from app.core.tasks import worker_command  # noqa: E402
from app.tenants import service as tenants  # noqa: E402
from bench.service import (  # noqa: E402
    create_database,
    drop_database,
    production_env,
    wait_http,
)

REDIS = "redis://127.0.0.1:6379/11"


def run_setting(workers: int, jobs: int, epochs: int, port: int) -> dict[str, Any]:
    from tests import digits

    work = Path(tempfile.mkdtemp(prefix="lethe-throughput-"))
    db_url = create_database("lethe_tp")
    env = production_env(work, db_url, REDIS)
    redis.Redis.from_url(REDIS).flushdb()
    with session_scope(make_sessionmaker(make_engine(db_url))) as s:
        _, _, key = tenants.create_tenant(s, "bench")
    headers = {"Authorization": f"Bearer {key}"}
    base = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cmd = [
            sys.executable,
            "-m",
            "app.cli",
            "api",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL))
        wait_http(f"{base}/healthz")
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    worker_command("cpu", loglevel="warning"),
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        client = httpx.Client(base_url=base, headers=headers, timeout=60)
        ds = client.post(
            "/v1/datasets",
            data={"name": "digits"},
            files={"train": ("d", digits.dataset_bytes(), "application/octet-stream")},
        ).json()
        weights, _ = digits.trained()
        models = []
        for i in range(jobs):
            spec = {**json.loads(digits.spec(ds["id"])), "name": f"digits-{i}"}
            models.append(
                client.post(
                    "/v1/models",
                    data={"spec": json.dumps(spec)},
                    files={"weights": ("w", weights, "application/octet-stream")},
                ).json()["id"]
            )
        deadline = time.monotonic() + 600
        while any(client.get(f"/v1/models/{m}").json()["status"] != "ready" for m in models):
            assert time.monotonic() < deadline, "validation did not finish"
            time.sleep(0.5)
        started = time.monotonic()
        job_ids = [
            client.post(
                f"/v1/models/{m}/forget-requests",
                json={
                    "class_ids": [3],
                    "method": "retrain",
                    "config": {"epochs": epochs},
                    "reason": "throughput",
                },
            ).json()["job_id"]
            for m in models
        ]
        hosts: set[str] = set()
        while True:
            views = [client.get(f"/v1/jobs/{j}").json() for j in job_ids]
            if all(v["state"] in ("succeeded", "failed", "cancelled") for v in views):
                break
            assert time.monotonic() - started < 3600, "jobs did not finish"
            time.sleep(0.2)
        wall = time.monotonic() - started
        for v in views:
            for h in v["history"]:
                if "claimed by" in h["reason"]:
                    hosts.add(h["reason"].split("claimed by", 1)[1].split(",")[0].strip())
        return {
            "workers": workers,
            "jobs": jobs,
            "succeeded": sum(v["state"] == "succeeded" for v in views),
            "wall_s": round(wall, 1),
            "jobs_per_hour": round(3600 * jobs / wall, 1),
            "workers_seen": len(hosts),
            "epochs_per_job": epochs,
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
        drop_database(db_url)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=40, help="each job retrains for this many epochs")
    ap.add_argument("--port", type=int, default=8798)
    args = ap.parse_args()
    rows = [run_setting(n, args.jobs, args.epochs, args.port) for n in (1, 2)]
    speedup = rows[1]["jobs_per_hour"] / rows[0]["jobs_per_hour"]
    print("| workers | jobs | succeeded | wall | jobs per hour |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['jobs']} | {r['succeeded']} | {r['wall_s']} s |"
            f" {r['jobs_per_hour']} |"
        )
    print(f"\n2 workers / 1 worker: {speedup:.2f} x jobs per hour")
    out = ROOT / "bench" / "results" / "throughput.json"
    out.write_text(json.dumps({"rows": rows, "speedup_2_over_1": round(speedup, 3)}, indent=2))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
