"""DDPM pieces written from the spec: the linear noise schedule, forward noising, the per-sample
noise-prediction loss, training with classifier-free guidance, and a seeded DDIM sampler.

Images live in [-1, 1]. A denoiser is any ``diffusers`` ``UNet2DModel`` with
``num_class_embeds = classes + 1``; the last class index is the null class.

>>> s = NoiseSchedule.linear(1000, 1e-4, 0.02)
>>> round(float(s.alpha_bar[0]), 6), round(float(s.alpha_bar[-1]), 6)
(0.9999, 4e-05)
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from app.unlearning.diffusion.config import (
    DiffusionRecipe,
    SamplingConfig,
    SchedulerConfig,
    UNetConfig,
)
from app.unlearning.runtime import Counters, Reporter


def build_unet(config: UNetConfig) -> nn.Module:
    """A ``UNet2DModel`` from an allowlisted config, offline (nothing is fetched)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import UNet2DModel

    model = UNet2DModel(**config.constructor_kwargs())  # type: ignore[no-untyped-call]
    return cast(nn.Module, model)


def null_class(model: nn.Module) -> int:
    """The null ("unconditional") class index of a denoiser: its last embedding row."""
    config: Any = model.config
    return int(config.num_class_embeds) - 1


def predict_noise(
    model: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    out: torch.Tensor = model(x, t, class_labels=labels).sample
    return out


@dataclass(frozen=True)
class NoiseSchedule:
    betas: torch.Tensor
    alpha_bar: torch.Tensor

    @classmethod
    def linear(cls, steps: int, beta_start: float, beta_end: float) -> NoiseSchedule:
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        return cls(betas=betas.float(), alpha_bar=torch.cumprod(1.0 - betas, 0).float())

    @classmethod
    def from_config(cls, config: SchedulerConfig) -> NoiseSchedule:
        return cls.linear(config.num_train_timesteps, config.beta_start, config.beta_end)

    @property
    def steps(self) -> int:
        return int(self.betas.numel())

    def to(self, device: torch.device) -> NoiseSchedule:
        return NoiseSchedule(self.betas.to(device), self.alpha_bar.to(device))


def q_sample(
    schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
    ab = schedule.alpha_bar.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def per_sample_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """l_i = mean over pixels of (eps - eps_theta(x_t, t, c))^2, t uniform and eps Gaussian drawn
    fresh unless given; shape ``(B,)``."""
    b = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.steps, (b,), generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    pred = predict_noise(model, q_sample(schedule, x0, t, noise), t, labels)
    return (pred - noise).square().flatten(1).mean(1)


def drop_labels(
    labels: torch.Tensor, p: float, null: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Classifier-free guidance training: each label replaced by ``null`` with probability p."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null), labels)


class ImageStream:
    """Endless shuffled batches of (images in [-1, 1], labels) from device tensors; reshuffled
    on every pass, a pass's last partial batch dropped unless the set is smaller than a batch."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
    ) -> None:
        if images.shape[0] == 0:
            raise ValueError("cannot stream batches from an empty set")
        self.images, self.labels, self.generator = images, labels, generator
        self.batch_size = min(batch_size, int(images.shape[0]))
        self._order = torch.empty(0, dtype=torch.long, device=images.device)
        self._pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos + self.batch_size > self._order.numel():
            self._order = torch.randperm(
                int(self.images.shape[0]), generator=self.generator, device=self.images.device
            )
            self._pos = 0
        index = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.images[index], self.labels[index]


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


@dataclass(frozen=True)
class DiffusionTrainReport:
    steps: int
    wall_time_s: float
    final_loss: float
    counters: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "optimizer_steps": self.steps,
            "wall_time_s": self.wall_time_s,
            "final_loss": self.final_loss,
            **self.counters,
        }


def train_denoiser(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    schedule: NoiseSchedule,
    recipe: DiffusionRecipe,
    *,
    seed: int,
    reporter: Reporter | None = None,
    phase: str = "training",
) -> DiffusionTrainReport:
    """Train ``model`` in place with the noise-prediction loss and label dropout; Adam with a
    linear warm-up then a constant learning rate. ``images`` in [-1, 1] on the model's device."""
    rep = reporter or Reporter()
    device = images.device
    gen = make_generator(seed, device)
    stream = ImageStream(images, labels, recipe.batch_size, gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    null = null_class(model)
    counters = Counters()
    loss = torch.zeros((), device=device)
    model.train()
    start = time.perf_counter()
    for step in range(recipe.steps):
        rep.step(phase, step, recipe.steps, {"loss": loss})
        lr = recipe.lr * min(1.0, (step + 1) / recipe.warmup) if recipe.warmup else recipe.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = stream.next()
        y = drop_labels(y, recipe.label_dropout, null, gen)
        optimizer.zero_grad(set_to_none=True)
        loss = per_sample_loss(model, schedule, x, y, gen).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        loss = loss.detach()
        counters.forward += 1
        counters.backward += 1
        counters.optimizer_steps += 1
        counters.samples += int(y.shape[0])
    rep.step(phase, recipe.steps, recipe.steps, {"loss": loss})
    rep.counters.add(counters)
    return DiffusionTrainReport(
        steps=recipe.steps,
        wall_time_s=time.perf_counter() - start,
        final_loss=float(loss),
        counters=counters.as_dict(),
    )


@torch.no_grad()
def ddim_sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    labels: torch.Tensor,
    *,
    image_shape: tuple[int, int, int],
    config: SamplingConfig,
    seed: int,
    reporter: Reporter | None = None,
) -> torch.Tensor:
    """DDIM samples for ``labels`` with classifier-free guidance, in [-1, 1], on the labels'
    device. The same seed, labels and model give the same images; batches are drawn from one
    seeded generator in order so the result does not depend on ``config.batch_size`` only
    through the noise of each image."""
    device = labels.device
    was_training = model.training
    model.eval()
    null = null_class(model)
    gen = make_generator(seed, device)
    # All initial noise first, so image i's noise does not depend on how batches are cut.
    noise = torch.randn((labels.shape[0], *image_shape), generator=gen, device=device)
    T = schedule.steps
    # Evenly spaced timesteps, T-1 first (the DDIM "trailing"-free linspace choice).
    ts = torch.linspace(T - 1, 0, config.steps, device=device).round().long()
    ab = schedule.alpha_bar.to(device)
    out = []
    for start in range(0, labels.shape[0], config.batch_size):
        x = noise[start : start + config.batch_size].clone()
        c = labels[start : start + config.batch_size]
        b = x.shape[0]
        both = torch.cat([c, torch.full_like(c, null)])
        for i, t in enumerate(ts):
            if reporter is not None:
                reporter.check()
            tt = t.expand(2 * b)
            eps2 = predict_noise(model, torch.cat([x, x]), tt, both)
            eps_c, eps_u = eps2[:b], eps2[b:]
            eps = (1.0 + config.guidance) * eps_c - config.guidance * eps_u
            a_t = ab[t]
            a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=device)
            x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            # Re-derive eps from the clipped x0 so the update stays consistent with it.
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            sigma = config.eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp_min(0).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps
            if config.eta > 0:
                x = x + sigma * torch.randn(x.shape, generator=gen, device=device)
            if reporter is not None:
                reporter.counters.forward += 1
                reporter.counters.samples += 2 * b
        out.append(x.clamp(-1, 1))
    model.train(was_training)
    return torch.cat(out) if out else noise


def cosine(alpha0: float, t: int, total: int) -> float:
    return alpha0 * 0.5 * (1.0 + math.cos(math.pi * t / max(total, 1)))
