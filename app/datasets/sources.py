"""Datasets that ship offline, turned into Lethe's manifest format (numpy only, no torch)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import save_file

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> NDArray[Any]:
    """Read an IDX file (MNIST format), gzipped or not: a big-endian magic with the element type
    and rank, one uint32 per dimension, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file")
    rank = raw[3]
    dims = struct.unpack(f">{rank}I", raw[4 : 4 + 4 * rank])
    data: NDArray[Any] = np.frombuffer(
        raw, dtype=np.dtype(_IDX_DTYPES[raw[2]]), offset=4 + 4 * rank
    )
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(
        f"{directory} has no {stem}[.gz]; install Debian's dataset-fashion-mnist or pass --path"
    )


def fashion_mnist(directory: Path = FASHION_MNIST_DIR) -> dict[str, NDArray[Any]]:
    """Fashion-MNIST's four IDX files as a manifest with an embedded test split."""
    return {
        "images": read_idx(_find(directory, "train-images-idx3-ubyte")).astype(np.uint8),
        "labels": read_idx(_find(directory, "train-labels-idx1-ubyte")).astype(np.int64),
        "test_images": read_idx(_find(directory, "t10k-images-idx3-ubyte")).astype(np.uint8),
        "test_labels": read_idx(_find(directory, "t10k-labels-idx1-ubyte")).astype(np.int64),
    }


def digits(test_fraction: float = 0.2, seed: int = 0) -> dict[str, NDArray[Any]]:
    """scikit-learn's 8x8 digits (values 0..16, scaled to 0..255), split train/test by a fixed,
    stratified-enough permutation."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # the API-only install has no scikit-learn
        raise RuntimeError("digits needs scikit-learn: pip install 'lethe[worker]'") from exc
    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = round(len(labels) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return {
        "images": images[train][:, None],
        "labels": labels[train],
        "sample_ids": train.astype(np.int64),
        "test_images": images[test][:, None],
        "test_labels": labels[test],
    }


def write_manifest(arrays: dict[str, NDArray[Any]], path: Path) -> Path:
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    return path
