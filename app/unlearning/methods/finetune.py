"""FT: fine-tune on the remain set only (catastrophic forgetting of D_f as the mechanism)."""

from __future__ import annotations

from torch import nn

from app.unlearning.config import FinetuneConfig
from app.unlearning.data import BatchStream
from app.unlearning.methods.common import MethodContext, MethodOutcome, cross_entropy_loss, sgd_loop


def run(model: nn.Module, ctx: MethodContext, config: FinetuneConfig) -> MethodOutcome:
    steps = ctx.budget_steps(config.budget, config.iterations)
    stream = BatchStream(ctx.remain, config.batch_size, ctx.generator(1))

    sgd_loop(
        model,
        ctx,
        stream,
        steps=steps,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        loss_fn=cross_entropy_loss,
    )
    return MethodOutcome(steps=steps)
