"""SalUn: random-label training with gradients masked to the weights most salient for forgetting
(the top ``mask_fraction`` by the magnitude of the forget-loss gradient)."""

from __future__ import annotations

import torch
from torch import nn

from app.unlearning.config import SalUnConfig
from app.unlearning.methods.common import (
    MethodContext,
    MethodOutcome,
    mask_density,
    params,
    top_fraction_mask,
)
from app.unlearning.methods.random_label import run_relabel


def forget_gradient_magnitude(
    model: nn.Module, ctx: MethodContext, batch_size: int
) -> list[torch.Tensor]:
    """|grad of the summed batch-mean CE| over one in-order pass of the forget set, in eval mode."""
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for x, y in ctx.forget.iterate(batch_size):
        ctx.reporter.check()
        nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        ctx.reporter.counters.forward += 1
        ctx.reporter.counters.backward += 1
        ctx.reporter.counters.samples += int(y.shape[0])
    grads = [p.grad.abs() if p.grad is not None else torch.zeros_like(p) for p in params(model)]
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return grads


def run(model: nn.Module, ctx: MethodContext, config: SalUnConfig) -> MethodOutcome:
    ctx.reporter.step("mask", 0, 1)
    mask = top_fraction_mask(
        forget_gradient_magnitude(model, ctx, config.batch_size), config.mask_fraction
    )
    ctx.reporter.step("mask", 1, 1)
    steps = run_relabel(model, ctx, config, mask=mask)
    return MethodOutcome(steps=steps, mask_density=mask_density(mask))
