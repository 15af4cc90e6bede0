"""Torch-free validation of a diffusion model's JSON and of class-forgetting requests."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from app.unlearning.diffusion.config import (
    TINY_UNET,
    DiffusionConfigError,
    parse_diffusion_method_config,
    parse_diffusion_recipe,
    parse_scheduler_config,
    parse_unet_config,
)


def field_of(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(DiffusionConfigError) as info:
        fn(*args, **kwargs)
    return info.value.field


def test_tiny_config_parses_and_keeps_diffusers_metadata_keys() -> None:
    saved = {**TINY_UNET, "_class_name": "UNet2DModel", "_diffusers_version": "0.42.1"}
    cfg = parse_unet_config(saved, num_classes=10)
    assert cfg.num_classes == 10
    assert "_class_name" not in cfg.constructor_kwargs()
    assert "class_name" not in cfg.constructor_kwargs()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"use_auth_token": "x"}, "unet.use_auth_token"),
        ({"auto_map": {"UNet2DModel": "evil.Model"}}, "unet.auto_map"),
        ({"_name_or_path": "someone/model"}, "unet._name_or_path"),
        ({"trust_remote_code": True}, "unet.trust_remote_code"),
        ({"_class_name": "UNet2DConditionModel"}, "unet._class_name"),
        ({"sample_size": 100_000}, "unet.sample_size"),
        ({"block_out_channels": [16, 33]}, "unet"),
        ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}, "unet.down_block_types.1"),
        ({"act_fn": "gelu"}, "unet.act_fn"),
        ({"num_class_embeds": 12}, "unet.num_class_embeds"),
        ({"in_channels": 3}, "unet"),
    ],
)
def test_unet_allowlist_refuses(change: dict[str, Any], field: str) -> None:
    assert field_of(parse_unet_config, {**TINY_UNET, **change}, num_classes=10) == field


def test_remote_code_refusal_says_why() -> None:
    with pytest.raises(DiffusionConfigError, match="remote code is refused"):
        parse_unet_config({**TINY_UNET, "auto_map": {}})


def test_unet_config_must_be_an_object() -> None:
    assert field_of(parse_unet_config, ["sample_size", 8]) == "unet"


def test_scheduler_allowlist() -> None:
    cfg = parse_scheduler_config(
        {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear"}
    )
    assert (cfg.beta_start, cfg.beta_end) == (1e-4, 0.02)
    assert field_of(parse_scheduler_config, {"beta_schedule": "cosine"}) == (
        "scheduler.beta_schedule"
    )
    assert field_of(parse_scheduler_config, {"prediction_type": "v_prediction"}) == (
        "scheduler.prediction_type"
    )
    assert field_of(parse_scheduler_config, {"beta_start": 0.1, "beta_end": 0.01}) == "scheduler"
    assert field_of(parse_scheduler_config, {"custom_pipeline": "x"}) == "scheduler.custom_pipeline"


@pytest.mark.parametrize(
    ("method", "raw", "field"),
    [
        ("sfr_on", {"alpha0": 0}, "config.alpha0"),
        ("sfr_on", {"iterations": 0}, "config.iterations"),
        ("sfr_on", {"lam": -1}, "config.lam"),
        ("sfr_on", {"max_norm": -1}, "config.max_norm"),
        ("sfr_on", {"forget_every": 5}, "config.forget_every"),
        ("sfr_on", {"calibrate": "sometimes"}, "config.calibrate"),
        ("sfr_on", {"calibration_max_iterations": 0}, "config.calibration_max_iterations"),
        ("sfr_on", {"calibration_target_fa": 101}, "config.calibration_target_fa"),
        ("sfr_on", {"calibration_confirm": 0}, "config.calibration_confirm"),
        ("sfr_on", {"calibration_probe_every": 0}, "config.calibration_probe_every"),
        ("sfr_on", {"calibration_probe_samples": 5000}, "config.calibration_probe_samples"),
        ("sfr_on", {"calibration_probe_steps": 0}, "config.calibration_probe_steps"),
        ("sfr_on", {"calibration_alpha_step": 1.0}, "config.calibration_alpha_step"),
        ("salun", {"mask_fraction": 1.5}, "config.mask_fraction"),
        ("grad_ascent", {"lr": 2}, "config.lr"),
        ("retrain", {"steps": 0}, "config.steps"),
        ("finetune", {}, "method"),
    ],
)
def test_method_configs_refuse_bad_values(method: str, raw: dict[str, Any], field: str) -> None:
    assert field_of(parse_diffusion_method_config, method, raw) == field


def test_method_defaults_are_the_specs_ddpm_recipe() -> None:
    cfg = parse_diffusion_method_config("sfr_on", None)
    assert (cfg.iterations, cfg.lr, cfg.alpha0, cfg.lam, cfg.max_norm, cfg.gamma) == (
        150, 1e-4, 10.0, 0.5, 1.0, 1.0,
    )  # fmt: skip
    # Calibrated by default; calibrate off is the recipe above as given.
    assert cfg.calibrate and cfg.calibration_max_iterations == 150
    assert parse_diffusion_recipe({}).label_dropout == 0.1
    assert field_of(parse_diffusion_recipe, {"label_dropout": 1.0}) == "recipe.label_dropout"


def test_config_module_does_not_import_torch() -> None:
    code = (
        "import sys, app.unlearning.diffusion.config as c; "
        "c.parse_unet_config(c.TINY_UNET); "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_upload_spec_must_fit_the_dataset() -> None:
    from app.unlearning.diffusion.manifest import parse_diffusion_spec

    ok = {"unet": TINY_UNET, "scheduler": {}, "training": {"steps": 800}}
    spec = parse_diffusion_spec(ok, dataset_classes=10, image_shape=(1, 8, 8))
    assert spec.training.steps == 800
    fit = parse_diffusion_spec
    assert field_of(fit, ok, dataset_classes=10, image_shape=(1, 28, 28)) == "unet.sample_size"
    assert field_of(fit, ok, dataset_classes=5, image_shape=(1, 8, 8)) == "unet.num_class_embeds"
    assert field_of(fit, {**ok, "weights": 1}, dataset_classes=10, image_shape=(1, 8, 8)) == (
        "weights"
    )
    bad_training = {**ok, "training": {"lr": 0}}
    assert field_of(fit, bad_training, dataset_classes=10, image_shape=(1, 8, 8)) == "training.lr"
    assert field_of(fit, {"scheduler": {}}, dataset_classes=10, image_shape=(1, 8, 8)) == "unet"


def test_sample_wise_requests_are_refused_with_the_reason() -> None:
    from app.unlearning.diffusion.manifest import refuse_sample_wise

    assert refuse_sample_wise(0) is None
    err = refuse_sample_wise(3)
    assert err is not None and err.field == "forget_ids"
    assert "classes only" in err.message and "class_ids" in err.message
