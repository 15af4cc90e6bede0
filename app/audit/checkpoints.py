"""Signed checkpoints of each tenant's audit chain: the chain's size and head hash, as a C2SP
signed note (the "checkpoint" shape transparency logs publish, https://c2sp.org/tlog-checkpoint).

The hash chain alone shows a changed row, but not a chain cut short or rewritten from some row
on with every later hash recomputed: both leave a chain that checks. A checkpoint someone keeps
(a certificate embeds one; the sweeper issues one whenever the head moved) pins the head. A
chain that later has fewer events, or another hash at that position, contradicts the signature.

A note looks like this (the body's lines, a blank line, then one signature line)::

    lethe.audit/6f1c0e9a-...
    42
    3q2+7w8Vb0Gm3f1Nn8m5o1bS1rZB0U7o0+Y0n3J2o4k=
    time 2026-12-01T09:00:00.123456Z

    — lethe.audit/6f1c0e9a-... AbCd...base64(key hash[4] + Ed25519 signature[64])...

- line 1, the origin: ``lethe.audit/<tenant_id>``; it is also the signing key's name;
- line 2, the size: the number of events, which is the head's ``seq``;
- line 3, the head event's hash (the 32 bytes of the hex ``hash``), standard base64;
- line 4, an extension line: when the checkpoint was issued (RFC 3339, UTC).

The signature is Ed25519 over the body including its final newline, by the service's signing
key (the one that signs certificates, published at ``/v1/signing-keys``). The 4-byte key hash is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]``, as the signed-note spec recommends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.audit.service import GENESIS
from app.certificates.signing import Signer, public_pem
from app.core.db import lock_for_write
from app.models import AuditCheckpoint, AuditEvent, SigningKey, Tenant
from app.models.base import utcnow

if TYPE_CHECKING:
    from app.core.config import Settings

log = logging.getLogger(__name__)

ORIGIN_PREFIX = "lethe.audit/"
# How often a worker's sweeper issues checkpoints for the tenants whose chain moved.
INTERVAL_SECONDS = 300.0
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space
ALG_ED25519 = b"\x01"


def origin_of(tenant_id: str) -> str:
    return ORIGIN_PREFIX + tenant_id


def _ts(at: datetime) -> str:
    if at.tzinfo is None:  # SQLite hands datetimes back without a zone; all are UTC
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def note_key_hash(name: str, public: Ed25519PublicKey) -> bytes:
    """The signed-note key ID: the first 4 bytes of SHA-256(name, newline, 0x01, raw key)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + raw).digest()[:4]


def checkpoint_body(origin: str, size: int, head_hash: str, issued_at: datetime) -> str:
    root = base64.b64encode(bytes.fromhex(head_hash)).decode()
    return f"{origin}\n{size}\n{root}\ntime {_ts(issued_at)}\n"


def sign_note(signer: Signer, name: str, body: str) -> str:
    sig = signer.sign_bytes(body.encode())
    line = base64.b64encode(note_key_hash(name, signer.public) + sig).decode()
    return f"{body}\n{SIGNATURE_PREFIX}{name} {line}\n"


def to_json(cp: AuditCheckpoint) -> dict[str, Any]:
    """The checkpoint as the API serves it and certificates embed it; only ``note`` is signed,
    the other fields repeat what it says for convenience."""
    return {
        "origin": origin_of(cp.tenant_id),
        "size": cp.size,
        "head_hash": cp.head_hash,
        "issued_at": _ts(cp.issued_at),
        "key_id": cp.key_id,
        "note": cp.note,
    }


def _publish_key(session: Session, signer: Signer) -> None:
    # What app.certificates.service.register_key does; repeated here so that the certificate
    # service can call issue() without the two domains importing each other.
    if session.get(SigningKey, signer.key_id) is None:
        session.add(
            SigningKey(
                key_id=signer.key_id, public_key_pem=public_pem(signer.public), created_at=utcnow()
            )
        )
        session.flush()


def issue(session: Session, signer: Signer, tenant_id: str) -> dict[str, Any]:
    """Sign and record a checkpoint of the tenant's chain as it stands in this transaction (the
    caller commits), and return it as JSON: ``origin``, ``size``, ``head_hash`` (hex, as the
    events show it), ``issued_at``, ``key_id`` (the service's key ID, as ``/v1/signing-keys``
    lists it) and ``note`` (the signed note). Issuing records no audit event, so the checkpoint
    is still the head when the transaction commits (unless the caller records more after it).
    """
    # The same lock audit.record takes: the head cannot move while it is being signed.
    lock_for_write(session)
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    head = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    size, head_hash = (head.seq, head.hash) if head else (0, GENESIS)
    _publish_key(session, signer)
    issued_at = utcnow()
    origin = origin_of(tenant_id)
    cp = AuditCheckpoint(
        tenant_id=tenant_id,
        size=size,
        head_hash=head_hash,
        issued_at=issued_at,
        key_id=signer.key_id,
        note=sign_note(signer, origin, checkpoint_body(origin, size, head_hash, issued_at)),
    )
    session.add(cp)
    session.flush()
    return to_json(cp)


def latest(session: Session, tenant_id: str) -> AuditCheckpoint | None:
    return session.scalars(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.tenant_id == tenant_id)
        .order_by(AuditCheckpoint.id.desc())
        .limit(1)
    ).first()


def page(
    session: Session, tenant_id: str, *, before_id: int | None, limit: int
) -> list[AuditCheckpoint]:
    """Newest first, starting below ``before_id``; one extra row tells whether more exist."""
    stmt = select(AuditCheckpoint).where(AuditCheckpoint.tenant_id == tenant_id)
    if before_id is not None:
        stmt = stmt.where(AuditCheckpoint.id < before_id)
    return list(session.scalars(stmt.order_by(AuditCheckpoint.id.desc()).limit(limit + 1)))


def issue_due_checkpoints(
    factory: sessionmaker[Session], settings: Settings, signer: Signer | None = None
) -> int:
    """Issue a checkpoint for every tenant whose chain grew since its last checkpoint, each in
    its own transaction; return how many were issued. Several workers may run this at once:
    the tenant lock serialises them and the second finds nothing to do."""
    from app.certificates.service import signer_for
    from app.core.db import session_scope

    signer = signer or signer_for(settings)
    with session_scope(factory) as s:
        heads = {
            t: n
            for t, n in s.execute(
                select(AuditEvent.tenant_id, func.max(AuditEvent.seq)).group_by(
                    AuditEvent.tenant_id
                )
            )
        }
        signed = {
            t: n
            for t, n in s.execute(
                select(AuditCheckpoint.tenant_id, func.max(AuditCheckpoint.size)).group_by(
                    AuditCheckpoint.tenant_id
                )
            )
        }
    due = sorted(t for t, size in heads.items() if size > (signed.get(t) or 0))
    issued = 0
    for tenant_id in due:
        with session_scope(factory) as s:
            lock_for_write(s)
            s.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
            last = latest(s, tenant_id)
            head = s.scalar(
                select(func.max(AuditEvent.seq)).where(AuditEvent.tenant_id == tenant_id)
            )
            if last is not None and head is not None and last.size >= head:
                continue  # another worker got here first
            issue(s, signer, tenant_id)
            issued += 1
    if issued:
        log.info("audit checkpoints issued: %d", issued)
    return issued


# -- offline verification ---------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointCheck:
    """What a signed note says, and whether a known key signed it."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    origin: str | None = None
    size: int | None = None
    head_hash: str | None = None
    issued_at: str | None = None
    key_id: str | None = None

    @property
    def tenant_id(self) -> str | None:
        if self.origin and self.origin.startswith(ORIGIN_PREFIX):
            return self.origin[len(ORIGIN_PREFIX) :]
        return None


def _parse_body(body: str) -> tuple[str, int, str, str | None]:
    lines = body.split("\n")[:-1]  # the body ends with a newline
    if len(lines) < 3:
        raise ValueError("the checkpoint body has fewer than 3 lines")
    origin, size_text, root = lines[0], lines[1], lines[2]
    if not origin or not size_text.isdigit() or (size_text != "0" and size_text[0] == "0"):
        raise ValueError("the checkpoint's origin or size line is malformed")
    raw = base64.b64decode(root, validate=True)
    if len(raw) != 32:
        raise ValueError("the checkpoint's head hash is not 32 bytes")
    issued = next((ln[5:] for ln in lines[3:] if ln.startswith("time ")), None)
    return origin, int(size_text), raw.hex(), issued


def verify_note(note: str, public_keys: dict[str, Ed25519PublicKey]) -> CheckpointCheck:
    """Check a checkpoint note offline against the service's public keys (by key ID, as
    ``/v1/signing-keys`` lists them): it must parse, and one of its signature lines, under the
    origin's name, must be a valid signature by one of the keys. Every failure is explained."""
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        return CheckpointCheck(False, ["not a signed note (no blank line before signatures)"])
    body, sig_lines = note[: split + 1], note[split + 2 :].split("\n")[:-1]
    try:
        origin, size, head_hash, issued_at = _parse_body(body)
    except (ValueError, binascii.Error) as exc:
        return CheckpointCheck(False, [f"the checkpoint body does not parse: {exc}"])
    problems: list[str] = []
    for line in sig_lines:
        parts = line.removeprefix(SIGNATURE_PREFIX).split(" ")
        if not line.startswith(SIGNATURE_PREFIX) or len(parts) != 2:
            problems.append(f"malformed signature line {line[:60]!r}")
            continue
        name, b64 = parts
        try:
            blob = base64.b64decode(b64, validate=True)
        except binascii.Error:
            problems.append(f"signature by {name} is not base64")
            continue
        if name != origin or len(blob) != 4 + 64:
            continue  # someone else's signature (a witness's, say), or another algorithm
        for key_id, public in public_keys.items():
            if note_key_hash(name, public) != blob[:4]:
                continue
            try:
                public.verify(blob[4:], body.encode())
            except InvalidSignature:
                problems.append(f"the signature by key {key_id} does not match the note's text")
                return CheckpointCheck(False, problems, origin, size, head_hash, issued_at)
            return CheckpointCheck(True, [], origin, size, head_hash, issued_at, key_id)
    problems.append(
        f"no signature under the name {origin!r} by a known key (have {sorted(public_keys)})"
    )
    return CheckpointCheck(False, problems, origin, size, head_hash, issued_at)
