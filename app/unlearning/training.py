"""Training from scratch (the original model, retrain, the service's demo): SGD with momentum
and a cosine learning rate stepped once per optimizer step.

>>> from app.unlearning.architectures import build_model
>>> from app.unlearning.data import load_digits
>>> train_set, _ = load_digits()
>>> model = build_model("small_cnn", {"num_classes": 10, "width": 8, "hidden": 16})
>>> report = train(model, train_set, TrainingRecipe(epochs=1), device=torch.device("cpu"), seed=0)
>>> report.optimizer_steps == -(-len(train_set) // 128)
True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from app.unlearning.config import TrainingRecipe
from app.unlearning.data import ArrayDataset, DeviceData
from app.unlearning.device import make_generator, seed_everything, use_channels_last
from app.unlearning.runtime import Counters, ProgressFn, Reporter, StopFn


@dataclass(frozen=True)
class TrainReport:
    optimizer_steps: int
    wall_time_s: float
    final_loss: float
    counters: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "optimizer_steps": self.optimizer_steps,
            "wall_time_s": self.wall_time_s,
            "final_loss": self.final_loss,
            **self.counters,
        }


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine annealing from ``base`` at step 0 to 0 at step ``total``."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def make_sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_samples / batch_size))


def train(
    model: nn.Module,
    data: ArrayDataset,
    recipe: TrainingRecipe,
    *,
    device: torch.device,
    seed: int,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    reporter: Reporter | None = None,
) -> TrainReport:
    """Train ``model`` in place on ``data`` with ``recipe``; every epoch is a fresh permutation
    (and fresh augmentation). Returns the number of optimizer steps, the unit of every unlearning
    budget. Raises :class:`~app.unlearning.runtime.Cancelled` when ``should_stop`` fires."""
    seed_everything(seed)
    rep = reporter or Reporter(progress=progress, should_stop=should_stop)
    counters = Counters()
    channels_last = use_channels_last(device, data.input_shape)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dev_data = DeviceData(data, device, channels_last=channels_last)
    gen = make_generator(seed, device)
    optimizer = make_sgd(model, recipe.lr, recipe.momentum, recipe.weight_decay)
    total = recipe.epochs * steps_per_epoch(len(data), recipe.batch_size)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    step = 0
    loss = torch.zeros((), device=device)
    model.train()
    for _ in range(recipe.epochs):
        for x, y in dev_data.iterate(
            recipe.batch_size, shuffle=True, generator=gen, augment=recipe.augment
        ):
            rep.step("training", step, total, {"loss": loss})
            set_lr(optimizer, cosine_lr(recipe.lr, step, total))
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            step += 1
            counters.forward += 1
            counters.backward += 1
            counters.optimizer_steps += 1
            counters.samples += int(y.shape[0])
    rep.step("training", step, total, {"loss": loss.detach()})
    rep.counters.add(counters)
    return TrainReport(
        optimizer_steps=step,
        wall_time_s=time.perf_counter() - start,
        final_loss=float(loss.detach()),
        counters=counters.as_dict(),
    )
