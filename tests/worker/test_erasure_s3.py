"""Erasure on S3, in a bucket that keeps versions: after a class request and a person's request
on one lineage, no version of any object under the store's prefix holds a forgotten sample's
image, and nothing is left hidden behind a delete marker, staged or half-uploaded."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.core.config import Settings
from app.core.storage.s3 import S3Store
from app.core.tasks import TaskSender
from app.main import create_app
from tests import digits
from tests.s3_server import S3Server
from tests.worker.conftest import WorkerProcess
from tests.worker.helpers import register_digits_model
from tests.worker.test_erasure import PERSON, forget
from tests.worker.test_pipeline_s3 import s3_worker_settings

BUCKET = "lethe-erasure-versioned"


@pytest.fixture(scope="module")
def worker_settings(
    s3_server: S3Server, committed_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    s3_server.make_bucket(BUCKET, versioned=True)
    root = tmp_path_factory.mktemp("erasure-s3")
    return s3_worker_settings(s3_server, s3_server.fresh_uri(BUCKET), committed_url, root)


def every_version(store: S3Store) -> tuple[list[bytes], list[str]]:
    """The bytes of every stored version under the prefix, and the keys of delete markers."""
    pages = store.client.get_paginator("list_object_versions").paginate(
        Bucket=store.bucket, Prefix=store.prefix
    )
    blobs, markers = [], []
    for page in pages:
        for v in page.get("Versions", []):
            key, version = v["Key"], v["VersionId"]
            got = store.client.get_object(Bucket=store.bucket, Key=key, VersionId=version)
            blobs.append(got["Body"].read())
        markers += [m["Key"] for m in page.get("DeleteMarkers", [])]
    return blobs, markers


def test_no_version_in_the_bucket_holds_forgotten_samples(
    worker_settings: Settings, committed_engine: Engine, celery_worker: WorkerProcess
) -> None:
    app = create_app(worker_settings, engine=committed_engine, tasks=TaskSender(worker_settings))
    store = app.state.store
    assert isinstance(store, S3Store) and store.versioned()
    a = digits.arrays()
    forgotten = np.isin(np.asarray(a["sample_ids"]), PERSON) | (np.asarray(a["labels"]) == 3)
    kept = {bytes(x.tobytes()) for x in a["images"][~forgotten]}
    kept |= {bytes(x.tobytes()) for x in a["test_images"]}
    needles = [n for n in (bytes(x.tobytes()) for x in a["images"][forgotten]) if n not in kept]
    assert len(needles) > 150
    with TestClient(app) as c:
        s = register_digits_model(c, committed_engine)
        before, _ = every_version(store)
        assert any(needles[0] in blob for blob in before)
        forget(c, s, {"class_ids": [3], "reason": "class withdrawn"}, celery_worker)
        second = forget(c, s, {"sample_ids": PERSON, "subject_ref": "person-17"}, celery_worker)
        assert second["purge"]["outcome"]["deleted_files"]

    after, markers = every_version(store)
    found = [n for n in needles if any(n in blob for blob in after)]
    assert not found, f"{len(found)} forgotten images still stored in some version"
    assert markers == [], "a delete only hid the bytes behind a marker"
    assert [b for b in store.iter_staging()] == []
    assert len(after) == len(list(store.iter_blobs())), "one version per live object"
