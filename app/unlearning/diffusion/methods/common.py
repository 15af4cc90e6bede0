"""The run context of a diffusion method and the pieces the methods share: Fisher diagonals and
gradient magnitudes of the noise-prediction loss, and cost accounting."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from app.unlearning.diffusion.config import DiffusionRecipe
from app.unlearning.diffusion.data import ClassSplit
from app.unlearning.diffusion.ddpm import (
    ImageStream,
    NoiseSchedule,
    make_generator,
    per_sample_loss,
)
from app.unlearning.methods.common import Mask, params
from app.unlearning.runtime import Reporter


@dataclass
class DiffusionContext:
    """Everything a method needs besides its config and the model it changes in place."""

    split: ClassSplit
    schedule: NoiseSchedule
    original: DiffusionRecipe
    device: torch.device
    seed: int
    reporter: Reporter

    def generator(self, offset: int) -> torch.Generator:
        """Independent seeded streams for independent random choices of one run."""
        return make_generator(self.seed * 1000 + offset, self.device)

    def forget_stream(self, batch_size: int, offset: int) -> ImageStream:
        s = self.split
        return ImageStream(s.forget_images, s.forget_labels, batch_size, self.generator(offset))

    def remain_stream(self, batch_size: int, offset: int) -> ImageStream:
        s = self.split
        return ImageStream(s.remain_images, s.remain_labels, batch_size, self.generator(offset))


def count(rep: Reporter, batch: int, passes: int = 1) -> None:
    rep.counters.forward += passes
    rep.counters.backward += passes
    rep.counters.samples += batch * passes


def squared_grads(
    model: nn.Module,
    ctx: DiffusionContext,
    stream: ImageStream,
    batches: int,
    generator: torch.Generator,
    *,
    absolute: bool = False,
) -> list[torch.Tensor]:
    """Mean over ``batches`` batches of the squared (or, with ``absolute``, the absolute)
    gradient of the batch-mean noise-prediction loss, per parameter element. With squares this
    is the spec's diagonal empirical Fisher; gradients are cleared afterwards."""
    ps = params(model)
    acc = [torch.zeros_like(p) for p in ps]
    for _ in range(batches):
        ctx.reporter.check()
        x, y = stream.next()
        model.zero_grad(set_to_none=True)
        per_sample_loss(model, ctx.schedule, x, y, generator).mean().backward()  # type: ignore[no-untyped-call]
        for a, p in zip(acc, ps, strict=True):
            if p.grad is not None:
                a.add_(p.grad.abs() if absolute else p.grad.square())
        count(ctx.reporter, int(y.shape[0]))
    model.zero_grad(set_to_none=True)
    return [a / max(batches, 1) for a in acc]


def masked_density(mask: Mask | None) -> float | None:
    if mask is None:
        return None
    total = sum(m.numel() for m in mask)
    return float(sum(float(m.sum()) for m in mask) / max(total, 1))
