"""Typed, torch-free configuration of the unlearning methods and of a training recipe.

The API validates a request with :func:`parse_method_config` without importing torch; the engine
receives the parsed object. Every config refuses unknown keys and out-of-range values, and the
error names the offending field as ``config.<name>``.

Budgets are fractions of the *original* training's optimizer steps (``budget``), because a fixed
iteration count does not transfer between a 200-epoch CIFAR run and a 20-epoch Fashion-MNIST run
(see the spec's "Pitfalls measured"). An explicit ``iterations``/``epochs`` always wins.

>>> cfg = parse_method_config("sfr_on", {"alpha0": 10})
>>> (cfg.alpha0, cfg.calibrate, cfg.forget_every)
(10.0, True, 5)
>>> parse_method_config("sfr_on", {"alpha": 1})
Traceback (most recent call last):
...
app.unlearning.config.MethodConfigError: config.alpha: unknown hyperparameter
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Augment = Literal["none", "shift", "shift_flip"]


class MethodConfigError(ValueError):
    """A method request is invalid; ``field`` names the part (``method`` or ``config.<key>``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingRecipe(_Strict):
    """How a model is trained from scratch: SGD with momentum and a cosine learning rate.

    Used for the original model, for ``retrain`` and by the service's demo.
    """

    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=128, ge=1, le=8192)
    lr: float = Field(default=0.05, gt=0, le=10)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0, le=1)
    augment: Augment = "none"


class OriginalTraining(_Strict):
    """What the service knows about how the model being unlearned was trained.

    ``optimizer_steps`` is the unit of every method's budget.
    """

    recipe: TrainingRecipe = Field(default_factory=TrainingRecipe)
    optimizer_steps: int = Field(ge=1)


class _MethodConfig(_Strict):
    name: ClassVar[str]


class _SGDFields(_MethodConfig):
    batch_size: int = Field(default=128, ge=1, le=8192)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0, le=1)


class SFROnConfig(_SGDFields):
    """SFR-on (Huang et al., NeurIPS 2024): masked, adaptively weighted ascent on the forget set
    every ``forget_every`` iterations, a remain step every iteration, one SGD optimizer and one
    cosine schedule. Defaults are the spec's, except the budget (see ``budget``), the loss
    floor that keeps adaptive weights finite on zero-loss samples, and the calibration of alpha0
    and iterations (the ``calibration_*`` fields; their defaults were set from validation-probe
    trials of the benchmark, see bench/README.md).
    """

    name: ClassVar[str] = "sfr_on"

    iterations: int | None = Field(
        default=None, ge=1, le=1_000_000, description="N; explicit value disables its calibration."
    )
    budget: float = Field(
        default=0.02,
        gt=0,
        le=2,
        description="N as a fraction of the original training's optimizer steps when "
        "iterations is not given.",
    )
    min_iterations: int = Field(default=10, ge=1, le=1_000_000)
    forget_every: int = Field(default=5, ge=1, le=1000, description="k: one forget step every k.")
    lr: float = Field(default=0.01, gt=0, le=10, description="eta0, cosine-annealed to 0.")
    alpha0: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Initial ascent weight; explicit value disables its calibration. "
        "Uncalibrated default 25.",
    )
    max_norm: float = Field(default=7.0, gt=0, le=1e6)
    lam: float = Field(default=0.5, ge=0, le=10, description="lambda of w_i ~ loss_i^-lambda.")
    loss_floor: float = Field(
        default=1e-3,
        gt=0,
        le=1,
        description="Losses are floored at this value before the adaptive weights are formed, "
        "so zero-loss samples get a finite weight.",
    )
    gamma: float = Field(default=1.0, gt=0, le=1e6, description="Saliency threshold on F_f/F_r.")
    beta: float = Field(default=1.0, gt=0, le=1, description="Slow-weight interpolation; 1 = off.")
    mask_refresh_every: int = Field(
        default=0, ge=0, le=1_000_000, description="Recompute the mask every K forget steps; 0=off."
    )
    fisher_max_batches: int = Field(
        default=4,
        ge=1,
        le=1_000_000,
        description="Batches of each set used for the Fisher diagonals (cost cap on the remain "
        "side).",
    )
    kit_targets: bool = Field(
        default=True,
        description="Sample-wise requests with a reference kit: ascend only on forget samples "
        "whose logit margin is still above their OUT level (kit_margin OUT standard deviations "
        "over the shadows' mean for that sample), and stop ascending once at most "
        "kit_stop_share of them are, instead of calibrating on the validation probe.",
    )
    kit_budget: float = Field(
        default=0.04,
        gt=0,
        le=2,
        description="Kit-targeted mode: N as a fraction of the original training's steps (remain "
        "steps continue after the ascent stops: they repair the remain side).",
    )
    kit_margin: float = Field(default=0.5, ge=0, le=10, description="In OUT standard deviations.")
    kit_stop_share: float = Field(
        default=0.31,
        ge=0,
        lt=1,
        description="Skip the ascent while at most this share of the forget set is above its "
        "threshold; 0.31 is the share a model that never saw the samples shows above its OUT "
        "mean + 0.5 standard deviations (the default kit_margin).",
    )
    kit_alpha_start: float = Field(
        default=4.0,
        gt=0,
        le=1e4,
        description="Kit-targeted alpha0, in units of the alpha0 at which the first forget step "
        "starts to be clipped.",
    )
    kit_check_samples: int = Field(
        default=512,
        ge=16,
        le=100_000,
        description="Forget samples whose margin is measured before each forget step (a rotating"
        " slice of the forget set when it is larger); the step ascends on those still above.",
    )
    calibrate: bool = Field(
        default=True,
        description="Pick alpha0 and iterations on a validation split first (each only when "
        "not given explicitly).",
    )
    calibration_extra_trials: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Trials allowed past the calibration budget while no trial has reached the"
        " forgetting target yet (x4 alpha0 each); 0 keeps the budget strict.",
    )
    calibration_share: float = Field(
        default=2 / 3,
        ge=0,
        le=0.95,
        description="All calibration trials together get iterations/(1 - share) iterations; the "
        "chosen trial is the result, so at most this share of them is spent on trials that are "
        "not used.",
    )
    calibration_samples: int = Field(default=1024, ge=64, le=100_000)
    calibration_start_class: float = Field(
        default=0.3,
        gt=0,
        le=1e4,
        description="First alpha0 of a class-wise search, in units of the alpha0 at which the "
        "first forget step starts to be clipped.",
    )
    calibration_start_sample: float = Field(
        default=1.5,
        gt=0,
        le=1e4,
        description="Same, for sample-wise requests.",
    )
    calibration_step: float = Field(
        default=4.0,
        gt=1,
        le=1000,
        description="alpha0 factor per trial until bracketed (class-wise: its square root).",
    )
    calibration_tol_class: float = Field(
        default=1.0, ge=0, le=100, description="Forget-accuracy tolerance (points), class-wise."
    )
    calibration_tol_sample: float = Field(
        default=1.5, ge=0, le=100, description="Same, sample-wise, around the unseen accuracy."
    )
    calibration_side_tol: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="Held-out remain + unseen accuracy loss (points) accepted before a trial "
        "with more iterations (and, class-wise, a weaker ascent) is tried.",
    )
    calibration_entropy_weight: float = Field(
        default=0.1,
        ge=0,
        le=100,
        description="Weight of the forgotten samples' entropy mismatch (points of log C) in the "
        "trial score.",
    )


class RetrainConfig(_MethodConfig):
    """Train from scratch on the remain set with the original recipe (the exact answer)."""

    name: ClassVar[str] = "retrain"

    epochs: int | None = Field(default=None, ge=1, le=1000, description="Default: original's.")


class FinetuneConfig(_SGDFields):
    """FT: fine-tune on the remain set only, cosine lr."""

    name: ClassVar[str] = "finetune"

    lr: float = Field(default=0.01, gt=0, le=10)
    budget: float = Field(default=0.06, gt=0, le=2)
    iterations: int | None = Field(default=None, ge=1, le=1_000_000)


class GradAscentConfig(_SGDFields):
    """GA: gradient ascent on the forget set, BatchNorm frozen, small lr, clipped gradients."""

    name: ClassVar[str] = "grad_ascent"

    lr: float = Field(default=1e-4, gt=0, le=10)
    budget: float = Field(default=0.01, gt=0, le=2)
    iterations: int | None = Field(default=None, ge=1, le=1_000_000)
    max_norm: float = Field(default=5.0, gt=0, le=1e6)
    momentum: float = Field(default=0.0, ge=0, lt=1)


class RandomLabelConfig(_SGDFields):
    """RL: train on forget + remain with each forget label replaced by a random other class."""

    name: ClassVar[str] = "random_label"

    lr: float = Field(default=0.003, gt=0, le=10)
    budget: float = Field(default=0.06, gt=0, le=2)
    iterations: int | None = Field(default=None, ge=1, le=1_000_000)


class L1SparseConfig(_SGDFields):
    """l1-sparse: FT plus an l1 penalty on the weights whose coefficient decays linearly to 0."""

    name: ClassVar[str] = "l1_sparse"

    lr: float = Field(default=0.01, gt=0, le=10)
    budget: float = Field(default=0.06, gt=0, le=2)
    iterations: int | None = Field(default=None, ge=1, le=1_000_000)
    l1: float = Field(default=5e-5, ge=0, le=1, description="Initial l1 coefficient.")


class SalUnConfig(_SGDFields):
    """SalUn: RL with gradients masked to the top fraction of weights by forget-gradient size."""

    name: ClassVar[str] = "salun"

    lr: float = Field(default=0.003, gt=0, le=10)
    budget: float = Field(default=0.06, gt=0, le=2)
    iterations: int | None = Field(default=None, ge=1, le=1_000_000)
    mask_fraction: float = Field(default=0.5, gt=0, le=1, description="Share of weights kept.")


METHOD_CONFIGS: dict[str, type[_MethodConfig]] = {
    SFROnConfig.name: SFROnConfig,
    RetrainConfig.name: RetrainConfig,
    FinetuneConfig.name: FinetuneConfig,
    GradAscentConfig.name: GradAscentConfig,
    RandomLabelConfig.name: RandomLabelConfig,
    L1SparseConfig.name: L1SparseConfig,
    SalUnConfig.name: SalUnConfig,
}

MethodConfig = (
    SFROnConfig
    | RetrainConfig
    | FinetuneConfig
    | GradAscentConfig
    | RandomLabelConfig
    | L1SparseConfig
    | SalUnConfig
)


def _first_error(exc: ValidationError, prefix: str) -> tuple[str, str]:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    message = "unknown hyperparameter" if first["type"] == "extra_forbidden" else first["msg"]
    return (f"{prefix}.{loc}" if loc else prefix), message


def parse_method_config(method: str, raw: dict[str, Any] | None) -> MethodConfig:
    """Validate ``raw`` hyperparameters for ``method``; raise :class:`MethodConfigError` naming the
    field on an unknown method, an unknown key or a bad value.

    >>> parse_method_config("finetune", {"lr": -1}).lr
    Traceback (most recent call last):
    ...
    app.unlearning.config.MethodConfigError: config.lr: Input should be greater than 0
    """
    cls = METHOD_CONFIGS.get(method)
    if cls is None:
        known = ", ".join(sorted(METHOD_CONFIGS))
        raise MethodConfigError("method", f"unknown method {method!r}; known: {known}")
    if raw is not None and not isinstance(raw, dict):
        raise MethodConfigError("config", "must be an object")
    try:
        parsed = cls.model_validate(raw or {})
    except ValidationError as exc:
        field, message = _first_error(exc, "config")
        raise MethodConfigError(field, message) from None
    return parsed  # type: ignore[return-value]


def parse_recipe(raw: dict[str, Any] | None) -> TrainingRecipe:
    """Validate a training recipe; errors name ``recipe.<key>``."""
    try:
        return TrainingRecipe.model_validate(raw or {})
    except ValidationError as exc:
        field, message = _first_error(exc, "recipe")
        raise MethodConfigError(field, message) from None


class ReferenceKitConfig(_Strict):
    """A per-example membership audit's reference kit: ``k`` shadow models trained with the
    original's recipe, each on a seeded random half of the training set (see
    ``shared/spec/privacy_audit.md``). It costs about ``k / 2`` original trainings, once per
    (training set, architecture, recipe); ``k`` bounds what the audit can resolve."""

    k: int = Field(default=16, ge=2, le=256, description="Number of shadow models.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class MembershipAuditConfig(_Strict):
    """How a model is audited against a reference kit: target false-positive rates, the delta
    of the empirical epsilon, the Clopper-Pearson confidence of its bounds, and the confidence
    of the binomial tolerance a sample-wise verdict allows above retrain's flagged share."""

    alphas: tuple[float, ...] = Field(default=(0.01, 0.05), min_length=1, max_length=8)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    confidence: float = Field(default=0.95, ge=0.5, lt=1)
    tolerance_confidence: float = Field(default=0.99, gt=0, lt=1)

    @field_validator("alphas")
    @classmethod
    def _alphas_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < a < 0.5 for a in value):
            raise ValueError("every alpha must lie in (0, 0.5)")
        return value
