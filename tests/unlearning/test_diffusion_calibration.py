"""SFR-on's calibration for diffusion models on 8x8 digits with a tiny, untrained denoiser: the
stopping rule, what stays explicit, the record and the faithful path. The evaluator is a
classifier with a constant verdict, so a probe's forget accuracy is known in advance (0 or 100)
and each rule is checked on its own; a slow test runs it on a pretrained denoiser."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from app.unlearning.architectures import build_model
from app.unlearning.data import ArrayDataset
from app.unlearning.diffusion.calibration import forget_class_calibrated, too_slow
from app.unlearning.diffusion.config import (
    TINY_UNET,
    DiffusionRecipe,
    DiffusionSFROnConfig,
    SamplingConfig,
    parse_unet_config,
)
from app.unlearning.diffusion.data import class_split
from app.unlearning.diffusion.ddpm import NoiseSchedule, build_unet
from app.unlearning.diffusion.engine import forget_class
from app.unlearning.diffusion.evaluation import GenerationEvaluator
from app.unlearning.diffusion.methods.common import DiffusionContext
from app.unlearning.runtime import Reporter

CPU = torch.device("cpu")
SCHEDULE = NoiseSchedule.linear(1000, 1e-4, 0.02)
FORGET = 3
SAMPLING = SamplingConfig(steps=15, guidance=2.0)
# Small and fast: batches of 16, probes of 4 images with 2 DDIM steps every 2 iterations.
FAST: dict[str, Any] = {
    "batch_size": 16,
    "fisher_max_batches": 1,
    "calibration_probe_every": 2,
    "calibration_probe_samples": 4,
    "calibration_probe_steps": 2,
    "calibration_max_iterations": 12,
}


Setup = tuple[nn.Module, DiffusionContext, dict[str, GenerationEvaluator]]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def verdict(train_set: ArrayDataset, cls: int) -> GenerationEvaluator:
    """A classifier that calls every image ``cls``."""
    torch.manual_seed(0)
    model = build_model("small_cnn", {"num_classes": 10, "width": 8, "hidden": 16})
    head = model.classifier
    assert isinstance(head, nn.Sequential)
    last = head[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[cls] = 10.0
    return GenerationEvaluator(model.eval(), train_set.mean, train_set.std)


@pytest.fixture(scope="module")
def setup(digits: tuple[ArrayDataset, ArrayDataset]) -> Setup:
    train_set, _ = digits
    torch.manual_seed(0)
    model = build_unet(parse_unet_config(TINY_UNET, num_classes=10))
    split = class_split(train_set, (FORGET,), CPU)
    ctx = DiffusionContext(split, SCHEDULE, DiffusionRecipe(), CPU, 0, Reporter())
    evaluators = {"forgotten": verdict(train_set, 0), "kept": verdict(train_set, FORGET)}
    return model, ctx, evaluators


def fresh(ctx: DiffusionContext) -> DiffusionContext:
    return DiffusionContext(ctx.split, ctx.schedule, ctx.original, CPU, ctx.seed, Reporter())


def calibrated(
    setup: Setup,
    evaluator: str,
    explicit: frozenset[str] = frozenset(),
    **change: object,
) -> tuple[nn.Module, dict[str, Any]]:
    model, ctx, evaluators = setup
    config = DiffusionSFROnConfig(**{**FAST, **change})
    m = copy.deepcopy(model)
    result = forget_class_calibrated(
        m, fresh(ctx), config, evaluators[evaluator], sampling=SAMPLING, explicit=explicit
    )
    return m, result.as_dict()


def test_stops_at_the_first_confirmed_probe_on_target(setup: Setup) -> None:
    _, r = calibrated(setup, "forgotten", calibration_confirm=2)
    cal = r["details"]["calibration"]
    assert cal["calibrated"] and cal["stop"] == "on target"
    # Probes at iterations 2 and 4 both find FA 0: the run stops at 4 of its 12.
    assert [p["iteration"] for p in cal["probes"]] == [2, 4]
    assert [p["FA"] for p in cal["probes"]] == [0.0, 0.0]
    assert r["details"]["iterations"] == cal["iterations"] == 4 and r["steps"] == 8
    # The probes are part of the method's cost: 2 DDIM steps of one batch and 2 evaluator
    # passes each, on top of one forget and one remain pass per iteration and the mask's 2.
    assert r["backward_passes"] == 2 * 4 + 2
    assert cal["probe_forward_passes"] == 2 * (2 + 2)
    assert r["forward_passes"] == r["backward_passes"] + cal["probe_forward_passes"]
    assert cal["probe_wall_s"] < r["wall_time_s"]


def test_runs_to_the_budget_when_the_target_is_never_reached(setup: Setup) -> None:
    _, r = calibrated(setup, "kept")
    cal = r["details"]["calibration"]
    assert cal["stop"] == "budget" and r["details"]["iterations"] == 12
    assert [p["iteration"] for p in cal["probes"]] == [2, 4, 6, 8, 10, 12]
    assert all(p["FA"] == 100.0 for p in cal["probes"])
    for key in ("alpha0", "FA", "p_forget", "clipped_share", "wall_s", "forward_passes", "seed"):
        assert key in cal["probes"][0]
    # Every probe judges fresh images, so consecutive probes on target are independent evidence.
    assert len({p["seed"] for p in cal["probes"]}) == len(cal["probes"])


def test_an_unstopped_run_is_the_budget_long_faithful_run(setup: Setup) -> None:
    # The probes draw no random numbers of the run's, and the cosine's horizon is the budget:
    # a calibrated run that never stops has the faithful run's weights.
    model, ctx, _ = setup
    a, r = calibrated(setup, "kept", explicit=frozenset({"alpha0"}))
    b = copy.deepcopy(model)
    forget_class(b, fresh(ctx), DiffusionSFROnConfig(**{**FAST, "iterations": 12}))
    assert r["details"]["calibration"]["alpha0_raises"] == []
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_alpha0_is_raised_only_when_slow_unclipped_and_not_explicit(setup: Setup) -> None:
    # A clip no step reaches: every forget step is unclipped, and FA stays at 100.
    _, r = calibrated(setup, "kept", max_norm=1e6, alpha0=0.5)
    cal = r["details"]["calibration"]
    # The first probe gives no trend; from the second on, no progress means too slow (and the
    # last probe, at the budget, has nothing left to speed up).
    assert [x["iteration"] for x in cal["alpha0_raises"]] == [4, 6, 8, 10]
    assert cal["alpha0_raises"][0] == {"iteration": 4, "from": 0.5, "to": 2.0, "clipped_share": 0.0}
    assert cal["alpha0_end"] == r["details"]["alpha0"] == 0.5 * 4.0**4
    _, r = calibrated(setup, "kept", frozenset({"alpha0"}), max_norm=1e6, alpha0=0.5)
    cal = r["details"]["calibration"]
    assert cal["alpha0_raises"] == [] and cal["alpha0_end"] == 0.5
    assert cal["decided"] == ["iterations"] and cal["explicit"] == ["alpha0"]


def test_explicit_iterations_are_run_in_full(setup: Setup) -> None:
    _, r = calibrated(setup, "forgotten", frozenset({"iterations"}), iterations=8)
    cal = r["details"]["calibration"]
    assert cal["stop"] == "iterations given" and r["details"]["iterations"] == 8
    assert cal["budget_iterations"] == 8 and cal["decided"] == ["alpha0"]
    # On target at the first probe: later probes could change nothing, so none is run.
    assert [p["iteration"] for p in cal["probes"]] == [2]


@pytest.mark.parametrize(
    ("explicit", "change", "reason"),
    [
        (frozenset({"alpha0", "iterations"}), {"iterations": 6}, "alpha0 and iterations given"),
        (frozenset(), {"calibrate": False, "iterations": 6}, "calibrate is off"),
    ],
)
def test_faithful_paths_run_no_probes(
    setup: Setup, explicit: frozenset[str], change: dict[str, Any], reason: str
) -> None:
    model, ctx, _ = setup
    a, r = calibrated(setup, "forgotten", explicit, **change)
    assert r["details"]["calibration"] == {"calibrated": False, "reason": reason}
    # Exactly the spec's recipe: the faithful run's passes and weights.
    assert r["forward_passes"] == r["backward_passes"] == 2 * 6 + 2
    b = copy.deepcopy(model)
    forget_class(b, fresh(ctx), DiffusionSFROnConfig(**{**FAST, "iterations": 6}))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_unknown_explicit_names_are_refused(setup: Setup) -> None:
    with pytest.raises(ValueError, match="alpha"):
        calibrated(setup, "forgotten", frozenset({"alpha"}))


def test_too_slow_extrapolates_the_last_two_probes() -> None:
    assert not too_slow(None, 100.0, 5, 0.0)
    assert too_slow(100.0, 100.0, 5, 0.0)
    assert not too_slow(100.0, 60.0, 2, 0.0)
    assert too_slow(100.0, 60.0, 1, 0.0)
    assert not too_slow(50.0, 10.0, 0, 10.0)
