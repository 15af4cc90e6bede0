"""The artifact store and its rows stay in agreement under concurrent uploads, rollbacks and
deletions of the same bytes (see :mod:`app.artifacts.service`), and ``lethe store check`` and the
workers' sweep find and repair what is left.

The races are driven by hand: two sessions on a committed database (each test gets its own), one
step at a time, with the blocked side in a thread that the test waits to see blocked.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from app import cli
from app.artifacts import service as artifacts
from app.core.config import Environment, Settings, get_settings
from app.core.db import make_engine, make_sessionmaker, run_hooks
from app.core.migrate import upgrade
from app.core.storage import LocalStore, StagedBlob
from app.erasure import service as erasure
from app.models import Artifact, Dataset, Job, ModelVersion, Tenant
from app.models.model_version import ModelStatus
from tests.conftest import fresh_database
from worker.context import WorkerContext
from worker.sweeper import SweeperThread

MEDIA = "application/octet-stream"
HOUR = 3600.0


@pytest.fixture()
def pg_url() -> Iterator[str]:
    with fresh_database("lethe_store") as url:
        yield url


@pytest.fixture()
def pg(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "artifacts")


def stage(store: LocalStore, data: bytes) -> StagedBlob:
    staged = store.stage()
    staged.write(data)
    staged.finish()
    return staged


def upload(factory: sessionmaker[Session], store: LocalStore, data: bytes) -> str:
    """One committed upload of ``data`` (a row and its file)."""
    staged = stage(store, data)
    try:
        with factory() as s:
            artifacts.ingest(s, store, staged, MEDIA)
            s.commit()
    finally:
        staged.discard()
    return staged.digest


class Background(threading.Thread):
    """Runs ``fn`` in a thread; :meth:`result` joins it and re-raises what it raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.value: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as exc:
            self.error = exc

    def result(self) -> Any:
        self.join(timeout=30)
        assert not self.is_alive(), "the background step never finished"
        if self.error is not None:
            raise self.error
        return self.value


def wait_until_blocked(url: str, thread: Background) -> None:
    """Until a session of ``url``'s database waits for a lock (the digest's, or any other)."""
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + 15
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                waiting = conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    )
                )
                if waiting:
                    return
                assert thread.is_alive(), f"it did not wait for a lock: {thread.error!r}"
                conn.rollback()
                time.sleep(0.02)
    finally:
        engine.dispose()
    raise AssertionError("nothing waited for a lock")


def row_exists(factory: sessionmaker[Session], digest: str) -> bool:
    with factory() as s:
        return s.get(Artifact, digest) is not None


def assert_row_and_file(factory: sessionmaker[Session], store: LocalStore, digest: str) -> None:
    assert row_exists(factory, digest)
    assert store.exists(digest) and store.hash(digest) == digest


# -- the races ---------------------------------------------------------------------------------


def test_a_rolled_back_upload_leaves_the_file_for_a_concurrent_one(
    pg_url: str, pg: sessionmaker[Session], store: LocalStore
) -> None:
    """A places the file and rolls back while B, uploading the same bytes, waits: B commits a
    row whose file is there (before, A's rollback deleted the file B then registered)."""
    data = secrets.token_bytes(4096)
    a, b = pg(), pg()
    staged_a, staged_b = stage(store, data), stage(store, data)
    try:
        artifacts.ingest(a, store, staged_a, MEDIA)  # the file is in place, the row uncommitted
        assert store.exists(staged_a.digest)

        def second() -> None:
            artifacts.ingest(b, store, staged_b, MEDIA)
            b.commit()

        other = Background(second)
        wait_until_blocked(pg_url, other)
        a.rollback()
        run_hooks(a, "on_rollback")  # what the session's owner does after a rollback
        other.result()
    finally:
        a.close()
        b.close()
        staged_a.discard()
        staged_b.discard()
    assert_row_and_file(pg, store, staged_a.digest)
    report = artifacts.check_store(pg, store, grace_seconds=HOUR)
    assert report.findings == []


def test_a_rolled_back_upload_on_sqlite(tmp_path: Path, store: LocalStore) -> None:
    """The embedded equivalent: SQLite's one write lock, taken before the file is placed."""
    url = f"sqlite:///{tmp_path / 'lethe.db'}"
    upgrade(url, "head")
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    data = secrets.token_bytes(4096)
    a, b = factory(), factory()
    staged_a, staged_b = stage(store, data), stage(store, data)
    try:
        artifacts.ingest(a, store, staged_a, MEDIA)

        def second() -> None:
            artifacts.ingest(b, store, staged_b, MEDIA)
            b.commit()

        other = Background(second)
        other.join(timeout=0.5)
        assert other.is_alive(), f"it did not wait for the write lock: {other.error!r}"
        a.rollback()
        run_hooks(a, "on_rollback")
        other.result()
        assert_row_and_file(factory, store, staged_a.digest)
        # The deletion side takes the same lock: a file is deleted only while no row names it.
        with factory() as s:
            assert artifacts.destroy_file(s, store, staged_a.digest) == "registered"
        orphan = store.put_bytes(secrets.token_bytes(100))
        age(blob_path(store, orphan), 2 * HOUR)
        report = artifacts.check_store(factory, store, grace_seconds=HOUR, repair=True)
        assert [(f.name, f.repaired) for f in report.findings] == [(orphan, True)]
        assert not store.exists(orphan)
    finally:
        a.close()
        b.close()
        staged_a.discard()
        staged_b.discard()
        engine.dispose()
    assert store.exists(staged_a.digest)


@pytest.mark.parametrize("first", ["upload", "deletion"])
def test_a_purge_racing_an_upload_of_the_same_bytes_keeps_row_and_file_together(
    pg_url: str, pg: sessionmaker[Session], store: LocalStore, first: str
) -> None:
    """The purge dropped the row (step 1 or 2, committed) and is about to delete the file (step
    3) when the same bytes are uploaded again. Whichever takes the digest's lock first, the end
    is a row with its file: the purge keeps a file whose row came back, or the upload puts the
    file back from its own staged copy."""
    data = secrets.token_bytes(4096)
    digest = upload(pg, store, data)
    out: dict[str, Any] = {"pending_deletes": [], "destroyed": []}
    with pg() as s:
        erasure._drop_artifact(s, digest, out)
        s.commit()
    assert out["pending_deletes"] == [digest] and not row_exists(pg, digest)
    assert store.exists(digest)  # the file goes in step 3, after the row
    job = Job(outcome=out)

    staged = stage(store, data)
    uploader, purger = pg(), pg()
    try:
        if first == "upload":
            artifacts.ingest(uploader, store, staged, MEDIA)  # reuses the file, new row

            def step3() -> int:
                deleted = erasure.destroy_pending(purger, store, job)
                purger.commit()
                return deleted

            other = Background(step3)
            wait_until_blocked(pg_url, other)
            uploader.commit()
            assert other.result() == 0
        else:
            artifacts.lock_digest(purger, digest)  # step 3 has begun

            def again() -> None:
                artifacts.ingest(uploader, store, staged, MEDIA)
                uploader.commit()

            other = Background(again)
            wait_until_blocked(pg_url, other)
            assert erasure.destroy_pending(purger, store, job) == 1
            assert not store.exists(digest)
            purger.commit()
            other.result()
    finally:
        uploader.close()
        purger.close()
        staged.discard()
    assert_row_and_file(pg, store, digest)
    assert job.outcome is not None and job.outcome["deleted_files"] == [digest]


def test_a_purge_waits_for_an_upload_that_references_the_bytes(
    pg_url: str, pg: sessionmaker[Session], store: LocalStore
) -> None:
    """An upload reusing an unreferenced artifact holds its lock until its dataset row commits:
    the purge, checking references under the same lock, sees the dataset and keeps the row."""
    data = secrets.token_bytes(4096)
    digest = upload(pg, store, data)
    tenant_id = add_tenant(pg)
    staged = stage(store, data)
    uploader, purger = pg(), pg()
    out: dict[str, Any] = {"pending_deletes": [], "destroyed": []}
    try:
        artifacts.ingest(uploader, store, staged, MEDIA)
        uploader.add(dataset_row(tenant_id, digest))
        uploader.flush()

        def drop() -> None:
            erasure._drop_artifact(purger, digest, out)
            purger.commit()

        other = Background(drop)
        wait_until_blocked(pg_url, other)
        uploader.commit()
        other.result()
    finally:
        uploader.close()
        purger.close()
        staged.discard()
    assert out["pending_deletes"] == []
    assert_row_and_file(pg, store, digest)


def test_ingest_replaces_a_truncated_file(pg: sessionmaker[Session], store: LocalStore) -> None:
    data = secrets.token_bytes(4096)
    digest = upload(pg, store, data)
    path = store.root / "sha256" / digest[:2] / digest
    path.write_bytes(data[:100])
    assert upload(pg, store, data) == digest
    assert store.hash(digest) == digest


# -- lethe store check -------------------------------------------------------------------------


def add_tenant(factory: sessionmaker[Session]) -> str:
    with factory() as s:
        tenant = Tenant(name=f"t-{secrets.token_hex(4)}")
        s.add(tenant)
        s.commit()
        return tenant.id


def dataset_row(tenant_id: str, digest: str) -> Dataset:
    return Dataset(
        tenant_id=tenant_id,
        name="toy",
        train_digest=digest,
        num_samples=1,
        image_shape=[1, 2, 2],
        num_classes=2,
        classes=[0, 1],
        class_counts={"0": 1},
        sample_ids_digest="0" * 64,
    )


def model_row(tenant_id: str, dataset_id: str, digest: str | None, status: str) -> ModelVersion:
    mid = secrets.token_hex(8)
    return ModelVersion(
        tenant_id=tenant_id,
        lineage_id=mid,
        name="m",
        status=status,
        architecture="mlp",
        arch_args={},
        input_shape=[1, 2, 2],
        normalization={},
        num_classes=2,
        dataset_id=dataset_id,
        weights_digest=digest,
    )


def blob_path(store: LocalStore, digest: str) -> Path:
    return store.root / "sha256" / digest[:2] / digest


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


class Damage:
    """A store with one of everything ``lethe store check`` looks for."""

    def __init__(self, factory: sessionmaker[Session], store: LocalStore) -> None:
        tenant_id = add_tenant(factory)
        self.data: dict[str, bytes] = {}

        def stored() -> str:
            data = secrets.token_bytes(512)
            digest = upload(factory, store, data)
            self.data[digest] = data
            return digest

        self.healthy, self.lost, self.retired = stored(), stored(), stored()
        self.truncated, self.rotten = stored(), stored()
        self.old_orphan = store.put_bytes(secrets.token_bytes(256))
        self.young_orphan = store.put_bytes(secrets.token_bytes(256))
        self.purged_orphan = store.put_bytes(secrets.token_bytes(256))
        with factory() as s:
            ds = dataset_row(tenant_id, self.healthy)
            lost = dataset_row(tenant_id, self.lost)
            s.add_all([ds, lost])
            s.flush()
            self.dataset_id, self.lost_dataset = ds.id, lost.id
            ready = model_row(tenant_id, ds.id, self.truncated, ModelStatus.ready)
            retired = model_row(tenant_id, ds.id, self.retired, ModelStatus.retired)
            purged = model_row(tenant_id, ds.id, None, ModelStatus.purged)
            purged.destroyed_digest = self.purged_orphan
            s.add_all([ready, retired, purged])
            s.commit()
            self.truncated_model = ready.id
        blob_path(store, self.lost).unlink()
        blob_path(store, self.retired).unlink()
        with blob_path(store, self.truncated).open("ab") as fh:
            fh.write(b"x")
        rotten = blob_path(store, self.rotten)
        rotten.write_bytes(bytes(len(rotten.read_bytes())))
        age(blob_path(store, self.old_orphan), 2 * HOUR)
        self.staging = store.root / "tmp" / f"{secrets.token_hex(16)}.part"
        self.staging.write_bytes(b"partial")
        age(self.staging, 2 * HOUR)


@pytest.fixture()
def lethe_env(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, store: LocalStore, tmp_path: Path
) -> Iterator[Callable[..., tuple[int, str]]]:
    """`lethe ...` in-process against the test's database and store; returns (code, stdout)."""
    for var in [v for v in os.environ if v.startswith("LETHE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("LETHE_DATABASE_URL", pg_url)
    monkeypatch.setenv("LETHE_ARTIFACT_URI", store.root.as_uri())
    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()

    def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        return code, capsys.readouterr().out

    yield run
    get_settings.cache_clear()


def kinds(findings: list[dict[str, Any]]) -> dict[str, str]:
    return {f["name"]: f["kind"] for f in findings}


def test_store_check_reports_each_kind_of_disagreement(
    pg: sessionmaker[Session],
    store: LocalStore,
    lethe_env: Callable[..., tuple[int, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = Damage(pg, store)
    code, out = lethe_env("store", "check", "--json", capsys=capsys)
    assert code == 1
    report = json.loads(out)
    found = {f["name"]: f for f in report["findings"]}
    assert kinds(report["findings"]) == {
        d.lost: "missing_file",
        d.retired: "missing_file",
        d.truncated: "size_mismatch",
        d.rotten: "digest_mismatch",
        d.old_orphan: "orphan_file",
        d.young_orphan: "orphan_file",
        d.purged_orphan: "orphan_file",
        d.staging.name: "stale_staging",
    }
    assert d.healthy not in found
    # Rows without files say what references them, and whether anything is lost.
    assert found[d.lost]["problem"] and found[d.lost]["referenced_by"] == [
        {"kind": "dataset", "id": d.lost_dataset, "tenant_id": found[d.lost]["referenced_by"][0]
         ["tenant_id"], "name": "toy", "file": "train"}
    ]  # fmt: skip
    assert not found[d.retired]["problem"] and "expected" in found[d.retired]["detail"]
    assert found[d.truncated]["referenced_by"][0]["id"] == d.truncated_model
    # Orphans: their age; a young one may be an upload in flight, so it is no problem.
    assert found[d.old_orphan]["problem"] and found[d.old_orphan]["age_seconds"] > HOUR
    assert not found[d.young_orphan]["problem"]
    assert found[d.purged_orphan]["problem"] and "purge" in found[d.purged_orphan]["detail"]
    assert report["problems"] == 6 and report["repaired"] == 0
    # A check without --repair deletes nothing.
    for digest in (d.old_orphan, d.young_orphan, d.purged_orphan):
        assert store.exists(digest)
    assert d.staging.exists()

    # --quick compares sizes only: the rotten file's bytes are not read.
    code, out = lethe_env("store", "check", "--quick", "--json", capsys=capsys)
    assert code == 1 and d.rotten not in kinds(json.loads(out)["findings"])

    code, out = lethe_env("store", "check", capsys=capsys)
    assert code == 1
    assert f"missing file {d.lost}: " in out and "these bytes are lost" in out
    assert f"orphan file {d.young_orphan}: " in out and "grace period" in out
    assert out.strip().endswith("6 problems (--repair deletes the orphan and staging files)")


def test_store_check_repair_deletes_orphans_past_the_grace_period_only(
    pg: sessionmaker[Session],
    store: LocalStore,
    lethe_env: Callable[..., tuple[int, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = Damage(pg, store)
    code, out = lethe_env("store", "check", "--repair", "--json", capsys=capsys)
    report = json.loads(out)
    repaired = {f["name"] for f in report["findings"] if f["repaired"]}
    assert repaired == {d.old_orphan, d.purged_orphan, d.staging.name}
    assert not store.exists(d.old_orphan) and not store.exists(d.purged_orphan)
    assert not d.staging.exists()
    assert store.exists(d.young_orphan), "an orphan within its grace period is kept"
    # Rows without files and damaged files are reported, never changed.
    assert code == 1 and report["problems"] == 3
    assert row_exists(pg, d.lost) and row_exists(pg, d.truncated) and row_exists(pg, d.rotten)

    # Uploading the same bytes again puts lost and truncated files back (ingest re-creates a
    # missing file and replaces one of the wrong size); what is left then is no problem.
    blob_path(store, d.rotten).unlink()
    for digest in (d.lost, d.truncated, d.rotten):
        assert upload(pg, store, d.data[digest]) == digest
    code, out = lethe_env("store", "check", capsys=capsys)
    assert code == 0, out
    assert out.strip().endswith("0 problems")
    assert f"missing file {d.retired}: " in out and "expected" in out


def test_repair_exits_0_when_it_repaired_everything(
    pg: sessionmaker[Session],
    store: LocalStore,
    lethe_env: Callable[..., tuple[int, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    upload(pg, store, secrets.token_bytes(100))
    orphan = store.put_bytes(secrets.token_bytes(100))
    age(blob_path(store, orphan), 2 * HOUR)
    assert lethe_env("store", "check", capsys=capsys)[0] == 1
    code, out = lethe_env("store", "check", "--repair", capsys=capsys)
    assert code == 0, out
    assert out.strip().endswith("0 problems left, 1 repaired")
    assert not store.exists(orphan)
    assert lethe_env("store", "check", capsys=capsys)[0] == 0


def test_repair_leaves_an_orphan_registered_or_locked_meanwhile(
    pg: sessionmaker[Session], store: LocalStore
) -> None:
    """The check's listing is a snapshot: under the lock the repair re-reads the row, and skips
    a digest an upload holds."""
    data = secrets.token_bytes(100)
    orphan = store.put_bytes(data)
    age(blob_path(store, orphan), 2 * HOUR)
    staged = stage(store, data)
    with pg() as uploader:
        artifacts.ingest(uploader, store, staged, MEDIA)  # holds the lock, row uncommitted
        report = artifacts.check_store(pg, store, grace_seconds=HOUR, repair=True)
        (finding,) = report.findings
        assert not finding.repaired and not finding.problem and "holds its lock" in finding.detail
        uploader.commit()
    staged.discard()
    assert_row_and_file(pg, store, orphan)


# -- the workers' sweep ------------------------------------------------------------------------


def test_the_sweep_repairs_orphans_and_logs_what_it_cannot(
    pg: sessionmaker[Session], store: LocalStore, caplog: pytest.LogCaptureFixture
) -> None:
    d = Damage(pg, store)
    with caplog.at_level(logging.INFO, logger="app.artifacts.service"):
        report = artifacts.sweep_store(pg, store, grace_seconds=HOUR)
    assert not report.verified_digests
    assert not store.exists(d.old_orphan) and not store.exists(d.purged_orphan)
    assert store.exists(d.young_orphan) and not d.staging.exists()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # One line per problem it cannot repair: the lost bytes and the wrong size (no hashing).
    assert len(warned) == 2
    assert any(d.lost in line for line in warned) and any(d.truncated in line for line in warned)
    deleted = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(deleted) == 3


def test_the_worker_sweeper_thread_runs_the_store_sweep(
    pg_url: str,
    pg: sessionmaker[Session],
    store: LocalStore,
    tmp_path: Path,
    signing_key_path: Path,
) -> None:
    orphan = store.put_bytes(secrets.token_bytes(100))
    age(blob_path(store, orphan), 2 * HOUR)
    settings = Settings(
        environment=Environment.test,
        secret_key=secrets.token_urlsafe(32),  # type: ignore[arg-type]
        data_dir=tmp_path / "data",
        database_url=pg_url,
        artifact_uri=store.root.as_uri(),
        signing_key_path=signing_key_path,
        sweep_interval_seconds=0.05,
    )
    engine: Engine = make_engine(pg_url)
    ctx = WorkerContext(settings, engine, pg, store, "test-sweeper")
    thread = SweeperThread(ctx)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while store.exists(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        thread.stop()
        thread.join(timeout=20)
        engine.dispose()
    assert not store.exists(orphan)
    with pg() as s:
        assert s.scalar(select(Artifact.digest)) is None
