"""Retrain: train a freshly initialised copy on the remain set with the original recipe. The
exact answer every approximate method is compared with, and the cost to beat."""

from __future__ import annotations

from torch import nn

from app.unlearning.config import RetrainConfig
from app.unlearning.methods.common import MethodContext, MethodOutcome, reinitialise
from app.unlearning.training import train


def run(model: nn.Module, ctx: MethodContext, config: RetrainConfig) -> MethodOutcome:
    fresh = reinitialise(model, ctx.seed)
    recipe = ctx.original.recipe
    if config.epochs is not None:
        recipe = recipe.model_copy(update={"epochs": config.epochs})
    report = train(
        fresh, ctx.split.remain, recipe, device=ctx.device, seed=ctx.seed, reporter=ctx.reporter
    )
    model.load_state_dict(fresh.state_dict())
    return MethodOutcome(steps=report.optimizer_steps, details={"recipe": recipe.model_dump()})
