"""Registering stored blobs, deleting them, checking the store against its rows, serving them.

The store is shared by every API process and worker, and the ``artifacts`` table says which of
its blobs are wanted. Three rules keep the two in agreement by construction, whatever the
interleaving of uploads, rollbacks, rejections and purges of the same bytes:

1. **One lock per digest.** :func:`lock_digest` takes a lock keyed by the digest that lasts until
   the transaction ends (commit or rollback), never less: a PostgreSQL advisory lock
   (``pg_advisory_xact_lock``), or on SQLite the database's single write lock (taken by a no-op
   ``UPDATE``), which serialises every writer anyway.
2. **Ingest places the file under the lock.** :func:`ingest` takes the lock, then moves the
   staged file into the store (keeping the copy already there, or re-creating a missing one from
   its own staged bytes), then writes the row. The lock is held from the moment the file is in
   place until the row commits. A rollback deletes nothing.
3. **One function deletes a file:** :func:`destroy_file`, under the lock, and only when a fresh
   statement finds no ``artifacts`` row for the digest. Rows are deleted by :func:`drop_row`,
   under the lock and only when nothing references the digest, and the file in a *later*
   transaction (after-commit for a rejected upload, the purge's own step 3 for an erasure), so a
   rollback can never bring back a row whose file is gone.

Why a committed row always has its file: let T be the transaction that committed the row and D
any deletion of the file. Both held the digest's lock (rules 2 and 3). If D held it first, D
finished before T's ``store.commit``, which then found the file missing and put its own staged
copy in place. If T held it first, D was granted the lock only after T committed, and its fresh
read (PostgreSQL's READ COMMITTED, the default this app keeps, takes a new snapshot per
statement; a SQLite write transaction begins when it gets the lock) sees T's row, so D keeps the
file. A row is deleted only in a transaction that found no reference under the lock, so no
version or dataset can name a row that is going (the foreign keys would refuse it anyway).

What is left are files without rows: the upload whose transaction rolled back, a rejected
upload or purge whose after-commit step did not run (a crash). Such an orphan harms nothing: the
next upload of the same bytes reuses it. The store sweep (:func:`sweep_store`, in every worker)
and ``lethe store check --repair`` delete an orphan once its mtime is older than
``LETHE_STORE_ORPHAN_GRACE_SECONDS`` (an hour), again through :func:`destroy_file`, so under the
lock and only with no row. The argument above does not need the grace period; it covers writers
that take no lock (a process of an older release during a rolling upgrade,
``ArtifactStore.put_bytes``). Erasure waits for no grace: a purge drops the row under the lock
and destroys the file in its next step, and the sweep destroys at once an orphan whose bytes a
purge already meant to destroy.

Deadlock: a transaction may hold two digests' locks (a dataset's train and test files, a purge's
new and old manifest). Two such transactions taking the same pair in opposite orders are aborted
by PostgreSQL's deadlock detector; a rollback leaves at most an orphan file, and the purge is
retried. The sweep takes one lock per transaction and never waits for one.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import after_commit, session_scope
from app.core.errors import NotFound, RangeNotSatisfiable
from app.core.storage import ArtifactStore, StagedBlob
from app.core.uploads import content_digest_header
from app.models import (
    Artifact,
    CachedEvaluator,
    Dataset,
    DatasetErasure,
    ModelVersion,
    ReferenceKit,
)
from app.models.model_version import ModelStatus

_log = logging.getLogger(__name__)

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# The first key of every digest lock ("LETH"): PostgreSQL's two-key advisory locks keep it apart
# from any other use of advisory locks in the database.
_LOCK_NAMESPACE = 0x4C455448
# How often each worker's sweeper runs :func:`sweep_store` (it stats every file, hashes none).
STORE_SWEEP_INTERVAL_SECONDS = 600.0
# Versions whose bytes are not served any more and are due to be (or were) destroyed.
_GONE = (ModelStatus.retired, ModelStatus.purged)


def lock_digest(session: Session, digest: str, *, wait: bool = True) -> bool:
    """Take ``digest``'s lock until the session's transaction ends (see the module docstring).
    With ``wait=False`` return False at once when another transaction holds it (PostgreSQL;
    SQLite waits up to its busy timeout). A transaction may take the same lock again."""
    if session.get_bind().dialect.name == "postgresql":
        # 32 bits of the digest: two digests sharing them only wait for each other.
        key = int(digest[:8], 16) - (1 << 31)
        args = {"ns": _LOCK_NAMESPACE, "key": key}
        if not wait:
            try_lock = "SELECT pg_try_advisory_xact_lock(CAST(:ns AS int), CAST(:key AS int))"
            return bool(session.scalar(text(try_lock), args))
        session.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:ns AS int), CAST(:key AS int))"), args
        )
        return True
    # SQLite: any write statement takes the one write lock, held to the end of the transaction;
    # this one changes nothing whether or not the row exists.
    session.execute(
        update(Artifact)
        .where(Artifact.digest == digest)
        .values(size=Artifact.size)
        .execution_options(synchronize_session=False)
    )
    return True


def ingest(session: Session, store: ArtifactStore, staged: StagedBlob, media_type: str) -> Artifact:
    """Move a staged upload into the store and record it, under the digest's lock (held until
    the transaction ends). A file that a deletion removed meanwhile is put back from the staged
    bytes. If the transaction rolls back the file stays: deleting it here could delete the file
    of a concurrent upload of the same bytes, and the store sweep removes it after its grace."""
    digest = staged.digest
    lock_digest(session, digest)
    store.commit(staged)
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
    kits = select(func.count()).select_from(ReferenceKit).where(ReferenceKit.digest == digest)
    samples = (
        select(func.count()).select_from(ModelVersion).where(ModelVersion.samples_digest == digest)
    )
    evaluators = (
        select(func.count()).select_from(CachedEvaluator).where(CachedEvaluator.digest == digest)
    )
    return any(bool(session.scalar(q)) for q in (models, datasets, kits, samples, evaluators))


def drop_row(session: Session, digest: str) -> bool:
    """Delete the artifact's row when nothing references the digest, under its lock. Returns
    True when nothing does (the row is gone, now or before): the file may then be destroyed by
    :func:`destroy_file` in a later transaction, once this one has committed."""
    lock_digest(session, digest)
    if is_referenced(session, digest):
        return False
    row = session.get(Artifact, digest)
    if row is not None:
        session.delete(row)
        session.flush()
    return True


Destroyed = Literal["deleted", "registered", "busy", "recent"]


def destroy_file(
    session: Session,
    store: ArtifactStore,
    digest: str,
    *,
    modified_before: float | None = None,
    wait: bool = True,
) -> Destroyed:
    """Delete the digest's file: the only code that deletes a blob. Under the digest's lock,
    and only when no ``artifacts`` row names it (``"registered"`` otherwise). Call it in a
    transaction that did not itself delete the row: a rollback would bring the row back.

    ``modified_before`` (epoch seconds) keeps a file written since (``"recent"``); with
    ``wait=False`` a digest another transaction holds is left (``"busy"``). ``"deleted"`` also
    when there was no file."""
    if not lock_digest(session, digest, wait=wait):
        return "busy"
    if session.scalar(select(Artifact.digest).where(Artifact.digest == digest)) is not None:
        return "registered"
    if modified_before is not None:
        info = store.stat(digest)
        if info is not None and info.mtime >= modified_before:
            return "recent"
    store.delete(digest)
    return "deleted"


def forget_artifact(session: Session, store: ArtifactStore, digest: str) -> None:
    """Drop an artifact nobody references any more: the row now (under the digest's lock), the
    file in a short transaction of its own after the commit. Should that one not run (a crash),
    the file is an orphan the store sweep deletes."""
    if drop_row(session, digest):
        after_commit(session, lambda: _destroy_in_own_transaction(session, store, digest))


def _destroy_in_own_transaction(session: Session, store: ArtifactStore, digest: str) -> None:
    with session.begin():
        destroy_file(session, store, digest)


# -- the integrity check and the sweep ---------------------------------------------------------

FindingKind = Literal[
    "orphan_file", "stale_staging", "missing_file", "size_mismatch", "digest_mismatch"
]


@dataclass
class Finding:
    """One disagreement between the store and the rows. ``problem``: someone (or the repair)
    must act; ``repaired``: the repair did."""

    kind: FindingKind
    name: str  # the digest (a staging file's name for stale_staging)
    problem: bool
    detail: str
    size: int | None = None
    age_seconds: float | None = None
    referenced_by: list[dict[str, Any]] = field(default_factory=list)
    repaired: bool = False

    def line(self) -> str:
        state = " [repaired]" if self.repaired else "" if self.problem else " [ok]"
        return f"{self.kind.replace('_', ' ')} {self.name}: {self.detail}{state}"


@dataclass
class StoreReport:
    files: int
    rows: int
    staging_files: int
    verified_digests: bool
    grace_seconds: float
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        """What is still wrong (after the repair, when there was one)."""
        return [f for f in self.findings if f.problem and not f.repaired]

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "rows": self.rows,
            "staging_files": self.staging_files,
            "verified_digests": self.verified_digests,
            "grace_seconds": self.grace_seconds,
            "problems": len(self.problems),
            "repaired": sum(f.repaired for f in self.findings),
            "findings": [asdict(f) for f in self.findings],
        }


def check_store(
    factory: sessionmaker[Session],
    store: ArtifactStore,
    *,
    grace_seconds: float,
    repair: bool = False,
    verify_digests: bool = True,
    now: float | None = None,
) -> StoreReport:
    """Compare the store with the ``artifacts`` rows: files without rows (with their age), rows
    without files (with what references them), files whose size or (``verify_digests``) SHA-256
    disagree, and staging files older than the grace period.

    ``repair`` deletes, through :func:`destroy_file`, the orphans older than ``grace_seconds``
    by mtime, and at once those whose bytes a purge destroyed; and stale staging files. It
    changes no row: rows without files and mismatches are only reported."""
    now = time.time() if now is None else now
    cutoff = now - grace_seconds
    blobs = {b.name: b for b in store.iter_blobs()}
    with factory() as s:
        rows = {d: n for d, n in s.execute(select(Artifact.digest, Artifact.size))}
        destroyed = _destroyed_digests(s)
    report = StoreReport(len(blobs), len(rows), 0, verify_digests, grace_seconds)
    findings = report.findings

    for digest in sorted(blobs.keys() - rows.keys()):
        info = store.stat(digest)  # a purge may have deleted it since the listing
        if info is None:
            continue
        age = now - info.mtime
        grace = _age(grace_seconds)
        if digest in destroyed:
            problem, why = True, "a purge destroyed these bytes, so no grace period applies"
        elif info.mtime < cutoff:
            problem, why = True, f"older than the {grace} grace period"
        else:
            problem, why = False, f"within the {grace} grace period (an upload may be committing)"
        detail = f"{info.size} bytes written {_age(age)} ago, no row names it; {why}"
        findings.append(Finding("orphan_file", digest, problem, detail, info.size, age))

    missing = [d for d in sorted(rows.keys() - blobs.keys()) if not store.exists(d)]
    mismatched: list[Finding] = []
    for digest in sorted(rows.keys() & blobs.keys()):
        size = blobs[digest].size
        if size != rows[digest]:
            detail = (
                f"the row records {rows[digest]} bytes, the file has {size} (uploading the"
                " same file again replaces it)"
            )
            mismatched.append(Finding("size_mismatch", digest, True, detail, size))
        elif verify_digests:
            try:
                actual = store.hash(digest)
            except FileNotFoundError:
                continue  # deleted since the listing: its row went first
            if actual != digest:
                detail = (
                    f"the file's bytes hash to {actual} (damaged: move it aside and upload the"
                    " same file again)"
                )
                mismatched.append(Finding("digest_mismatch", digest, True, detail, size))

    if missing or mismatched:
        with factory() as s:
            # Rows a purge dropped since the first read are no disagreement.
            still = (
                set(s.scalars(select(Artifact.digest).where(Artifact.digest.in_(missing))))
                if missing
                else set()
            )
            refs = references(s, [*still, *(f.name for f in mismatched)])
        for digest in (d for d in missing if d in still):
            findings.append(_missing(digest, rows[digest], refs.get(digest, [])))
        for f in mismatched:
            f.referenced_by = refs.get(f.name, [])
            f.detail += f"; {_describe(f.referenced_by)}"
            findings.append(f)

    for staged in store.iter_staging():
        report.staging_files += 1
        if staged.mtime < cutoff:
            age = now - staged.mtime
            detail = (
                f"{staged.size} bytes last written {_age(age)} ago (left by an upload or job"
                " that was killed)"
            )
            findings.append(Finding("stale_staging", staged.name, True, detail, staged.size, age))

    if repair:
        for f in findings:
            if f.problem and f.kind in ("orphan_file", "stale_staging"):
                _repair(factory, store, f, None if f.name in destroyed else cutoff)
    return report


def sweep_store(
    factory: sessionmaker[Session], store: ArtifactStore, *, grace_seconds: float
) -> StoreReport:
    """The workers' periodic repair: :func:`check_store` with ``repair`` and without hashing;
    one log line per file deleted and per problem it cannot repair."""
    report = check_store(
        factory, store, grace_seconds=grace_seconds, repair=True, verify_digests=False
    )
    for f in report.findings:
        if f.repaired:
            _log.info("store sweep: %s", f.line())
        elif f.problem:
            _log.warning("store sweep: %s", f.line())
    return report


def references(session: Session, digests: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """What names each digest: model versions (by their weights) and datasets (train, test)."""
    wanted = sorted(set(digests))
    out: dict[str, list[dict[str, Any]]] = {}
    if not wanted:
        return out
    models = session.execute(
        select(
            ModelVersion.weights_digest,
            ModelVersion.id,
            ModelVersion.tenant_id,
            ModelVersion.version,
            ModelVersion.status,
        )
        .where(ModelVersion.weights_digest.in_(wanted))
        .order_by(ModelVersion.created_at)
    )
    for digest, model_id, tenant_id, version, status in models:
        out.setdefault(str(digest), []).append(
            {
                "kind": "model_version",
                "id": model_id,
                "tenant_id": tenant_id,
                "version": version,
                "status": str(status),
            }
        )
    datasets = session.execute(
        select(
            Dataset.id, Dataset.tenant_id, Dataset.name, Dataset.train_digest, Dataset.test_digest
        )
        .where(or_(Dataset.train_digest.in_(wanted), Dataset.test_digest.in_(wanted)))
        .order_by(Dataset.created_at)
    )
    for ds_id, tenant_id, name, train, test in datasets:
        for digest in sorted({train, test or train} & set(wanted)):
            role = "+".join(r for r, d in (("train", train), ("test", test)) if d == digest)
            out.setdefault(digest, []).append(
                {"kind": "dataset", "id": ds_id, "tenant_id": tenant_id, "name": name, "file": role}
            )
    return out


def _destroyed_digests(session: Session) -> set[str]:
    """Digests whose bytes a purge destroyed (a purged version's weights, an erased manifest)."""
    weights = select(ModelVersion.destroyed_digest).where(
        ModelVersion.destroyed_digest.is_not(None)
    )
    manifests = select(DatasetErasure.old_train_digest)
    return {d for d in session.scalars(weights) if d} | set(session.scalars(manifests))


def _missing(digest: str, size: int, refs: list[dict[str, Any]]) -> Finding:
    models = [r for r in refs if r["kind"] == "model_version"]
    if not refs:
        problem, why = False, "nothing references the row, so nothing is lost"
    elif len(models) == len(refs) and all(r["status"] in _GONE for r in models):
        problem = False
        why = (
            "expected: only retired or purged versions reference it, whose bytes are due to be"
            " destroyed"
        )
    else:
        problem = True
        why = "these bytes are lost: uploading the same file again puts them back"
    detail = f"the row records {size} bytes and there is no file; {_describe(refs)}; {why}"
    return Finding("missing_file", digest, problem, detail, size, referenced_by=refs)


def _describe(refs: list[dict[str, Any]]) -> str:
    if not refs:
        return "referenced by nothing"
    parts = []
    for r in refs:
        if r["kind"] == "model_version":
            parts.append(
                f"model {r['id']} v{r['version']} ({r['status']}, tenant {r['tenant_id']})"
            )
        else:
            parts.append(f"dataset {r['id']} {r['name']!r} {r['file']} (tenant {r['tenant_id']})")
    return "referenced by " + ", ".join(parts)


def _repair(
    factory: sessionmaker[Session], store: ArtifactStore, f: Finding, cutoff: float | None
) -> None:
    try:
        if f.kind == "stale_staging":
            store.delete_staging(f.name)
            outcome: Destroyed = "deleted"
        else:
            with session_scope(factory) as s:
                outcome = destroy_file(s, store, f.name, modified_before=cutoff, wait=False)
    except Exception as exc:
        f.detail += f"; could not delete it ({type(exc).__name__}: {exc})"
        return
    if outcome == "deleted":
        f.repaired = True
        f.detail += "; deleted"
        return
    f.problem = False
    f.detail += {
        "registered": "; an upload of the same bytes registered it meanwhile: kept",
        "busy": "; an upload of the same bytes holds its lock: kept",
        "recent": "; written again meanwhile: kept until its grace period ends",
    }[outcome]


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


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
    single-range ``Range`` support, or (a store configured for it) answer 307 to a short-lived
    presigned URL of the store, with the same ``ETag`` and ``Repr-Digest``; the client's
    ``Range`` then goes to the store."""
    info = store.stat(digest) if digest is not None else None
    if digest is None or info is None:
        raise NotFound("The artifact's bytes are not available.")
    size = info.size
    etag = f'"{digest}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Repr-Digest": content_digest_header(digest),
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    url = store.presigned_url(digest, filename)
    if url is not None:
        # The bytes come from the store itself; the digest headers stay here, so a client can
        # check what it fetched. The URL expires soon: nobody may cache this answer.
        headers["Location"] = url
        headers["Cache-Control"] = "no-store"
        return Response(status_code=307, headers=headers)
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
