"""The diffusion engine's entry points: build a denoiser, train the evaluator classifier, and
run one class-forgetting method with its cost measured. Pure torch; nothing from the service.

>>> from app.unlearning.diffusion.config import TINY_UNET, parse_unet_config
>>> model = build_unet(parse_unet_config(TINY_UNET))
>>> null_class(model)
10
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from app.unlearning.architectures import build_model
from app.unlearning.config import TrainingRecipe
from app.unlearning.data import ArrayDataset
from app.unlearning.diffusion.ddpm import build_unet, null_class
from app.unlearning.diffusion.evaluation import GenerationEvaluator
from app.unlearning.diffusion.methods.common import DiffusionContext
from app.unlearning.diffusion.methods.registry import DIFFUSION_METHODS, method_name
from app.unlearning.runtime import Counters
from app.unlearning.training import train

__all__ = ["ForgetResult", "build_unet", "forget_class", "null_class", "train_evaluator"]

#: The evaluator the engine trains when the user names none: the project's small CNN.
EVALUATOR_ARCH = "small_cnn"


@dataclass
class ForgetResult:
    method: str
    wall_time_s: float
    counters: dict[str, int]
    steps: int
    mask_density: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "wall_time_s": self.wall_time_s,
            "steps": self.steps,
            "mask_density": self.mask_density,
            **self.counters,
            "details": self.details,
        }


def forget_class(model: nn.Module, ctx: DiffusionContext, config: BaseModel) -> ForgetResult:
    """Run the method ``config`` names on ``model`` in place; the wall time and the passes count
    the whole method (mask included), not the evaluation's sampling."""
    name = method_name(config)
    before = Counters()
    before.add(ctx.reporter.counters)
    start = time.perf_counter()
    outcome = DIFFUSION_METHODS[name].run(model, ctx, config)
    wall = time.perf_counter() - start
    now = ctx.reporter.counters
    spent = Counters(
        forward=now.forward - before.forward,
        backward=now.backward - before.backward,
        optimizer_steps=now.optimizer_steps - before.optimizer_steps,
        samples=now.samples - before.samples,
    )
    return ForgetResult(
        method=name,
        wall_time_s=wall,
        counters=spent.as_dict(),
        steps=outcome.steps,
        mask_density=outcome.mask_density,
        details=outcome.details,
    )


def train_evaluator(
    train_set: ArrayDataset,
    *,
    device: torch.device,
    seed: int,
    recipe: TrainingRecipe | None = None,
    width: int = 32,
    hidden: int = 128,
) -> GenerationEvaluator:
    """The classifier that judges generated images, trained on the same data with the classifier
    engine's recipe (small CNN)."""
    torch.manual_seed(seed)
    model = build_model(
        EVALUATOR_ARCH,
        {
            "num_classes": train_set.num_classes,
            "in_channels": int(train_set.images.shape[1]),
            "width": width,
            "hidden": hidden,
        },
    )
    train(model, train_set, recipe or TrainingRecipe(epochs=10), device=device, seed=seed)
    model.eval()
    return GenerationEvaluator(model=model, mean=train_set.mean, std=train_set.std)
