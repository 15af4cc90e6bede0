"""The honest chain and erasure on the embedded default (SQLite, local files): the same rules as
on PostgreSQL, with the worker's job code in this process."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.storage import open_store
from app.main import create_app
from app.tenants import service as tenants
from tests import digits
from worker.context import WorkerContext
from worker.jobs import claim, claim_in_order
from worker.tasks.purge import run_purge
from worker.tasks.unlearn import run_job
from worker.tasks.validate_model import run_validation

PERSON = digits.sample_ids_of_class(2)[:15]


def test_a_person_is_forgotten_and_erased_on_sqlite(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "lethe")
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.sessionmaker() as session:
            _, _, key = tenants.create_tenant(session, "solo")
            session.commit()
        headers = {"Authorization": f"Bearer {key}"}
        ctx = WorkerContext(
            settings=settings,
            engine=app.state.engine,
            sessionmaker=app.state.sessionmaker,
            store=open_store(settings.resolved_artifact_uri),
            name="embedded-test",
        )
        ds = client.post(
            "/v1/datasets",
            files={"train": ("d", digits.dataset_bytes(), "application/octet-stream")},
            data={"name": "digits"},
            headers=headers,
        ).json()
        weights, _ = digits.trained()
        mv = client.post(
            "/v1/models",
            files={"weights": ("w", weights, "application/octet-stream")},
            data={"spec": digits.spec(ds["id"])},
            headers=headers,
        ).json()
        assert claim(ctx, mv["validation_job_id"])
        run_validation(ctx, mv["validation_job_id"])

        fr = client.post(
            f"/v1/models/{mv['id']}/forget-requests",
            json={"sample_ids": PERSON},
            headers=headers,
        ).json()
        attempt = claim_in_order(ctx, fr["job_id"])
        assert attempt == 1
        run_job(ctx, fr["job_id"], attempt)
        job = client.get(f"/v1/jobs/{fr['job_id']}", headers=headers).json()
        assert job["outcome"]["verdict"] == "pass", job["outcome"]
        purge_id = job["outcome"]["purge_job_id"]
        purge_attempt = claim(ctx, purge_id)
        assert purge_attempt is not None
        assert run_purge(ctx, purge_id, purge_attempt)

        assert client.get(f"/v1/models/{mv['id']}/weights", headers=headers).status_code == 410
        seen = client.get(
            f"/v1/datasets/{ds['id']}/samples/{PERSON[0]}/exposure", headers=headers
        ).json()
        assert not seen["in_manifest"] and seen["stored_artifacts_holding"] == []
        receipts = client.get("/v1/erasure-receipts", headers=headers).json()["items"]
        assert [r["job_id"] for r in receipts] == [purge_id]
        # Timestamps come back with their zone on SQLite too.
        assert receipts[0]["created_at"].endswith(("Z", "+00:00"))
