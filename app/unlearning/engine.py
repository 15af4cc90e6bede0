"""The engine's entry points: :func:`unlearn` and :func:`evaluate`.

A worker calls, after the process has started (never before a fork)::

    from app.unlearning.engine import unlearn
    result = unlearn(model, split, parse_method_config("sfr_on", {}),
                     original=OriginalTraining(recipe=recipe, optimizer_steps=steps),
                     seed=0, progress=report, should_stop=cancelled)
    save_file(result.state_dict, path)          # safetensors; CPU tensors, contiguous
    result.metrics["FA"], result.record["wall_time_s"]
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from app.unlearning.config import OriginalTraining
from app.unlearning.data import Split
from app.unlearning.device import (
    describe_device,
    library_versions,
    resolve_device,
    seed_everything,
    use_channels_last,
)
from app.unlearning.evaluation.evaluator import Reference, evaluate_split
from app.unlearning.methods.common import MethodContext
from app.unlearning.methods.registry import METHODS, method_name
from app.unlearning.reference_kit import MemberTargets
from app.unlearning.runtime import Cancelled, ProgressFn, Reporter, StopFn

__all__ = ["Cancelled", "Reference", "UnlearnResult", "evaluate", "unlearn"]


@dataclass(frozen=True)
class UnlearnResult:
    """``state_dict``: the new weights (CPU, contiguous); ``metrics``: the evaluation (empty when
    ``evaluate=False``); ``record``: a JSON-serialisable account of what ran;
    ``forget_logits``: the new model's forget-set logits (to use it as a :class:`Reference`)."""

    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, float]
    record: dict[str, Any]
    forget_logits: torch.Tensor | None = None

    def as_reference(self) -> Reference:
        if self.forget_logits is None:
            raise ValueError("this result was not evaluated")
        return Reference(metrics=self.metrics, forget_logits=self.forget_logits)


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def evaluate(
    model: nn.Module,
    split: Split,
    *,
    device: str | torch.device | None = None,
    reference: Reference | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], torch.Tensor]:
    """Evaluate ``model`` on ``split`` (see :mod:`app.unlearning.evaluation.evaluator` for keys);
    returns the metrics and the forget-set logits."""
    dev = resolve_device(device)
    model.to(dev)
    return evaluate_split(model, split, device=dev, reference=reference, seed=seed)


def unlearn(
    model: nn.Module,
    data: Split,
    method_config: BaseModel,
    *,
    original: OriginalTraining,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    reference: Reference | None = None,
    evaluate: bool = True,
    member_targets: MemberTargets | None = None,
) -> UnlearnResult:
    """Run the method of ``method_config`` (a config from :mod:`app.unlearning.config`) on a copy
    of ``model``; ``model`` itself is not modified.

    ``original`` describes the original training; budgets are fractions of its optimizer steps and
    ``retrain`` reuses its recipe. ``progress`` receives ``{"phase", "step", "total", "losses"}``
    (phases: "mask", "calibrate", "unlearning", "training", "evaluating"); ``should_stop`` is
    checked before every step and raises :class:`Cancelled`. With ``reference`` (the retrained
    model's evaluation), the metrics include gaps, Avg. Gap and KL to it. ``member_targets``
    (from a reference kit, :meth:`~app.unlearning.reference_kit.ReferenceKit.forget_targets`,
    in the forget set's order) lets SFR-on aim each sample at its own OUT level.
    """
    name = method_name(method_config)
    entry = METHODS[name]
    dev = resolve_device(device)
    seed_everything(seed)
    channels_last = use_channels_last(dev, data.remain.input_shape)
    work = copy.deepcopy(model).to(dev)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    reporter = Reporter(progress=progress, should_stop=should_stop)
    ctx = MethodContext(
        split=data,
        original=original,
        device=dev,
        seed=seed,
        reporter=reporter,
        channels_last=channels_last,
        member_targets=member_targets,
    )
    reporter.check()
    start = time.perf_counter()
    outcome = entry.run(work, ctx, method_config)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    wall = time.perf_counter() - start
    metrics: dict[str, float] = {}
    forget_logits = None
    if evaluate:
        reporter.step("evaluating", 0, 1)
        metrics, forget_logits = evaluate_split(
            work, data, device=dev, reference=reference, seed=seed
        )
        reporter.step("evaluating", 1, 1)
    record: dict[str, Any] = {
        "method": name,
        "config": method_config.model_dump(mode="json"),
        "seed": seed,
        "request": {
            "kind": data.kind,
            "forget_classes": list(data.forget_classes),
            "forget_size": len(data.forget),
            "remain_size": len(data.remain),
        },
        "original_training": original.model_dump(mode="json"),
        "mask_density": outcome.mask_density,
        "steps": outcome.steps,
        **reporter.counters.as_dict(),
        "wall_time_s": wall,
        "details": outcome.details,
        "device": describe_device(dev),
        "versions": library_versions(),
    }
    return UnlearnResult(
        state_dict=cpu_state_dict(work),
        metrics=metrics,
        record=record,
        forget_logits=forget_logits,
    )
