"""A tiny class-conditional denoiser trained from scratch on small images (scikit-learn's 8x8
digits): the original model of ``lethe demo --generation`` and of the service's generation tests.
About half a minute on one CPU core."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from app.unlearning.diffusion.config import TINY_UNET, DiffusionRecipe, parse_unet_config
from app.unlearning.diffusion.data import to_unit
from app.unlearning.diffusion.ddpm import NoiseSchedule, build_unet, train_denoiser
from app.unlearning.runtime import Reporter

TINY_RECIPE: dict[str, Any] = {"steps": 600, "batch_size": 128, "lr": 2e-3, "warmup": 50}
TIMESTEPS = 1000


def train_tiny_denoiser(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    recipe: dict[str, Any] | None = None,
    seed: int = 0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> bytes:
    """The trained weights as safetensors bytes; ``images`` uint8 (N, C, H, W)."""
    threads = torch.get_num_threads()
    # Small convolutions run much faster on one thread than on two of a shared CPU.
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = build_unet(parse_unet_config(TINY_UNET, num_classes=num_classes))
        train_denoiser(
            model,
            to_unit(np.asarray(images), torch.device("cpu")),
            torch.from_numpy(np.asarray(labels, dtype=np.int64)),
            NoiseSchedule.linear(TIMESTEPS, 1e-4, 0.02),
            DiffusionRecipe(**(recipe or TINY_RECIPE)),
            seed=seed,
            reporter=Reporter(progress=progress),
        )
    finally:
        torch.set_num_threads(threads)
    return bytes(save({k: v.contiguous() for k, v in model.state_dict().items()}))


def tiny_denoiser_spec(
    dataset_id: str,
    *,
    name: str = "digits-ddpm",
    input_shape: tuple[int, int, int] = (1, 8, 8),
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The model spec the service takes with :func:`train_tiny_denoiser`'s weights."""
    return {
        "name": name,
        "architecture": "ddpm_unet2d",
        "args": {
            "unet": TINY_UNET,
            "scheduler": {"num_train_timesteps": TIMESTEPS},
            "training": recipe or TINY_RECIPE,
        },
        "input_shape": list(input_shape),
        "dataset_id": dataset_id,
    }
