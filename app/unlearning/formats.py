"""Readers for datasets that ship offline, in numpy only (no torch), so that both the engine and
the API's ``lethe datasets import`` use the same code. Nothing here unpickles anything."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> NDArray[np.uint8]:
    """Read an IDX file (MNIST format, gzip-compressed or plain) of unsigned bytes: a big-endian
    header with the element type and rank, one uint32 per dimension, then the data."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4:
        raise ValueError(f"{path.name}: not an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path.name}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path.name}: size does not match its header")
    return data.reshape(shape)


def find_idx(folder: Path, stem: str) -> Path:
    for name in (
        f"{stem}.gz",
        stem,
        stem.replace("-idx", ".idx") + ".gz",
        stem.replace("-idx", ".idx"),
    ):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{stem}[.gz] not found in {folder}; install Debian's dataset-fashion-mnist or pass"
        " the folder that holds the four IDX files"
    )


def fashion_mnist_arrays(folder: Path = FASHION_MNIST_DIR) -> dict[str, NDArray[np.generic]]:
    """The four Fashion-MNIST (or MNIST) IDX files: images (N, 28, 28) uint8, labels int64."""
    return {
        "images": read_idx(find_idx(folder, "train-images-idx3-ubyte")),
        "labels": read_idx(find_idx(folder, "train-labels-idx1-ubyte")).astype(np.int64),
        "test_images": read_idx(find_idx(folder, "t10k-images-idx3-ubyte")),
        "test_labels": read_idx(find_idx(folder, "t10k-labels-idx1-ubyte")).astype(np.int64),
    }
