"""Per-example membership audit: a likelihood-ratio test calibrated per sample (LiRA, Carlini et
al. 2022; U-LiRA, Hayes et al. 2025), as stated in ``shared/spec/privacy_audit.md``.

The score of a sample under a model is the logit margin ``phi`` (:func:`logit_margin`). A
reference kit (:mod:`app.unlearning.reference_kit`) holds ``phi`` of every sample under K shadow
models and whether each shadow saw it. :func:`offline_scores` compares a model's ``phi`` with the
sample's OUT values (models that never saw it), :func:`online_scores` with its IN and OUT values;
:func:`audit_set` turns the scores of a set S and of known non-members into the set-level figures
(flagged share at a calibrated false-positive rate, AUC, an empirical epsilon lower bound).

Every statistic here is numpy float64; torch is used only to turn logits into ``phi``. Scores are
oriented so that *larger means "looks like a member"*.

>>> rng = np.random.default_rng(0)
>>> out_mask = np.ones((8, 500), dtype=bool)
>>> phi_out = rng.normal(0.0, 1.0, (8, 500))          # 8 shadows, none saw the 500 samples
>>> member = offline_scores(np.full(500, 4.0), phi_out, out_mask).z      # far above OUT
>>> fresh = offline_scores(rng.normal(0.0, 1.0, 500), phi_out, out_mask).z
>>> calib = offline_scores(rng.normal(0.0, 1.0, 500), phi_out, out_mask).z
>>> audit_set(member, calib).alphas[0].share_flagged, audit_set(fresh, calib).auc < 0.6
(1.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

#: Smallest variance used for a Gaussian fit, so identical OUT values do not divide by zero.
MIN_VARIANCE = 1e-12


def _vector(name: str, values: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _table(name: str, phi: np.ndarray, mask: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    table = np.asarray(phi, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if table.ndim != 2 or table.shape[1] != n:
        raise ValueError(f"{name} must have shape (K, {n}), got {table.shape}")
    if m.shape != table.shape:
        raise ValueError(f"the mask must have the shape of {name} {table.shape}, got {m.shape}")
    return table, m


# --------------------------------------------------------------------------------------------
# The score of one sample under one model.
# --------------------------------------------------------------------------------------------


def logit_margin(
    logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
) -> np.ndarray:
    """``phi = z_y - logsumexp_{j != y} z_j`` per row, as float64 numpy ``(N,)``.

    This equals ``log(p_y / (1 - p_y))`` of the softmax but is computed from the logits, so it
    stays finite (and exact) where ``p_y`` rounds to 1. Larger means more confident in the label.

    >>> logit_margin(np.array([[2.0, 0.0], [0.0, 50.0]]), np.array([0, 1]))
    array([ 2., 50.])
    """
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    y = torch.as_tensor(labels).detach().to("cpu", torch.int64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C) with C >= 2, got {tuple(z.shape)}")
    if y.shape != (z.shape[0],):
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        raise ValueError("labels must lie in [0, C)")
    own = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf"))
    out: np.ndarray = (own - torch.logsumexp(others, dim=1)).numpy()
    return out


# --------------------------------------------------------------------------------------------
# Gaussian tails (numpy has no erfc; math.erfc per element is exact and fast enough for 1e5).
# --------------------------------------------------------------------------------------------

_erfc = np.frompyfunc(math.erfc, 1, 1)


def normal_sf(z: np.ndarray | float) -> np.ndarray:
    """Upper tail ``P(Z > z)`` of the standard normal, accurate far in the tail (via erfc).

    >>> float(normal_sf(0.0)), round(float(normal_sf(1.6448536269514722)), 12)
    (0.5, 0.05)
    """
    arr = np.asarray(z, dtype=np.float64)
    out = np.full(arr.shape, np.nan)
    ok = ~np.isnan(arr)
    out[ok] = 0.5 * np.asarray(_erfc(arr[ok] / math.sqrt(2.0)), dtype=np.float64)
    return out


def normal_cdf(z: np.ndarray | float) -> np.ndarray:
    """``P(Z <= z)`` of the standard normal (``normal_sf(-z)``)."""
    return normal_sf(-np.asarray(z, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# Per-sample scores against the reference table.
# --------------------------------------------------------------------------------------------


def _masked_mean(table: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = mask.sum(axis=0)
    total = np.where(mask, table, 0.0).sum(axis=0)
    mean = np.full(table.shape[1], np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    return mean, count


def pooled_variance(table: np.ndarray, mask: np.ndarray) -> float:
    """One variance for all samples (columns) of ``table``: the squared deviations of the masked
    entries from their own column's mean, summed, over the total degrees of freedom
    ``sum(n_i - 1)``; at least :data:`MIN_VARIANCE`.

    >>> pooled_variance(np.array([[1.0, 5.0], [3.0, 9.0]]), np.ones((2, 2), dtype=bool))
    5.0
    """
    values = np.asarray(table, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    if values.ndim != 2 or m.shape != values.shape:
        raise ValueError("table and mask must have the same shape (K, N)")
    mean, count = _masked_mean(values, m)
    dof = int(np.maximum(count - 1, 0).sum())
    if dof == 0:
        raise ValueError("a pooled variance needs at least one sample with two values")
    dev2 = np.where(m, (values - np.nan_to_num(mean)[None, :]) ** 2, 0.0)
    return max(float(dev2.sum()) / dof, MIN_VARIANCE)


def _gaussian_fit(
    table: np.ndarray, mask: np.ndarray, pooled: bool, variance: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample mean and variance of the masked entries of ``table`` (columns are samples),
    and the number of entries each mean rests on. The variance is ``variance`` when given, else
    pooled over all columns or per column."""
    mean, count = _masked_mean(table, mask)
    if variance is not None:
        if not variance > 0:
            raise ValueError("variance must be positive")
        return mean, np.full(table.shape[1], float(variance)), count
    if pooled:
        return mean, np.full(table.shape[1], pooled_variance(table, mask)), count
    dev2 = np.where(mask, (table - np.nan_to_num(mean)[None, :]) ** 2, 0.0).sum(axis=0)
    var = np.full(table.shape[1], np.nan)
    np.divide(dev2, count - 1, out=var, where=count > 1)
    return mean, np.maximum(var, MIN_VARIANCE), count


@dataclass(frozen=True)
class OfflineScores:
    """Per-sample offline test. ``z``: the standardised distance of the model's ``phi`` above
    the sample's OUT mean (larger = more member-like; negative = less confident than models that
    never saw it). ``p_value``: ``P(phi_out >= phi_model)`` under the fitted Gaussian (small =
    member-like). ``mean_out``/``std_out``: the fit; ``n_out``: OUT values per sample. Samples
    with no OUT value have NaN scores."""

    z: np.ndarray
    p_value: np.ndarray
    mean_out: np.ndarray
    std_out: np.ndarray
    n_out: np.ndarray


def offline_scores(
    phi_model: np.ndarray | Sequence[float],
    phi_out: np.ndarray,
    out_mask: np.ndarray,
    *,
    pooled: bool | None = None,
    variance: float | None = None,
    offset: float = 0.0,
) -> OfflineScores:
    """Score each of N samples against the Gaussian fitted to its OUT values.

    ``phi_model``: ``(N,)`` the model's ``phi``; ``phi_out``: ``(K, N)`` the shadows' ``phi``;
    ``out_mask``: ``(K, N)`` true where shadow k did not see sample n (only those entries are
    used). The mean is the sample's own; the variance is ``variance`` when given (a kit passes
    one for all its samples, so S and the calibration set are scaled alike), else pooled over
    these samples when ``pooled`` (default: K <= 64, as per-sample variances from a few values
    are too noisy), else per sample.

    ``z = (phi - offset - mean) / sqrt(var * (1 + 1/n_out))``. The factor is the predictive
    variance of a fresh OUT value, the mean being itself estimated from ``n_out`` values: a
    test-split sample (OUT for all K shadows) and a training sample (OUT for about K/2) then
    share one null distribution, which calibrating on the test split assumes. ``offset`` is a
    model-wide shift of ``phi`` against the shadows: a model trained on the whole training set is
    more confident on *every* unseen sample than shadows trained on half of it, and that shift,
    scaled by two different factors, would otherwise move S and the calibration set apart
    (:meth:`~app.unlearning.reference_kit.ReferenceKit.audit` estimates it on the non-members).

    >>> fit = offline_scores([3.0, 1.0], np.array([[1.0, 1.0], [-1.0, -1.0]]), np.ones((2, 2)))
    >>> fit.mean_out.tolist(), fit.std_out.round(4).tolist(), fit.z.round(4).tolist()
    ([0.0, 0.0], [1.4142, 1.4142], [1.7321, 0.5774])
    """
    phi = _vector("phi_model", phi_model)
    table, mask = _table("phi_out", phi_out, out_mask, len(phi))
    use_pooled = table.shape[0] <= 64 if pooled is None else pooled
    mean, var, count = _gaussian_fit(table, mask, use_pooled, variance)
    z = np.full(len(phi), np.nan)
    ok = count > 0
    z[ok] = (phi[ok] - offset - mean[ok]) / np.sqrt(var[ok] * (1.0 + 1.0 / count[ok]))
    return OfflineScores(
        z=z, p_value=normal_sf(z), mean_out=mean, std_out=np.sqrt(var), n_out=count
    )


@dataclass(frozen=True)
class OnlineScores:
    """Per-sample online test: ``llr`` = log N(phi; IN fit) - log N(phi; OUT fit) (larger =
    member); the two fits' means and (pooled) standard deviations. NaN where a side is empty."""

    llr: np.ndarray
    mean_in: np.ndarray
    mean_out: np.ndarray
    std_in: np.ndarray
    std_out: np.ndarray


def online_scores(
    phi_model: np.ndarray | Sequence[float],
    phi_table: np.ndarray,
    in_mask: np.ndarray,
    *,
    pooled: bool | None = None,
) -> OnlineScores:
    """Log-likelihood ratio of the model's ``phi`` under the sample's IN Gaussian against its OUT
    Gaussian; ``in_mask`` ``(K, N)`` is true where shadow k trained on sample n. Each side's
    variance is pooled over samples (default when K <= 64), each mean is the sample's own.

    >>> s = online_scores([2.0, 0.0], np.array([[2.0, 2.0], [0.0, 0.0], [2.2, 1.8], [-0.2, 0.2]]),
    ...                   np.array([[1, 1], [0, 0], [1, 1], [0, 0]], dtype=bool))
    >>> bool(s.llr[0] > 0 > s.llr[1])
    True
    """
    phi = _vector("phi_model", phi_model)
    table, inside = _table("phi_table", phi_table, in_mask, len(phi))
    use_pooled = table.shape[0] <= 64 if pooled is None else pooled
    mu_in, var_in, n_in = _gaussian_fit(table, inside, use_pooled)
    mu_out, var_out, n_out = _gaussian_fit(table, ~inside, use_pooled)

    def log_pdf(mu: np.ndarray, var: np.ndarray) -> np.ndarray:
        out: np.ndarray = -0.5 * (np.log(2 * np.pi * var) + (phi - mu) ** 2 / var)
        return out

    with np.errstate(invalid="ignore"):
        llr = np.where(
            (n_in > 0) & (n_out > 0), log_pdf(mu_in, var_in) - log_pdf(mu_out, var_out), np.nan
        )
    return OnlineScores(
        llr=llr, mean_in=mu_in, mean_out=mu_out, std_in=np.sqrt(var_in), std_out=np.sqrt(var_out)
    )


# --------------------------------------------------------------------------------------------
# Exact binomial tails, Clopper-Pearson and the beta-binomial (no scipy needed).
# --------------------------------------------------------------------------------------------


def _log_binom_coef(n: int) -> np.ndarray:
    """``log C(n, i)`` for i = 0..n."""
    i = np.arange(1, n + 1, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(np.log(n - i + 1) - np.log(i))])


def _logsumexp(a: np.ndarray) -> float:
    if a.size == 0:
        return -math.inf
    top = float(a.max())
    if top == -math.inf:
        return -math.inf
    return top + math.log(float(np.exp(a - top).sum()))


def _binom_log_pmf(log_coef: np.ndarray, p: float) -> np.ndarray:
    n = len(log_coef) - 1
    i = np.arange(n + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = log_coef + i * math.log(p) + (n - i) * math.log1p(-p)
    return lp


def binom_cdf(x: int, n: int, p: float) -> float:
    """``P(X <= x)`` for ``X ~ Binomial(n, p)``, summed exactly in log space.

    >>> round(binom_cdf(5, 10, 0.5), 12)
    0.623046875
    """
    if not 0 <= p <= 1:
        raise ValueError("p must lie in [0, 1]")
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    if p in (0.0, 1.0):
        return 1.0 if p == 0.0 else 0.0
    lp = _binom_log_pmf(_log_binom_coef(n), p)
    return min(1.0, math.exp(_logsumexp(lp[: x + 1])))


def _bisect(f: Callable[[float], float], target: float, *, increasing: bool) -> float:
    """The p in [0, 1] where the monotone ``f(p)`` crosses ``target``, to a relative 1e-13."""
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-13 * hi:
        mid = 0.5 * (lo + hi)
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds ``(lower, upper)`` of a binomial proportion, each at
    ``confidence`` (``P(p < lower) <= 1 - confidence`` and likewise for ``upper``); the exact
    inversion of the binomial tails, equal to the beta quantiles
    ``Beta(1-c; x, n-x+1)`` and ``Beta(c; x+1, n-x)``.

    >>> [round(b, 6) for b in clopper_pearson(5, 10, 0.975)]
    [0.187086, 0.812914]
    >>> round(clopper_pearson(0, 10)[1], 6) == round(1 - 0.05 ** 0.1, 6)
    True
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError("need 0 <= successes <= trials and trials >= 1")
    if not 0.5 <= confidence < 1:
        raise ValueError("confidence must lie in [0.5, 1)")
    tail = 1.0 - confidence
    x, n = successes, trials
    log_coef = _log_binom_coef(n)

    def upper_tail(p: float) -> float:  # P(X >= x), increasing in p
        return math.exp(_logsumexp(_binom_log_pmf(log_coef, p)[x:]))

    def lower_tail(p: float) -> float:  # P(X <= x), decreasing in p
        return math.exp(_logsumexp(_binom_log_pmf(log_coef, p)[: x + 1]))

    if x == 0:
        lower = 0.0
    elif x == n:
        lower = tail ** (1.0 / n)
    else:
        lower = _bisect(upper_tail, tail, increasing=True)
    if x == n:
        upper = 1.0
    elif x == 0:
        upper = 1.0 - tail ** (1.0 / n)
    else:
        upper = _bisect(lower_tail, tail, increasing=False)
    return float(lower), float(upper)


def _beta_binom_log_pmf(n: int, a: float, b: float) -> np.ndarray:
    i = np.arange(n + 1, dtype=np.float64)
    lg = np.frompyfunc(math.lgamma, 1, 1)

    def lgam(v: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray(lg(v), dtype=np.float64)
        return out

    log_beta_ab = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    log_norm = math.lgamma(n + a + b) + log_beta_ab
    out: np.ndarray = _log_binom_coef(n) + lgam(i + a) + lgam(n - i + b) - log_norm
    return out


def binomial_tolerance(
    n: int, alpha: float, confidence: float = 0.99, *, n_calibration: int | None = None
) -> float:
    """How far above ``alpha`` the share of a set of ``n`` samples flagged at FPR ``alpha`` may
    lie for a model that never saw them, at ``confidence``: ``q / n - alpha`` with q the
    ``confidence`` quantile of the flagged count.

    Without ``n_calibration`` the count is ``Binomial(n, alpha)`` (the threshold is exact). With
    it, the threshold is the one :func:`audit_set` calibrates on that many non-members, whose
    own FPR is random: ``Beta(k, n_cal - k + 1)`` with ``k = floor(alpha (n_cal + 1))``, so the
    count is beta-binomial (exact for exchangeable non-members) and the tolerance is wider.

    The gate passes a sample-wise request when ``share_flagged <= expected + tolerance``, with
    ``expected`` retrain's share (``alpha`` when retrain is not run).

    >>> round(binomial_tolerance(100, 0.05), 3)   # Binomial(100, .05): 99% quantile is 11
    0.06
    >>> round(binomial_tolerance(1000, 0.05), 3)
    0.017
    >>> round(binomial_tolerance(1000, 0.05, n_calibration=450), 3)   # the threshold's noise too
    0.031
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if not 0 < alpha < 1 or not 0 < confidence < 1:
        raise ValueError("alpha and confidence must lie in (0, 1)")
    if n_calibration is None:
        lp = _binom_log_pmf(_log_binom_coef(n), alpha)
    else:
        k = math.floor(alpha * (n_calibration + 1))
        if k < 1:
            return 1.0 - alpha  # nothing can be flagged, and nothing bounds a share above 0
        lp = _beta_binom_log_pmf(n, float(k), float(n_calibration - k + 1))
    cdf = np.cumsum(np.exp(lp - _logsumexp(lp)))
    q = int(np.searchsorted(cdf, confidence - 1e-12))
    return min(q, n) / n - alpha


# --------------------------------------------------------------------------------------------
# Set-level figures.
# --------------------------------------------------------------------------------------------


def auc(positive: np.ndarray | Sequence[float], negative: np.ndarray | Sequence[float]) -> float:
    """Area under the ROC curve of ``positive`` against ``negative`` scores (larger = positive):
    the Mann-Whitney probability that a positive outscores a negative, ties counting 1/2.

    >>> auc([3.0, 2.0], [1.0, 2.0])
    0.875
    """
    pos, neg = _vector("positive", positive), _vector("negative", negative)
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(allv, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    mid_rank = upper - (counts - 1) / 2.0  # average 1-based rank of each distinct value
    ranks = mid_rank[inverse]
    u = float(ranks[: len(pos)].sum()) - len(pos) * (len(pos) + 1) / 2.0
    return u / (len(pos) * len(neg))


def epsilon_lower_bound(
    true_pos: int,
    n_pos: int,
    false_pos: int,
    n_neg: int,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
) -> float:
    """Empirical epsilon an attack with these counts proves at ``delta``: any (eps, delta)-DP
    mechanism has ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``; with
    the TPR's one-sided Clopper-Pearson lower bound and the FPR's upper bound (each at
    ``confidence``), ``eps >= max(log((TPR - delta)/FPR), log((1 - delta - FPR)/(1 - TPR)), 0)``.

    >>> epsilon_lower_bound(5, 100, 5, 100)
    0.0
    >>> round(epsilon_lower_bound(100, 100, 0, 1000), 3)
    5.782
    """
    tpr_lo, _ = clopper_pearson(true_pos, n_pos, confidence)
    _, fpr_hi = clopper_pearson(false_pos, n_neg, confidence)
    bounds = [0.0]
    if tpr_lo - delta > 0:
        bounds.append(math.log((tpr_lo - delta) / fpr_hi))
    if 1 - delta - fpr_hi > 0:
        bounds.append(math.log((1 - delta - fpr_hi) / (1 - tpr_lo)))
    return max(bounds)


def calibrated_threshold(nonmember_scores: np.ndarray, alpha: float) -> float:
    """The threshold t such that flagging ``score > t`` has FPR at most ``alpha`` on a fresh
    non-member exchangeable with ``nonmember_scores`` (the conformal rule): the k-th largest
    non-member score with ``k = floor(alpha (n + 1))``, ``+inf`` when k is 0. On the calibration
    scores themselves the flagged share is ``(k - 1) / n <= alpha``.

    >>> calibrated_threshold(np.arange(99.0), 0.05)   # k = 5: the 5th largest of 0..98
    94.0
    """
    scores = np.sort(_vector("nonmember_scores", nonmember_scores)[~np.isnan(nonmember_scores)])
    k = math.floor(alpha * (len(scores) + 1))
    return math.inf if k < 1 else float(scores[len(scores) - k])


@dataclass(frozen=True)
class AlphaFigures:
    """Figures at one target false-positive rate ``alpha``.

    - ``threshold``: scores above it are flagged "member" (calibrated on the non-members).
    - ``fpr``: the non-members' own flagged share (at most ``alpha``).
    - ``flagged`` / ``share_flagged``: members of S flagged and their share; this is the TPR at
      this FPR when S are members.
    - ``low_threshold`` / ``low_flagged`` / ``share_low``: the other tail, samples *less*
      confident than all but ``alpha`` of the non-members (over-forgotten samples land here).
    - ``epsilon``: the empirical epsilon lower bound from (flagged, fpr) at ``delta``;
      ``epsilon_cap``: the same with every sample of S flagged at this FPR (the most these counts
      could show).
    """

    alpha: float
    threshold: float
    fpr: float
    flagged: int
    share_flagged: float
    low_threshold: float
    low_flagged: int
    share_low: float
    nonmember_low_share: float
    epsilon: float
    epsilon_cap: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {k: _json_number(v) for k, v in self.__dict__.items()}


def _json_number(v: float | int) -> float | int | None:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else None


@dataclass(frozen=True)
class SetAudit:
    """Set-level figures of a membership audit of S against known non-members.

    ``alphas``: one :class:`AlphaFigures` per target FPR; ``auc``: AUC of S against the
    non-members (0.5: indistinguishable; 1: every S sample more member-like); ``epsilon``: the
    largest epsilon lower bound over ``alphas``; ``epsilon_cap``: the largest any threshold could
    show with these sample counts (all of S flagged, no non-member flagged). ``k``: the shadows
    behind the scores, when known (it bounds what the test resolves; report it with the rest).
    """

    n: int
    n_nonmembers: int
    auc: float
    alphas: tuple[AlphaFigures, ...]
    epsilon: float
    epsilon_cap: float
    delta: float
    confidence: float
    median_score: float
    median_nonmember_score: float
    k: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def at(self, alpha: float) -> AlphaFigures:
        for fig in self.alphas:
            if math.isclose(fig.alpha, alpha):
                return fig
        raise KeyError(alpha)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON numbers (non-finite values become ``None``)."""
        return {
            "n": self.n,
            "n_nonmembers": self.n_nonmembers,
            "k": self.k,
            "auc": _json_number(self.auc),
            "epsilon": _json_number(self.epsilon),
            "epsilon_cap": _json_number(self.epsilon_cap),
            "delta": self.delta,
            "confidence": self.confidence,
            "median_score": _json_number(self.median_score),
            "median_nonmember_score": _json_number(self.median_nonmember_score),
            "alphas": [a.as_dict() for a in self.alphas],
            **self.extra,
        }


def audit_set(
    scores_s: np.ndarray | Sequence[float],
    scores_nonmembers: np.ndarray | Sequence[float],
    alphas: Sequence[float] = (0.01, 0.05),
    delta: float = 1e-5,
    *,
    confidence: float = 0.95,
    k: int | None = None,
) -> SetAudit:
    """Set-level audit of S. Both score arrays come from the same model and the same test
    (offline ``z`` or online ``llr``; larger = member); the non-members are samples the model
    never saw (its test split), scored the same way. NaN scores are dropped.

    Thresholds are calibrated on the non-members (:func:`calibrated_threshold`), so the FPR holds
    empirically whatever the scores' distribution. ``epsilon`` uses one-sided Clopper-Pearson
    bounds at ``confidence`` (see :func:`epsilon_lower_bound`); it is the maximum over
    ``alphas``, a small multiple comparison that the confidence level does not account for.

    >>> rng = np.random.default_rng(1)
    >>> a = audit_set(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000), alphas=(0.05,))
    >>> abs(a.at(0.05).share_flagged - 0.05) < 0.02, abs(a.auc - 0.5) < 0.03, a.epsilon < 0.3
    (True, True, True)
    """
    s = _vector("scores_s", scores_s)
    nm = _vector("scores_nonmembers", scores_nonmembers)
    s, nm = s[~np.isnan(s)], nm[~np.isnan(nm)]
    if not len(s) or not len(nm):
        raise ValueError("both S and the non-members need at least one finite score")
    if not 0 < delta < 1:
        raise ValueError("delta must lie in (0, 1)")
    figures = []
    for alpha in alphas:
        if not 0 < alpha < 1:
            raise ValueError("every alpha must lie in (0, 1)")
        t_hi = calibrated_threshold(nm, alpha)
        t_lo = -calibrated_threshold(-nm, alpha)
        fp = int((nm > t_hi).sum())
        tp = int((s > t_hi).sum())
        low = int((s < t_lo).sum())
        eps = epsilon_lower_bound(tp, len(s), fp, len(nm), delta=delta, confidence=confidence)
        cap = epsilon_lower_bound(len(s), len(s), fp, len(nm), delta=delta, confidence=confidence)
        figures.append(
            AlphaFigures(
                alpha=float(alpha),
                threshold=t_hi,
                fpr=fp / len(nm),
                flagged=tp,
                share_flagged=tp / len(s),
                low_threshold=t_lo,
                low_flagged=low,
                share_low=low / len(s),
                nonmember_low_share=float((nm < t_lo).mean()),
                epsilon=eps,
                epsilon_cap=cap,
            )
        )
    return SetAudit(
        n=len(s),
        n_nonmembers=len(nm),
        auc=auc(s, nm),
        alphas=tuple(figures),
        epsilon=max((f.epsilon for f in figures), default=0.0),
        epsilon_cap=epsilon_lower_bound(
            len(s), len(s), 0, len(nm), delta=delta, confidence=confidence
        ),
        delta=float(delta),
        confidence=float(confidence),
        median_score=float(np.median(s)),
        median_nonmember_score=float(np.median(nm)),
        k=k,
    )
