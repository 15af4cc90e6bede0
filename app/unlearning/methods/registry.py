"""The one explicit mapping from method name to (config class, implementation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from torch import nn

from app.unlearning.config import (
    FinetuneConfig,
    GradAscentConfig,
    L1SparseConfig,
    RandomLabelConfig,
    RetrainConfig,
    SalUnConfig,
    SFROnConfig,
)
from app.unlearning.methods import (
    finetune,
    grad_ascent,
    l1_sparse,
    random_label,
    retrain,
    salun,
    sfr_on,
)
from app.unlearning.methods.common import MethodContext, MethodOutcome

Implementation = Callable[[nn.Module, MethodContext, Any], MethodOutcome]


@dataclass(frozen=True)
class MethodEntry:
    config: type[BaseModel]
    run: Implementation
    exact: bool = False  # retrain is the reference, not an approximation


METHODS: dict[str, MethodEntry] = {
    "sfr_on": MethodEntry(SFROnConfig, sfr_on.run),
    "retrain": MethodEntry(RetrainConfig, retrain.run, exact=True),
    "finetune": MethodEntry(FinetuneConfig, finetune.run),
    "grad_ascent": MethodEntry(GradAscentConfig, grad_ascent.run),
    "random_label": MethodEntry(RandomLabelConfig, random_label.run),
    "l1_sparse": MethodEntry(L1SparseConfig, l1_sparse.run),
    "salun": MethodEntry(SalUnConfig, salun.run),
}


def method_name(config: BaseModel) -> str:
    """The registered name of a config instance's method."""
    for name, entry in METHODS.items():
        if type(config) is entry.config:
            return name
    raise ValueError(f"{type(config).__name__} is not a registered method config")
