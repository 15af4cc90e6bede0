"""A real worker process on the S3 store, whatever ``LETHE_TEST_ARTIFACT_BACKEND`` says: it
validates an uploaded model and runs a forget job reading the weights and the dataset from the
bucket and writing the new version there, with no artifact on any local disk."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.certificates.signing import generate_key_file
from app.core.config import Environment, Settings
from app.core.storage.s3 import S3Store
from app.core.tasks import TaskSender
from app.main import create_app
from tests.s3_server import S3Server
from tests.worker.conftest import WORKER_REDIS, WorkerProcess
from tests.worker.helpers import register_digits_model, wait_job


def s3_worker_settings(s3_server: S3Server, uri: str, committed_url: str, root: Path) -> Settings:
    """The worker conftest's settings, with the artifacts under ``uri`` on the S3 server."""
    generate_key_file(root / "signing-key.pem")
    return Settings(
        **s3_server.settings(uri),
        environment=Environment.test,
        secret_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        data_dir=root / "data",
        database_url=committed_url,
        redis_url=WORKER_REDIS,
        signing_key_path=root / "signing-key.pem",
        auto_migrate=False,
        heartbeat_interval_seconds=1,
        heartbeat_timeout_seconds=10,
        resend_after_seconds=3,
        sweep_interval_seconds=1,
    )


@pytest.fixture(scope="module")
def worker_settings(
    s3_server: S3Server, committed_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Overrides the worker conftest's for this module's worker process and clients."""
    root = tmp_path_factory.mktemp("worker-s3")
    return s3_worker_settings(s3_server, s3_server.fresh_uri(), committed_url, root)


def bucket_keys(store: S3Store) -> list[str]:
    listed = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    return sorted(o["Key"][len(store.prefix) :] for o in listed.get("Contents", []))


def test_a_forget_job_reads_and_writes_its_artifacts_on_s3(
    worker_settings: Settings,
    committed_engine: Engine,
    celery_worker: WorkerProcess,
    tmp_path: Path,
) -> None:
    app = create_app(worker_settings, engine=committed_engine, tasks=TaskSender(worker_settings))
    store = app.state.store
    assert isinstance(store, S3Store)
    with TestClient(app) as c:
        s = register_digits_model(c, committed_engine)  # the worker validated it from S3
        base = c.get(f"/v1/models/{s.model_id}", headers=s.keys.headers()).json()
        res = c.post(
            f"/v1/models/{s.model_id}/forget-requests",
            json={"class_ids": [3], "reason": "class withdrawn"},
            headers=s.keys.headers(),
        )
        assert res.status_code == 202, res.text
        job = wait_job(c, s.keys, res.json()["job_id"])
        assert job["state"] == "succeeded", (job["error"], celery_worker.output()[-1500:])
        new = c.get(f"/v1/models/{job['result_model_id']}", headers=s.keys.headers()).json()
        # The purge job that follows destroys the superseded version's bytes (no retention).
        purge = wait_job(c, s.keys, job["outcome"]["purge_job_id"])
        assert purge["state"] == "succeeded", (purge["error"], celery_worker.output()[-1500:])
        ds = c.get(f"/v1/datasets/{s.dataset_id}", headers=s.keys.headers()).json()
        weights = c.get(f"/v1/models/{new['id']}/weights", headers=s.keys.headers())
        assert weights.status_code == 200
        assert hashlib.sha256(weights.content).hexdigest() == new["weights_digest"]

    # The bucket holds the dataset and the new version's weights, each under its digest; the
    # superseded version's weights were destroyed by the purge;
    # nothing is half-written: no staging object, no open multipart upload.
    keys = bucket_keys(store)
    for digest in (ds["train_digest"], new["weights_digest"]):
        assert f"sha256/{digest[:2]}/{digest}" in keys
    old = base["weights_digest"]
    assert old != new["weights_digest"] and f"sha256/{old[:2]}/{old}" not in keys
    assert not [k for k in keys if k.startswith("tmp/")]
    open_uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    assert open_uploads.get("Uploads", []) == []
    # No artifact folder on the worker's disk: the bucket is the only store.
    assert not (worker_settings.data_dir / "artifacts").exists()
    assert store.hash(new["weights_digest"]) == new["weights_digest"]
