"""Content-addressed artifact storage behind a small interface, chosen by URI scheme.

Writers stage bytes in a temporary object while the SHA-256 is computed, then ``commit`` renames
(or, on S3, server-side copies) it to its digest, so a reader never sees a partial artifact and
an aborted upload leaves nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.config import Settings, get_settings
from app.core.storage.base import ArtifactStore, BlobInfo, StagedBlob, StoreError, StoreUnavailable
from app.core.storage.local import LocalStore

if TYPE_CHECKING:
    from pydantic import SecretStr

    from app.core.storage.s3 import S3Options


def open_store(uri: str, settings: Settings | None = None) -> ArtifactStore:
    """Return the store for ``uri``: ``file:///path`` or ``s3://bucket/prefix``. An S3 store
    takes its endpoint, region, credentials and tuning from ``settings`` (default: the
    process's own, :func:`app.core.config.get_settings`)."""
    if uri.startswith("file://"):
        return LocalStore.from_uri(uri)
    if uri.startswith("s3://"):
        # Imported here: boto3 costs a file:// deployment nothing.
        from app.core.storage.s3 import S3Store

        return S3Store.from_uri(uri, s3_options(settings or get_settings()))
    scheme = uri.split(":", 1)[0]
    raise StoreError(f"unsupported artifact store scheme {scheme!r}; use file:// or s3://")


def s3_options(settings: Settings) -> S3Options:
    from app.core.storage.s3 import S3Options

    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    return S3Options(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=secret(settings.s3_access_key_id),
        secret_access_key=secret(settings.s3_secret_access_key),
        path_style=settings.s3_path_style,
        part_size=settings.s3_part_size_bytes,
        presign_seconds=settings.s3_presign_seconds if settings.s3_presigned_downloads else None,
        presign_endpoint_url=settings.s3_presign_endpoint_url,
    )


__all__ = [
    "ArtifactStore",
    "BlobInfo",
    "LocalStore",
    "StagedBlob",
    "StoreError",
    "StoreUnavailable",
    "open_store",
    "s3_options",
]
