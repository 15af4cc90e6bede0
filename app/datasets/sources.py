"""Datasets that ship offline, turned into Lethe's manifest format (numpy only, no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import save_file

from app.unlearning.formats import FASHION_MNIST_DIR, fashion_mnist_arrays

__all__ = ["FASHION_MNIST_DIR", "digits", "fashion_mnist", "write_manifest"]


def fashion_mnist(directory: Path = FASHION_MNIST_DIR) -> dict[str, NDArray[Any]]:
    """Fashion-MNIST's four IDX files as a manifest with an embedded test split."""
    return dict(fashion_mnist_arrays(directory))


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
