"""Pieces shared by the methods: the run context, budgets, Fisher diagonals and masks, and the
small training loops the baselines are made of."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from app.unlearning.config import OriginalTraining
from app.unlearning.data import ArrayDataset, BatchStream, DeviceData, Split
from app.unlearning.device import make_generator
from app.unlearning.reference_kit import MemberTargets
from app.unlearning.runtime import Reporter
from app.unlearning.training import cosine_lr, make_sgd, set_lr

Mask = list[torch.Tensor]


@dataclass
class MethodContext:
    """Everything a method needs besides its config; device tensors are built on first use."""

    split: Split
    original: OriginalTraining
    device: torch.device
    seed: int
    reporter: Reporter
    channels_last: bool
    #: Per forget sample, the membership threshold from a reference kit (sample-wise requests
    #: only); methods that can use it (SFR-on) aim at it, the others ignore it.
    member_targets: MemberTargets | None = None
    _cache: dict[str, DeviceData] = field(default_factory=dict)

    def on_device(self, name: str, data: ArrayDataset) -> DeviceData:
        if name not in self._cache:
            self._cache[name] = DeviceData(data, self.device, channels_last=self.channels_last)
        return self._cache[name]

    @property
    def forget(self) -> DeviceData:
        return self.on_device("forget", self.split.forget)

    @property
    def remain(self) -> DeviceData:
        return self.on_device("remain", self.split.remain)

    def generator(self, offset: int) -> torch.Generator:
        """Independent seeded streams for independent random choices of one run."""
        return make_generator(self.seed * 1000 + offset, self.device)

    def budget_steps(self, budget: float, explicit: int | None, minimum: int = 1) -> int:
        """An explicit count wins; else ``budget`` x the original training's optimizer steps."""
        if explicit is not None:
            return explicit
        return max(minimum, round(budget * self.original.optimizer_steps))


@dataclass
class MethodOutcome:
    """What a method reports besides the weights it changed in place."""

    steps: int
    mask_density: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def fixed_batches(
    data: DeviceData, batch_size: int, max_batches: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Up to ``max_batches`` batches of one seeded random pass (the whole set when it is small)."""
    for i, batch in enumerate(data.iterate(batch_size, shuffle=True, generator=generator)):
        if i >= max_batches:
            return
        yield batch


def fisher_diagonal(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    reporter: Reporter,
) -> list[torch.Tensor]:
    """Diagonal empirical Fisher as the spec defines it: the mean over batches of the squared
    gradient of the batch-mean cross-entropy, per parameter element, in eval mode.

    The model's mode and gradients are restored/cleared afterwards.
    """
    was_training = model.training
    model.eval()
    ps = params(model)
    acc = [torch.zeros_like(p) for p in ps]
    n = 0
    for x, y in batches:
        reporter.check()
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        for a, p in zip(acc, ps, strict=True):
            if p.grad is not None:
                a.add_(p.grad.square())
        n += 1
        reporter.counters.forward += 1
        reporter.counters.backward += 1
        reporter.counters.samples += int(y.shape[0])
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return [a / max(n, 1) for a in acc]


def ratio_mask(
    fisher_forget: list[torch.Tensor],
    fisher_remain: list[torch.Tensor],
    gamma: float,
    eps: float = 1e-15,
) -> Mask:
    """1 where (F_f + eps)/(F_r + eps) >= gamma, else 0 (float masks, one per parameter).

    >>> ratio_mask([torch.tensor([2.0, 1.0])], [torch.tensor([1.0, 2.0])], 1.0)
    [tensor([1., 0.])]
    """
    return [
        ((ff + eps) / (fr + eps) >= gamma).to(ff.dtype)
        for ff, fr in zip(fisher_forget, fisher_remain, strict=True)
    ]


def top_fraction_mask(scores: list[torch.Tensor], fraction: float) -> Mask:
    """1 for the globally top ``fraction`` of elements by score (SalUn's mask), else 0."""
    flat = torch.cat([s.flatten() for s in scores])
    k = max(1, round(fraction * flat.numel()))
    threshold = torch.topk(flat, k, sorted=True).values[-1]
    return [(s >= threshold).to(s.dtype) for s in scores]


def mask_density(mask: Mask) -> float:
    total = sum(m.numel() for m in mask)
    return float(sum(float(m.sum()) for m in mask) / max(total, 1))


def apply_mask(model: nn.Module, mask: Mask) -> None:
    for p, m in zip(params(model), mask, strict=True):
        if p.grad is not None:
            p.grad.mul_(m)


def freeze_batchnorm(model: nn.Module) -> None:
    """Put BatchNorm layers in eval mode (running statistics stay fixed), keep the rest training."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with freshly initialised parameters (what retraining starts from)."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in fresh.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
    return fresh


def random_other_labels(
    labels: np.ndarray, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Each label replaced by a uniformly random *different* class."""
    shift = rng.integers(1, num_classes, size=labels.shape)
    return ((labels + shift) % num_classes).astype(np.int64)


def concat(a: ArrayDataset, b: ArrayDataset, labels_a: np.ndarray | None = None) -> ArrayDataset:
    """``a`` + ``b`` (optionally with ``a``'s labels replaced), normalisation of ``a``."""
    return ArrayDataset(
        images=np.concatenate([a.images, b.images]),
        labels=np.concatenate([a.labels if labels_a is None else labels_a, b.labels]),
        sample_ids=np.concatenate([a.sample_ids, b.sample_ids]),
        num_classes=a.num_classes,
        mean=a.mean,
        std=a.std,
        name=a.name,
    )


StepLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]


def cross_entropy_loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor, _t: int) -> torch.Tensor:
    """The plain training loss, as a :data:`StepLoss` (FT, RL, SalUn train on it)."""
    return nn.functional.cross_entropy(m(x), y)


def sgd_loop(
    model: nn.Module,
    ctx: MethodContext,
    stream: BatchStream,
    *,
    steps: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    loss_fn: StepLoss,
    mask: Mask | None = None,
    max_norm: float | None = None,
    freeze_bn: bool = False,
    phase: str = "unlearning",
) -> None:
    """``steps`` SGD steps with a cosine lr on batches of ``stream``: the loop of FT, GA, RL,
    l1-sparse and SalUn. ``loss_fn(model, x, y, step)`` returns the loss to *minimise*."""
    optimizer = make_sgd(model, lr, momentum, weight_decay)
    model.train()
    if freeze_bn:
        freeze_batchnorm(model)
    rep = ctx.reporter
    loss = torch.zeros((), device=ctx.device)
    for t in range(steps):
        rep.step(phase, t, steps, {"loss": loss})
        set_lr(optimizer, cosine_lr(lr, t, steps))
        x, y = stream.next()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, x, y, t)
        loss.backward()  # type: ignore[no-untyped-call]
        if mask is not None:
            apply_mask(model, mask)
        if max_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        loss = loss.detach()
        rep.counters.forward += 1
        rep.counters.backward += 1
        rep.counters.optimizer_steps += 1
        rep.counters.samples += int(y.shape[0])
    rep.step(phase, steps, steps, {"loss": loss})
