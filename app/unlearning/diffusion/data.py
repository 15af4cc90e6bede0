"""Images for diffusion: uint8 datasets to [-1, 1] device tensors, downsampling, class splits.

>>> import numpy as np
>>> downsample(np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4), 2)[0, 0].tolist()
[[3, 4], [10, 12]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.unlearning.data import ArrayDataset, make_dataset


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """Area (box) downsampling of uint8 ``(N, C, H, W)`` images to ``size`` x ``size`` by an
    integer factor, rounded half up."""
    n, c, h, w = images.shape
    if h % size or w % size:
        raise ValueError(f"{h}x{w} images cannot be box-downsampled to {size}x{size}")
    fh, fw = h // size, w // size
    pooled = images.reshape(n, c, size, fh, size, fw).astype(np.float32).mean(axis=(3, 5))
    out: np.ndarray = np.floor(pooled + 0.5).clip(0, 255).astype(np.uint8)
    return out


def downsample_dataset(data: ArrayDataset, size: int) -> ArrayDataset:
    return make_dataset(
        downsample(data.images, size),
        data.labels,
        num_classes=data.num_classes,
        sample_ids=data.sample_ids,
        name=f"{data.name}@{size}",
    )


def to_unit(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images to float in [-1, 1] on ``device``."""
    t = torch.as_tensor(images).to(device)
    return t.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images back to uint8 (what a classifier trained on the dataset reads)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


@dataclass(frozen=True)
class ClassSplit:
    """A class-forgetting request on a training set: forget = every image of the classes,
    remain = the rest. Tensors in [-1, 1] on the device."""

    forget_images: torch.Tensor
    forget_labels: torch.Tensor
    remain_images: torch.Tensor
    remain_labels: torch.Tensor
    forget_classes: tuple[int, ...]
    num_classes: int

    @property
    def kept_classes(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.num_classes) if c not in self.forget_classes)


def class_split(
    train: ArrayDataset, forget_classes: tuple[int, ...], device: torch.device
) -> ClassSplit:
    if not forget_classes or any(not 0 <= c < train.num_classes for c in forget_classes):
        raise ValueError("forget_classes must be non-empty class indices of the dataset")
    f = np.isin(train.labels, np.asarray(forget_classes, dtype=np.int64))
    if f.all():
        raise ValueError("forgetting every class leaves nothing to keep")
    return ClassSplit(
        forget_images=to_unit(train.images[f], device),
        forget_labels=torch.from_numpy(train.labels[f]).to(device),
        remain_images=to_unit(train.images[~f], device),
        remain_labels=torch.from_numpy(train.labels[~f]).to(device),
        forget_classes=tuple(sorted(forget_classes)),
        num_classes=train.num_classes,
    )
