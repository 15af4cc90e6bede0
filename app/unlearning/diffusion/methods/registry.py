"""The one explicit mapping from a diffusion method's name to (config class, implementation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from torch import nn

from app.unlearning.diffusion.config import (
    DIFFUSION_METHOD_CONFIGS,
    DiffusionGradAscentConfig,
    DiffusionRetrainConfig,
    DiffusionSalUnConfig,
    DiffusionSFROnConfig,
)
from app.unlearning.diffusion.methods import grad_ascent, retrain, salun, sfr_on
from app.unlearning.diffusion.methods.common import DiffusionContext
from app.unlearning.methods.common import MethodOutcome

Implementation = Callable[[nn.Module, DiffusionContext, Any], MethodOutcome]


@dataclass(frozen=True)
class DiffusionMethodEntry:
    config: type[BaseModel]
    run: Implementation
    exact: bool = False


DIFFUSION_METHODS: dict[str, DiffusionMethodEntry] = {
    "sfr_on": DiffusionMethodEntry(DiffusionSFROnConfig, sfr_on.run),
    "grad_ascent": DiffusionMethodEntry(DiffusionGradAscentConfig, grad_ascent.run),
    "salun": DiffusionMethodEntry(DiffusionSalUnConfig, salun.run),
    "retrain": DiffusionMethodEntry(DiffusionRetrainConfig, retrain.run, exact=True),
}

# The torch-free config table and this one must name the same methods (a test checks too).
assert set(DIFFUSION_METHODS) == set(DIFFUSION_METHOD_CONFIGS)


def method_name(config: BaseModel) -> str:
    for name, entry in DIFFUSION_METHODS.items():
        if type(config) is entry.config:
            return name
    raise ValueError(f"{type(config).__name__} is not a registered diffusion method config")
