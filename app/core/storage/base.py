from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO


class StoreError(RuntimeError):
    pass


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
    @abstractmethod
    def stage(self) -> StagedBlob: ...

    @abstractmethod
    def commit(self, staged: StagedBlob) -> bool:
        """Make staged bytes visible under their digest. Returns False when an artifact with
        that digest already existed (the staged copy is dropped)."""

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def size(self, digest: str) -> int: ...

    @abstractmethod
    def open(self, digest: str) -> BinaryIO: ...

    @abstractmethod
    def delete(self, digest: str) -> None: ...

    @abstractmethod
    def local_file(self, digest: str) -> AbstractContextManager[Path]:
        """A local path to the artifact for the duration of the context (workers read it)."""

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

    def put_bytes(self, data: bytes) -> str:
        staged = self.stage()
        try:
            staged.write(data)
            staged.finish()
            self.commit(staged)
        finally:
            staged.discard()
        return staged.digest
