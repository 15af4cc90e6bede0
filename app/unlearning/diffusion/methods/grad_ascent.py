"""Plain gradient ascent for a class of a diffusion model: SFR-on's loop with uniform weights
(lambda = 0) and no saliency mask, the same Adam, clipping, alpha schedule and remain step."""

from __future__ import annotations

from torch import nn

from app.unlearning.diffusion.config import DiffusionGradAscentConfig
from app.unlearning.diffusion.methods.common import DiffusionContext
from app.unlearning.diffusion.methods.sfr_on import ascent_loop
from app.unlearning.methods.common import MethodOutcome


def run(
    model: nn.Module, ctx: DiffusionContext, config: DiffusionGradAscentConfig
) -> MethodOutcome:
    final = ascent_loop(
        model,
        ctx,
        iterations=config.iterations,
        batch_size=config.batch_size,
        lr=config.lr,
        alpha0=config.alpha0,
        lam=0.0,
        loss_floor=1e-3,
        max_norm=config.max_norm,
        mask=None,
    )
    return MethodOutcome(
        steps=2 * config.iterations,
        details={"iterations": config.iterations, "alpha0": config.alpha0, "final_losses": final},
    )
