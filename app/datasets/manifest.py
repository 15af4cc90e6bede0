"""Read and check an uploaded training manifest (safetensors, no torch).

Layout of a dataset file:
- ``images``: uint8, N x C x H x W or N x H x W (grey)
- ``labels``: int64, N, class indices from 0
- ``sample_ids``: int64, N, unique (optional; default 0..N-1)
- ``test_images`` / ``test_labels``: an embedded test split (optional); or a separate test file
  holding ``images`` and ``labels``.
- ``validation_images`` / ``validation_labels``: the manifest's own validation split (optional).
  Jobs tune on it (SFR-on's calibration) and report on the whole test split; without it they
  carve a seeded 20% of the test split out for tuning and report on the other 80%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.core.digests import sample_set_digest
from app.core.errors import InvalidArtifact
from app.core.safetensors_check import SafetensorsError, SafetensorsFile, inspect

TRAIN_TENSORS = {
    "images",
    "labels",
    "sample_ids",
    "test_images",
    "test_labels",
    "validation_images",
    "validation_labels",
}
TEST_TENSORS = {"images", "labels"}


@dataclass(frozen=True)
class SplitSummary:
    count: int
    image_shape: tuple[int, int, int]
    class_counts: dict[int, int]


@dataclass(frozen=True)
class ManifestSummary:
    train: SplitSummary
    test: SplitSummary | None
    sample_ids_digest: str
    embedded_test: bool
    validation: SplitSummary | None = None

    @property
    def classes(self) -> list[int]:
        return sorted(self.train.class_counts)

    @property
    def num_classes(self) -> int:
        return max(self.classes) + 1 if self.classes else 0


def _refuse(part: str, message: str, field: str | None = None) -> InvalidArtifact:
    return InvalidArtifact(
        f"{part}: {message}",
        errors=[{"field": f"body.{part}" + (f".{field}" if field else ""), "message": message}],
    )


def _open(path: Path, part: str, max_header_bytes: int) -> SafetensorsFile:
    try:
        return inspect(path, max_header_bytes=max_header_bytes)
    except SafetensorsError as exc:
        raise _refuse(part, str(exc)) from None


def _split(
    st: SafetensorsFile, part: str, images: str, labels: str
) -> tuple[SplitSummary, NDArray[np.int64]]:
    for name in (images, labels):
        if name not in st.tensors:
            raise _refuse(part, f"missing tensor {name!r}", name)
    img, lab = st.tensors[images], st.tensors[labels]
    if img.dtype != "U8":
        raise _refuse(part, f"tensor {images!r} must be uint8, got {img.dtype}", images)
    if len(img.shape) not in (3, 4):
        raise _refuse(
            part, f"tensor {images!r} must be N x H x W or N x C x H x W, got {img.shape}", images
        )
    if lab.dtype != "I64" or len(lab.shape) != 1:
        raise _refuse(
            part,
            f"tensor {labels!r} must be a 1-d int64 tensor, got {lab.dtype} {lab.shape}",
            labels,
        )
    n = img.shape[0]
    if lab.shape[0] != n:
        raise _refuse(part, f"{n} images but {lab.shape[0]} labels; the counts must match", labels)
    if n == 0:
        raise _refuse(part, "the split is empty", images)
    shape = (1, *img.shape[1:]) if len(img.shape) == 3 else img.shape[1:]
    c, h, w = (int(d) for d in shape)
    if min(c, h, w) <= 0:
        raise _refuse(part, f"image shape {shape} has an empty dimension", images)
    values = st.read(labels).astype(np.int64, copy=False)
    if values.min() < 0:
        raise _refuse(part, "labels must be class indices >= 0", labels)
    if values.max() >= 100_000:
        raise _refuse(part, "labels must be class indices below 100000", labels)
    uniq, counts = np.unique(values, return_counts=True)
    summary = SplitSummary(
        count=int(n),
        image_shape=(c, h, w),
        class_counts={int(k): int(v) for k, v in zip(uniq, counts, strict=True)},
    )
    return summary, values


def summarize(
    train_path: Path, test_path: Path | None, *, max_header_bytes: int = 16 * 1024**2
) -> ManifestSummary:
    """Check a dataset upload and describe it; raises :class:`InvalidArtifact` naming the part
    and tensor at fault."""
    st = _open(train_path, "train", max_header_bytes)
    unknown = sorted(set(st.tensors) - TRAIN_TENSORS)
    if unknown:
        raise _refuse("train", f"unexpected tensors {unknown}; allowed: {sorted(TRAIN_TENSORS)}")
    train, _ = _split(st, "train", "images", "labels")

    if "sample_ids" in st.tensors:
        info = st.tensors["sample_ids"]
        if info.dtype != "I64" or info.shape != (train.count,):
            raise _refuse(
                "train",
                f"tensor 'sample_ids' must be int64 of length {train.count}, got"
                f" {info.dtype} {list(info.shape)}",
                "sample_ids",
            )
        ids = st.read("sample_ids").astype(np.int64, copy=False)
        uniq, counts = np.unique(ids, return_counts=True)
        dupes = uniq[counts > 1]
        if dupes.size:
            shown = [int(x) for x in dupes[:20]]
            raise InvalidArtifact(
                f"train: sample IDs must be unique; {dupes.size} are repeated, e.g. {shown}",
                errors=[{"field": "body.train.sample_ids", "message": "duplicate sample IDs"}],
                duplicate_sample_ids=shown,
            )
    else:
        ids = np.arange(train.count, dtype=np.int64)

    embedded = "test_images" in st.tensors or "test_labels" in st.tensors
    test: SplitSummary | None = None
    if embedded and test_path is not None:
        raise _refuse("test", "the train file already embeds a test split; send one, not both")
    if embedded:
        test, _ = _split(st, "train", "test_images", "test_labels")
    elif test_path is not None:
        tst = _open(test_path, "test", max_header_bytes)
        unknown = sorted(set(tst.tensors) - TEST_TENSORS)
        if unknown:
            raise _refuse("test", f"unexpected tensors {unknown}; allowed: {sorted(TEST_TENSORS)}")
        test, _ = _split(tst, "test", "images", "labels")
    if test is not None and test.image_shape != train.image_shape:
        raise _refuse(
            "test",
            f"test images are {test.image_shape} but train images are {train.image_shape}",
            "images",
        )
    validation: SplitSummary | None = None
    if "validation_images" in st.tensors or "validation_labels" in st.tensors:
        if test is None:
            raise _refuse("train", "a validation split needs a test split beside it")
        validation, _ = _split(st, "train", "validation_images", "validation_labels")
        if validation.image_shape != train.image_shape:
            raise _refuse(
                "train",
                f"validation images are {validation.image_shape} but train images are"
                f" {train.image_shape}",
                "validation_images",
            )
    return ManifestSummary(train, test, sample_set_digest(ids), embedded, validation)


def read_sample_ids(st: SafetensorsFile) -> NDArray[Any]:
    if "sample_ids" in st.tensors:
        return st.read("sample_ids")
    return np.arange(st.tensors["labels"].shape[0], dtype=np.int64)


def without_samples(path: Path, erase: NDArray[np.int64]) -> bytes:
    """The manifest at ``path`` rewritten without the training samples ``erase`` (safetensors
    bytes). The test and validation splits are kept as they are; sample IDs are written out
    explicitly, since the default 0..N-1 would renumber the samples that remain."""
    from safetensors.numpy import load_file, save

    tensors = load_file(str(path))
    n = len(tensors["labels"])
    ids = tensors.get("sample_ids", np.arange(n, dtype=np.int64)).astype(np.int64)
    keep = ~np.isin(ids, erase)
    out = {
        name: value for name, value in tensors.items() if name.startswith(("test_", "validation_"))
    }
    out |= {
        "images": np.ascontiguousarray(tensors["images"][keep]),
        "labels": np.ascontiguousarray(tensors["labels"][keep]),
        "sample_ids": np.ascontiguousarray(ids[keep]),
    }
    return bytes(save(out))
