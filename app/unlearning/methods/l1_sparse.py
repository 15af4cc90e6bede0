"""l1-sparse: FT on the remain set plus an l1 penalty on the weights whose coefficient decays
linearly from ``l1`` to 0 over the run (sparsity first, accuracy recovery at the end)."""

from __future__ import annotations

import torch
from torch import nn

from app.unlearning.config import L1SparseConfig
from app.unlearning.data import BatchStream
from app.unlearning.methods.common import (
    MethodContext,
    MethodOutcome,
    cross_entropy_loss,
    params,
    sgd_loop,
)


def run(model: nn.Module, ctx: MethodContext, config: L1SparseConfig) -> MethodOutcome:
    steps = ctx.budget_steps(config.budget, config.iterations)
    stream = BatchStream(ctx.remain, config.batch_size, ctx.generator(1))
    ps = params(model)

    def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        coef = config.l1 * (1.0 - t / steps)
        l1 = torch.stack([p.abs().sum() for p in ps]).sum()
        return cross_entropy_loss(m, x, y, t) + coef * l1

    sgd_loop(
        model,
        ctx,
        stream,
        steps=steps,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        loss_fn=loss_fn,
    )
    return MethodOutcome(steps=steps)
