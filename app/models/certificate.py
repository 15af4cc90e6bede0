from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class Certificate(IdMixin, CreatedMixin, Base):
    """A signed in-toto statement (DSSE envelope) about one unlearned model version."""

    __tablename__ = "certificates"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("model_versions.id"), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"))
    key_id: Mapped[str] = mapped_column(ForeignKey("signing_keys.key_id"))
    verdict: Mapped[str] = mapped_column(String(8))  # pass | fail
    envelope: Mapped[dict[str, Any]]


class SigningKey(Base):
    """Public half of a certificate signing key; private keys never enter the database."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16), default="ed25519")
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None] = mapped_column(default=None)
