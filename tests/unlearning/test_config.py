from __future__ import annotations

import sys

import pytest

from app.unlearning.config import (
    METHOD_CONFIGS,
    MethodConfigError,
    SFROnConfig,
    parse_method_config,
    parse_recipe,
)


def test_every_method_has_defaults_that_parse() -> None:
    for name in METHOD_CONFIGS:
        assert parse_method_config(name, {}).name == name


def test_sfr_on_defaults_are_the_specs() -> None:
    cfg = SFROnConfig()
    assert (cfg.forget_every, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (
        5,
        0.01,
        0.9,
        5e-4,
        128,
    )
    assert (cfg.max_norm, cfg.lam, cfg.gamma, cfg.beta) == (7.0, 0.5, 1.0, 1.0)
    assert cfg.mask_refresh_every == 0  # the authors' once-only mask is the default
    assert cfg.calibrate is True


@pytest.mark.parametrize(
    ("method", "raw", "field"),
    [
        ("sfr_on", {"alpha": 3}, "config.alpha"),
        ("sfr_on", {"alpha0": -1}, "config.alpha0"),
        ("sfr_on", {"beta": 1.5}, "config.beta"),
        ("sfr_on", {"forget_every": 0}, "config.forget_every"),
        ("sfr_on", {"lam": "lots"}, "config.lam"),
        ("finetune", {"lr": 0}, "config.lr"),
        ("salun", {"mask_fraction": 1.2}, "config.mask_fraction"),
        ("retrain", {"lr": 0.1}, "config.lr"),
        ("nope", {}, "method"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(
    method: str, raw: dict[str, object], field: str
) -> None:
    with pytest.raises(MethodConfigError) as info:
        parse_method_config(method, raw)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_recipe_errors_name_the_field() -> None:
    with pytest.raises(MethodConfigError) as info:
        parse_recipe({"epochs": 0})
    assert info.value.field == "recipe.epochs"


def test_config_module_does_not_import_torch() -> None:
    import subprocess

    code = (
        "import sys; import app.unlearning.config, app.unlearning.spec; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
