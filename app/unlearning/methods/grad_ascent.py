"""GA: gradient ascent on the forget set with BatchNorm frozen, a small lr and clipping."""

from __future__ import annotations

import torch
from torch import nn

from app.unlearning.config import GradAscentConfig
from app.unlearning.data import BatchStream
from app.unlearning.methods.common import MethodContext, MethodOutcome, sgd_loop


def run(model: nn.Module, ctx: MethodContext, config: GradAscentConfig) -> MethodOutcome:
    steps = ctx.budget_steps(config.budget, config.iterations)
    stream = BatchStream(ctx.forget, config.batch_size, ctx.generator(1))

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor, _t: int) -> torch.Tensor:
        return -nn.functional.cross_entropy(m(x), y)

    sgd_loop(
        model,
        ctx,
        stream,
        steps=steps,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        loss_fn=loss_fn,
        max_norm=config.max_norm,
        freeze_bn=True,
    )
    return MethodOutcome(steps=steps)
