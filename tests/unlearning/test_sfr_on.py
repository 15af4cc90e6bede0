"""SFR-on's pieces against hand computations on models small enough to compute by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from app.unlearning.config import OriginalTraining, SFROnConfig
from app.unlearning.data import ArrayDataset, Split
from app.unlearning.methods.common import MethodContext, mask_density
from app.unlearning.methods.sfr_on import adaptive_weights, alpha_at, compute_mask, forget_step
from app.unlearning.runtime import Reporter

from .conftest import CPU

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
