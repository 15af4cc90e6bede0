"""Retrain: a freshly initialised denoiser trained on the remain set with the original's recipe
(the exact answer, and the cost to beat). The forgotten label's embedding is never trained."""

from __future__ import annotations

import torch
from torch import nn

from app.unlearning.diffusion.config import DiffusionRetrainConfig
from app.unlearning.diffusion.ddpm import train_denoiser
from app.unlearning.diffusion.methods.common import DiffusionContext
from app.unlearning.methods.common import MethodOutcome, reinitialise


def run(model: nn.Module, ctx: DiffusionContext, config: DiffusionRetrainConfig) -> MethodOutcome:
    fresh = reinitialise(model, ctx.seed)
    recipe = ctx.original
    if config.steps is not None:
        recipe = recipe.model_copy(update={"steps": config.steps})
    report = train_denoiser(
        fresh,
        ctx.split.remain_images,
        ctx.split.remain_labels,
        ctx.schedule,
        recipe,
        seed=ctx.seed,
        reporter=ctx.reporter,
    )
    with torch.no_grad():
        model.load_state_dict(fresh.state_dict())
    return MethodOutcome(steps=report.steps, details={"final_loss": report.final_loss})
