"""Which sample IDs a registered dataset holds, and their labels (numpy, read once per file)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from app.core.safetensors_check import inspect
from app.core.storage import ArtifactStore
from app.datasets.manifest import read_sample_ids
from app.models import Dataset


@dataclass(frozen=True)
class SampleIndex:
    ids: NDArray[np.int64]  # sorted
    labels: NDArray[np.int64]  # aligned with ``ids``

    def contains(self, wanted: NDArray[np.int64]) -> NDArray[np.bool_]:
        pos = np.searchsorted(self.ids, wanted)
        pos = np.clip(pos, 0, len(self.ids) - 1)
        return np.asarray(self.ids[pos] == wanted)

    def label_of(self, sample_id: int) -> int | None:
        pos = int(np.searchsorted(self.ids, sample_id))
        if pos < len(self.ids) and int(self.ids[pos]) == sample_id:
            return int(self.labels[pos])
        return None

    def page(
        self, *, after: int | None, limit: int, label: int | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Up to ``limit`` IDs greater than ``after`` (and their labels), in ID order."""
        start = 0 if after is None else int(np.searchsorted(self.ids, after, side="right"))
        ids, labels = self.ids[start:], self.labels[start:]
        if label is not None:
            keep = labels == label
            ids, labels = ids[keep], labels[keep]
        return ids[:limit], labels[:limit]

    def ids_of_classes(self, classes: list[int]) -> NDArray[np.int64]:
        return self.ids[np.isin(self.labels, np.asarray(classes, dtype=np.int64))]


@functools.lru_cache(maxsize=16)
def _index(path: str, digest: str) -> SampleIndex:
    st = inspect(Path(path))
    ids = read_sample_ids(st).astype(np.int64)
    labels = st.read("labels").astype(np.int64)
    order = np.argsort(ids, kind="stable")
    return SampleIndex(ids[order], labels[order])


def sample_index(store: ArtifactStore, ds: Dataset) -> SampleIndex:
    # Content-addressed files never change, so the digest makes the cache key safe.
    with store.local_file(ds.train_digest) as path:
        return _index(str(path), ds.train_digest)
