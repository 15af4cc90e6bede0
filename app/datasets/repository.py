from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.pagination import Cursor, apply_keyset
from app.models import Dataset


def get(session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    ds = session.get(Dataset, dataset_id)
    # Another tenant's dataset is indistinguishable from a missing one.
    return ds if ds is not None and ds.tenant_id == tenant_id else None


def page(
    session: Session, tenant_id: str, cursor: Cursor | None, limit: int, name: str | None
) -> list[Dataset]:
    stmt = select(Dataset).where(Dataset.tenant_id == tenant_id)
    if name is not None:
        stmt = stmt.where(Dataset.name == name)
    return list(session.scalars(apply_keyset(stmt, Dataset.created_at, Dataset.id, cursor, limit)))
