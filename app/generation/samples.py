"""Grids of a diffusion version's generated images, drawn from the samples a worker stored with
the version (seeded, per class) — the API renders PNGs from them with numpy alone.

The stored blob is safetensors with one uint8 tensor ``class_<k>`` of shape ``(n, C, H, W)`` per
class, and metadata saying how the images were generated.

>>> import numpy as np
>>> from safetensors.numpy import save
>>> blob = save({f"class_{k}": np.full((4, 1, 8, 8), 30 * k, np.uint8) for k in range(3)})
>>> stored = StoredSamples.parse(blob)
>>> stored.classes, stored.per_class
([0, 1, 2], 4)
>>> render(stored, class_id=None, n=2)[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load

from app.unlearning.diffusion.png import encode_png, grid

_KEY = re.compile(r"class_(\d{1,6})")


class SamplesUnreadable(ValueError):
    pass


@dataclass(frozen=True)
class StoredSamples:
    by_class: dict[int, np.ndarray]
    metadata: dict[str, Any]

    @classmethod
    def parse(cls, blob: bytes) -> StoredSamples:
        try:
            tensors = load(blob)
        except (SafetensorError, ValueError) as exc:
            raise SamplesUnreadable(f"stored samples are unreadable: {exc}") from None
        by_class: dict[int, np.ndarray] = {}
        for key, value in tensors.items():
            m = _KEY.fullmatch(key)
            if m is None or value.dtype != np.uint8 or value.ndim != 4:
                raise SamplesUnreadable(f"unexpected tensor {key!r} in stored samples")
            by_class[int(m.group(1))] = value
        header_len = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8 : 8 + header_len])
        return cls(by_class, dict(header.get("__metadata__") or {}))

    @property
    def classes(self) -> list[int]:
        return sorted(self.by_class)

    @property
    def per_class(self) -> int:
        return min((int(v.shape[0]) for v in self.by_class.values()), default=0)


def render(stored: StoredSamples, *, class_id: int | None, n: int) -> bytes:
    """One class's first ``n`` images in a square-ish grid, or (``class_id`` None) every class
    as one row of ``n``; tiles are scaled up so that small images stay visible."""
    any_images = next(iter(stored.by_class.values()))
    side = int(any_images.shape[2])
    scale = max(1, 48 // side)
    if class_id is not None:
        images = stored.by_class[class_id][:n]
        cols = int(np.ceil(np.sqrt(images.shape[0])))
        return encode_png(grid(images, cols=cols, pad=1, scale=scale, fill=255))
    rows = np.concatenate([stored.by_class[c][:n] for c in stored.classes])
    return encode_png(grid(rows, cols=n, pad=1, scale=scale, fill=255))
