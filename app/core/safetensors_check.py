"""Parse and check a safetensors file without torch and without trusting it.

A safetensors file is an 8-byte little-endian header length, a JSON header mapping tensor names
to ``{dtype, shape, data_offsets}``, then the raw bytes. We check everything the header claims
against the file itself, so a pickle, a zip, a truncated file or a header that lies about sizes
is refused before any byte is interpreted as a tensor.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ITEMSIZE: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
NUMPY_DTYPE: dict[str, str] = {
    "BOOL": "|b1",
    "U8": "|u1",
    "I8": "|i1",
    "I16": "<i2",
    "U16": "<u2",
    "F16": "<f2",
    "I32": "<i4",
    "U32": "<u4",
    "F32": "<f4",
    "I64": "<i8",
    "U64": "<u8",
    "F64": "<f8",
}

# Magic numbers of formats people upload by mistake (or on purpose).
_PICKLE_PROTOCOL = b"\x80"
_ZIP = b"PK\x03\x04"


class SafetensorsError(ValueError):
    pass


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsFile:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]

    def read(self, name: str) -> NDArray[Any]:
        """Read one tensor as a numpy array (copy), e.g. labels; images stay on disk."""
        info = self.tensors[name]
        if info.dtype not in NUMPY_DTYPE:
            raise SafetensorsError(f"tensor {name!r}: dtype {info.dtype} cannot be read here")
        arr = np.fromfile(
            self.path, dtype=np.dtype(NUMPY_DTYPE[info.dtype]), count=info.numel, offset=info.start
        )
        return arr.reshape(info.shape)

    def memmap(self, name: str) -> NDArray[Any]:
        info = self.tensors[name]
        return np.memmap(
            self.path,
            dtype=np.dtype(NUMPY_DTYPE[info.dtype]),
            mode="r",
            offset=info.start,
            shape=info.shape,
        )


def _sniff(prefix: bytes) -> str | None:
    if prefix.startswith(_ZIP):
        return "a zip archive (a torch.save checkpoint?); upload safetensors instead"
    if prefix.startswith(_PICKLE_PROTOCOL):
        return "a Python pickle; pickles are never loaded, upload safetensors instead"
    return None


def inspect(path: Path, *, max_header_bytes: int = 16 * 1024**2) -> SafetensorsFile:
    """Validate ``path`` as safetensors and return its table of contents.

    Raises :class:`SafetensorsError` with a message a user can act on.
    """
    file_size = path.stat().st_size
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"file is {file_size} bytes, too short to be safetensors")
        (header_len,) = struct.unpack("<Q", prefix)
        first = fh.read(1)
        # A real header is a JSON object; only when it is not do we guess what the file is
        # (a pickle's first byte can also begin a valid header length).
        if header_len > max_header_bytes or header_len == 0 or first != b"{":
            what = _sniff(prefix)
            if what:
                raise SafetensorsError(f"file is {what}")
            raise SafetensorsError(
                f"header length {header_len} is not plausible (limit {max_header_bytes});"
                " not a safetensors file"
            )
        if 8 + header_len > file_size:
            raise SafetensorsError("file is truncated: it ends inside its header")
        raw = first + fh.read(header_len - 1)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SafetensorsError("header is not valid JSON; not a safetensors file") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    metadata_raw = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata_raw.items()
    ):
        raise SafetensorsError("__metadata__ must map strings to strings")

    data_start = 8 + header_len
    data_len = file_size - data_start
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise SafetensorsError(f"tensor {name!r}: entry is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in ITEMSIZE:
            raise SafetensorsError(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise SafetensorsError(f"tensor {name!r}: shape must be a list of non-negative ints")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise SafetensorsError(f"tensor {name!r}: data_offsets must be [begin, end]")
        begin, end = offsets
        expected = math.prod(shape) * ITEMSIZE[dtype]
        if begin < 0 or end < begin or end - begin != expected:
            raise SafetensorsError(
                f"tensor {name!r}: header claims {end - begin} bytes but dtype {dtype} and shape"
                f" {shape} need {expected}"
            )
        if end > data_len:
            raise SafetensorsError(
                f"tensor {name!r}: data ends at byte {end} but the file holds only {data_len}"
                " data bytes (truncated?)"
            )
        tensors[name] = TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)
        spans.append((begin, end, name))
    # The data section must be exactly covered, without overlaps or hidden bytes.
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            raise SafetensorsError(
                f"tensor {name!r}: data starts at {begin}, expected {cursor} (overlap or gap)"
            )
        cursor = end
    if cursor != data_len:
        raise SafetensorsError(
            f"data section is {data_len} bytes but tensors cover {cursor}; the file is"
            " truncated or has trailing bytes"
        )
    return SafetensorsFile(path, tensors, dict(metadata_raw))
