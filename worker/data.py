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


def load_manifest(
    store: ArtifactStore,
    ref: DatasetRef,
    *,
    num_classes: int,
    mean: list[float],
    std: list[float],
) -> tuple[ArrayDataset, ArrayDataset | None]:
    """Train and test splits, normalised with the model's own statistics. Files are safetensors,
    already checked at upload; nothing is unpickled."""
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

    ids = train_raw.get("sample_ids")
    train = _ds(train_raw, ids, "train")
    test = None
    if test_raw is not None:
        test = _ds(test_raw, np.arange(len(test_raw["labels"]), dtype=np.int64), "test")
    return train, test
