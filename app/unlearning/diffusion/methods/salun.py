"""SalUn for a class of a diffusion model: the forgotten label is trained to denoise *other*
classes' images (so asking for it yields something else), together with the plain remain loss;
gradients are masked to the top ``mask_fraction`` of weights by the magnitude of the forget
loss's gradient, computed once before the loop. One Adam step per iteration on both terms."""

from __future__ import annotations

import torch
from torch import nn

from app.unlearning.diffusion.config import DiffusionSalUnConfig
from app.unlearning.diffusion.ddpm import drop_labels, null_class, per_sample_loss
from app.unlearning.diffusion.methods.common import (
    DiffusionContext,
    count,
    masked_density,
    squared_grads,
)
from app.unlearning.methods.common import MethodOutcome, apply_mask, top_fraction_mask

MASK_BATCHES = 4


def run(model: nn.Module, ctx: DiffusionContext, config: DiffusionSalUnConfig) -> MethodOutcome:
    rep = ctx.reporter
    rep.step("mask", 0, 1)
    magnitude = squared_grads(
        model, ctx, ctx.forget_stream(config.batch_size, 101), MASK_BATCHES, ctx.generator(100),
        absolute=True,
    )  # fmt: skip
    mask = top_fraction_mask(magnitude, config.mask_fraction)
    rep.step("mask", 1, 1)
    # Other classes' images relabelled as a forgotten class, and the remain set as it is.
    relabel = ctx.remain_stream(config.batch_size, 10)
    remain = ctx.remain_stream(config.batch_size, 20)
    gen = ctx.generator(30)
    forgotten = torch.tensor(ctx.split.forget_classes, device=ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    null = null_class(model)
    model.train()
    loss = torch.zeros((), device=ctx.device)
    for t in range(config.iterations):
        rep.step("unlearning", t, config.iterations, {"loss": loss})
        xo, _ = relabel.next()
        pick = torch.randint(0, forgotten.numel(), (xo.shape[0],), generator=gen, device=ctx.device)
        yo = forgotten[pick]
        xr, yr = remain.next()
        yr = drop_labels(yr, ctx.original.label_dropout, null, gen)
        optimizer.zero_grad(set_to_none=True)
        loss = per_sample_loss(model, ctx.schedule, xo, yo, gen).mean()
        loss = (
            loss + config.remain_weight * per_sample_loss(model, ctx.schedule, xr, yr, gen).mean()
        )
        loss.backward()  # type: ignore[no-untyped-call]
        apply_mask(model, mask)
        optimizer.step()
        loss = loss.detach()
        count(rep, int(xo.shape[0]), passes=2)
        rep.counters.optimizer_steps += 1
    rep.step("unlearning", config.iterations, config.iterations, {"loss": loss})
    return MethodOutcome(
        steps=config.iterations,
        mask_density=masked_density(mask),
        details={"iterations": config.iterations, "final_loss": float(loss)},
    )
