"""Metrics against hand-computed values on fixed logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app.unlearning.data import ArrayDataset, build_split
from app.unlearning.evaluation import (
    Reference,
    accuracy,
    avg_gap,
    entropy,
    evaluate_split,
    gaps,
    kl_to_reference,
    mia_efficacy,
    mia_entropy,
)

from .conftest import CPU, Trained

CONFIDENT = torch.tensor([[20.0, 0.0, 0.0]])
UNIFORM = torch.tensor([[0.0, 0.0, 0.0]])


def test_accuracy() -> None:
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 1])) == 75.0
    assert math.isnan(accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


def test_entropy() -> None:
    assert float(entropy(UNIFORM)) == pytest.approx(math.log(3))
    p = np.array([0.5, 0.25, 0.25])
    logits = torch.tensor(np.log(p))[None]
    assert float(entropy(logits)) == pytest.approx(-(p * np.log(p)).sum())


def test_kl_matches_hand_computation() -> None:
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    expected = float((p * np.log(p / q)).sum())
    ref = torch.tensor(np.log(p))[None].float()
    model = torch.tensor(np.log(q))[None].float()
    assert kl_to_reference(ref, model) == pytest.approx(expected, rel=1e-5)
    assert kl_to_reference(ref, ref) == pytest.approx(0.0, abs=1e-9)


def test_gaps_and_avg_gap() -> None:
    g = gaps({"FA": 90.0, "RA": 99.0, "TA": 88.0}, {"FA": 85.0, "RA": 100.0, "TA": 88.5})
    assert g == {"gap_FA": 5.0, "gap_RA": 1.0, "gap_TA": 0.5}
    assert avg_gap(g, ("FA", "RA", "TA")) == pytest.approx(6.5 / 3)


def _rep(row: torch.Tensor, n: int) -> torch.Tensor:
    return row.repeat(n, 1)


def test_entropy_mia_on_separable_outputs() -> None:
    # members (remain) are certain, non-members (test) uniform: the attack is exact, so a forget
    # set of 3 certain + 1 uniform sample is 75% "member".
    remain, test = _rep(CONFIDENT, 50), _rep(UNIFORM, 50)
    forget = torch.cat([_rep(CONFIDENT, 3), UNIFORM])
    assert mia_entropy(remain, test, forget) == pytest.approx(75.0)


def test_efficacy_mia_on_separable_outputs() -> None:
    remain, test = _rep(CONFIDENT, 50), _rep(UNIFORM, 50)
    labels = torch.zeros(50, dtype=torch.long)
    forget = torch.cat([_rep(CONFIDENT, 3), UNIFORM])
    # 3 of 4 forget samples predicted member: efficacy = 100 * (1 - 3/4)
    value = mia_efficacy(remain, labels, test, labels, forget, torch.zeros(4, dtype=torch.long))
    assert value == pytest.approx(25.0)


def test_evaluator_class_wise_keys_and_reference(trained: Trained) -> None:
    split = build_split(trained.train, trained.test, forget_classes=[3])
    metrics, forget_logits = evaluate_split(trained.model, split, device=CPU)
    for key in ("FA", "UA", "RA", "TA", "TA_forgotten", "MIA_entropy", "MIA_efficacy"):
        assert 0.0 <= metrics[key] <= 100.0
    kept = ~np.isin(split.test.labels, [3])
    expected_ta = float(
        (
            torch.from_numpy(split.test.labels[kept])
            == _predict_labels(trained, split.test.take(kept))
        )
        .float()
        .mean()
    )
    assert metrics["TA"] == pytest.approx(expected_ta * 100)
    ref = Reference(metrics=metrics, forget_logits=forget_logits)
    again, _ = evaluate_split(trained.model, split, device=CPU, reference=ref)
    assert again["avg_gap"] == pytest.approx(0.0) and again["kl_forget"] == pytest.approx(0.0)


def _predict_labels(trained: Trained, ds: ArrayDataset) -> torch.Tensor:
    from app.unlearning.evaluation import predict

    return predict(trained.model, ds, CPU).argmax(1)
