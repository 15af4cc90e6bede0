"""SFR-on's pieces against hand computations on models small enough to compute by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from app.unlearning.config import OriginalTraining, SFROnConfig, parse_method_config
from app.unlearning.data import ArrayDataset, Split, build_split
from app.unlearning.engine import unlearn
from app.unlearning.methods.common import MethodContext, mask_density
from app.unlearning.methods.sfr_on import adaptive_weights, alpha_at, compute_mask, forget_step
from app.unlearning.methods.sfr_on_calibration import (
    MISS_WEIGHT,
    Target,
    calibration_budget,
    direction,
    entropy,
    forgetting_target,
    next_alpha,
    saturated,
    trial_score,
)
from app.unlearning.runtime import Reporter

from .conftest import CPU, Trained, random_ids

W0 = np.array([[0.5, -1.0], [-0.25, 0.75]])


def _linear() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor(W0, dtype=torch.float32))
    return model


def _ds(x: list[list[int]], y: list[int]) -> ArrayDataset:
    # std 1/255 and mean 0 make the normalised input equal the raw pixel values
    return ArrayDataset(
        images=np.asarray(x, dtype=np.uint8).reshape(-1, 1, 1, 2),
        labels=np.asarray(y, dtype=np.int64),
        sample_ids=np.arange(len(y), dtype=np.int64),
        num_classes=2,
        mean=(0.0,),
        std=(1 / 255,),
    )


def _hand_fisher(x: list[list[int]], y: list[int]) -> np.ndarray:
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y)
    logits = xs @ W0.T
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(ys)), ys] -= 1.0
    grad = p.T @ xs / len(ys)  # d mean CE / dW for one batch holding the whole set
    return grad**2


def _ctx(split: Split) -> MethodContext:
    return MethodContext(
        split=split,
        original=OriginalTraining(optimizer_steps=100),
        device=CPU,
        seed=0,
        reporter=Reporter(),
        channels_last=False,
    )


def test_mask_equals_hand_computed_fisher_ratio() -> None:
    xf, yf = [[1, 0], [2, 1], [0, 3]], [1, 1, 0]
    xr, yr = [[1, 1], [0, 1], [3, 0], [1, 2]], [0, 1, 0, 1]
    forget, remain = _ds(xf, yf), _ds(xr, yr)
    split = Split(forget=forget, remain=remain, test=remain, validation=remain)
    ratio = (_hand_fisher(xf, yf) + 1e-15) / (_hand_fisher(xr, yr) + 1e-15)
    for gamma in (0.5, 1.0, 4.0):
        assert np.all(np.abs(np.log(ratio / gamma)) > 1e-3), "hand example too close to gamma"
        ctx = _ctx(split)
        mask = compute_mask(_linear(), ctx, SFROnConfig(gamma=gamma), ctx.remain, seed=0)
        expected = (ratio >= gamma).astype(np.float32)
        np.testing.assert_array_equal(mask[0].numpy(), expected)
        assert mask_density(mask) == pytest.approx(expected.mean())


def test_adaptive_weights_sum_to_one_and_lambda_zero_is_uniform() -> None:
    losses = torch.tensor([0.0, 1e-9, 0.2, 1.5, 3.0])
    for lam in (0.0, 0.5, 2.0):
        w = adaptive_weights(losses, lam, floor=1e-3)
        assert torch.isfinite(w).all()
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(adaptive_weights(losses, 0.0, 1e-3).numpy(), np.full(5, 0.2))
    w = adaptive_weights(losses, 0.5, 1e-3)
    assert float(w[0]) == float(w[1])  # both below the floor: same finite weight
    assert bool((w[2:].diff() < 0).all())  # larger loss, smaller weight


def test_zero_loss_batch_keeps_a_useful_gradient() -> None:
    """A batch where most float32 losses are exactly 0: the fixed weights keep the ascent
    gradient at the scale of the fitted samples', where the authors' formula (eps outside the
    power) gives the zero-loss samples almost all the weight and a vanishing gradient."""
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[30.0, 0.0], [0.0, 30.0]]))
    x = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.1, 0.12], [0.12, 0.1]])
    y = torch.tensor([0, 1, 0, 0, 1])
    losses = nn.functional.cross_entropy(model(x), y, reduction="none")
    assert int((losses == 0).sum()) == 3  # exact float32 zeros

    def grad_norm(w: torch.Tensor) -> float:
        model.zero_grad()
        per = nn.functional.cross_entropy(model(x), y, reduction="none")
        (w * per).sum().backward()
        assert model.weight.grad is not None
        return float(model.weight.grad.norm())

    ours = adaptive_weights(losses, lam=0.5, floor=1e-3)
    authors = 1.0 / (losses.detach() ** 0.5 + 1e-8)
    authors = authors / authors.sum()
    assert float(authors[losses == 0].sum()) > 0.999  # the dead zone the spec measured
    plain = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5])  # ascent on the samples that have a loss
    assert grad_norm(authors) < 1e-4 * grad_norm(ours)
    assert grad_norm(ours) > 0.01 * grad_norm(plain)


def test_alpha_schedule() -> None:
    assert alpha_at(25.0, 0, 100) == 25.0
    assert alpha_at(25.0, 50, 100) == pytest.approx(12.5)
    assert alpha_at(25.0, 100, 100) == pytest.approx(0.0, abs=1e-12)
    values = [alpha_at(25.0, t, 100) for t in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_lambda_zero_forget_step_is_plain_ascent() -> None:
    model = _linear()
    x = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]]).view(3, 1, 1, 2)
    y = torch.tensor([1, 1, 0])
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grad = model[1].weight.grad.clone()
    cfg = SFROnConfig(lam=0.0, max_norm=1e6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0)
    before = model[1].weight.detach().clone()
    ones = [torch.ones_like(p) for p in model.parameters()]
    forget_step(model, opt, x, y, ones, alpha=2.0, config=cfg)
    torch.testing.assert_close(model[1].weight.detach(), before + 0.1 * 2.0 * grad)


def test_forget_step_leaves_masked_out_weights_alone() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 1, 2, 2), torch.randint(0, 3, (16,))
    mask = [(torch.rand_like(p) < 0.5).float() for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.0, weight_decay=0.0)
    forget_step(model, opt, x, y, mask, alpha=25.0, config=SFROnConfig())
    moved = False
    for p, b, m in zip(model.parameters(), before, mask, strict=True):
        assert torch.equal(p.detach()[m == 0], b[m == 0])
        moved |= bool((p.detach()[m == 1] != b[m == 1]).any())
    assert moved


# ---- calibration: pure logic ---------------------------------------------------------------


def test_entropy_is_zero_for_one_hot_and_log_c_for_uniform() -> None:
    h = entropy(torch.tensor([[50.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    assert float(h[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(h[1]) == pytest.approx(np.log(3.0))


def test_forgetting_target_mixes_right_and_wrong_entropies() -> None:
    base = {"VA": 75.0, "H_unseen_right": 8.0, "H_unseen_wrong": 40.0}
    sample = forgetting_target(base, class_wise=False, tol=1.5)
    assert (sample.fa, sample.tol, sample.class_wise) == (75.0, 1.5, False)
    assert sample.entropy == pytest.approx(0.75 * 8.0 + 0.25 * 40.0)
    klass = forgetting_target(base, class_wise=True, tol=1.0)
    assert (klass.fa, klass.entropy) == (0.0, 40.0)  # retrain gets every forgotten sample wrong
    perfect = forgetting_target({**base, "H_unseen_wrong": float("nan")}, True, 1.0)
    assert perfect.entropy == 8.0  # no wrong answers on the probe: fall back, never NaN


def test_trial_score_counts_only_losses_and_misses() -> None:
    base = {"RA_heldout": 99.0, "VA": 85.0}
    t = Target(fa=85.0, tol=1.5, entropy=10.0, class_wise=False)
    on = {"FA": 86.0, "RA_heldout": 99.5, "VA": 86.0, "H_forget": 10.0}
    assert trial_score(on, base, t, entropy_weight=0.1) == 0.0  # gains are not rewarded
    off = {"FA": 90.0, "RA_heldout": 97.0, "VA": 84.0, "H_forget": 20.0}
    assert trial_score(off, base, t, 0.1) == pytest.approx(MISS_WEIGHT * 3.5 + 2.0 + 1.0 + 1.0)


def test_direction_class_wise_treats_damage_as_overshoot() -> None:
    base = {"RA_heldout": 99.0, "VA": 85.0}
    t = Target(fa=0.0, tol=1.0, entropy=30.0, class_wise=True)
    ok = {"FA": 0.0, "RA_heldout": 98.5, "VA": 85.0, "H_forget": 29.0}
    assert direction(ok, base, t, side_tol=1.0) == 0
    assert direction({**ok, "FA": 5.0}, base, t, 1.0) == 1
    assert direction({**ok, "RA_heldout": 96.0}, base, t, 1.0) == -1
    assert direction({**ok, "H_forget": 5.0}, base, t, 1.0) == -1  # confidently wrong
    sw = Target(fa=85.0, tol=1.5, entropy=10.0, class_wise=False)
    assert direction({**ok, "FA": 80.0, "RA_heldout": 90.0}, base, sw, 1.0) == -1
    assert direction({**ok, "FA": 84.0, "RA_heldout": 90.0}, base, sw, 1.0) == 0


def test_next_alpha_steps_then_interpolates_inside_the_bracket() -> None:
    assert next_alpha([(10.0, 99.0, 1)], 85.0, 4.0) == 40.0
    assert next_alpha([(10.0, 50.0, -1)], 85.0, 4.0) == 2.5
    assert next_alpha([(10.0, 85.0, 0)], 85.0, 4.0) is None
    # bracketed: FA 95 at 10, 75 at 1000 -> target 85 half way in log space
    mid = next_alpha([(10.0, 95.0, 1), (1000.0, 75.0, -1)], 85.0, 4.0)
    assert mid == pytest.approx(100.0)
    # target close to one end: clamped to the middle of the bracket so it always shrinks
    near = next_alpha([(10.0, 95.0, 1), (1000.0, 75.0, -1)], 94.9, 4.0)
    assert near == pytest.approx(10.0 * 100.0**0.25)
    for _ in range(3):  # never leaves the bounds
        assert 1e-2 <= next_alpha([(1e5, 99.0, 1)], 0.0, 10.0) <= 1e5  # type: ignore[operator]


def test_saturation_and_budget() -> None:
    assert saturated([(10.0, 95.0, 1), (40.0, 95.0, 1)], None, 1.5, 4.0)
    assert not saturated([(10.0, 95.0, 1), (40.0, 90.0, 1)], None, 1.5, 4.0)
    assert not saturated([(10.0, 95.0, 1)], None, 1.5, 4.0)
    assert saturated([(10.0, 95.0, 1)], 5.0, 1.5, 4.0)  # 4 x 10 > SATURATION x 5
    assert calibration_budget(14, 2 / 3) == 42
    assert calibration_budget(20, 0.0) == 20


# ---- calibration on a real (tiny) model ------------------------------------------------------


def _run_sfr(trained: Trained, split: Split, raw: dict[str, object]) -> dict[str, object]:
    res = unlearn(
        trained.model,
        split,
        parse_method_config("sfr_on", raw),
        original=trained.original,
        device=CPU,
        seed=0,
    )
    return res.record["details"]  # type: ignore[no-any-return]


def test_calibration_stays_in_budget_and_records_its_choice(trained: Trained) -> None:
    split = build_split(trained.train, trained.test, forget_ids=random_ids(trained.train, 120))
    details = _run_sfr(trained, split, {})
    cal = details["calibration"]
    assert isinstance(cal, dict)
    trials = cal["trials"]
    assert 1 <= len(trials) <= 3
    assert cal["spent_iterations"] == sum(t["iterations"] for t in trials)
    assert cal["spent_iterations"] <= cal["budget_iterations"]
    chosen = min(trials, key=lambda t: t["score"])
    assert details["alpha0"] == pytest.approx(chosen["alpha0"], rel=1e-4)
    assert details["iterations"] == chosen["iterations"]
    assert cal["target_FA"] == cal["baseline"]["VA"]  # sample-wise: unseen accuracy
    # explicit values win: alpha0 given -> every trial uses it; both given -> no calibration
    fixed = _run_sfr(trained, split, {"alpha0": 3.0})
    assert {t["alpha0"] for t in fixed["calibration"]["trials"]} == {3.0}  # type: ignore[index]
    assert "calibration" not in _run_sfr(trained, split, {"alpha0": 3.0, "iterations": 12})
    pinned = _run_sfr(trained, split, {"iterations": 12})
    assert {t["iterations"] for t in pinned["calibration"]["trials"]} == {12}  # type: ignore[index]
