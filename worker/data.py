"""Loading a registered dataset's files from the artifact store into the engine's format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from app.core.storage import ArtifactStore
from app.unlearning.data import ArrayDataset, make_dataset


@dataclass(frozen=True)
class DatasetRef:
    train_digest: str
    test_digest: str | None
    num_classes: int


@dataclass(frozen=True)
class Splits:
    train: ArrayDataset
    test: ArrayDataset | None
    # The manifest's own validation split (``validation_images``/``validation_labels``).
    validation: ArrayDataset | None


def load_splits(
    store: ArtifactStore,
    ref: DatasetRef,
    *,
    num_classes: int,
    mean: list[float],
    std: list[float],
) -> Splits:
    """Train, test and (when the manifest has one) validation splits, normalised with the
    model's own statistics. Files are safetensors, already checked at upload; nothing is
    unpickled."""
    with store.local_file(ref.train_digest) as path:
        train_raw: dict[str, Any] = load_file(str(path))
    test_raw: dict[str, Any] | None = None
    if "test_images" in train_raw:
        test_raw = {"images": train_raw["test_images"], "labels": train_raw["test_labels"]}
    elif ref.test_digest is not None:
        with store.local_file(ref.test_digest) as path:
            test_raw = load_file(str(path))

    def _ds(raw: dict[str, Any], ids: Any, name: str) -> ArrayDataset:
        return make_dataset(
            raw["images"],
            raw["labels"],
            num_classes=num_classes,
            sample_ids=ids,
            mean=mean,
            std=std,
            name=name,
        )

    def _indexed(raw: dict[str, Any], name: str) -> ArrayDataset:
        return _ds(raw, np.arange(len(raw["labels"]), dtype=np.int64), name)

    train = _ds(train_raw, train_raw.get("sample_ids"), "train")
    test = _indexed(test_raw, "test") if test_raw is not None else None
    validation = None
    if "validation_images" in train_raw:
        validation = _indexed(
            {"images": train_raw["validation_images"], "labels": train_raw["validation_labels"]},
            "validation",
        )
    return Splits(train, test, validation)


def load_manifest(
    store: ArtifactStore,
    ref: DatasetRef,
    *,
    num_classes: int,
    mean: list[float],
    std: list[float],
) -> tuple[ArrayDataset, ArrayDataset | None]:
    """Train and test splits (see :func:`load_splits`)."""
    splits = load_splits(store, ref, num_classes=num_classes, mean=mean, std=std)
    return splits.train, splits.test
