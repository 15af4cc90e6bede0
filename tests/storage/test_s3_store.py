"""The S3 artifact store against a real S3 server (SeaweedFS on loopback, :mod:`tests.s3_server`):
what a user of the bucket would check with their own S3 client."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app import cli
from app.artifacts import service as artifacts
from app.core.config import Settings, get_settings
from app.core.db import make_engine, make_sessionmaker
from app.core.storage import ArtifactStore, StoreError, open_store
from app.core.storage.s3 import S3Store
from app.models import Artifact
from tests.conftest import fresh_database
from tests.s3_server import BUCKET, S3Server

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: many parts from a few MiB of test data
MEDIA = "application/octet-stream"
HOUR = 3600.0


def s3_store(server: S3Server, tmp_path: Path, uri: str | None = None, **extra: Any) -> S3Store:
    """A store on a fresh prefix, opened from settings as the service opens it; temp files in
    ``tmp_path``, so a test sees what it leaves."""
    settings = Settings(**server.settings(uri or server.fresh_uri(), s3_part_size_bytes=PART))
    store = open_store(settings.resolved_artifact_uri, settings)
    assert isinstance(store, S3Store)
    return S3Store(store.bucket, store.prefix, replace(store.options, temp_dir=tmp_path, **extra))


@pytest.fixture()
def store(s3_server: S3Server, tmp_path: Path) -> S3Store:
    return s3_store(s3_server, tmp_path)


def keys(store: S3Store) -> list[str]:
    """Every key under the store's prefix, as the bucket's owner would list them."""
    pages = store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=store.prefix
    )
    return sorted(o["Key"][len(store.prefix) :] for p in pages for o in p.get("Contents", []))


def uploads(store: S3Store) -> list[str]:
    """Multipart uploads in flight under the store's prefix."""
    listed = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return [u["Key"] for u in listed.get("Uploads", [])]


def stage(store: ArtifactStore, data: bytes, chunk: int = MiB) -> Any:
    staged = store.stage()
    for i in range(0, len(data), chunk):
        staged.write(memoryview(data)[i : i + chunk])
    staged.finish()
    return staged


def test_an_upload_streams_in_parts_and_lands_under_its_digest(store: S3Store) -> None:
    data = os.urandom(12 * MiB + 12345)  # three parts, the last one short
    staged = store.stage()
    for i in range(0, len(data), MiB):
        staged.write(data[i : i + MiB])
        if i == 6 * MiB:
            # Mid-upload: a multipart upload of the staging key, nothing under a digest yet.
            assert uploads(store) == [store.staging_key(staged.name)]
            assert keys(store) == []
    staged.finish()
    digest = hashlib.sha256(data).hexdigest()
    assert staged.digest == digest and staged.size == len(data)
    assert store.commit(staged) is True
    staged.discard()

    assert keys(store) == [f"sha256/{digest[:2]}/{digest}"]
    assert uploads(store) == []
    assert store.exists(digest) and store.size(digest) == len(data)
    assert store.hash(digest) == digest
    info = store.stat(digest)
    assert info is not None and info.size == len(data) and abs(info.mtime - time.time()) < 120
    body = store.client.get_object(Bucket=store.bucket, Key=store.key(digest))["Body"].read()
    assert body == data


def test_small_empty_and_part_aligned_uploads(store: S3Store) -> None:
    # Under one part: a single PUT; exactly two parts: nothing left for a last part.
    for data in (b"tiny", b"", os.urandom(2 * PART)):
        digest = store.put_bytes(data)
        assert digest == hashlib.sha256(data).hexdigest()
        assert store.hash(digest) == digest and store.size(digest) == len(data)
    assert uploads(store) == [] and len(keys(store)) == 3
    empty = hashlib.sha256(b"").hexdigest()
    assert list(store.iter_range(empty, 0, -1)) == []


def test_range_reads_and_seeks(store: S3Store) -> None:
    data = os.urandom(3 * MiB + 7)
    digest = store.put_bytes(data)
    for start, end in ((0, 0), (5, 99), (MiB - 1, 2 * MiB + 1), (len(data) - 10, len(data) - 1)):
        got = b"".join(store.iter_range(digest, start, end, chunk_size=64 * 1024))
        assert got == data[start : end + 1]
    with store.open(digest) as fh:
        assert fh.read(10) == data[:10]
        fh.seek(2 * MiB)
        assert fh.read(100) == data[2 * MiB : 2 * MiB + 100]
        fh.seek(-7, os.SEEK_END)
        assert fh.read() == data[-7:]
        assert fh.read() == b""
    with pytest.raises(FileNotFoundError):
        store.open("0" * 64)
    with pytest.raises(FileNotFoundError):
        list(store.iter_range("0" * 64, 0, 1))


def test_commit_of_bytes_already_stored_keeps_one_object(store: S3Store) -> None:
    data = os.urandom(6 * MiB)
    first, second = stage(store, data), stage(store, data)
    assert store.commit(first) is True
    assert store.commit(second) is False
    first.discard()
    second.discard()
    digest = first.digest
    assert keys(store) == [f"sha256/{digest[:2]}/{digest}"] and uploads(store) == []


def test_a_damaged_object_under_a_digest_is_replaced_by_a_verified_upload(
    store: S3Store,
) -> None:
    data = os.urandom(MiB)
    digest = hashlib.sha256(data).hexdigest()
    store.client.put_object(Bucket=store.bucket, Key=store.key(digest), Body=data[:100])
    staged = stage(store, data)
    assert store.commit(staged) is True
    staged.discard()
    assert store.size(digest) == len(data) and store.hash(digest) == digest


def test_a_big_blob_is_copied_part_by_part(s3_server: S3Server, tmp_path: Path) -> None:
    # Above the threshold the digest key is written by UploadPartCopy (CopyObject stops at
    # 5 GiB); a 5 MiB threshold puts a 12 MiB blob there.
    store = s3_store(s3_server, tmp_path, multipart_copy_threshold=PART)
    data = os.urandom(12 * MiB)
    staged = stage(store, data)
    assert store.commit(staged) is True
    staged.discard()
    assert store.hash(staged.digest) == staged.digest and uploads(store) == []
    assert keys(store) == [f"sha256/{staged.digest[:2]}/{staged.digest}"]


def test_a_discarded_upload_leaves_nothing(store: S3Store) -> None:
    # Mid-way (parts sent, multipart upload open): aborted.
    staged = store.stage()
    staged.write(os.urandom(11 * MiB))
    assert uploads(store) != []
    staged.discard()
    assert uploads(store) == [] and keys(store) == []
    # Finished but refused before commit (a bad header, a digest mismatch): deleted.
    staged = stage(store, os.urandom(7 * MiB))
    assert keys(store) == [f"tmp/{staged.name}"]
    path = staged.local_path()
    assert path.read_bytes()[:10] and path.parent == store.options.temp_dir
    staged.discard()
    staged.discard()  # twice is fine
    assert keys(store) == [] and uploads(store) == [] and not path.exists()


def test_an_upload_failing_mid_way_is_aborted(store: S3Store) -> None:
    staged = store.stage()
    staged.write(os.urandom(6 * MiB))
    upload_id = staged._upload_id
    assert upload_id is not None
    # The server loses the upload (as if another process aborted it): the next part fails.
    store.client.abort_multipart_upload(Bucket=store.bucket, Key=staged.key, UploadId=upload_id)
    with pytest.raises(Exception, match=r"NoSuchUpload|not exist|404"):
        staged.write(os.urandom(6 * MiB))
    staged.discard()
    assert uploads(store) == [] and keys(store) == []


def test_local_file_downloads_to_a_temp_file_removed_after(store: S3Store) -> None:
    data = os.urandom(9 * MiB + 3)
    digest = store.put_bytes(data)
    with store.local_file(digest) as path:
        assert path.read_bytes() == data
        assert path.parent == store.options.temp_dir
    assert not path.exists()
    with pytest.raises(StoreError, match="missing"), store.local_file("1" * 64):
        pass
    assert list(store.options.temp_dir.iterdir()) == []  # type: ignore[union-attr]


def test_local_file_refuses_when_the_temp_dir_is_too_small(
    store: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = store.put_bytes(b"x" * 1000)
    import shutil

    real = shutil.disk_usage

    def tiny(path: Any) -> Any:
        return real(path)._replace(free=1000)

    monkeypatch.setattr(shutil, "disk_usage", tiny)
    with pytest.raises(StoreError, match="free"), store.local_file(digest):
        pass


def test_delete_removes_every_version_in_a_versioned_bucket(
    s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = s3_server.make_bucket("lethe-versioned", versioned=True)
    store = s3_store(s3_server, tmp_path, uri=s3_server.fresh_uri(bucket))
    assert store.versioned()
    data = os.urandom(2 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    # Two versions of the digest key: a damaged one, then the upload that replaced it.
    store.client.put_object(Bucket=bucket, Key=store.key(digest), Body=b"damaged")
    staged = stage(store, data)
    assert store.commit(staged) is True
    staged.discard()

    def versions() -> list[Any]:
        listed = store.client.list_object_versions(Bucket=bucket, Prefix=store.prefix)
        return listed.get("Versions", []) + listed.get("DeleteMarkers", [])

    # Staging was deleted for good too: its versions are gone, not hidden behind a marker.
    assert [v["Key"] for v in versions()] == [store.key(digest)] * 2
    caplog.set_level(logging.INFO, logger="app.core.storage.s3")
    assert store.delete(digest) == 2
    assert f"deleted artifact {digest} from versioned bucket" in caplog.text
    assert "2 stored versions" in caplog.text
    assert versions() == [] and not store.exists(digest)
    assert store.delete(digest) == 0


def test_delete_in_a_plain_bucket(store: S3Store) -> None:
    digest = store.put_bytes(b"some bytes")
    assert not store.versioned()
    assert store.delete(digest) == 1 and keys(store) == []
    assert store.delete(digest) == 0


def test_a_presigned_url_serves_the_blob_and_ranges_without_the_key(
    s3_server: S3Server, tmp_path: Path
) -> None:
    store = s3_store(s3_server, tmp_path, presign_seconds=60)
    data = os.urandom(100_000)
    digest = store.put_bytes(data)
    url = store.presigned_url(digest, 'my "model".safetensors')
    assert url is not None
    with urllib.request.urlopen(url) as res:  # noqa: S310 (a loopback http URL)
        assert res.read() == data
        assert 'filename="my__model_.safetensors"' in res.headers["Content-Disposition"]
    ranged = urllib.request.Request(url, headers={"Range": "bytes=10-19"})  # noqa: S310
    with urllib.request.urlopen(ranged) as res:  # noqa: S310
        assert res.status == 206 and res.read() == data[10:20]
    # The same object without the signature is refused: the bucket is not public.
    plain = f"{s3_server.endpoint}/{store.bucket}/{store.key(digest)}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(plain)  # noqa: S310
    assert refused.value.code == 403
    # Tampering with the signed URL breaks it.
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url.replace(digest, store.put_bytes(b"other")))  # noqa: S310
    assert s3_store(s3_server, tmp_path).presigned_url(digest, "x") is None


def test_presigned_urls_name_the_address_clients_reach(s3_server: S3Server, tmp_path: Path) -> None:
    # The service reaches the store by one name, clients by another (compose's internal
    # http://seaweedfs:8333 and the published address): the URL is signed for the second.
    port = s3_server.endpoint.rsplit(":", 1)[1]
    inside = f"http://localhost:{port}"
    store = s3_store(
        s3_server,
        tmp_path,
        endpoint_url=inside,
        presign_seconds=60,
        presign_endpoint_url=s3_server.endpoint,
    )
    digest = store.put_bytes(b"reached from outside")
    url = store.presigned_url(digest, "f")
    assert url is not None and url.startswith(f"{s3_server.endpoint}/")
    with urllib.request.urlopen(url) as res:  # noqa: S310 (a loopback http URL)
        assert res.read() == b"reached from outside"


def test_a_wrong_secret_is_refused_and_an_unreachable_store_answers_unavailable(
    s3_server: S3Server, tmp_path: Path
) -> None:
    from botocore.exceptions import ClientError

    from app.core.storage import StoreUnavailable

    good = s3_store(s3_server, tmp_path)
    wrong = S3Store(good.bucket, good.prefix, replace(good.options, secret_access_key="wrong"))
    with pytest.raises(ClientError, match=r"SignatureDoesNotMatch|AccessDenied|InvalidAccessKey"):
        wrong.put_bytes(b"x")
    assert keys(good) == [] and uploads(good) == []
    unreachable = replace(good.options, endpoint_url="http://127.0.0.1:9")
    gone = S3Store(good.bucket, good.prefix, unreachable)
    with pytest.raises(StoreUnavailable, match="not reachable") as exc:
        gone.exists("0" * 64)
    assert exc.value.status == 503


def test_memory_stays_bounded_by_one_part(store: S3Store) -> None:
    """64 MiB through the store allocates about two parts (the buffer and the bytes sent),
    whatever the upload's size."""
    chunk = os.urandom(MiB)
    tracemalloc.start()
    try:
        staged = store.stage()
        for _ in range(64):
            staged.write(chunk)
        staged.finish()
        store.commit(staged)
        staged.discard()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * PART, f"peak {peak / MiB:.1f} MiB for a 64 MiB upload"
    assert store.hash(staged.digest) == staged.digest


# -- the integrity check and the sweep, on S3 --------------------------------------------------


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """A database of its own: the check compares every row with the bucket, and these tests
    commit."""
    with fresh_database("lethe_s3") as url:
        yield url


@pytest.fixture()
def pg(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_check_and_sweep_find_and_repair_what_the_bucket_holds(
    pg: sessionmaker[Session], store: S3Store
) -> None:
    registered = stage(store, os.urandom(1000))
    with pg() as s:
        artifacts.ingest(s, store, registered, MEDIA)
        s.commit()
    registered.discard()
    orphan = store.put_bytes(os.urandom(2000))
    # A row whose object went missing (lost by the bucket's owner).
    lost = store.put_bytes(os.urandom(3000))
    with pg() as s:
        s.add(Artifact(digest=lost, size=3000, media_type=MEDIA))
        s.commit()
    store.client.delete_object(Bucket=store.bucket, Key=store.key(lost))
    # An upload killed mid-way: its multipart upload stays open on the server.
    killed = store.stage()
    killed.write(os.urandom(6 * MiB))
    killed_name = killed.name
    try:
        report = artifacts.check_store(pg, store, grace_seconds=HOUR)
        found = {f.name: f for f in report.findings}
        assert found[orphan].kind == "orphan_file" and not found[orphan].problem
        assert found[lost].kind == "missing_file"
        assert registered.digest not in found  # size and SHA-256 checked: all well
        assert report.staging_files == 1 and killed_name not in found  # within the grace

        # Two hours on: the orphan and the dead upload are repaired, the row is only reported.
        later = time.time() + 2 * HOUR
        report = artifacts.check_store(pg, store, grace_seconds=HOUR, repair=True, now=later)
        found = {f.name: f for f in report.findings}
        assert found[orphan].repaired and found[killed_name].repaired
        assert found[killed_name].size == 6 * MiB  # the part the server had received
        assert not found[lost].repaired
        assert not store.exists(orphan) and store.exists(registered.digest)
        assert uploads(store) == []
        assert keys(store) == [f"sha256/{registered.digest[:2]}/{registered.digest}"]
    finally:
        killed._upload_id = None  # the sweep aborted it
        killed.discard()
        with pg() as s:
            for digest in (registered.digest, lost):
                row = s.get(Artifact, digest)
                if row is not None:
                    s.delete(row)
            s.commit()


@pytest.fixture()
def lethe_env(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, s3_server: S3Server, tmp_path: Path
) -> Iterator[Callable[..., tuple[int, str]]]:
    """`lethe ...` in-process with the S3 backend configured by environment, as an operator
    would; returns (code, stdout)."""
    for var in [v for v in os.environ if v.startswith("LETHE_")]:
        monkeypatch.delenv(var)
    fields = s3_server.settings(s3_server.fresh_uri())
    for name, value in fields.items():
        monkeypatch.setenv(f"LETHE_{name.upper()}", str(value))
    monkeypatch.setenv("LETHE_DATABASE_URL", pg_url)
    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()

    def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
        capsys.readouterr()
        code = cli.main(list(argv))
        return code, capsys.readouterr().out

    yield run
    get_settings.cache_clear()


def test_lethe_store_check_reads_the_bucket(
    lethe_env: Callable[..., tuple[int, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(get_settings().resolved_artifact_uri)
    assert isinstance(store, S3Store) and store.bucket == BUCKET
    young = store.put_bytes(b"an orphan within its grace period")
    code, out = lethe_env("store", "check", "--json", capsys=capsys)
    report = json.loads(out)
    assert report["store"].startswith(f"s3://{BUCKET}/")
    assert report["files"] == 1 and report["problems"] == 0
    assert [f["name"] for f in report["findings"]] == [young]
    assert code == 0
