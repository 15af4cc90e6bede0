"""Builders for test inputs: tenants and keys in the database, and real files to upload."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import save
from sqlalchemy.orm import Session

from app.tenants import service as tenants
from app.tenants.schemas import Role


@dataclass
class TenantKeys:
    tenant_id: str
    admin: str
    member: str
    auditor: str

    def headers(self, role: str = "member") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


def make_tenant(db: Session, name: str) -> TenantKeys:
    tenant, _, admin = tenants.create_tenant(db, name)
    _, member = tenants.create_key(db, tenant.id, Role.member)
    _, auditor = tenants.create_key(db, tenant.id, Role.auditor)
    db.commit()
    return TenantKeys(tenant.id, admin, member, auditor)


def dataset_arrays(
    n: int = 64, classes: int = 4, shape: tuple[int, ...] = (1, 8, 8), seed: int = 0,
    test: int = 16,
) -> dict[str, NDArray[Any]]:  # fmt: skip
    rng = np.random.default_rng(seed)
    arrays: dict[str, NDArray[Any]] = {
        "images": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
        "labels": (np.arange(n) % classes).astype(np.int64),
        "sample_ids": (np.arange(n, dtype=np.int64) * 7 + 1000),
    }
    if test:
        arrays["test_images"] = rng.integers(0, 256, size=(test, *shape), dtype=np.uint8)
        arrays["test_labels"] = (np.arange(test) % classes).astype(np.int64)
    return arrays


def safetensors_bytes(arrays: dict[str, NDArray[Any]]) -> bytes:
    return bytes(save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def model_spec(dataset_id: str, **overrides: Any) -> str:
    spec: dict[str, Any] = {
        "name": "tiny",
        "architecture": "small_cnn",
        "args": {"num_classes": 4, "width": 8, "hidden": 16},
        "input_shape": [1, 8, 8],
        "normalization": {"mean": [0.5], "std": [0.25]},
        "dataset_id": dataset_id,
        "training": {"epochs": 5, "batch_size": 32, "lr": 0.05},
    }
    spec.update(overrides)
    return json.dumps(spec)


def fake_weights(seed: int = 0) -> bytes:
    """Structurally valid safetensors weights (the deep check decides if they fit)."""
    rng = np.random.default_rng(seed)
    return safetensors_bytes(
        {"conv.weight": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
         "fc.bias": np.zeros(4, dtype=np.float32)}
    )  # fmt: skip


def pickle_bytes() -> bytes:
    """A pickle, as `torch.save` of old would produce: must never be loaded."""
    return pickle.dumps({"weight": [1.0, 2.0]})


def zip_of_pickle() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes())
    return buf.getvalue()


def lying_header(data: bytes) -> bytes:
    """Valid safetensors bytes whose header claims a bigger tensor than the data holds."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__" and header[k]["shape"])
    header[name]["shape"] = [header[name]["shape"][0] * 2, *header[name]["shape"][1:]]
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data[8 + n :]
