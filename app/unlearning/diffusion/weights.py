"""The worker's deep check of an uploaded diffusion model: build the ``UNet2DModel`` offline from
its allowlisted config, load safetensors weights (names and shapes compared from the header
before any bytes are read), run a few denoising steps, and record a small baseline with the
generation evaluation. Nothing is unpickled and nothing is downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.unlearning.data import ArrayDataset
from app.unlearning.diffusion.config import SamplingConfig
from app.unlearning.diffusion.ddpm import NoiseSchedule, build_unet, ddim_sample
from app.unlearning.diffusion.evaluation import GenerationEvaluator, evaluate_generation
from app.unlearning.diffusion.manifest import DiffusionSpec
from app.unlearning.weights import ModelRejected, load_weights


def build_and_load(spec: DiffusionSpec, path: Path) -> nn.Module:
    model = build_unet(spec.unet)
    state = load_weights(path, model.state_dict())
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelRejected(f"weights contain NaN or infinite values: {bad[:8]}")
    model.load_state_dict(state, strict=True)
    return model


def deep_check(
    weights_path: Path,
    spec: DiffusionSpec,
    *,
    test: ArrayDataset,
    evaluator: GenerationEvaluator | None,
    device: torch.device,
    n_per_class: int = 16,
    sampling: SamplingConfig | None = None,
) -> dict[str, Any]:
    """Raise :class:`ModelRejected` when the upload is unusable; else return its baseline (the
    generation metrics with no class forgotten, when an evaluator is given)."""
    model = build_and_load(spec, weights_path).to(device)
    schedule = NoiseSchedule.from_config(spec.scheduler)
    probe = ddim_sample(
        model,
        schedule,
        torch.arange(min(4, spec.unet.num_classes), device=device),
        image_shape=(spec.unet.in_channels, spec.unet.sample_size, spec.unet.sample_size),
        config=SamplingConfig(steps=3),
        seed=0,
    )
    if not torch.isfinite(probe).all():
        raise ModelRejected("a few denoising steps gave non-finite images")
    metrics: dict[str, Any] = {"device": str(device), "probe_steps": 3}
    if evaluator is not None:
        out, _ = evaluate_generation(
            model,
            schedule,
            evaluator,
            forget_classes=(),
            num_classes=spec.unet.num_classes,
            real_test=test,
            n_forget=0,
            n_kept=n_per_class,
            sampling=sampling or SamplingConfig(),
            device=device,
        )
        metrics.update(
            {k: v for k, v in out.items() if k not in ("FA", "UA", "forget_entropy", "forget_prob")}
        )
        metrics["evaluator"] = evaluator.source
    return metrics
