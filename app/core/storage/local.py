from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from app.core.storage.base import ArtifactStore, StagedBlob, StoreError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class _LocalStaged(StagedBlob):
    def __init__(self, path: Path, buffer_bytes: int) -> None:
        super().__init__()
        self.path = path
        # A fixed-size write buffer: the only upload bytes held in memory.
        self._fh: BinaryIO | None = open(path, "wb", buffering=buffer_bytes)  # noqa: SIM115

    def _write(self, chunk: bytes | memoryview) -> None:
        if self._fh is None:
            raise StoreError("staged blob already finished")
        self._fh.write(chunk)

    def finish(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def local_path(self) -> Path:
        return self.path

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.path.unlink(missing_ok=True)


class LocalStore(ArtifactStore):
    """Artifacts as files under ``root/sha256/ab/<digest>``; staging under ``root/tmp``."""

    def __init__(self, root: Path, buffer_bytes: int = 1024 * 1024) -> None:
        self.root = root
        self.buffer_bytes = buffer_bytes
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        (root / "sha256").mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_uri(cls, uri: str) -> LocalStore:
        return cls(Path(unquote(urlparse(uri).path)))

    def _path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise StoreError(f"not a SHA-256 hex digest: {digest!r}")
        return self.root / "sha256" / digest[:2] / digest

    def stage(self) -> StagedBlob:
        return _LocalStaged(self.root / "tmp" / f"{uuid.uuid4().hex}.part", self.buffer_bytes)

    def commit(self, staged: StagedBlob) -> bool:
        staged.finish()
        target = self._path(staged.digest)
        if target.exists():
            staged.discard()
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        # Atomic on one filesystem: readers see the whole file or nothing.
        os.replace(staged.local_path(), target)
        return True

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def size(self, digest: str) -> int:
        return self._path(digest).stat().st_size

    def open(self, digest: str) -> BinaryIO:
        return open(self._path(digest), "rb")

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    @contextmanager
    def local_file(self, digest: str) -> Iterator[Path]:
        path = self._path(digest)
        if not path.is_file():
            raise StoreError(f"artifact {digest} is missing from the store")
        yield path
