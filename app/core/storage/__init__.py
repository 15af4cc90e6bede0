"""Content-addressed artifact storage behind a small interface, chosen by URI scheme.

Writers stage bytes in a temporary object while the SHA-256 is computed, then ``commit`` renames
it to its digest, so a reader never sees a partial artifact and an aborted upload leaves nothing.
"""

from __future__ import annotations

from app.core.storage.base import ArtifactStore, BlobInfo, StagedBlob, StoreError
from app.core.storage.local import LocalStore


def open_store(uri: str) -> ArtifactStore:
    """Return the store for ``uri``; only ``file://`` exists now (an s3:// backend would slot in
    here with the same interface)."""
    if uri.startswith("file://"):
        return LocalStore.from_uri(uri)
    scheme = uri.split(":", 1)[0]
    raise StoreError(f"unsupported artifact store scheme {scheme!r}; use file://")


__all__ = ["ArtifactStore", "BlobInfo", "LocalStore", "StagedBlob", "StoreError", "open_store"]
