from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, CreatedMixin, IdMixin


class Dataset(IdMixin, CreatedMixin, Base):
    """A registered training manifest: the exact samples a model was trained on."""

    __tablename__ = "datasets"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(50), default="upload")
    train_digest: Mapped[str] = mapped_column(ForeignKey("artifacts.digest"))
    # A test split may live in its own file or inside the train file (then both digests match).
    test_digest: Mapped[str | None] = mapped_column(ForeignKey("artifacts.digest"), default=None)
    num_samples: Mapped[int]
    num_test_samples: Mapped[int] = mapped_column(default=0)
    # The manifest's own validation split (embedded in the train file), or 0: jobs then carve
    # one out of the test split and say so.
    num_validation_samples: Mapped[int] = mapped_column(default=0, server_default="0")
    image_shape: Mapped[list[Any]]
    num_classes: Mapped[int]
    classes: Mapped[list[Any]]
    class_counts: Mapped[dict[str, Any]]
    test_class_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # SHA-256 over the sorted sample IDs: lets certificates name the manifest exactly.
    sample_ids_digest: Mapped[str] = mapped_column(String(64))
    # Samples erased from the manifest so far (see DatasetErasure), and its current version.
    erased_count: Mapped[int] = mapped_column(default=0)
    manifest_version: Mapped[int] = mapped_column(default=1)
