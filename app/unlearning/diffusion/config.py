"""Torch-free, typed configuration of class-conditional diffusion models and of the methods that
make one forget a class (see ``shared/spec/generation.md``).

The API validates an uploaded model's JSON and a forget request with these classes without
importing torch or ``diffusers``; the engine receives the parsed objects. Every class refuses
unknown keys, and errors name the offending field (``unet.<key>``, ``scheduler.<key>``,
``config.<key>``).

>>> cfg = parse_unet_config(TINY_UNET, num_classes=10)
>>> (cfg.sample_size, cfg.num_class_embeds)
(8, 11)
>>> try:
...     parse_unet_config({**TINY_UNET, "auto_map": {"UNet2DModel": "x.Y"}})
... except DiffusionConfigError as exc:
...     print(exc.field)
unet.auto_map
>>> try:
...     parse_diffusion_method_config("sfr_on", {"alpha0": -1})
... except DiffusionConfigError as exc:
...     print(exc)
config.alpha0: Input should be greater than 0
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class DiffusionConfigError(ValueError):
    """A diffusion model's JSON or a method request is invalid; ``field`` names the part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Keys that make a loader fetch or execute something; refused with a message that says so rather
# than the generic "unknown key".
REMOTE_CODE_KEYS = frozenset(
    {"auto_map", "trust_remote_code", "_name_or_path", "custom_pipeline", "_commit_hash"}
)
DownBlock = Literal["DownBlock2D", "AttnDownBlock2D"]
UpBlock = Literal["UpBlock2D", "AttnUpBlock2D"]


class UNetConfig(_Strict):
    """The allowlisted subset of ``diffusers.UNet2DModel``'s constructor arguments.

    ``num_class_embeds`` is the number of classes plus one: the last index is the "null" class of
    classifier-free guidance. Bounds keep an upload to what a worker can build and run.
    """

    class_name: Literal["UNet2DModel"] = Field(default="UNet2DModel", alias="_class_name")
    diffusers_version: str | None = Field(default=None, alias="_diffusers_version", max_length=32)
    sample_size: int = Field(ge=4, le=256)
    in_channels: int = Field(default=1, ge=1, le=4)
    out_channels: int = Field(default=1, ge=1, le=4)
    block_out_channels: tuple[int, ...] = Field(min_length=1, max_length=5)
    layers_per_block: int = Field(default=1, ge=1, le=4)
    down_block_types: tuple[DownBlock, ...] = Field(min_length=1, max_length=5)
    up_block_types: tuple[UpBlock, ...] = Field(min_length=1, max_length=5)
    mid_block_type: Literal["UNetMidBlock2D"] | None = "UNetMidBlock2D"
    norm_num_groups: int = Field(default=8, ge=1, le=64)
    norm_eps: float = Field(default=1e-5, gt=0, le=1e-1)
    attention_head_dim: int | None = Field(default=8, ge=1, le=512)
    add_attention: bool = True
    act_fn: Literal["silu"] = "silu"
    time_embedding_type: Literal["positional"] = "positional"
    flip_sin_to_cos: bool = True
    freq_shift: int = Field(default=0, ge=0, le=1)
    center_input_sample: bool = False
    downsample_padding: int = Field(default=1, ge=0, le=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    resnet_time_scale_shift: Literal["default"] = "default"
    class_embed_type: None = None
    num_class_embeds: int = Field(ge=3, le=1001)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> UNetConfig:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                "block_out_channels, down_block_types and up_block_types differ in length"
            )
        if any(not 4 <= c <= 512 for c in self.block_out_channels):
            raise ValueError("every block_out_channels entry must lie in [4, 512]")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("norm_num_groups must divide every block_out_channels entry")
        if self.out_channels != self.in_channels:
            raise ValueError("a noise-prediction network has out_channels == in_channels")
        if self.sample_size % (2 ** (n - 1)):
            raise ValueError(f"sample_size must be divisible by 2^{n - 1} (one per downsampling)")
        return self

    @property
    def num_classes(self) -> int:
        """Real classes; the last embedding index is the null class."""
        return self.num_class_embeds - 1

    def constructor_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude={"class_name", "diffusers_version"})


class SchedulerConfig(_Strict):
    """The DDPM noise schedule the model was trained with (linear betas, epsilon prediction),
    the allowlisted subset of a ``diffusers`` ``DDPMScheduler``/``DDIMScheduler`` config."""

    class_name: Literal["DDPMScheduler", "DDIMScheduler"] = Field(
        default="DDPMScheduler", alias="_class_name"
    )
    diffusers_version: str | None = Field(default=None, alias="_diffusers_version", max_length=32)
    num_train_timesteps: int = Field(default=1000, ge=10, le=4000)
    beta_start: float = Field(default=1e-4, gt=0, lt=1)
    beta_end: float = Field(default=0.02, gt=0, lt=1)
    beta_schedule: Literal["linear"] = "linear"
    prediction_type: Literal["epsilon"] = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = Field(default=1.0, gt=0, le=10)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _increasing(self) -> SchedulerConfig:
        if self.beta_end <= self.beta_start:
            raise ValueError("beta_end must exceed beta_start")
        return self


class DiffusionRecipe(_Strict):
    """How a denoiser is trained from scratch (the original, retrain): Adam with a constant
    learning rate after a short warm-up, the label dropped to null with ``label_dropout``."""

    steps: int = Field(default=2000, ge=1, le=10_000_000)
    batch_size: int = Field(default=128, ge=1, le=8192)
    lr: float = Field(default=1e-3, gt=0, le=1)
    warmup: int = Field(default=100, ge=0, le=1_000_000)
    label_dropout: float = Field(default=0.1, ge=0, lt=1)


class SamplingConfig(_Strict):
    """DDIM sampling with classifier-free guidance: eps = (1+w) eps(x,t,c) - w eps(x,t,null)."""

    steps: int = Field(default=50, ge=1, le=1000)
    eta: float = Field(default=0.0, ge=0, le=1)
    guidance: float = Field(default=2.0, ge=0, le=20)
    batch_size: int = Field(default=256, ge=1, le=4096)


class _MethodConfig(_Strict):
    name: ClassVar[str]

    iterations: int = Field(default=150, ge=1, le=1_000_000)
    batch_size: int = Field(default=128, ge=1, le=8192)
    lr: float = Field(default=1e-4, gt=0, le=1, description="Adam learning rate.")


class DiffusionSFROnConfig(_MethodConfig):
    """SFR-on for a class of a diffusion model (the spec's DDPM recipe): per iteration one forget
    step (-alpha_t sum w_i l_i, adaptive weights w_i ~ max(l_i, floor)^-lambda, gradient masked
    by the Fisher-ratio saliency mask, then clipped) and one plain remain step, one Adam."""

    name: ClassVar[str] = "sfr_on"

    alpha0: float = Field(default=10.0, gt=0, le=1e6, description="alpha_t = cosine decay of it.")
    lam: float = Field(default=0.5, ge=0, le=10)
    loss_floor: float = Field(default=1e-3, gt=0, le=1)
    max_norm: float = Field(default=1.0, gt=0, le=1e6, description="Clip of the forget step.")
    gamma: float = Field(default=1.0, gt=0, le=1e6, description="Mask threshold on F_f/F_r.")
    use_mask: bool = True
    fisher_max_batches: int = Field(default=4, ge=1, le=10_000)
    calibrate: bool = Field(
        default=True,
        description="Decide alpha0 and the iteration count on probes of generated samples of the "
        "forgotten class (each only when not given explicitly); off: the values as given, the "
        "spec's recipe. Used by app.unlearning.diffusion.calibration.",
    )
    calibration_max_iterations: int = Field(
        default=150,
        ge=1,
        le=1_000_000,
        description="Budget when iterations is not given: the run stops at the first probe on "
        "target or here; also the horizon of alpha_t's cosine.",
    )
    calibration_target_fa: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Forget accuracy (points) on the probe that counts as forgotten.",
    )
    calibration_confirm: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Consecutive probes on target before the run stops.",
    )
    calibration_probe_every: int = Field(default=5, ge=1, le=100_000)
    calibration_probe_samples: int = Field(
        default=32, ge=1, le=4096, description="Generated images per forgotten class per probe."
    )
    calibration_probe_steps: int = Field(
        default=10, ge=1, le=1000, description="DDIM steps of a probe's sampling."
    )
    calibration_alpha_step: float = Field(
        default=4.0,
        gt=1,
        le=1000,
        description="Factor on alpha0 when a probe finds the run too slow to reach the target "
        "and its forget steps mostly unclipped (clipped steps do not change with alpha0).",
    )


class DiffusionGradAscentConfig(_MethodConfig):
    """Plain gradient ascent: the SFR-on loop with lambda = 0 (uniform weights) and no mask; the
    remain step stays (without it a noise predictor is destroyed in a few steps)."""

    name: ClassVar[str] = "grad_ascent"

    alpha0: float = Field(default=10.0, gt=0, le=1e6)
    max_norm: float = Field(default=1.0, gt=0, le=1e6)


class DiffusionSalUnConfig(_MethodConfig):
    """SalUn for generation: the forgotten label is trained to produce other classes' images
    (plus the plain remain loss, weighted by ``remain_weight``), gradients masked to the top
    ``mask_fraction`` of weights by forget-loss gradient magnitude."""

    name: ClassVar[str] = "salun"

    mask_fraction: float = Field(default=0.5, gt=0, le=1)
    remain_weight: float = Field(default=1.0, ge=0, le=1e3)


class DiffusionRetrainConfig(_Strict):
    """Train from scratch on the remain set with the original recipe (the exact answer)."""

    name: ClassVar[str] = "retrain"

    steps: int | None = Field(default=None, ge=1, le=10_000_000, description="Default: original's.")


DIFFUSION_METHOD_CONFIGS: dict[str, type[BaseModel]] = {
    "sfr_on": DiffusionSFROnConfig,
    "grad_ascent": DiffusionGradAscentConfig,
    "salun": DiffusionSalUnConfig,
    "retrain": DiffusionRetrainConfig,
}

DiffusionMethodConfig = (
    DiffusionSFROnConfig | DiffusionGradAscentConfig | DiffusionSalUnConfig | DiffusionRetrainConfig
)

#: A tiny denoiser for 8x8 images (scikit-learn digits): tests, the quick benchmark, the demo.
TINY_UNET: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [16, 32],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 8,
    "num_class_embeds": 11,
}


def _error(exc: ValidationError, prefix: str) -> DiffusionConfigError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    return DiffusionConfigError(f"{prefix}.{loc}" if loc else prefix, message)


def _refuse_remote(raw: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DiffusionConfigError(prefix, "must be a JSON object")
    for key in raw:
        if key in REMOTE_CODE_KEYS:
            raise DiffusionConfigError(
                f"{prefix}.{key}",
                "remote code is refused (no hub downloads and no custom classes; give the plain "
                "UNet2DModel config)",
            )
    return raw


def parse_unet_config(raw: Any, *, num_classes: int | None = None) -> UNetConfig:
    """Validate a ``UNet2DModel`` config; with ``num_classes`` (the dataset's), check that
    ``num_class_embeds == num_classes + 1`` (the extra index is the null class)."""
    try:
        cfg = UNetConfig.model_validate(_refuse_remote(raw, "unet"))
    except ValidationError as exc:
        raise _error(exc, "unet") from None
    if num_classes is not None and cfg.num_class_embeds != num_classes + 1:
        raise DiffusionConfigError(
            "unet.num_class_embeds",
            f"must be the dataset's {num_classes} classes + 1 (the null class of classifier-free"
            f" guidance), got {cfg.num_class_embeds}",
        )
    return cfg


def parse_scheduler_config(raw: Any) -> SchedulerConfig:
    try:
        return SchedulerConfig.model_validate(_refuse_remote(raw or {}, "scheduler"))
    except ValidationError as exc:
        raise _error(exc, "scheduler") from None


def parse_diffusion_recipe(raw: Any) -> DiffusionRecipe:
    try:
        return DiffusionRecipe.model_validate(raw or {})
    except ValidationError as exc:
        raise _error(exc, "recipe") from None


def parse_diffusion_method_config(method: str, raw: Any) -> DiffusionMethodConfig:
    """Validate a class-forgetting request's hyperparameters for a diffusion model."""
    cls = DIFFUSION_METHOD_CONFIGS.get(method)
    if cls is None:
        known = ", ".join(sorted(DIFFUSION_METHOD_CONFIGS))
        raise DiffusionConfigError(
            "method", f"unknown method {method!r} for a diffusion model; known: {known}"
        )
    if raw is not None and not isinstance(raw, dict):
        raise DiffusionConfigError("config", "must be an object")
    try:
        return cls.model_validate(raw or {})  # type: ignore[return-value]
    except ValidationError as exc:
        raise _error(exc, "config") from None
