"""SFR-on for a class of a diffusion model, the spec's DDPM recipe: Adam (lr 1e-4); per
iteration one forget step, loss ``-alpha_t * sum_i w_i l_i`` on noise-prediction losses with
constant adaptive weights ``w_i ~ max(l_i, floor)^-lambda`` (the floor keeps near-zero losses from
taking the whole batch's weight), the gradient multiplied by the Fisher-ratio saliency mask and
clipped to ``max_norm``; then one plain remain step with the original's label dropout.
``alpha_t`` decays from ``alpha0`` to 0 on a cosine over the iterations.

This is the spec's recipe with the config's values as given. Calibrating alpha0 and the
iteration count against a forgetting target measured on generated samples is
:mod:`app.unlearning.diffusion.calibration`, which runs this loop with a hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from app.unlearning.diffusion.config import DiffusionSFROnConfig
from app.unlearning.diffusion.ddpm import cosine, drop_labels, null_class, per_sample_loss
from app.unlearning.diffusion.methods.common import (
    DiffusionContext,
    count,
    masked_density,
    squared_grads,
)
from app.unlearning.methods.common import Mask, MethodOutcome, apply_mask, params, ratio_mask
from app.unlearning.methods.sfr_on import adaptive_weights


def saliency_mask(
    model: nn.Module, ctx: DiffusionContext, batch_size: int, batches: int, gamma: float
) -> Mask:
    """1 where (F_f + eps)/(F_r + eps) >= gamma on the noise-prediction loss's Fisher diagonals."""
    g = ctx.generator(100)
    f_f = squared_grads(model, ctx, ctx.forget_stream(batch_size, 101), batches, g)
    f_r = squared_grads(model, ctx, ctx.remain_stream(batch_size, 102), batches, g)
    return ratio_mask(f_f, f_r, gamma)


def ascent_loop(
    model: nn.Module,
    ctx: DiffusionContext,
    *,
    iterations: int,
    batch_size: int,
    lr: float,
    alpha0: float,
    lam: float,
    loss_floor: float,
    max_norm: float,
    mask: Mask | None,
    alpha_at: Callable[[int], float] | None = None,
    after: Callable[[int, torch.Tensor], bool] | None = None,
) -> dict[str, Any]:
    """The forget/remain loop shared by SFR-on and plain gradient ascent (lambda 0, no mask).

    ``alpha_at(t)``: the ascent weight of iteration t (default: the cosine from ``alpha0`` over
    ``iterations``). ``after(done, norm)``: called after every iteration with the number done and
    the forget step's gradient norm before clipping (a device tensor, not synced here); True
    stops the loop there. Neither changes a random draw, so a run with a hook that never stops
    is the same run as one without."""

    def weight(t: int) -> float:
        return cosine(alpha0, t, iterations) if alpha_at is None else alpha_at(t)

    rep = ctx.reporter
    forget, remain = ctx.forget_stream(batch_size, 10), ctx.remain_stream(batch_size, 20)
    gen = ctx.generator(30)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    null = null_class(model)
    model.train()
    zero = torch.zeros((), device=ctx.device)
    losses: dict[str, torch.Tensor] = {"forget": zero, "remain": zero}
    for t in range(iterations):
        rep.step("unlearning", t, iterations, losses)
        x, y = forget.next()
        optimizer.zero_grad(set_to_none=True)
        per = per_sample_loss(model, ctx.schedule, x, y, gen)
        w = adaptive_weights(per, lam, loss_floor)
        (-weight(t) * (w * per).sum()).backward()  # type: ignore[no-untyped-call]
        if mask is not None:
            apply_mask(model, mask)
        norm = nn.utils.clip_grad_norm_(params(model), max_norm)
        optimizer.step()
        losses["forget"] = per.detach().mean()
        count(rep, int(y.shape[0]))
        x, y = remain.next()
        y = drop_labels(y, ctx.original.label_dropout, null, gen)
        optimizer.zero_grad(set_to_none=True)
        loss = per_sample_loss(model, ctx.schedule, x, y, gen).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses["remain"] = loss.detach()
        count(rep, int(y.shape[0]))
        rep.counters.optimizer_steps += 2
        if after is not None and after(t + 1, norm.detach()):
            rep.step("unlearning", t + 1, t + 1, losses)
            return {k: float(v) for k, v in losses.items()}
    rep.step("unlearning", iterations, iterations, losses)
    return {k: float(v) for k, v in losses.items()}


def config_mask(
    model: nn.Module, ctx: DiffusionContext, config: DiffusionSFROnConfig
) -> Mask | None:
    """The saliency mask ``config`` asks for (None with ``use_mask`` off), with progress."""
    if not config.use_mask:
        return None
    ctx.reporter.step("mask", 0, 1)
    mask = saliency_mask(model, ctx, config.batch_size, config.fisher_max_batches, config.gamma)
    ctx.reporter.step("mask", 1, 1)
    return mask


def run(model: nn.Module, ctx: DiffusionContext, config: DiffusionSFROnConfig) -> MethodOutcome:
    mask = config_mask(model, ctx, config)
    final = ascent_loop(
        model,
        ctx,
        iterations=config.iterations,
        batch_size=config.batch_size,
        lr=config.lr,
        alpha0=config.alpha0,
        lam=config.lam,
        loss_floor=config.loss_floor,
        max_norm=config.max_norm,
        mask=mask,
    )
    return MethodOutcome(
        steps=2 * config.iterations,
        mask_density=masked_density(mask),
        details={"iterations": config.iterations, "alpha0": config.alpha0, "final_losses": final},
    )
