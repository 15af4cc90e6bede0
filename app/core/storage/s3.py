"""Artifacts in an S3-compatible bucket: ``s3://bucket/prefix`` (AWS, SeaweedFS, MinIO, Ceph...).

Keys mirror the local store: ``<prefix>sha256/ab/<digest>`` for blobs, ``<prefix>tmp/<name>.part``
for staging. An upload streams into a multipart upload of the staging key while its SHA-256 is
computed, holding at most one part in memory; once the digest is known, a server-side copy makes
the verified object visible under its digest (a multipart copy above the single-copy limit) and
the staging key is deleted. A discarded or failed upload aborts its multipart upload; one killed
mid-way leaves an in-flight multipart upload, which :meth:`S3Store.iter_staging` lists like any
stale staging file, so the store sweep aborts it after the grace period.

Workers and header checks need a file: :meth:`S3Store.local_file` and a staged blob's
``local_path`` download to a temporary file in the process's temp directory, deleted when the
context ends (or the staged blob is discarded).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.core.storage.base import ArtifactStore, BlobInfo, StagedBlob, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

_log = logging.getLogger(__name__)

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_BLOB_KEY = re.compile(r"^sha256/([0-9a-f]{2})/([0-9a-f]{64})$")
_STAGED = re.compile(r"^[0-9a-f]{32}\.part$")
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})
_NO_UPLOAD = frozenset({"404", "NoSuchUpload"})
# S3's own limits: parts per multipart upload, and the largest single CopyObject.
MAX_PARTS = 10_000
MAX_SINGLE_COPY_BYTES = 5 * 1024**3
# Temp space a download must leave free, beside the file itself.
_TEMP_HEADROOM_BYTES = 64 * 1024**2

T = TypeVar("T")


@dataclass(frozen=True)
class S3Options:
    """How to reach the bucket (from the ``LETHE_S3_*`` settings)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    path_style: bool = False
    part_size: int = 8 * 1024**2
    # Presigned downloads last this long; None: the API streams every download itself.
    presign_seconds: int | None = None
    # The store's address as clients see it (a signature covers the host), if not endpoint_url.
    presign_endpoint_url: str | None = None
    # Blobs from this size on are copied part by part (CopyObject stops at 5 GiB).
    multipart_copy_threshold: int = 1024**3
    temp_dir: Path | None = None


class S3Store(ArtifactStore):
    def __init__(self, bucket: str, prefix: str, options: S3Options) -> None:
        if not bucket:
            raise StoreError("an s3:// artifact URI needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.options = options
        if not 5 * 1024**2 <= options.part_size <= 5 * 1024**3:
            raise StoreError("an S3 multipart part must be between 5 MiB and 5 GiB")
        self.client = self._client(options.endpoint_url)
        # Signing makes no request: a client for the public address costs nothing until used.
        self._presigner = (
            self._client(options.presign_endpoint_url)
            if options.presign_endpoint_url
            else self.client
        )
        chunk = max(options.part_size, 64 * 1024**2)
        self._copy_config = TransferConfig(
            multipart_threshold=min(options.multipart_copy_threshold, MAX_SINGLE_COPY_BYTES),
            multipart_chunksize=chunk,
            max_concurrency=4,
        )
        # Ranged GETs of 8 MiB, a few at once: bounded memory for any file size.
        self._download_config = TransferConfig(
            multipart_threshold=options.part_size,
            multipart_chunksize=options.part_size,
            max_concurrency=4,
            max_io_queue=16,
        )

    def _client(self, endpoint_url: str | None) -> S3Client:
        o = self.options
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=o.region,
            aws_access_key_id=o.access_key_id,
            aws_secret_access_key=o.secret_access_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if o.path_style else "auto"},
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=120,
                # The API serves concurrent downloads from one client.
                max_pool_connections=32,
            ),
        )

    @classmethod
    def from_uri(cls, uri: str, options: S3Options) -> S3Store:
        parsed = urlparse(uri)
        return cls(parsed.netloc, parsed.path, options)

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix})"

    # -- keys ------------------------------------------------------------------------------

    def key(self, digest: str) -> str:
        if not _DIGEST.match(digest):
            raise StoreError(f"not a SHA-256 hex digest: {digest!r}")
        return f"{self.prefix}sha256/{digest[:2]}/{digest}"

    def staging_key(self, name: str) -> str:
        if not _STAGED.match(name):
            raise StoreError(f"not a staging file name: {name!r}")
        return f"{self.prefix}tmp/{name}"

    # -- the interface ---------------------------------------------------------------------

    def stage(self) -> StagedBlob:
        return _S3Staged(self, f"{uuid.uuid4().hex}.part")

    def commit(self, staged: StagedBlob) -> bool:
        if not isinstance(staged, _S3Staged) or staged.store is not self:
            raise StoreError("this staged blob belongs to another store")
        staged.finish()
        target = self.key(staged.digest)
        existing = self._head(target)
        if existing is not None and existing.size == staged.size:
            staged.discard()
            return False
        # Server-side: the bytes do not pass through this process again. An object of another
        # size under this key is damaged and is replaced by the verified staged copy.
        self._call(
            lambda: self.client.copy(
                {"Bucket": self.bucket, "Key": staged.key},
                self.bucket,
                target,
                Config=self._copy_config,
            )
        )
        copied = self._head(target)
        if copied is None or copied.size != staged.size:
            raise StoreError(
                f"the copy of {staged.digest} to its digest key has"
                f" {copied.size if copied else 'no'} bytes, not {staged.size}"
            )
        staged.drop_staging_object()
        return True

    def exists(self, digest: str) -> bool:
        return self._head(self.key(digest)) is not None

    def size(self, digest: str) -> int:
        info = self._head(self.key(digest))
        if info is None:
            raise FileNotFoundError(f"artifact {digest} is missing from the store")
        return info.size

    def stat(self, digest: str) -> BlobInfo | None:
        info = self._head(self.key(digest))
        return None if info is None else BlobInfo(digest, info.size, info.mtime)

    def open(self, digest: str) -> BinaryIO:
        return io.BufferedReader(_ObjectReader(self, self.key(digest)), 1024 * 1024)

    def iter_range(
        self, digest: str, start: int, end: int, chunk_size: int = 1024 * 1024
    ) -> Iterator[bytes]:
        key = self.key(digest)
        if end < start:  # an empty blob's whole range: nothing to ask the store for
            return
        try:
            response = self._call(
                lambda: self.client.get_object(
                    Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}"
                )
            )
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(f"artifact {digest} is missing from the store") from None
            raise
        body = response["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def delete(self, digest: str) -> int:
        versioned = self.versioned()
        removed = self._delete_key(self.key(digest), versioned=versioned)
        if versioned:
            # Erasure is only honest if no old version stays behind: say what went.
            _log.info(
                "deleted artifact %s from versioned bucket s3://%s: %d stored versions and"
                " their delete markers",
                digest,
                self.bucket,
                removed,
            )
        return removed

    @contextmanager
    def local_file(self, digest: str) -> Iterator[Path]:
        path = self.download(self.key(digest), f"artifact {digest}")
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        for obj in self._list(f"{self.prefix}sha256/"):
            # Keys that are not digests under their own two-letter folder are left be.
            match = _BLOB_KEY.match(obj["Key"][len(self.prefix) :])
            if match and match.group(2)[:2] == match.group(1):
                yield BlobInfo(match.group(2), obj["Size"], obj["LastModified"].timestamp())

    def iter_staging(self) -> Iterator[BlobInfo]:
        found: dict[str, BlobInfo] = {}
        prefix = f"{self.prefix}tmp/"
        for obj in self._list(prefix):
            name = obj["Key"][len(prefix) :]
            if _STAGED.match(name):
                found[name] = BlobInfo(name, obj["Size"], obj["LastModified"].timestamp())
        # Uploads in flight, or left by a process killed mid-upload: dated by their newest part,
        # so a slow upload that is still sending is not taken for a dead one.
        for upload in self._uploads(prefix):
            name = upload["Key"][len(prefix) :]
            if not _STAGED.match(name):
                continue
            size, mtime = self._parts_of(upload["Key"], upload["UploadId"])
            if mtime is None:
                mtime = upload["Initiated"].timestamp()
            seen = found.get(name)
            if seen is not None:
                size, mtime = max(size, seen.size), max(mtime, seen.mtime)
            found[name] = BlobInfo(name, size, mtime)
        yield from found.values()

    def delete_staging(self, name: str) -> None:
        key = self.staging_key(name)
        for upload in self._uploads(key):
            if upload["Key"] == key:
                self._abort(key, upload["UploadId"])
        self._delete_key(key)

    def presigned_url(self, digest: str, filename: str) -> str | None:
        if self.options.presign_seconds is None:
            return None
        return self._presigner.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.key(digest),
                # Signed into the URL, so only characters no header or URL can misread.
                "ResponseContentDisposition": f'attachment; filename="{_safe(filename)}"',
                "ResponseContentType": "application/octet-stream",
            },
            ExpiresIn=self.options.presign_seconds,
        )

    # -- helpers ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one client call; a store that cannot be reached (after boto3's retries) or that
        fails on its side raises :class:`StoreUnavailable`; other answers propagate."""
        try:
            return fn()
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500:
                raise StoreUnavailable(
                    f"The artifact store s3://{self.bucket} failed: {_code(exc)}; retry later."
                ) from exc
            raise
        except BotoCoreError as exc:
            raise StoreUnavailable(
                f"The artifact store s3://{self.bucket} is not reachable right now ({exc})."
            ) from exc

    def _head(self, key: str) -> _Head | None:
        try:
            response = self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        return _Head(response["ContentLength"], response["LastModified"].timestamp())

    def _list(self, prefix: str) -> Iterator[Any]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in _pages(self, pages):
            yield from page.get("Contents", [])

    def _uploads(self, prefix: str) -> Iterator[Any]:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in _pages(self, pages):
            yield from page.get("Uploads", [])

    def _parts_of(self, key: str, upload_id: str) -> tuple[int, float | None]:
        size, newest = 0, None
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
            for page in _pages(self, pages):
                for part in page.get("Parts", []):
                    size += part["Size"]
                    stamp = part["LastModified"].timestamp()
                    newest = stamp if newest is None else max(newest, stamp)
        except ClientError as exc:
            if _code(exc) not in _NO_UPLOAD:  # completed or aborted since the listing
                raise
        return size, newest

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._call(
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                )
            )
        except ClientError as exc:
            if _code(exc) not in _NO_UPLOAD:
                raise

    def versioned(self) -> bool:
        """Whether the bucket keeps old versions (versioning enabled, or suspended after it
        was: the versions written meanwhile stay)."""
        response = self._call(lambda: self.client.get_bucket_versioning(Bucket=self.bucket))
        return response.get("Status") in ("Enabled", "Suspended")

    def _delete_key(self, key: str, *, versioned: bool | None = None) -> int:
        """Delete ``key`` for good: in a versioned bucket, every version and delete marker (a
        plain delete would only hide the bytes behind a marker). Returns how many stored
        copies held bytes."""
        if not (self.versioned() if versioned is None else versioned):
            if self._head(key) is None:
                return 0
            self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
            return 1
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=key
        )
        # Listed in full first: deleting while paging could move entries across page marks.
        versions: list[tuple[str, bool]] = []
        for page in _pages(self, pages):
            for entry in page.get("Versions", []):
                if entry["Key"] == key:  # not another key sharing the prefix
                    versions.append((entry["VersionId"], True))
            for entry in page.get("DeleteMarkers", []):
                if entry["Key"] == key:
                    versions.append((entry["VersionId"], False))
        for version, _ in versions:
            self._delete_version(key, version)
        return sum(holds_bytes for _, holds_bytes in versions)

    def _delete_version(self, key: str, version: str) -> None:
        self._call(
            lambda: self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
        )

    def download(self, key: str, what: str) -> Path:
        """Copy an object into a new temporary file (the caller deletes it), refusing when the
        temp directory has no room for it."""
        head = self._head(key)
        if head is None:
            raise StoreError(f"{what} is missing from the store")
        folder = self.options.temp_dir or Path(tempfile.gettempdir())
        free = shutil.disk_usage(folder).free
        if free < head.size + _TEMP_HEADROOM_BYTES:
            raise StoreError(
                f"{what} has {head.size} bytes but the temp directory {folder} has only {free} free"
            )
        fd, name = tempfile.mkstemp(prefix="lethe-", suffix=".blob", dir=folder)
        os.close(fd)
        path = Path(name)
        try:
            self._call(
                lambda: self.client.download_file(
                    self.bucket, key, name, Config=self._download_config
                )
            )
            if path.stat().st_size != head.size:
                raise StoreError(f"{what} changed while it was downloaded")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path


@dataclass(frozen=True)
class _Head:
    size: int
    mtime: float


def _safe(filename: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", filename)[:200] or "artifact"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _pages(store: S3Store, pages: Any) -> Iterator[Any]:
    """A paginator's pages, each request through :meth:`S3Store._call`."""
    iterator = iter(pages)
    while (page := store._call(lambda: next(iterator, None))) is not None:
        yield page


class _S3Staged(StagedBlob):
    """A multipart upload of the staging key, one part buffered at a time. Small blobs (under
    one part) are sent by a single PUT when finished."""

    def __init__(self, store: S3Store, name: str) -> None:
        super().__init__()
        self.store = store
        self.name = name
        self.key = store.staging_key(name)
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._finished = False
        # The staging object may exist (finish was attempted): discard must delete it.
        self._object = False
        self._local: Path | None = None

    def _write(self, chunk: bytes | memoryview) -> None:
        if self._finished:
            raise StoreError("staged blob already finished")
        self._buf += chunk
        if len(self._buf) >= self.store.options.part_size:
            self._send_part()

    def _send_part(self) -> None:
        client, bucket = self.store.client, self.store.bucket
        if self._upload_id is None:
            created = self.store._call(
                lambda: client.create_multipart_upload(Bucket=bucket, Key=self.key)
            )
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StoreError(
                f"an upload of more than {MAX_PARTS} parts of {self.store.options.part_size}"
                " bytes; raise LETHE_S3_PART_SIZE_BYTES"
            )
        body, self._buf = bytes(self._buf), bytearray()
        upload_id = self._upload_id
        sent = self.store._call(
            lambda: client.upload_part(
                Bucket=bucket, Key=self.key, UploadId=upload_id, PartNumber=number, Body=body
            )
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        client, bucket = self.store.client, self.store.bucket
        self._object = True
        if self._upload_id is None:
            body, self._buf = bytes(self._buf), bytearray()
            self.store._call(lambda: client.put_object(Bucket=bucket, Key=self.key, Body=body))
        else:
            if self._buf:
                self._send_part()
            upload_id = self._upload_id
            self.store._call(
                lambda: client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self.key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
            )
            self._upload_id = None
        head = self.store._head(self.key)
        if head is None or head.size != self.size:
            raise StoreError(
                f"the store holds {head.size if head else 'no'} bytes of a {self.size}-byte upload"
            )

    def local_path(self) -> Path:
        if not self._finished:
            raise StoreError("finish the staged blob before reading it")
        if self._local is None:
            self._local = self.store.download(self.key, "the staged upload")
        return self._local

    def drop_staging_object(self) -> None:
        """After the commit's copy: the staging key has done its work."""
        self.store._delete_key(self.key)
        self._object = False
        self.discard()

    def discard(self) -> None:
        self._finished = True
        self._buf = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self.store._abort(self.key, upload_id)
        if self._object:
            self._object = False
            self.store._delete_key(self.key)
        if self._local is not None:
            self._local.unlink(missing_ok=True)
            self._local = None


class _ObjectReader(io.RawIOBase):
    """A seekable reader over one object: a GET streams from the current position; a seek
    drops it and the next read asks for a ``Range`` from the new one. Every GET after the first
    names the first's ETag, so the bytes cannot change under the reader."""

    def __init__(self, store: S3Store, key: str) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._pos = 0
        self._body: Any = None
        try:
            response = store._call(lambda: store.client.get_object(Bucket=store.bucket, Key=key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(f"{key} is missing from the store") from None
            raise
        self._size = int(response["ContentLength"])
        self._etag = str(response["ETag"])
        self._body = response["Body"]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        target = max(0, base + offset)
        if target != self._pos:
            self._drop_body()
            self._pos = target
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos >= self._size or not len(view):
            return 0
        if self._body is None:
            store, start = self._store, self._pos
            response = store._call(
                lambda: store.client.get_object(
                    Bucket=store.bucket, Key=self._key, Range=f"bytes={start}-", IfMatch=self._etag
                )
            )
            self._body = response["Body"]
        data = self._body.read(len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()
