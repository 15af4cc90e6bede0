"""A minimal PNG writer (8-bit grey or RGB, zlib only) and image grids, so sample grids need no
imaging library.

>>> data = encode_png(np.zeros((2, 3), dtype=np.uint8))
>>> data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError("expected a uint8 (H, W) or (H, W, 3) array")
    if image.ndim == 3 and image.shape[2] != 3:
        raise ValueError("colour images must have 3 channels")
    h, w = image.shape[:2]
    colour_type = 0 if image.ndim == 2 else 2
    rows = np.ascontiguousarray(image).reshape(h, -1)
    # Filter type 0 (none) at the start of every scanline.
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def grid(images: np.ndarray, cols: int, pad: int = 1, scale: int = 1, fill: int = 0) -> np.ndarray:
    """Tile uint8 images ``(N, C, H, W)`` (C = 1 or 3) into one image, ``cols`` per row, ``pad``
    pixels of ``fill`` between tiles, each pixel repeated ``scale`` times."""
    n, c, h, w = images.shape
    rows = max(1, -(-n // cols))
    tiles = images.repeat(scale, axis=2).repeat(scale, axis=3)
    h, w = h * scale, w * scale
    out = np.full((c, rows * (h + pad) + pad, cols * (w + pad) + pad), fill, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        out[:, y : y + h, x : x + w] = tiles[i]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def labelled_rows(rows: list[np.ndarray], pad: int = 1, scale: int = 2, fill: int = 128) -> bytes:
    """PNG of several grids stacked vertically (one per method, say), separated by a band."""
    grids = [grid(r, cols=r.shape[0], pad=pad, scale=scale, fill=fill) for r in rows]
    width = max(g.shape[1] for g in grids)
    parts = []
    for g in grids:
        padded = np.full((g.shape[0], width, *g.shape[2:]), fill, dtype=np.uint8)
        padded[:, : g.shape[1]] = g
        parts.append(padded)
        parts.append(np.full((3 * pad, width, *g.shape[2:]), 255, dtype=np.uint8))
    return encode_png(np.concatenate(parts[:-1]))
