"""RL: train on D_f + D_r where every forget label is replaced by a random other class."""

from __future__ import annotations

import numpy as np
from torch import nn

from app.unlearning.config import RandomLabelConfig, SalUnConfig
from app.unlearning.data import BatchStream, DeviceData
from app.unlearning.methods.common import (
    Mask,
    MethodContext,
    MethodOutcome,
    concat,
    cross_entropy_loss,
    random_other_labels,
    sgd_loop,
)


def relabelled_union(ctx: MethodContext) -> DeviceData:
    """D_f with random other labels (drawn once, seeded) + D_r, on the device."""
    split = ctx.split
    rng = np.random.default_rng(ctx.seed)
    labels = random_other_labels(split.forget.labels, split.num_classes, rng)
    union = concat(split.forget, split.remain, labels_a=labels)
    return DeviceData(union, ctx.device, channels_last=ctx.channels_last)


def run_relabel(
    model: nn.Module,
    ctx: MethodContext,
    config: RandomLabelConfig | SalUnConfig,
    mask: Mask | None,
) -> int:
    steps = ctx.budget_steps(config.budget, config.iterations)
    stream = BatchStream(relabelled_union(ctx), config.batch_size, ctx.generator(1))

    sgd_loop(
        model,
        ctx,
        stream,
        steps=steps,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        loss_fn=cross_entropy_loss,
        mask=mask,
    )
    return steps


def run(model: nn.Module, ctx: MethodContext, config: RandomLabelConfig) -> MethodOutcome:
    return MethodOutcome(steps=run_relabel(model, ctx, config, mask=None))
