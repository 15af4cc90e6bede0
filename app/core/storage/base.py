from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.core.errors import ServiceUnavailable


class StoreError(RuntimeError):
    pass


class StoreUnavailable(ServiceUnavailable):
    """The store did not answer (a remote store's network or server failure, after retries):
    the API answers 503, a worker's job fails with this line rather than a traceback."""


@dataclass(frozen=True)
class BlobInfo:
    """A file in the store: a blob (``name`` is its digest) or a staging file."""

    name: str
    size: int
    mtime: float  # seconds since the epoch: when its bytes were last written


class StagedBlob(ABC):
    """Bytes being written: digest and size are computed on the fly. Not yet visible."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes | memoryview) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        self._write(chunk)

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    @abstractmethod
    def _write(self, chunk: bytes | memoryview) -> None: ...

    @abstractmethod
    def finish(self) -> None:
        """Flush and close for writing; the staged bytes may then be read for validation."""

    @abstractmethod
    def local_path(self) -> Path:
        """A local file holding the staged bytes (for header checks before commit)."""

    @abstractmethod
    def discard(self) -> None:
        """Remove the staged bytes; safe to call more than once."""


class ArtifactStore(ABC):
    """Blobs by digest. The store knows nothing of rows: which blobs are wanted, and when one may
    be deleted, is decided under the digest's lock by :mod:`app.artifacts.service`, the only
    caller of :meth:`commit` and :meth:`delete` outside tests."""

    @abstractmethod
    def stage(self) -> StagedBlob: ...

    @abstractmethod
    def commit(self, staged: StagedBlob) -> bool:
        """Make staged bytes visible under their digest. Returns False when an artifact with
        that digest and size already existed (the staged copy is dropped); a file of the wrong
        size under that name is replaced."""

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def size(self, digest: str) -> int: ...

    @abstractmethod
    def stat(self, digest: str) -> BlobInfo | None:
        """Size and modification time of the blob, or None when there is no such file."""

    @abstractmethod
    def open(self, digest: str) -> BinaryIO: ...

    @abstractmethod
    def delete(self, digest: str) -> int:
        """Remove the blob, every stored version of it where the store keeps versions. Returns
        how many stored copies held its bytes (0: there was none)."""

    @abstractmethod
    def local_file(self, digest: str) -> AbstractContextManager[Path]:
        """A local path to the artifact for the duration of the context (workers read it)."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every blob in the store, in no particular order (for the integrity check)."""

    @abstractmethod
    def iter_staging(self) -> Iterator[BlobInfo]:
        """Every staging file (uploads in flight, or left by a process that was killed)."""

    @abstractmethod
    def delete_staging(self, name: str) -> None:
        """Remove a staging file named by :meth:`iter_staging`; gone already is fine."""

    def hash(self, digest: str, chunk_size: int = 1024 * 1024) -> str:
        """The SHA-256 of the stored bytes, read in bounded chunks."""
        h = hashlib.sha256()
        with self.open(digest) as fh:
            while chunk := fh.read(chunk_size):
                h.update(chunk)
        return h.hexdigest()

    def iter_range(
        self, digest: str, start: int, end: int, chunk_size: int = 1024 * 1024
    ) -> Iterator[bytes]:
        """Yield bytes ``start..end`` inclusive, in bounded chunks."""
        with self.open(digest) as fh:
            fh.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = fh.read(min(chunk_size, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    def presigned_url(self, digest: str, filename: str) -> str | None:
        """A short-lived URL from which a client may fetch the blob without the API, or None
        when the store offers none (or is configured not to)."""
        return None

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` without a row and without the digest's lock (tests and tools): the
        file is an orphan, which the store sweep deletes after its grace period."""
        staged = self.stage()
        try:
            staged.write(data)
            staged.finish()
            self.commit(staged)
        finally:
            staged.discard()
        return staged.digest
