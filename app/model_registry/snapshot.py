"""Plain copies of rows, so no ORM object outlives the short transaction that read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.models import ModelVersion


@dataclass(frozen=True)
class ModelSnapshot:
    id: str
    architecture: str
    args: dict[str, Any]
    num_classes: int
    mean: list[float]
    std: list[float]
    weights_digest: str
    training: dict[str, Any]
    input_shape: list[int]

    @classmethod
    def of(cls, mv: ModelVersion) -> ModelSnapshot:
        if mv.weights_digest is None:
            raise ValueError(f"model {mv.id} has no stored weights")
        return cls(
            id=mv.id,
            architecture=mv.architecture,
            args=dict(mv.arch_args),
            num_classes=mv.num_classes,
            mean=[float(x) for x in mv.normalization["mean"]],
            std=[float(x) for x in mv.normalization["std"]],
            weights_digest=mv.weights_digest,
            training=dict(mv.training),
            input_shape=[int(d) for d in mv.input_shape],
        )
