"""Forget requests end to end through HTTP, a real Celery worker, Redis and PostgreSQL, on
scikit-learn's digits with the small CNN."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from app import cli
from app.core.config import Settings
from app.core.tasks import UNLEARN, TaskSender
from tests import digits
from tests.worker.conftest import WorkerProcess
from tests.worker.helpers import Setup, register_digits_model, wait_job


@pytest.fixture(scope="module")
def setup(
    celery_worker: WorkerProcess, worker_settings: Settings, committed_engine: Engine
) -> Setup:
    from app.main import create_app

    app = create_app(worker_settings, engine=committed_engine, tasks=TaskSender(worker_settings))
    with TestClient(app) as client:
        return register_digits_model(client, committed_engine)


def verify_offline(tmp_path: Path, client: TestClient, s: Setup, model_id: str) -> int:
    """Download the version, its certificate and the public keys, then run `lethe verify`."""
    weights = client.get(f"/v1/models/{model_id}/weights", headers=s.keys.headers())
    assert weights.status_code == 200
    cert = client.get(f"/v1/models/{model_id}/certificate", headers=s.keys.headers("auditor"))
    assert cert.status_code == 200
    keys = client.get("/v1/signing-keys")
    (tmp_path / "model.safetensors").write_bytes(weights.content)
    (tmp_path / "cert.json").write_text(cert.text)
    (tmp_path / "keys.json").write_text(keys.text)
    return cli.main(
        [
            "verify",
            str(tmp_path / "cert.json"),
            "--model",
            str(tmp_path / "model.safetensors"),
            "--key",
            str(tmp_path / "keys.json"),
        ]
    )


def test_forget_a_class_end_to_end(
    live_client: TestClient, setup: Setup, tmp_path: Path, celery_worker: WorkerProcess
) -> None:
    c, s = live_client, setup
    res = c.post(
        f"/v1/models/{s.model_id}/forget-requests",
        json={"class_ids": [3], "reason": "class withdrawn"},
        headers=s.keys.headers(),
    )
    assert res.status_code == 202, res.text
    assert res.headers["location"] == f"/v1/forget-requests/{res.json()['id']}"
    fr = res.json()
    assert fr["status"] == "pending" and fr["due_at"] > fr["created_at"]

    job = wait_job(c, s.keys, fr["job_id"])
    assert job["state"] == "succeeded", (job["error"], celery_worker.output()[-1500:])
    assert [h["to_state"] for h in job["history"]] == ["queued", "running", "succeeded"]
    new_id = job["result_model_id"]
    new = c.get(f"/v1/models/{new_id}", headers=s.keys.headers()).json()
    assert new["parent_id"] == s.model_id and new["version"] == 2 and new["status"] == "ready"
    metrics = job["outcome"]["metrics"]
    assert metrics["unlearned"]["FA"] <= 1.0
    assert metrics["original"]["FA"] > 90
    assert metrics["original"]["TA"] - metrics["unlearned"]["TA"] <= 3.0
    done = c.get(f"/v1/forget-requests/{fr['id']}", headers=s.keys.headers()).json()
    assert done["status"] == "completed" and done["result_model_id"] == new_id

    assert verify_offline(tmp_path, c, s, new_id) == 0
    cert = c.get(f"/v1/models/{new_id}/certificate", headers=s.keys.headers()).json()
    statement = json.loads(base64.b64decode(cert["payload"]))
    pred = statement["predicate"]
    assert statement["subject"][0]["digest"]["sha256"] == new["weights_digest"]
    assert pred["parent"]["id"] == s.model_id
    assert pred["forgotten"]["this_job"]["count"] == len(digits.sample_ids_of_class(3))
    assert pred["forgotten"]["this_job"]["classes"] == [3]
    assert pred["policy"]["verdict"] == "pass" and pred["guarantee"] == "empirical"
    assert pred["method"]["name"] == "sfr_on" and "config" in pred["method"]

    # The certificate fails on any other file, and on any edit of its payload.
    (tmp_path / "model.safetensors").write_bytes(b"not the model")
    assert (
        cli.main(
            [
                "verify",
                str(tmp_path / "cert.json"),
                "--model",
                str(tmp_path / "model.safetensors"),
                "--key",
                str(tmp_path / "keys.json"),
            ]
        )
        == 1
    )
    tampered = dict(cert)
    statement["predicate"]["metrics"]["unlearned"]["FA"] = 0.0
    statement["predicate"]["forgotten"]["this_job"]["count"] = 1
    tampered["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (tmp_path / "cert.json").write_text(json.dumps(tampered))
    assert (
        cli.main(["verify", str(tmp_path / "cert.json"), "--key", str(tmp_path / "keys.json")]) == 1
    )


def test_sample_requests_in_a_row_are_cumulative_and_idempotent(
    live_client: TestClient, setup: Setup, celery_worker: WorkerProcess
) -> None:
    c, s = live_client, setup
    first_ids = digits.sample_ids_of_class(5)[:15] + digits.sample_ids_of_class(7)[:15]
    body = {"sample_ids": first_ids, "subject_ref": "person-1"}
    headers = {**s.keys.headers(), "Idempotency-Key": "req-person-1"}
    r1 = c.post(f"/v1/models/{s.model_id}/forget-requests", json=body, headers=headers)
    assert r1.status_code == 202, r1.text
    again = c.post(f"/v1/models/{s.model_id}/forget-requests", json=body, headers=headers)
    # A replay answers 200 with the original request (same ID, same clock).
    assert again.status_code == 200 and again.json()["id"] == r1.json()["id"]
    assert again.json()["created_at"] == r1.json()["created_at"]
    other = c.post(
        f"/v1/models/{s.model_id}/forget-requests",
        json={**body, "subject_ref": "someone else"},
        headers=headers,
    )
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"

    # Once the first job runs, the second cannot join it (a queued job would coalesce them).
    wait_job(c, s.keys, r1.json()["job_id"], until=lambda j: j["state"] != "queued")
    second_ids = digits.sample_ids_of_class(2)[:10] + first_ids[:5]
    r2 = c.post(
        f"/v1/models/{s.model_id}/forget-requests",
        json={"sample_ids": second_ids, "subject_ref": "person-2"},
        headers=s.keys.headers(),
    )
    assert r2.status_code == 202, r2.text
    j1 = wait_job(c, s.keys, r1.json()["job_id"])
    j2 = wait_job(c, s.keys, r2.json()["job_id"])
    assert j1["state"] == "succeeded", (j1, celery_worker.output())
    assert j2["state"] == "succeeded", (j2, celery_worker.output())
    # Second ran after the first, from the first's result, without re-forgetting its samples.
    assert j2["started_at"] >= j1["finished_at"]
    v_first = c.get(f"/v1/models/{j1['result_model_id']}", headers=s.keys.headers()).json()
    v_second = c.get(f"/v1/models/{j2['result_model_id']}", headers=s.keys.headers()).json()
    assert v_second["parent_id"] == v_first["id"]
    assert v_second["version"] == v_first["version"] + 1
    assert v_second["forgotten_count"] == v_first["forgotten_count"] + 10

    lineage = c.get(f"/v1/models/{s.model_id}/lineage", headers=s.keys.headers()).json()
    by_id = {v["id"]: v for v in lineage["versions"]}
    assert r1.json()["id"] in by_id[v_first["id"]]["request_ids"]
    assert lineage["head_id"] == v_second["id"]

    exposure = c.get(
        f"/v1/datasets/{s.dataset_id}/samples/{first_ids[0]}/exposure", headers=s.keys.headers()
    ).json()
    state = {v["model_id"]: v for v in exposure["versions"]}
    assert state[s.model_id]["exposed"] and not state[s.model_id]["forgotten"]
    assert state[v_first["id"]]["forgotten_by_request_id"] == r1.json()["id"]
    assert state[v_second["id"]]["forgotten"]

    # A redelivered task for a finished job changes nothing.
    TaskSender(celery_worker.settings).send(UNLEARN, j2["id"], "cpu")
    after = wait_job(c, s.keys, j2["id"])
    assert after["history"] == j2["history"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"class_ids": [3], "sample_ids": [1]}, 422, "body"),
        ({"sample_ids": []}, 422, "body"),
        ({"class_ids": [42]}, 422, "body.class_ids"),
        ({"sample_ids": [10**9, 10**9 + 1]}, 422, "body.sample_ids"),
        ({"class_ids": [1], "method": "magic"}, 422, "body.method"),
        ({"class_ids": [1], "config": {"alpha0": -1}}, 422, "body.config.alpha0"),
        ({"class_ids": [1], "config": {"bogus": 1}}, 422, "body.config.bogus"),
    ],
)
def test_bad_requests_are_refused_and_nothing_is_queued(
    live_client: TestClient, setup: Setup, body: dict[str, object], status: int, field: str
) -> None:
    c, s = live_client, setup
    before = c.get("/v1/forget-requests", headers=s.keys.headers()).json()["items"]
    res = c.post(f"/v1/models/{s.model_id}/forget-requests", json=body, headers=s.keys.headers())
    assert res.status_code == status, res.text
    assert res.headers["content-type"] == "application/problem+json"
    assert any(e["field"].startswith(field) for e in res.json()["errors"]), res.json()
    if field == "body.sample_ids":
        assert res.json()["unknown_sample_ids"] == [10**9, 10**9 + 1]
    after = c.get("/v1/forget-requests", headers=s.keys.headers()).json()["items"]
    assert after == before


def test_cancel_a_running_job_leaves_no_version(
    live_client: TestClient, setup: Setup, celery_worker: WorkerProcess
) -> None:
    c, s = live_client, setup
    # Retraining for many epochs: long enough to be caught running.
    res = c.post(
        f"/v1/models/{s.model_id}/forget-requests",
        json={"class_ids": [8], "method": "retrain", "config": {"epochs": 400}},
        headers=s.keys.headers(),
    )
    assert res.status_code == 202, res.text
    job_id = res.json()["job_id"]
    running = wait_job(
        c, s.keys, job_id, until=lambda j: j["state"] == "running" and j["progress"]["step"]
    )
    assert running["progress"]["phase"] and running["progress"]["total"]
    versions_before = c.get(f"/v1/models/{s.model_id}/lineage", headers=s.keys.headers()).json()
    cancel = c.post(f"/v1/jobs/{job_id}/cancel", headers=s.keys.headers())
    assert cancel.status_code == 200 and cancel.json()["cancel_requested"]
    job = wait_job(c, s.keys, job_id, timeout=30)
    assert job["state"] == "cancelled", (job, celery_worker.output())
    versions_after = c.get(f"/v1/models/{s.model_id}/lineage", headers=s.keys.headers()).json()
    assert len(versions_after["versions"]) == len(versions_before["versions"])
    fr = c.get(f"/v1/forget-requests/{res.json()['id']}", headers=s.keys.headers()).json()
    assert fr["status"] == "pending"  # still owed: the next request on the lineage carries it
    assert c.post(f"/v1/jobs/{job_id}/cancel", headers=s.keys.headers()).status_code == 409
    withdrawn = c.post(
        f"/v1/forget-requests/{fr['id']}/withdraw",
        json={"reason": "not needed"},
        headers=s.keys.headers(),
    )
    assert withdrawn.json()["status"] == "withdrawn"


def test_cross_tenant_access_answers_404(
    live_client: TestClient, setup: Setup, committed_engine: Engine
) -> None:
    from sqlalchemy.orm import Session

    from tests.factories import make_tenant

    c, s = live_client, setup
    done = c.get("/v1/forget-requests", params={"status": "completed"}, headers=s.keys.headers())
    fr = done.json()["items"][0]
    event = c.get("/v1/audit-events", headers=s.keys.headers("auditor")).json()["items"][0]
    with Session(committed_engine) as db:
        other = make_tenant(db, f"other-{fr['id'][:8]}")
    for path in (
        f"/v1/forget-requests/{fr['id']}",
        f"/v1/jobs/{fr['job_id']}",
        f"/v1/models/{fr['result_model_id']}/certificate",
        f"/v1/models/{fr['result_model_id']}/lineage",
        f"/v1/audit-events/{event['id']}",
    ):
        mine = c.get(path, headers=s.keys.headers("admin"))
        theirs = c.get(path, headers=other.headers("admin"))
        assert mine.status_code == 200, (path, mine.text)
        assert theirs.status_code == 404, (path, theirs.text)
        assert theirs.headers["content-type"] == "application/problem+json"
    assert (
        c.get("/v1/audit-events", headers=other.headers("auditor")).json()["items"][0][
            "subject_type"
        ]
        == "tenant"
    )
    assert c.get("/v1/audit-events", headers=s.keys.headers("member")).status_code == 403


def test_audit_chain_detects_a_tampered_row(
    live_client: TestClient, setup: Setup, committed_url: str
) -> None:
    c, s = live_client, setup
    ok = c.get("/v1/audit-events/verify", headers=s.keys.headers("auditor")).json()
    assert ok["ok"] and ok["checked"] > 5
    events = c.get("/v1/audit-events", params={"limit": 5}, headers=s.keys.headers("admin"))
    events = events.json()
    victim = events["items"][3]
    engine = create_engine(committed_url)
    try:
        with engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(
                text("UPDATE audit_events SET actor = 'x' WHERE id = :i"), {"i": victim["id"]}
            )
        with engine.begin() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text("DELETE FROM audit_events WHERE id = :i"), {"i": victim["id"]})
        # Someone with the power to switch the trigger off edits a row: the chain still tells.
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            conn.execute(
                text("UPDATE audit_events SET actor = 'mallory' WHERE id = :i"),
                {"i": victim["id"]},
            )
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
    finally:
        engine.dispose()
    broken = c.get("/v1/audit-events/verify", headers=s.keys.headers("auditor")).json()
    assert not broken["ok"]
    assert broken["first_broken_seq"] == victim["seq"]
    assert "altered" in broken["reason"]
    _ = hashlib


def test_cli_covers_the_request_flow(
    setup: Setup,
    celery_worker: WorkerProcess,
    worker_settings: Settings,
    committed_engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`lethe forget --wait`, `lethe models lineage/download`, `lethe requests overdue` and
    `lethe jobs cancel`, against a real uvicorn server, worker and broker."""
    import threading

    import uvicorn

    from app.main import create_app

    app = create_app(worker_settings, engine=committed_engine, tasks=TaskSender(worker_settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    common = ["--url", url, "--api-key", setup.keys.member]
    try:
        ids = tmp_path / "ids.txt"
        ids.write_text("\n".join(str(i) for i in digits.sample_ids_of_class(6)[:8]))
        rc = cli.main(["forget", setup.model_id, "--samples-file", str(ids), "--wait", *common])
        out = capsys.readouterr()
        assert rc == 0, out.err
        assert "succeeded: new version" in out.out
        assert cli.main(["models", "lineage", setup.model_id, *common]) == 0
        newest = capsys.readouterr().out.strip().splitlines()[-1].split()[-1]
        assert (
            cli.main(
                [
                    "models",
                    "download",
                    newest,
                    "--out",
                    str(tmp_path / "w"),
                    "--certificate",
                    str(tmp_path / "c.json"),
                    *common,
                ]
            )
            == 0
        )
        assert (tmp_path / "w").stat().st_size > 0 and (tmp_path / "c.json").exists()
        assert cli.main(["requests", "overdue", *common]) == 0
        bad = cli.main(["forget", setup.model_id, "--classes", "99", *common])
        assert bad == 1 and "body.class_ids" in capsys.readouterr().err
        rc = cli.main(
            [
                "forget",
                setup.model_id,
                "--classes",
                "9",
                "--method",
                "retrain",
                "--config",
                '{"epochs": 400}',
                *common,
            ]
        )
        job_id = capsys.readouterr().out.split("job_id:")[1].split()[0]
        assert cli.main(["jobs", "cancel", job_id, *common]) == 0
        assert cli.main(["jobs", "watch", job_id, *common]) == 1  # cancelled: not a success
    finally:
        server.should_exit = True
        thread.join(timeout=10)
