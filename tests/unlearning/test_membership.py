"""The membership audit's statistics on synthetic Gaussians with a known answer, and its exact
binomial machinery against known values."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
import torch

from app.unlearning.evaluation.membership import (
    auc,
    audit_set,
    binom_cdf,
    binomial_tolerance,
    calibrated_threshold,
    clopper_pearson,
    epsilon_lower_bound,
    logit_margin,
    normal_sf,
    offline_scores,
    online_scores,
    pooled_variance,
)

PHI = NormalDist()
K = 8
SIGMA = 1.5


def _half_mask(rng: np.random.Generator, n: int, k: int = K) -> np.ndarray:
    """Each column IN for exactly k/2 random rows."""
    rank = np.argsort(np.argsort(rng.random((k, n)), axis=0), axis=0)
    return rank < k // 2


def _world(
    d: float, *, n: int = 20_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offline z-scores of S and of calibration non-members, as a kit would produce them.

    Each sample has its own mean mu_n; a shadow's phi is mu_n + SIGMA * noise when OUT and
    mu_n + d * SIGMA + noise when IN. S are training samples (OUT for K/2 shadows) and members of
    the model under test when d > 0: phi_model = mu_n + d * SIGMA + noise. The calibration set is
    a test split: OUT for all K shadows, never seen by the model.
    """
    rng = np.random.default_rng(seed)
    mu_s, mu_c = rng.normal(0, 3, n), rng.normal(0, 3, n)
    in_mask = _half_mask(rng, n)
    table_s = mu_s + SIGMA * rng.normal(size=(K, n)) + d * SIGMA * in_mask
    table_c = mu_c + SIGMA * rng.normal(size=(K, n))
    phi_s = mu_s + d * SIGMA + SIGMA * rng.normal(size=n)
    phi_c = mu_c + SIGMA * rng.normal(size=n)
    z_s = offline_scores(phi_s, table_s, ~in_mask).z
    z_c = offline_scores(phi_c, table_c, np.ones((K, n), dtype=bool)).z
    return z_s, z_c, table_s, in_mask


# --------------------------------------------------------------------------------------------
# phi
# --------------------------------------------------------------------------------------------


def test_logit_margin_is_the_log_odds_where_p_is_representable() -> None:
    logits = torch.randn(200, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.randint(0, 7, (200,), generator=torch.Generator().manual_seed(1))
    p = torch.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1).numpy()
    phi = logit_margin(logits, labels)
    assert phi.dtype == np.float64
    np.testing.assert_allclose(phi, np.log(p / (1 - p)), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(phi, logit_margin(logits.numpy(), labels.numpy()))


def test_logit_margin_stays_finite_when_p_rounds_to_one() -> None:
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, -60.0, 60.0]], dtype=torch.float32)
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits.double(), dim=1)
    assert p[0, 0] == 1.0  # the probability form would give log(1/0) = inf
    phi = logit_margin(logits, labels)
    np.testing.assert_allclose(phi, [100.0 - math.log(2.0), 60.0 - math.log1p(math.exp(-60))])
    assert np.isfinite(phi).all()


@pytest.mark.parametrize(
    ("logits", "labels"),
    [(np.zeros((3, 1)), np.zeros(3)), (np.zeros((3, 4)), np.zeros(2)), (np.zeros((2, 4)), [0, 4])],
)
def test_logit_margin_checks_shapes(logits: np.ndarray, labels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        logit_margin(logits, np.asarray(labels, dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Offline and online scores on synthetic Gaussians
# --------------------------------------------------------------------------------------------


def test_offline_fit_uses_own_means_and_one_pooled_variance() -> None:
    table = np.array([[1.0, 5.0, 0.0], [3.0, 9.0, 7.0]])
    mask = np.array([[True, True, True], [True, True, False]])
    fit = offline_scores([2.0, 7.0, 0.0], table, mask)
    np.testing.assert_allclose(fit.mean_out, [2.0, 7.0, 0.0])
    # deviations (+-1, +-2), 2 degrees of freedom; the third sample has one value, no dof
    assert fit.std_out[0] == fit.std_out[2] == pytest.approx(math.sqrt(5.0))
    assert pooled_variance(table, mask) == pytest.approx(5.0)
    np.testing.assert_allclose(fit.z, [0.0, 0.0, 0.0])
    assert fit.n_out.tolist() == [2, 2, 1]
    per_sample = offline_scores([2.0, 7.0, 0.0], table, mask, pooled=False)
    np.testing.assert_allclose(per_sample.std_out[:2], [math.sqrt(2.0), math.sqrt(8.0)])


def test_offline_p_value_is_the_upper_tail_and_nan_without_out_values() -> None:
    table = np.array([[0.0, 0.0], [2.0, 0.0]])
    fit = offline_scores([4.0, 1.0], table, np.array([[True, False], [True, False]]))
    assert fit.z[0] == pytest.approx(3.0 / math.sqrt(2.0 * 1.5))
    assert fit.p_value[0] == pytest.approx(1 - PHI.cdf(fit.z[0]))
    assert math.isnan(fit.z[1]) and math.isnan(fit.p_value[1])
    shifted = offline_scores([4.0, 1.0], table, np.ones((2, 2), bool), variance=2.0, offset=1.0)
    assert shifted.z[0] == pytest.approx(2.0 / math.sqrt(2.0 * 1.5))


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_non_members_are_flagged_at_alpha(alpha: float) -> None:
    z_s, z_c, _, _ = _world(0.0)
    fig = audit_set(z_s, z_c, alphas=(alpha,)).at(alpha)
    sd = math.sqrt(alpha * (1 - alpha) * (2 / len(z_s)))
    assert abs(fig.share_flagged - alpha) < 4 * sd
    assert abs(fig.share_low - alpha) < 4 * sd
    assert fig.fpr <= alpha


@pytest.mark.parametrize(("d", "alpha"), [(1.0, 0.05), (1.0, 0.01), (2.0, 0.01)])
def test_members_are_flagged_with_the_analytic_power(d: float, alpha: float) -> None:
    z_s, z_c, _, _ = _world(d)
    share = audit_set(z_s, z_c, alphas=(alpha,)).at(alpha).share_flagged
    # phi - mean_out ~ N(d sigma, sigma^2 (1 + 1/n_out)) with n_out = K/2, and z divides by
    # sigma sqrt(1 + 1/n_out): power = Phi(z_alpha + d / sqrt(1 + 2/K)).
    power = PHI.cdf(PHI.inv_cdf(alpha) + d / math.sqrt(1 + 2 / K))
    assert share == pytest.approx(power, abs=0.025)


@pytest.mark.parametrize("d", [0.0, 0.5, 1.5])
def test_auc_matches_the_analytic_value(d: float) -> None:
    z_s, z_c, _, _ = _world(d)
    expected = PHI.cdf(d / math.sqrt(1 + 2 / K) / math.sqrt(2))
    assert audit_set(z_s, z_c).auc == pytest.approx(expected, abs=0.01)
    rng = np.random.default_rng(3)
    assert auc(rng.normal(d, 1, 20_000), rng.normal(0, 1, 20_000)) == pytest.approx(
        PHI.cdf(d / math.sqrt(2)), abs=0.01
    )


def test_auc_counts_ties_as_half() -> None:
    assert auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert auc([2.0], [1.0, 3.0]) == 0.5
    assert math.isnan(auc([], [1.0]))


def test_over_forgotten_samples_show_in_the_low_tail() -> None:
    z_s, z_c, _, _ = _world(-2.0)
    fig = audit_set(z_s, z_c).at(0.05)
    assert fig.share_flagged < 0.01
    assert fig.share_low == pytest.approx(PHI.cdf(-1.645 + 2 / math.sqrt(1 + 2 / K)), abs=0.03)


def test_online_llr_is_the_gaussian_log_ratio_and_separates_members() -> None:
    table = np.array([[2.0, 5.0], [4.0, 7.0], [0.0, 1.0], [1.0, 3.0]])
    in_mask = np.array([[True, True], [True, True], [False, False], [False, False]])
    s = online_scores([3.0, 2.0], table, in_mask)
    np.testing.assert_allclose(s.mean_in, [3.0, 6.0])
    np.testing.assert_allclose(s.mean_out, [0.5, 2.0])
    var_in, var_out = 4.0 / 2, 2.5 / 2  # pooled: (1+1+1+1)/(2 dof), (.25+.25+1+1)/(2 dof)
    expect = [
        math.log(NormalDist(m_in, math.sqrt(var_in)).pdf(x))
        - math.log(NormalDist(m_out, math.sqrt(var_out)).pdf(x))
        for x, m_in, m_out in ((3.0, 3.0, 0.5), (2.0, 6.0, 2.0))
    ]
    np.testing.assert_allclose(s.llr, expect)

    # Same effect d for every sample and equal variances: the LLR ranks like phi - mean_out,
    # so its AUC is the offline one, Phi(d / sqrt(2 (1 + 2/K))).
    rng = np.random.default_rng(0)
    n = 4000
    mu_n = rng.normal(0, 3, n)
    in_mask = _half_mask(rng, n)
    table = mu_n + SIGMA * rng.normal(size=(K, n)) + 1.5 * SIGMA * in_mask
    member_phi = mu_n + 1.5 * SIGMA + SIGMA * rng.normal(size=n)
    fresh_phi = mu_n + SIGMA * rng.normal(size=n)
    llr_m = online_scores(member_phi, table, in_mask).llr
    llr_f = online_scores(fresh_phi, table, in_mask).llr
    assert auc(llr_m, llr_f) == pytest.approx(PHI.cdf(1.5 / math.sqrt(2 * (1 + 2 / K))), abs=0.03)


# --------------------------------------------------------------------------------------------
# Calibration, epsilon and the binomial machinery
# --------------------------------------------------------------------------------------------


def test_calibrated_threshold_keeps_the_fpr_on_fresh_non_members() -> None:
    rng = np.random.default_rng(5)
    rates = []
    for _ in range(400):
        t = calibrated_threshold(rng.normal(size=199), 0.05)
        rates.append(float(normal_sf(t)))
    # conformal: E[FPR] = floor(0.05 * 200) / 200 = 0.05 exactly
    assert np.mean(rates) == pytest.approx(0.05, abs=0.004)
    assert calibrated_threshold(np.arange(10.0), 0.05) == math.inf


def test_epsilon_is_zero_without_signal_and_grows_with_separation() -> None:
    eps = [audit_set(*_world(d, n=3000, seed=6)[:2]).epsilon for d in (0.0, 1.0, 2.0, 4.0)]
    assert eps[0] == pytest.approx(0.0, abs=0.1)
    assert eps[0] < eps[1] < eps[2] < eps[3]
    cap = audit_set(*_world(4.0, n=3000, seed=6)[:2]).epsilon_cap
    assert eps[3] <= cap == pytest.approx(epsilon_lower_bound(3000, 3000, 0, 3000))


def test_epsilon_bound_by_hand() -> None:
    # all 100 flagged, none of 1000 non-members: TPR >= .05**(1/100), FPR <= 1 - .05**(1/1000)
    tpr, fpr = 0.05 ** (1 / 100), 1 - 0.05 ** (1 / 1000)
    assert epsilon_lower_bound(100, 100, 0, 1000, delta=1e-5) == pytest.approx(
        math.log((tpr - 1e-5) / fpr)
    )
    assert epsilon_lower_bound(0, 100, 0, 1000) == 0.0


@pytest.mark.parametrize(
    ("x", "n", "conf", "lower", "upper"),
    [
        (5, 10, 0.975, 0.187086, 0.812914),  # the textbook 95% two-sided interval of 5/10
        (1, 10, 0.975, 0.002529, 0.445016),
        (50, 100, 0.975, 0.398321, 0.601679),
        (0, 10, 0.95, 0.0, 1 - 0.05**0.1),
        (10, 10, 0.95, 0.05**0.1, 1.0),
    ],
)
def test_clopper_pearson_known_values(
    x: int, n: int, conf: float, lower: float, upper: float
) -> None:
    lo, hi = clopper_pearson(x, n, conf)
    assert lo == pytest.approx(lower, abs=1e-6)
    assert hi == pytest.approx(upper, abs=1e-6)


def test_clopper_pearson_equals_the_beta_quantiles() -> None:
    stats = pytest.importorskip("scipy.stats")
    for x, n in [(1, 20_000), (3, 450), (37, 100), (449, 450)]:
        lo, hi = clopper_pearson(x, n, 0.95)
        assert lo == pytest.approx(stats.beta.ppf(0.05, x, n - x + 1), rel=1e-9)
        assert hi == pytest.approx(stats.beta.ppf(0.95, x + 1, n - x), rel=1e-9)


def test_binomial_cdf_and_tolerance_against_known_quantiles() -> None:
    assert binom_cdf(5, 10, 0.5) == pytest.approx(638 / 1024)
    assert binom_cdf(0, 10, 0.1) == pytest.approx(0.9**10)
    # Binomial(100, 0.05): P(X <= 10) = 0.9885 < 0.99 <= P(X <= 11) = 0.9961
    assert binomial_tolerance(100, 0.05, 0.99) == pytest.approx(0.11 - 0.05)
    stats = pytest.importorskip("scipy.stats")
    for n, a in [(50, 0.01), (300, 0.05), (1000, 0.01)]:
        assert binomial_tolerance(n, a) == pytest.approx(stats.binom.ppf(0.99, n, a) / n - a)
        k = math.floor(a * 451)
        bb = stats.betabinom.ppf(0.99, n, k, 451 - k)
        assert binomial_tolerance(n, a, n_calibration=450) == pytest.approx(bb / n - a)


def test_binomial_tolerance_holds_for_null_sets() -> None:
    rng = np.random.default_rng(7)
    n, n_cal, alpha = 100, 450, 0.05
    tol = binomial_tolerance(n, alpha, 0.95, n_calibration=n_cal)
    above = 0
    for _ in range(400):
        fig = audit_set(rng.normal(size=n), rng.normal(size=n_cal), alphas=(alpha,)).at(alpha)
        above += fig.share_flagged > alpha + tol
    assert above / 400 <= 0.05 + 0.025


def test_audit_as_dict_is_plain_json() -> None:
    z_s, z_c, _, _ = _world(1.0, n=500)
    audit = audit_set(z_s, z_c, alphas=(0.001, 0.05), k=K)
    d = audit.as_dict()
    json.dumps(d, allow_nan=False)
    assert d["k"] == K and d["n"] == 500 and len(d["alphas"]) == 2
    assert d["alphas"][0]["threshold"] is None  # alpha * 501 < 1: nothing can be flagged
    assert isinstance(d["alphas"][1]["flagged"], int)


def test_audit_set_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        audit_set([], [1.0])
    with pytest.raises(ValueError):
        audit_set([1.0], [1.0], alphas=(1.5,))
    with pytest.raises(ValueError):
        offline_scores([1.0, 2.0], np.zeros((3, 2)), np.ones((3, 3), dtype=bool))
