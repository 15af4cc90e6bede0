from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class Tenant(IdMixin, CreatedMixin, Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Per-tenant policy switches (e.g. fall back to retraining when a certificate fails).
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
