"""Opaque, signed keyset cursors: ``(created_at, id)`` of the last row seen, newest first."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Query
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from app.core.errors import InvalidInput

S = TypeVar("S", bound=Select[Any])

# The `limit` query parameter of the keyset-paginated lists (datasets, models, requests).
PageLimit = Annotated[int, Query(ge=1, le=200)]


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: str


def _sign(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()[:12]


def encode_cursor(secret: str, created_at: datetime, row_id: str) -> str:
    payload = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_sign(secret, payload) + payload).decode().rstrip("=")


def decode_cursor(secret: str, token: str) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        sig, payload = raw[:12], raw[12:]
        if not hmac.compare_digest(sig, _sign(secret, payload)):
            raise ValueError("bad signature")
        created, row_id = json.loads(payload)
        return Cursor(datetime.fromisoformat(created), str(row_id))
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InvalidInput(
            "The cursor is not valid; pass back the next_cursor of a previous page unchanged.",
            errors=[{"field": "query.cursor", "message": "invalid cursor", "type": "cursor"}],
        ) from None


def apply_keyset(
    stmt: S,
    created_col: InstrumentedAttribute[datetime],
    id_col: InstrumentedAttribute[str],
    cursor: Cursor | None,
    limit: int,
) -> S:
    """Order newest first and start after ``cursor``; fetch one extra row to know if more exist."""
    if cursor is not None:
        stmt = stmt.where(
            or_(
                created_col < cursor.created_at,
                and_(created_col == cursor.created_at, id_col < cursor.id),
            )
        )
    return stmt.order_by(created_col.desc(), id_col.desc()).limit(limit + 1)


def finish_page(rows: list[Any], limit: int, secret: str) -> tuple[list[Any], str | None]:
    """Trim the extra row fetched by :func:`apply_keyset` and build the next cursor."""
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(secret, rows[-1].created_at, rows[-1].id) if more and rows else None
    return rows, nxt
