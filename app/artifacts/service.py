"""Registering stored blobs and serving them back."""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.db import after_commit, on_rollback
from app.core.errors import NotFound, RangeNotSatisfiable
from app.core.storage import ArtifactStore, StagedBlob
from app.core.uploads import content_digest_header
from app.models import Artifact, Dataset, ModelVersion

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def ingest(session: Session, store: ArtifactStore, staged: StagedBlob, media_type: str) -> Artifact:
    """Move a staged upload into the store and record it. If the transaction later rolls back,
    a blob this call created is removed again, so no orphan file survives a failed request."""
    created = store.commit(staged)
    digest = staged.digest
    if created:
        on_rollback(session, lambda: store.delete(digest))
    artifact = session.get(Artifact, digest)
    if artifact is None:
        artifact = Artifact(digest=digest, size=staged.size, media_type=media_type)
        session.add(artifact)
        session.flush()
    return artifact


def is_referenced(session: Session, digest: str, *, excluding_model: str | None = None) -> bool:
    models = (
        select(func.count()).select_from(ModelVersion).where(ModelVersion.weights_digest == digest)
    )
    if excluding_model is not None:
        models = models.where(ModelVersion.id != excluding_model)
    datasets = (
        select(func.count())
        .select_from(Dataset)
        .where((Dataset.train_digest == digest) | (Dataset.test_digest == digest))
    )
    return bool(session.scalar(models)) or bool(session.scalar(datasets))


def forget_artifact(session: Session, store: ArtifactStore, digest: str) -> None:
    """Drop an artifact nobody references any more (the row now, the file after the commit)."""
    artifact = session.get(Artifact, digest)
    if artifact is not None:
        session.delete(artifact)
        session.flush()
    after_commit(session, lambda: store.delete(digest))


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range, clamped; None to serve the whole file (multi-range requests are
    answered in full, which RFC 9110 allows)."""
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable("A suffix range of 0 bytes selects nothing.", size=size)
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(
            f"Range {header!r} is outside the artifact's {size} bytes.", size=size
        )
    return start, end


def download_response(
    request: Request, store: ArtifactStore, digest: str | None, filename: str
) -> Response:
    """Stream an artifact with ``ETag`` (its digest), ``Repr-Digest``, ``Content-Length`` and
    single-range ``Range`` support."""
    if digest is None or not store.exists(digest):
        raise NotFound("The artifact's bytes are not available.")
    size = store.size(digest)
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Repr-Digest": content_digest_header(digest),
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    span = _parse_range(range_header, size) if range_header else None
    if span is not None and if_range is not None and if_range != etag:
        span = None
    if span is None:
        headers["Content-Length"] = str(size)
        headers["Content-Digest"] = headers["Repr-Digest"]
        return StreamingResponse(
            store.iter_range(digest, 0, size - 1),
            media_type="application/octet-stream",
            headers=headers,
        )
    start, end = span
    headers["Content-Length"] = str(end - start + 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        store.iter_range(digest, start, end),
        status_code=206,
        media_type="application/octet-stream",
        headers=headers,
    )
