from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from app.core.storage.base import ArtifactStore, BlobInfo, StagedBlob, StoreError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_STAGED = re.compile(r"^[0-9a-f]{32}\.part$")


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
        # A file of another size under this name is damaged (truncated): the staged copy, whose
        # digest was just computed, replaces it.
        if target.is_file() and target.stat().st_size == staged.size:
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

    def stat(self, digest: str) -> BlobInfo | None:
        try:
            st = self._path(digest).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(digest, st.st_size, st.st_mtime)

    def open(self, digest: str) -> BinaryIO:
        return open(self._path(digest), "rb")

    def delete(self, digest: str) -> int:
        try:
            self._path(digest).unlink()
        except FileNotFoundError:
            return 0
        return 1

    @contextmanager
    def local_file(self, digest: str) -> Iterator[Path]:
        path = self._path(digest)
        if not path.is_file():
            raise StoreError(f"artifact {digest} is missing from the store")
        yield path

    def iter_blobs(self) -> Iterator[BlobInfo]:
        # Names that are not digests (an editor's backup, a stray copy) are not blobs: left be.
        for prefix in _scandir(self.root / "sha256"):
            if not prefix.is_dir(follow_symlinks=False):
                continue
            for entry in _scandir(Path(prefix.path)):
                if _DIGEST.match(entry.name) and entry.name[:2] == prefix.name:
                    info = _info(entry)
                    if info is not None:
                        yield info

    def iter_staging(self) -> Iterator[BlobInfo]:
        for entry in _scandir(self.root / "tmp"):
            if _STAGED.match(entry.name):
                info = _info(entry)
                if info is not None:
                    yield info

    def delete_staging(self, name: str) -> None:
        if not _STAGED.match(name):
            raise StoreError(f"not a staging file name: {name!r}")
        (self.root / "tmp" / name).unlink(missing_ok=True)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _info(entry: os.DirEntry[str]) -> BlobInfo | None:
    """The entry's size and mtime; None when it is not a regular file or vanished meanwhile."""
    try:
        if not entry.is_file(follow_symlinks=False):
            return None
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    return BlobInfo(entry.name, st.st_size, st.st_mtime)
