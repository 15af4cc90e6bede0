"""Hosts that share nothing but PostgreSQL, Redis and the S3 bucket: the API and two workers, each
in a network namespace of its own with its own disk (``tests/hosts/layout.py``), in production
mode. Jobs run on either worker; a worker host that loses every process mid-job has its job
finished exactly once by the other, through the sweeper's re-queue; no host sees another's disk.

The servers are the test's own, bound to the bridge's address only; nothing here touches the
machine's shared PostgreSQL or Redis. Everything is torn down after, even on failure; should
pytest itself be killed, ``bench/netns_hosts.py down <its tmp folder>/hosts0/state.json`` removes
what the run left."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.core.db import make_engine
from tests import digits
from tests.hosts.layout import API_PORT, BUCKET, Cluster, NotPermitted, missing_requirements

_why = missing_requirements()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"network-namespace hosts: {_why}")

TERMINAL = {"succeeded", "failed", "cancelled"}
# Long enough to be caught running (a few seconds a run on a loaded 2-core machine).
SLOW_RETRAIN = {"class_ids": [4], "method": "retrain", "config": {"epochs": 40}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("hosts"))
    try:
        try:
            c.up()
        except NotPermitted as exc:
            pytest.skip(f"network-namespace hosts: not permitted here ({exc})")
        yield c
    finally:
        c.down()
    # Nothing of the run is left on the machine.
    assert c.bridge not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"lethe-{c.tag}-" not in left


@dataclass
class Tenant:
    client: httpx.Client
    dataset_id: str
    model_ids: list[str]


def _wait(client: httpx.Client, path: str, until: Any, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if until(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not get there in {timeout} s: {body}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def tenant(cluster: Cluster) -> Iterator[Tenant]:
    """A tenant made on the API host, the digits dataset and two models (two lineages, so two
    jobs can run at once) registered from the root namespace over the bridge."""
    key = cluster.create_tenant("acme")
    with httpx.Client(
        base_url=cluster.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        ds = client.post(
            "/v1/datasets",
            files={"train": ("digits", digits.dataset_bytes(), "application/octet-stream")},
            data={"name": "digits"},
        )
        assert ds.status_code == 201, ds.text
        weights, _ = digits.trained()
        model_ids = []
        for _ in range(2):
            mv = client.post(
                "/v1/models",
                files={"weights": ("w", weights, "application/octet-stream")},
                data={"spec": digits.spec(ds.json()["id"])},
            )
            assert mv.status_code == 202, mv.text
            model_ids.append(mv.json()["id"])
        for mid in model_ids:
            model = _wait(client, f"/v1/models/{mid}", lambda m: m["status"] != "validating")
            assert model["status"] == "ready", (model, _outputs(cluster))
        yield Tenant(client, ds.json()["id"], model_ids)


def _outputs(cluster: Cluster) -> str:
    return "\n".join(f"=== {h.name}\n{cluster.output(h)}" for h in cluster.hosts.values())


def _claims(job: dict[str, Any]) -> list[str]:
    """The hosts that claimed the job, in order, as its history tells a user."""
    return [
        h["reason"].split()[2].rsplit(":", 1)[0]
        for h in job["history"]
        if h["to_state"] == "running" and h["reason"].startswith("claimed by ")
    ]


def _sh_on(cluster: Cluster, host_name: str, script: str) -> subprocess.CompletedProcess[str]:
    host = cluster.hosts[host_name]
    return subprocess.run(
        cluster.host_argv(host, [sys.executable, "-c", script]),
        env=cluster.process_env(host),
        cwd=host.root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _nsenter(pid: int, namespace: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in one of ``pid``'s namespaces (``-m`` mount, ``-n`` network)."""
    return subprocess.run(
        ["nsenter", "-t", str(pid), namespace, "--", *cmd],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_each_host_has_its_own_network_name_and_disk(cluster: Cluster) -> None:
    assert cluster.pg is not None and cluster.redis is not None
    marker = cluster.api.data_dir / "api-only"
    marker.write_text("the API host's disk")
    probe = (
        "import os, socket\n"
        "print(socket.gethostname())\n"
        f"print(sorted(os.listdir({str(cluster.api.root)!r})))\n"
        "def reach(h, p):\n"
        "    try:\n"
        "        socket.create_connection((h, p), timeout=3).close(); return 'open'\n"
        "    except OSError as e:\n"
        "        return type(e).__name__\n"
        f"print(reach('127.0.0.1', {cluster.pg.port}), reach('127.0.0.1', {cluster.redis.port}))\n"
        f"print(reach({cluster.gateway!r}, {cluster.pg.port}),"
        f" reach({cluster.gateway!r}, {cluster.redis.port}))\n"
        f"print(reach({cluster.api.ip!r}, {API_PORT}))\n"
    )
    try:
        for w in cluster.workers:
            res = _sh_on(cluster, w.name, probe)
            assert res.returncode == 0, res.stderr
            name, api_disk, loopback, bridge, api = res.stdout.split("\n")[:5]
            assert name == w.name
            assert api_disk == "[]", "a worker sees the API host's folder"
            # The services are not on the worker's own loopback, only across the bridge.
            assert loopback == "ConnectionRefusedError ConnectionRefusedError", loopback
            assert bridge == "open open"
            assert api == "open"  # the network is one LAN; the disks are apart
        # The running processes see the same: each one's mount namespace hides every other
        # host's folder, while its own is there.
        for host in cluster.hosts.values():
            pid = host.procs[0].pid
            for other in cluster.hosts.values():
                ls = _nsenter(pid, "-m", "ls", "-A", str(other.root))
                if other is host:
                    assert any(n.endswith(".log") for n in ls.stdout.split()), ls
                else:
                    assert ls.returncode == 0 and ls.stdout == "", (host.name, other.name, ls)
        # And every TCP connection a worker holds goes to a shared server at the bridge address.
        servers = {
            f"{cluster.gateway}:{cluster.pg.port}",
            f"{cluster.gateway}:{cluster.redis.port}",
        }
        assert cluster.s3 is not None
        s3 = cluster.s3.endpoint.removeprefix("http://")
        for w in cluster.workers:
            ss = _nsenter(w.procs[0].pid, "-n", "ss", "-Htn", "state", "established")
            peers = {line.split()[3] for line in ss.stdout.splitlines() if line.strip()}
            # (The broker connection is always open; PostgreSQL's and S3's come and go.)
            redis_at = f"{cluster.gateway}:{cluster.redis.port}"
            assert redis_at in peers and peers <= servers | {s3}, (w.name, peers)
    finally:
        marker.unlink()


def test_jobs_run_on_either_worker_and_artifacts_live_in_the_bucket(
    cluster: Cluster, tenant: Tenant
) -> None:
    c = tenant.client
    hosts: set[str] = set()
    job_ids = []
    # Two lineages at once: one worker takes each (prefetch 1, one job per worker process).
    for mid, cls in zip(tenant.model_ids, (3, 5), strict=True):
        res = c.post(f"/v1/models/{mid}/forget-requests", json={"class_ids": [cls]})
        assert res.status_code == 202, res.text
        job_ids.append(res.json()["job_id"])
    for job_id in job_ids:
        job = _wait(c, f"/v1/jobs/{job_id}", lambda j: j["state"] in TERMINAL)
        assert job["state"] == "succeeded", (job["error"], _outputs(cluster))
        hosts.update(_claims(job))
    assert hosts == {w.name for w in cluster.workers}, hosts

    # The job rows record the worker (hostname:pid) that ran each job.
    assert cluster.pg is not None
    engine = make_engine(cluster.pg.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, kind, claimed_by FROM jobs WHERE claimed_by IS NOT NULL")
            ).all()
    finally:
        engine.dispose()
    workers = {w.name for w in cluster.workers}
    assert {cluster.host_of(by).name for _, _, by in rows} <= workers
    assert {cluster.host_of(by).name for id_, _, by in rows if id_ in job_ids} == hosts
    # (Each certified version also queued a purge of the one it superseded: claimed too.)
    ran = sorted(kind for _, kind, _ in rows if kind != "purge")
    assert ran == ["unlearn"] * 2 + ["validate_model"] * 2, ran

    # Every artifact is an object in the bucket; no host's disk holds one.
    assert cluster.s3 is not None
    listed = cluster.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{cluster.prefix}/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    for job_id in job_ids:
        result = c.get(f"/v1/models/{c.get(f'/v1/jobs/{job_id}').json()['result_model_id']}")
        digest = result.json()["weights_digest"].removeprefix("sha256:")
        assert any(k.endswith(digest) for k in keys), (digest, keys)
    for host in cluster.hosts.values():
        assert host.files() == [], (host.name, host.files())


def test_a_host_killed_mid_job_has_its_job_finished_once_by_the_other(
    cluster: Cluster, tenant: Tenant, tmp_path: Path
) -> None:
    c = tenant.client
    model_id = tenant.model_ids[0]
    before = c.get(f"/v1/models/{model_id}/lineage").json()["versions"]
    res = c.post(f"/v1/models/{model_id}/forget-requests", json=SLOW_RETRAIN)
    assert res.status_code == 202, res.text
    request_id, job_id = res.json()["id"], res.json()["job_id"]
    job = _wait(
        c,
        f"/v1/jobs/{job_id}",
        lambda j: (
            j["state"] in TERMINAL
            or (j["state"] == "running" and (j["progress"].get("step") or 0) >= 2)
        ),
    )
    assert job["state"] == "running", (job, _outputs(cluster))
    [victim_name] = _claims(job)
    victim = cluster.hosts[victim_name]
    [survivor] = [w for w in cluster.workers if w is not victim]

    killed = cluster.kill_host(victim)
    assert killed and victim.pids() == [], "every process of the host is gone"

    job = _wait(c, f"/v1/jobs/{job_id}", lambda j: j["state"] in TERMINAL, timeout=300)
    assert job["state"] == "succeeded", (job["error"], _outputs(cluster))
    states = [h["to_state"] for h in job["history"]]
    assert states == ["queued", "running", "queued", "running", "succeeded"], states
    assert f"worker {victim_name}:" in job["history"][2]["reason"]
    assert "lost" in job["history"][2]["reason"]
    assert _claims(job) == [victim_name, survivor.name]
    assert job["attempts"] == 2

    # Finished once: exactly one new version, from this job, and the request is done with it.
    after = c.get(f"/v1/models/{model_id}/lineage").json()["versions"]
    new = [v for v in after if v["id"] not in {b["id"] for b in before}]
    assert [v["produced_by_job_id"] for v in new] == [job_id], new
    assert new[0]["id"] == job["result_model_id"]
    fr = c.get(f"/v1/forget-requests/{request_id}").json()
    assert fr["status"] == "completed" and fr["result_model_id"] == job["result_model_id"], fr

    # The survivor signed with its own copy of the operator's key: the certificate verifies
    # offline against the published keys, on the result's bytes fetched from the API.
    result = job["result_model_id"]
    (tmp_path / "model.safetensors").write_bytes(c.get(f"/v1/models/{result}/weights").content)
    (tmp_path / "cert.json").write_text(c.get(f"/v1/models/{result}/certificate").text)
    (tmp_path / "keys.json").write_text(c.get("/v1/signing-keys").text)
    cluster.lethe_local(
        "verify", str(tmp_path / "cert.json"), "--model", str(tmp_path / "model.safetensors"),
        "--key", str(tmp_path / "keys.json"),
    )  # fmt: skip

    # The killed host's disk and the API's hold no artifact (they are in the bucket); the
    # survivor cleaned up its temporary copies.
    for host in (cluster.api, survivor):
        assert host.files() == [], (host.name, host.files())
    # (The victim may have died holding a temporary download in its own TMPDIR.)
    leftovers = [p for p in victim.files() if p.parent != victim.tmp_dir]
    assert leftovers == [], leftovers
