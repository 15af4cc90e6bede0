from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin


class Artifact(CreatedMixin, Base):
    """A stored blob, addressed by the SHA-256 of its bytes (shared by every row that uses it).

    A committed row always has its file: rows and files are created and deleted only under the
    digest's lock, by :mod:`app.artifacts.service` (its docstring has the argument)."""

    __tablename__ = "artifacts"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")
