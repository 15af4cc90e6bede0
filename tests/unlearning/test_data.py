from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from app.unlearning.data import (
    ArrayDataset,
    BatchStream,
    DeviceData,
    augment_batch,
    build_split,
    load_cifar10,
    load_fashion_mnist,
    make_dataset,
)

CPU = torch.device("cpu")


def test_class_split(digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    train, test = digits
    split = build_split(train, test, forget_classes=[2, 5])
    assert split.kind == "class" and split.forget_classes == (2, 5)
    assert set(np.unique(split.forget.labels)) == {2, 5}
    assert not np.isin(split.remain.labels, [2, 5]).any()
    assert len(split.forget) + len(split.remain) == len(train)
    # validation carved out of test, disjoint from the reported test set
    assert not np.intersect1d(split.validation.sample_ids, split.test.sample_ids).size
    assert len(split.validation) + len(split.test) == len(test)


def test_sample_split_with_exclusions(digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    train, test = digits
    forget = train.sample_ids[:10]
    excluded = train.sample_ids[10:15]
    split = build_split(train, test, forget_ids=forget, exclude_ids=excluded)
    assert split.kind == "sample"
    assert set(split.forget.sample_ids) == set(forget)
    assert not np.isin(excluded, split.remain.sample_ids).any()
    assert len(split.remain) == len(train) - 15
    with pytest.raises(ValueError):
        build_split(train, test, forget_ids=[10**9])
    with pytest.raises(ValueError):
        build_split(train, test, forget_ids=forget, forget_classes=[1])


def test_stream_reshuffles_every_pass(digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    train, _ = digits
    small = train.take(np.arange(64))
    dev = DeviceData(small, CPU)
    # tag each sample with its position through the label tensor
    dev.labels = torch.arange(64)
    gen = torch.Generator().manual_seed(0)
    stream = BatchStream(dev, 32, gen)
    passes = [torch.cat([stream.next()[1] for _ in range(2)]) for _ in range(3)]
    for p in passes:
        assert sorted(p.tolist()) == list(range(64))
    assert not torch.equal(passes[0], passes[1])


def test_normalisation_and_augmentation(digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    train, _ = digits
    dev = DeviceData(train, CPU)
    x, _ = dev.batch(torch.arange(len(train)), generator=None)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2
    img = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    img[:, :, 4, 4] = 255
    gen = torch.Generator().manual_seed(1)
    out = augment_batch(img, "shift", gen)
    assert out.dtype == torch.uint8 and out.shape == img.shape
    assert (out == 255).sum() == 2  # the bright pixel moved, not duplicated or lost


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(
        ">" + "I" * array.ndim, *array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_fashion_mnist_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    train, test = load_fashion_mnist(tmp_path)
    assert train.images.shape == (6, 1, 28, 28) and len(test) == 4
    assert test.sample_ids.tolist() == [6, 7, 8, 9]
    assert test.mean == train.mean


def test_cifar_binary_and_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rows = np.concatenate(
            [
                np.arange(3, dtype=np.uint8)[:, None],
                rng.integers(0, 255, (3, 3072), dtype=np.uint8),
            ],
            axis=1,
        )
        (folder / name).write_bytes(rows.tobytes())
    train, test = load_cifar10(tmp_path)
    assert train.images.shape == (15, 3, 32, 32) and len(test) == 3
    npz = tmp_path / "npz"
    npz.mkdir()
    for name, n in (("train", 5), ("test", 2)):
        np.savez(
            npz / f"{name}.npz", images=rng.integers(0, 255, (n, 32, 32, 3)), labels=np.arange(n)
        )
    train, _ = load_cifar10(npz)
    assert train.images.shape == (5, 3, 32, 32)


def test_dataset_validates_shapes() -> None:
    with pytest.raises(ValueError):
        make_dataset(np.zeros((2, 8, 8)), np.array([0, 12]), num_classes=10)
