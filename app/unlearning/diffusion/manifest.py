"""What an upload of a class-conditional diffusion model must say, checked without torch: the
``UNet2DModel`` config (allowlisted keys and ranges), the scheduler config, the training recipe,
and that all of it fits the dataset the model names (image shape, number of classes). Also the
one refusal that forget requests on a diffusion model get when they name samples.

>>> spec = parse_diffusion_spec(
...     {"unet": TINY_UNET, "scheduler": {"num_train_timesteps": 1000}},
...     dataset_classes=10, image_shape=(1, 8, 8),
... )
>>> spec.unet.num_classes, spec.scheduler.beta_end
(10, 0.02)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.unlearning.diffusion.config import (
    TINY_UNET,
    DiffusionConfigError,
    DiffusionRecipe,
    SchedulerConfig,
    UNetConfig,
    parse_diffusion_recipe,
    parse_scheduler_config,
    parse_unet_config,
)

__all__ = [
    "DIFFUSION_ARCHITECTURE",
    "SAMPLE_WISE_REFUSAL",
    "TINY_UNET",
    "DiffusionSpec",
    "parse_diffusion_spec",
    "refuse_sample_wise",
]

#: The ``architecture`` a model spec names for a class-conditional diffusion model; its ``args``
#: are ``{"unet": ..., "scheduler": ..., "training": ...}``.
DIFFUSION_ARCHITECTURE = "ddpm_unet2d"

#: Why a diffusion model takes only class-wise forget requests (the problem document's detail).
SAMPLE_WISE_REFUSAL = (
    "a diffusion model can forget whole classes only: sample-wise forgetting of a generative "
    "model has no measured method or evaluation here (retrain would still generate images like "
    "the forgotten ones, so forget-class accuracy cannot judge it); send class_ids instead "
    "of sample_ids"
)


class DiffusionSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    unet: UNetConfig
    scheduler: SchedulerConfig
    training: DiffusionRecipe


def parse_diffusion_spec(
    raw: Any, *, dataset_classes: int, image_shape: tuple[int, int, int]
) -> DiffusionSpec:
    """Validate ``{"unet": ..., "scheduler": ..., "training": ...}`` against the dataset; errors
    name the field (``unet.<key>``, ``scheduler.<key>``, ``training.<key>``)."""
    if not isinstance(raw, dict):
        raise DiffusionConfigError("spec", "must be a JSON object")
    unknown = sorted(set(raw) - {"unet", "scheduler", "training"})
    if unknown:
        raise DiffusionConfigError(f"{unknown[0]}", "unknown key")
    if "unet" not in raw:
        raise DiffusionConfigError("unet", "the UNet2DModel config is required")
    unet = parse_unet_config(raw["unet"], num_classes=dataset_classes)
    c, h, w = image_shape
    if unet.in_channels != c or unet.sample_size != h or h != w:
        raise DiffusionConfigError(
            "unet.sample_size",
            f"the model generates {unet.in_channels}x{unet.sample_size}x{unet.sample_size} "
            f"images but the dataset's are {c}x{h}x{w}",
        )
    try:
        training = parse_diffusion_recipe(raw.get("training"))
    except DiffusionConfigError as exc:
        raise DiffusionConfigError(
            exc.field.replace("recipe", "training", 1), exc.message
        ) from None
    return DiffusionSpec(
        unet=unet, scheduler=parse_scheduler_config(raw.get("scheduler")), training=training
    )


def refuse_sample_wise(sample_count: int) -> DiffusionConfigError | None:
    """The error a forget request naming ``sample_count`` samples gets on a diffusion model."""
    if sample_count > 0:
        return DiffusionConfigError("forget_ids", SAMPLE_WISE_REFUSAL)
    return None
