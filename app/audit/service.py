"""The tamper-evident audit log: one hash chain per tenant.

Each event's hash covers its content and the previous event's hash, so editing, inserting or
removing any row breaks every later link; :func:`verify` names the first broken one. The table
is also append-only at the database level (triggers), so a tamper needs privileges that bypass it.
Someone with those privileges could still cut the newest events off, or rewrite a row and every
later hash; the signed checkpoints of :mod:`app.audit.checkpoints` catch both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import lock_for_write
from app.models import AuditEvent, Tenant
from app.models.base import utcnow

GENESIS = "0" * 64


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _ts(at: datetime) -> str:
    # SQLite hands datetimes back without a zone; every stored time is UTC.
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(ev: AuditEvent) -> str:
    body = {
        "tenant_id": ev.tenant_id,
        "seq": ev.seq,
        "at": _ts(ev.at),
        "actor": ev.actor,
        "action": ev.action,
        "subject_type": ev.subject_type,
        "subject_id": ev.subject_id,
        "payload_digest": ev.payload_digest,
        "prev_hash": ev.prev_hash,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def record(
    session: Session,
    *,
    tenant_id: str,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    payload: Any = None,
) -> AuditEvent:
    """Append an event in the caller's transaction (it commits or rolls back with the change)."""
    # Lock the tenant row so concurrent writers extend the chain one at a time.
    lock_for_write(session)
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    last = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    # Stored as its canonical JSON reads back (datetimes as strings, tuples as lists), so that
    # the digest is always the digest of the stored payload.
    stored = None if payload is None else json.loads(canonical_json(payload))
    now = utcnow()
    ev = AuditEvent(
        tenant_id=tenant_id,
        seq=(last.seq + 1) if last else 1,
        at=now,
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        payload_digest=digest(stored),
        payload=stored,
        prev_hash=last.hash if last else GENESIS,
    )
    ev.hash = event_hash(ev)
    session.add(ev)
    session.flush()
    return ev


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    first_broken_id: int | None = None
    reason: str | None = None
    # The hash of the last event checked (seq == checked); GENESIS for an empty chain.
    head_hash: str | None = None


def _broken_link(ev: AuditEvent, expected_seq: int, prev: str) -> str | None:
    if ev.seq != expected_seq:
        return f"sequence jumps from {expected_seq - 1} to {ev.seq} (a row was removed)"
    if ev.prev_hash != prev:
        return "prev_hash does not match the previous event's hash"
    if event_hash(ev) != ev.hash:
        return "the event's content does not match its hash (the row was altered)"
    if ev.payload is not None and digest(ev.payload) != ev.payload_digest:
        return "the event's payload does not match its payload_digest (the row was altered)"
    return None


def verify(
    session: Session, tenant_id: str, batch: int = 1000, through: int | None = None
) -> ChainReport:
    """Recompute the tenant's chain from the start; report the first broken link.

    With ``through``, stop at the event with that ``seq`` and report its recomputed hash as
    ``head_hash``; a chain shorter than that is broken (its newest events were removed). A
    checkpoint's holder compares that hash with the signed one (:mod:`app.audit.checkpoints`).
    """
    prev, expected_seq, checked = GENESIS, 1, 0
    while through is None or checked < through:
        limit = batch if through is None else min(batch, through - checked)
        rows = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.tenant_id == tenant_id, AuditEvent.seq > checked)
                .order_by(AuditEvent.seq)
                .limit(limit)
            )
        )
        if not rows:
            break
        for ev in rows:
            reason = _broken_link(ev, expected_seq, prev)
            if reason:
                return ChainReport(False, checked, ev.seq, ev.id, reason)
            prev, expected_seq, checked = ev.hash, expected_seq + 1, checked + 1
    if through is not None and checked < through:
        return ChainReport(
            False,
            checked,
            checked + 1,
            None,
            f"the chain has {checked} events, fewer than {through}: its newest events were removed",
        )
    return ChainReport(ok=True, checked=checked, head_hash=prev)
