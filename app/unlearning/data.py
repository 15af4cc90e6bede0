"""In-memory image datasets, forget/remain/test splits, readers, and device-side batching.

Images are kept as ``uint8`` ``(N, C, H, W)`` arrays and normalised on the device, batch by batch,
with the per-channel mean and standard deviation of the training images. A whole dataset is small
enough for the device here (Fashion-MNIST is 47 MB as uint8), so batching is indexing into a
device tensor: no DataLoader workers, no host/device copies in the inner loop.

>>> train, test = load_digits()
>>> split = build_split(train, test, forget_classes=[3])
>>> split.kind, len(split.forget) > 0, bool((split.remain.labels != 3).all())
('class', True, True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from app.unlearning.config import Augment
from app.unlearning.formats import fashion_mnist_arrays


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Images ``uint8 (N, C, H, W)``, labels ``int64 (N,)``, unique sample IDs ``int64 (N,)``."""

    images: np.ndarray
    labels: np.ndarray
    sample_ids: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError("images must be uint8 with shape (N, C, H, W)")
        n = self.images.shape[0]
        if self.labels.shape != (n,) or self.sample_ids.shape != (n,):
            raise ValueError("labels and sample_ids must have shape (N,)")
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise ValueError("mean and std need one value per channel")
        if n and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise ValueError("labels must lie in [0, num_classes)")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def take(self, index: np.ndarray) -> ArrayDataset:
        """The rows at ``index`` (integer positions or a boolean mask), same normalisation."""
        return ArrayDataset(
            images=self.images[index],
            labels=self.labels[index],
            sample_ids=self.sample_ids[index],
            num_classes=self.num_classes,
            mean=self.mean,
            std=self.std,
            name=self.name,
        )

    def digest(self) -> str:
        """Content digest of sample IDs and labels (what a cache key needs, cheaply)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.sample_ids).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        h.update(str(self.images.shape).encode())
        return h.hexdigest()[:16]


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int | None = None,
    sample_ids: np.ndarray | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str = "",
) -> ArrayDataset:
    """Build a dataset; ``mean``/``std`` default to the statistics of ``images`` (use the training
    set's statistics for its test set). Grey ``(N, H, W)`` images get a channel axis."""
    if images.ndim == 3:
        images = images[:, None]
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    ids = np.arange(len(labels), dtype=np.int64) if sample_ids is None else sample_ids
    scaled = images.astype(np.float64) / 255.0
    if mean is None:
        mean = tuple(float(m) for m in scaled.mean(axis=(0, 2, 3)))
    if std is None:
        std = tuple(max(float(s), 1e-3) for s in scaled.std(axis=(0, 2, 3)))
    classes = int(labels.max()) + 1 if num_classes is None else num_classes
    return ArrayDataset(
        images=images,
        labels=labels,
        sample_ids=np.asarray(ids, dtype=np.int64),
        num_classes=classes,
        mean=tuple(mean),
        std=tuple(std),
        name=name,
    )


@dataclass(frozen=True, eq=False)
class Split:
    """The views one unlearning request works on.

    - ``forget``: D_f, the training samples to remove.
    - ``remain``: D_r = training set minus D_f minus ``exclude_ids``.
    - ``test``: D_t, held-out samples for reporting (TA, MIA non-members). Never used for tuning.
    - ``validation``: held-out samples the model never saw, used only by calibration.
    - ``forget_classes``: the classes removed by a class-wise request; empty when sample-wise.
    """

    forget: ArrayDataset
    remain: ArrayDataset
    test: ArrayDataset
    validation: ArrayDataset
    forget_classes: tuple[int, ...] = field(default_factory=tuple)

    @property
    def kind(self) -> Literal["class", "sample"]:
        return "class" if self.forget_classes else "sample"

    @property
    def num_classes(self) -> int:
        return self.remain.num_classes


def _ids(values: Iterable[int] | None) -> np.ndarray:
    if values is None:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.int64)


def build_split(
    train: ArrayDataset,
    test: ArrayDataset,
    *,
    forget_ids: Iterable[int] | None = None,
    forget_classes: Iterable[int] | None = None,
    exclude_ids: Iterable[int] | None = None,
    validation: ArrayDataset | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
) -> Split:
    """Split ``train`` into forget/remain by sample IDs or by class IDs (exactly one of the two).

    ``exclude_ids`` are samples forgotten earlier in the model's lineage: they are in neither
    forget nor remain. When ``validation`` is not given, a seeded ``validation_fraction`` of
    ``test`` is carved out as validation and the rest stays the test set, so tuning never sees
    the samples that are reported.
    """
    if (forget_ids is None) == (forget_classes is None):
        raise ValueError("give exactly one of forget_ids or forget_classes")
    excluded = np.isin(train.sample_ids, _ids(exclude_ids))
    classes: tuple[int, ...] = ()
    if forget_classes is not None:
        classes = tuple(sorted({int(c) for c in forget_classes}))
        if not classes or min(classes) < 0 or max(classes) >= train.num_classes:
            raise ValueError("forget_classes must be non-empty class indices of the dataset")
        in_forget = np.isin(train.labels, np.asarray(classes, dtype=np.int64))
    else:
        wanted = _ids(forget_ids)
        in_forget = np.isin(train.sample_ids, wanted)
        missing = np.setdiff1d(wanted, train.sample_ids)
        if missing.size:
            raise ValueError(f"{missing.size} forget sample IDs are not in the dataset")
    in_forget &= ~excluded
    if not in_forget.any():
        raise ValueError("the forget set is empty")
    forget = train.take(in_forget)
    remain = train.take(~in_forget & ~excluded)
    if validation is None:
        if not 0 < validation_fraction < 1:
            raise ValueError("validation_fraction must lie in (0, 1)")
        order = np.random.default_rng(seed).permutation(len(test))
        n_val = max(1, round(validation_fraction * len(test)))
        validation, test = test.take(np.sort(order[:n_val])), test.take(np.sort(order[n_val:]))
    return Split(
        forget=forget, remain=remain, test=test, validation=validation, forget_classes=classes
    )


# --------------------------------------------------------------------------------------------
# Readers. None of them unpickles anything: IDX, CIFAR binary and .npz (allow_pickle=False).
# --------------------------------------------------------------------------------------------


def train_test(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_te: np.ndarray,
    y_te: np.ndarray,
    *,
    num_classes: int,
    name: str,
) -> tuple[ArrayDataset, ArrayDataset]:
    """A train/test pair: train IDs 0..N-1, test IDs follow them, and the test set is normalised
    with the training set's statistics."""
    train = make_dataset(x_tr, y_tr, num_classes=num_classes, name=name)
    test = make_dataset(
        x_te,
        y_te,
        num_classes=num_classes,
        sample_ids=np.arange(len(y_te), dtype=np.int64) + len(y_tr),
        mean=train.mean,
        std=train.std,
        name=name,
    )
    return train, test


def load_fashion_mnist(
    path_dir: str | Path = "/usr/share/datasets/fashion-mnist",
) -> tuple[ArrayDataset, ArrayDataset]:
    """Fashion-MNIST (or MNIST) from the four IDX files; train IDs 0..59999, test 60000.."""
    arrays = fashion_mnist_arrays(Path(path_dir))
    x_tr, y_tr = arrays["images"], arrays["labels"]
    x_te, y_te = arrays["test_images"], arrays["test_labels"]
    return train_test(x_tr, y_tr, x_te, y_te, num_classes=10, name="fashion_mnist")


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """scikit-learn's 8x8 digits (values 0..16 scaled to 0..255), split by a seeded permutation."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.round(np.asarray(bunch.images) * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    ids = np.arange(len(labels), dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(test_fraction * len(labels))
    te, tr = np.sort(order[:n_test]), np.sort(order[n_test:])
    train = make_dataset(images[tr], labels[tr], num_classes=10, sample_ids=ids[tr], name="digits")
    test = make_dataset(
        images[te],
        labels[te],
        num_classes=10,
        sample_ids=ids[te],
        mean=train.mean,
        std=train.std,
        name="digits",
    )
    return train, test


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    if raw.size % 3073:
        raise ValueError(f"{path.name}: not a CIFAR-10 binary batch")
    rows = raw.reshape(-1, 3073)
    return rows[:, 1:].reshape(-1, 3, 32, 32), rows[:, 0].astype(np.int64)


def load_cifar10(folder: str | Path) -> tuple[ArrayDataset, ArrayDataset]:
    """CIFAR-10 from a local folder, without unpickling: either the binary release
    (``data_batch_{1..5}.bin`` and ``test_batch.bin``, possibly under ``cifar-10-batches-bin/``)
    or ``train.npz`` and ``test.npz`` with arrays ``images`` (N,32,32,3 or N,3,32,32) and
    ``labels``."""
    root = Path(folder)
    if (root / "cifar-10-batches-bin").is_dir():
        root = root / "cifar-10-batches-bin"
    if (root / "test_batch.bin").is_file():
        parts = [_read_cifar_bin(root / f"data_batch_{i}.bin") for i in range(1, 6)]
        x_tr = np.concatenate([p[0] for p in parts])
        y_tr = np.concatenate([p[1] for p in parts])
        x_te, y_te = _read_cifar_bin(root / "test_batch.bin")
    elif (root / "train.npz").is_file() and (root / "test.npz").is_file():
        arrays = []
        for name in ("train.npz", "test.npz"):
            with np.load(root / name, allow_pickle=False) as npz:
                x, y = np.asarray(npz["images"]), np.asarray(npz["labels"], dtype=np.int64)
            if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
                x = x.transpose(0, 3, 1, 2)
            arrays.append((x.astype(np.uint8), y.reshape(-1)))
        (x_tr, y_tr), (x_te, y_te) = arrays
    else:
        raise FileNotFoundError(f"no CIFAR-10 binary batches or train/test .npz in {root}")
    return train_test(x_tr, y_tr, x_te, y_te, num_classes=10, name="cifar10")


# --------------------------------------------------------------------------------------------
# Device-side batching.
# --------------------------------------------------------------------------------------------


class DeviceData:
    """A dataset's tensors on ``device``; batches are normalised (and optionally augmented) there.

    ``labels`` may be replaced (random-label methods) without touching the images.
    """

    def __init__(
        self, data: ArrayDataset, device: torch.device, *, channels_last: bool = False
    ) -> None:
        self.device = device
        self.channels_last = channels_last
        self.images = torch.from_numpy(data.images).to(device)
        self.labels = torch.from_numpy(data.labels).to(device)
        c = data.images.shape[1]
        self._mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
        self._std = torch.tensor(data.std, dtype=torch.float32, device=device).view(1, c, 1, 1)
        self.num_classes = data.num_classes

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float().div_(255.0) - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def batch(
        self, index: torch.Tensor, *, augment: Augment = "none", generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.images[index]
        if augment != "none":
            images = augment_batch(images, augment, generator)
        return self.normalise(images), self.labels[index]

    def iterate(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: Augment = "none",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass in order (evaluation) or in a fresh random order (training)."""
        n = len(self)
        order = (
            torch.randperm(n, generator=generator, device=self.device)
            if shuffle
            else torch.arange(n, device=self.device)
        )
        for start in range(0, n, batch_size):
            yield self.batch(
                order[start : start + batch_size], augment=augment, generator=generator
            )


class BatchStream:
    """An endless stream of training batches that reshuffles (and re-augments) on every pass.

    A pass's last partial batch is dropped unless the set is smaller than one batch, so every step
    sees ``batch_size`` samples.
    """

    def __init__(
        self,
        data: DeviceData,
        batch_size: int,
        generator: torch.Generator,
        *,
        augment: Augment = "none",
    ) -> None:
        if len(data) == 0:
            raise ValueError("cannot stream batches from an empty set")
        self.data = data
        self.batch_size = min(batch_size, len(data))
        self.generator = generator
        self.augment: Augment = augment
        self._order = torch.empty(0, dtype=torch.long, device=data.device)
        self._pos = 0
        self.passes = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos + self.batch_size > self._order.numel():
            self._order = torch.randperm(
                len(self.data), generator=self.generator, device=self.data.device
            )
            self._pos = 0
            self.passes += 1
        index = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.data.batch(index, augment=self.augment, generator=self.generator)

    @property
    def batches_per_pass(self) -> int:
        return max(1, len(self.data) // self.batch_size)


def augment_batch(
    images: torch.Tensor, augment: Augment, generator: torch.Generator | None, pad: int = 2
) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero fill) and, for ``shift_flip``, a random
    horizontal flip; per sample, on the device, on uint8 images."""
    b, _, h, w = images.shape
    dev = images.device
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
    if augment == "shift_flip":
        flip = torch.rand(b, generator=generator, device=dev) < 0.5
        cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    batch_idx = torch.arange(b, device=dev)[:, None, None, None]
    chan_idx = torch.arange(images.shape[1], device=dev)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows, cols]
