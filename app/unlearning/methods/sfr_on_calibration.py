"""SFR-on's calibration search: alpha0 and the iteration count picked per request by trial runs
measured on a validation probe (forget accuracy and prediction entropy against the request's
forgetting target), within a budget of SFR-on iterations over all trials together.

Not a method (the registry maps ``sfr_on`` to :func:`app.unlearning.methods.sfr_on.run`, which
calls :func:`calibrate` when configured). The search runs the algorithm's own pieces, SFR-on's
loop and adaptive weights, which ``run`` passes in (``loop``, ``weights``): this module imports
nothing from :mod:`app.unlearning.methods.sfr_on`, so the imports point one way.

>>> calibration_budget(14, 2 / 3)
42
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from app.unlearning.config import SFROnConfig
from app.unlearning.data import DeviceData
from app.unlearning.evaluation.evaluator import predict
from app.unlearning.methods.common import Mask, MethodContext, apply_mask, fixed_batches, params

_ALPHA_BOUNDS = (1e-2, 1e5)


class Loop(Protocol):
    """SFR-on's loop (:func:`app.unlearning.methods.sfr_on.sfr_on_loop`): ``iterations``
    iterations on ``model`` in place, remain steps on ``remain``."""

    def __call__(
        self,
        model: nn.Module,
        ctx: MethodContext,
        config: SFROnConfig,
        /,
        *,
        alpha0: float,
        iterations: int,
        mask: Mask,
        remain: DeviceData,
        phase: str = ...,
        stream_seed: int = ...,
    ) -> dict[str, Any]: ...


#: SFR-on's adaptive weights (:func:`app.unlearning.methods.sfr_on.adaptive_weights`):
#: ``(losses, lam, floor) -> weights``.
Weights = Callable[[torch.Tensor, float, float], torch.Tensor]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy (nats) of the softmax of ``logits``.

    >>> entropy(torch.tensor([[0.0, 0.0], [3.0, 3.0]]))
    tensor([0.6931, 0.6931])
    """
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1)


@dataclass
class _Probe:
    """Validation views: a forget sample (the request's own data), a held-out part of the remain
    set (excluded from every remain step), and unseen data (class-wise: kept classes only)."""

    forget: DeviceData
    forget_labels: torch.Tensor
    held_out: DeviceData
    held_out_labels: torch.Tensor
    unseen: DeviceData
    unseen_labels: torch.Tensor
    num_classes: int

    def measure(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Accuracies (points) and mean prediction entropies (share of log C, in points)."""
        scale = 100.0 / math.log(max(self.num_classes, 2))
        f_logits = predict(model, self.forget, device)
        u_logits = predict(model, self.unseen, device)
        u_right = u_logits.argmax(1) == self.unseen_labels
        u_h = entropy(u_logits) * scale

        def mean(x: torch.Tensor) -> float:
            return float(x.mean()) if x.numel() else float("nan")

        return {
            "FA": mean((f_logits.argmax(1) == self.forget_labels).float()) * 100.0,
            "RA_heldout": mean(
                (predict(model, self.held_out, device).argmax(1) == self.held_out_labels).float()
            )
            * 100.0,
            "VA": mean(u_right.float()) * 100.0,
            "H_forget": mean(entropy(f_logits) * scale),
            "H_unseen_right": mean(u_h[u_right]),
            "H_unseen_wrong": mean(u_h[~u_right]),
        }


@dataclass(frozen=True)
class Target:
    """What "forgotten" means for one request, measured on validation data only.

    ``fa``: forget accuracy to reach (class-wise 0; sample-wise the original model's accuracy on
    unseen data, which is about retrain's forget accuracy), ``tol`` its tolerance (points).
    ``entropy``: the mean prediction entropy (points of log C) the forgotten samples should have:
    the entropy the original model shows on unseen samples it gets right, for the share ``fa`` of
    them, and on unseen samples it gets wrong, for the rest. Retrain's forgotten samples are
    unseen data to it, and class-wise all of them are misclassified, so this is the entropy of
    an honest "I never saw this" answer rather than a confidently wrong one (what the entropy MIA
    detects). ``class_wise``: forget accuracy saturates at 0, so "more forgetting" past the target
    shows up as damage (held-out remain accuracy, over-confidence) rather than as a lower FA.
    """

    fa: float
    tol: float
    entropy: float
    class_wise: bool


def forgetting_target(base: dict[str, float], class_wise: bool, tol: float) -> Target:
    """The :class:`Target` from the original model's probe measurement ``base``.

    >>> t = forgetting_target({"VA": 80.0, "H_unseen_right": 10.0, "H_unseen_wrong": 50.0},
    ...                       class_wise=False, tol=1.5)
    >>> (t.fa, t.entropy)
    (80.0, 18.0)
    >>> forgetting_target({"VA": 80.0, "H_unseen_right": 10.0, "H_unseen_wrong": 50.0},
    ...                   class_wise=True, tol=1.0).entropy
    50.0
    """
    fa = 0.0 if class_wise else base["VA"]
    right, wrong = base["H_unseen_right"], base["H_unseen_wrong"]
    if math.isnan(wrong):  # the original is perfect on the probe: no wrong answers to learn from
        wrong = right
    if math.isnan(right):
        right = wrong
    h = fa / 100.0 * right + (1.0 - fa / 100.0) * wrong
    return Target(fa=fa, tol=tol, entropy=0.0 if math.isnan(h) else h, class_wise=class_wise)


#: Weight of a forget-accuracy miss against a point of held-out accuracy in the trial score.
MISS_WEIGHT = 3.0


def trial_score(
    m: dict[str, float], base: dict[str, float], target: Target, entropy_weight: float
) -> float:
    """Lower is better (points): ``MISS_WEIGHT`` x the forget accuracy's distance to the target
    beyond the tolerance (the request's primary goal), the loss of accuracy on held-out remain
    data and on unseen data, and
    ``entropy_weight`` x the distance of the forgotten samples' mean entropy to the target's.

    >>> base = {"RA_heldout": 99.0, "VA": 85.0}
    >>> t = Target(fa=0.0, tol=1.0, entropy=40.0, class_wise=True)
    >>> trial_score({"FA": 3.0, "RA_heldout": 98.0, "VA": 85.5, "H_forget": 30.0}, base, t, 0.1)
    8.0
    """
    miss = max(0.0, abs(m["FA"] - target.fa) - target.tol)
    side = max(0.0, base["RA_heldout"] - m["RA_heldout"]) + max(0.0, base["VA"] - m["VA"])
    return MISS_WEIGHT * miss + side + entropy_weight * abs(m["H_forget"] - target.entropy)


def direction(m: dict[str, float], base: dict[str, float], target: Target, side_tol: float) -> int:
    """+1: forget more (raise alpha0), -1: forget less (lower alpha0), 0: on target.

    Sample-wise, FA alone decides. Class-wise FA cannot go below 0, so once FA is within the
    tolerance, damage beyond ``side_tol`` points on held-out remain or unseen data, or forgotten
    samples more confident than the target entropy, mean the ascent is stronger than needed.

    >>> base = {"RA_heldout": 99.0, "VA": 85.0}
    >>> cw = Target(fa=0.0, tol=1.0, entropy=40.0, class_wise=True)
    >>> direction({"FA": 0.0, "RA_heldout": 96.0, "VA": 85.0, "H_forget": 45.0}, base, cw, 1.0)
    -1
    >>> direction({"FA": 0.5, "RA_heldout": 98.5, "VA": 85.0, "H_forget": 45.0}, base, cw, 1.0)
    0
    >>> sw = Target(fa=85.0, tol=1.5, entropy=20.0, class_wise=False)
    >>> direction({"FA": 90.0, "RA_heldout": 96.0, "VA": 80.0, "H_forget": 5.0}, base, sw, 1.0)
    1
    """
    if m["FA"] > target.fa + target.tol:
        return 1
    if m["FA"] < target.fa - target.tol:
        return -1
    if target.class_wise:
        side = max(0.0, base["RA_heldout"] - m["RA_heldout"]) + max(0.0, base["VA"] - m["VA"])
        if side > side_tol or m["H_forget"] < target.entropy - 2.0 * side_tol:
            return -1
    return 0


def next_alpha(
    tried: list[tuple[float, float, int]], target_fa: float, step: float, *, bisect: bool = False
) -> float | None:
    """The next alpha0 from the trials so far, ``(alpha0, FA, direction)`` at one iteration count.

    Not bracketed yet: one geometric ``step`` in the needed direction from the nearest trial.
    Bracketed (a trial that needs more forgetting below one that needs less): interpolate
    log(alpha0) linearly in FA between the bracket's ends towards ``target_fa``, kept inside the
    middle of the bracket (25-75% of its log width) so every trial shrinks it; ``bisect``: the
    bracket's geometric mean. None when a trial was on target.

    >>> next_alpha([(25.0, 99.0, 1)], 85.0, 4.0)
    100.0
    >>> next_alpha([(25.0, 0.0, -1)], 0.5, 4.0)
    6.25
    >>> round(next_alpha([(10.0, 100.0, 1), (100.0, 80.0, -1)], 85.0, 4.0), 2)
    56.23
    >>> round(next_alpha([(10.0, 100.0, 1), (100.0, 80.0, -1)], 85.0, 4.0, bisect=True), 2)
    31.62
    """
    if any(d == 0 for _, _, d in tried):
        return None
    ups = [(a, fa) for a, fa, d in tried if d > 0]
    downs = [(a, fa) for a, fa, d in tried if d < 0]
    lo = max(ups) if ups else None
    hi = min(downs) if downs else None
    if lo is not None and hi is not None and lo[0] < hi[0]:
        (a_lo, fa_lo), (a_hi, fa_hi) = lo, hi
        frac = 0.5 if bisect or fa_lo <= fa_hi else (fa_lo - target_fa) / (fa_lo - fa_hi)
        frac = min(max(frac, 0.25), 0.75)
        return math.exp(math.log(a_lo) + frac * (math.log(a_hi) - math.log(a_lo)))
    if lo is not None and hi is None:
        return min(lo[0] * step, _ALPHA_BOUNDS[1])
    if hi is not None and lo is None:
        return max(hi[0] / step, _ALPHA_BOUNDS[0])
    # not monotone (noise): step on from the latest trial in the direction it asks for
    a, _, d = tried[-1]
    return min(max(a * step**d, _ALPHA_BOUNDS[0]), _ALPHA_BOUNDS[1])


@dataclass
class _Trial:
    alpha0: float
    iterations: int
    metrics: dict[str, float]
    score: float
    direction: int
    state: dict[str, torch.Tensor] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "alpha0": round(self.alpha0, 4),
            "iterations": self.iterations,
            "score": round(self.score, 3),
            "direction": self.direction,
            **{k: round(v, 2) for k, v in self.metrics.items()},
        }


def _build_probe(
    ctx: MethodContext, config: SFROnConfig, rng: np.random.Generator
) -> tuple[_Probe, DeviceData]:
    """Returns the probe and the remain set without its held-out part."""
    split = ctx.split
    n_cal = config.calibration_samples
    f_idx = rng.permutation(len(split.forget))[:n_cal]
    n_hold = min(n_cal // 2, max(1, len(split.remain) // 10))
    r_perm = rng.permutation(len(split.remain))
    hold_idx, train_idx = np.sort(r_perm[:n_hold]), np.sort(r_perm[n_hold:])
    unseen = split.validation
    if split.forget_classes:
        unseen = unseen.take(~np.isin(unseen.labels, np.asarray(split.forget_classes)))
    u_idx = rng.permutation(len(unseen))[:n_cal]

    def dev(name: str, ds_index: tuple[Any, np.ndarray]) -> tuple[DeviceData, torch.Tensor]:
        ds = ds_index[0].take(ds_index[1])
        d = ctx.on_device(name, ds)
        return d, torch.from_numpy(ds.labels)

    f, fl = dev("probe_forget", (split.forget, f_idx))
    h, hl = dev("probe_held_out", (split.remain, hold_idx))
    u, ul = dev("probe_unseen", (unseen, u_idx))
    remain_train = ctx.on_device("remain_minus_held_out", split.remain.take(train_idx))
    return _Probe(f, fl, h, hl, u, ul, split.forget.num_classes), remain_train


def ascent_scale(
    model: nn.Module, ctx: MethodContext, config: SFROnConfig, mask: Mask, weights: Weights
) -> float:
    """``max_norm`` / the norm of the masked, adaptively weighted (``weights``) forget gradient on
    one forget batch in train mode: the alpha0 at which the first forget step starts to be
    clipped.

    Expresses alpha0 in the units of this model and request, which is what makes a start value
    transfer between checkpoints (raw alpha0 values differ by orders of magnitude). Train mode
    updates BatchNorm running statistics: the caller restores the state.
    """
    model.train()
    x, y = next(fixed_batches(ctx.forget, config.batch_size, 1, ctx.generator(30)))
    model.zero_grad(set_to_none=True)
    per_sample = nn.functional.cross_entropy(model(x), y, reduction="none")
    w = weights(per_sample, config.lam, config.loss_floor)
    (w * per_sample).sum().backward()  # type: ignore[no-untyped-call]
    apply_mask(model, mask)
    sq = sum(float(p.grad.square().sum()) for p in params(model) if p.grad is not None)
    model.zero_grad(set_to_none=True)
    rep = ctx.reporter
    rep.counters.forward += 1
    rep.counters.backward += 1
    rep.counters.samples += int(y.shape[0])
    return config.max_norm / max(math.sqrt(sq), 1e-12)


#: alpha0 above this multiple of :func:`ascent_scale` clips (nearly) every forget step.
SATURATION = 4.0


def saturated(
    tried: list[tuple[float, float, int]], scale: float | None, tol: float, step: float
) -> bool:
    """Whether raising alpha0 stops moving forget accuracy at this iteration count: the next
    alpha0 (``step`` x the latest) would be beyond ``SATURATION`` x ``scale``, where the clip
    caps (nearly) every forget step, or the latest trial raised alpha0 over the previous
    strongest one and FA fell by less than half the tolerance.

    >>> saturated([(100.0, 90.0, 1), (400.0, 89.8, 1)], None, 1.5, 4.0)
    True
    >>> saturated([(100.0, 95.0, 1), (400.0, 89.0, 1)], None, 1.5, 4.0)
    False
    >>> saturated([(1.5, 95.0, 1)], 1.0, 1.5, 4.0), saturated([(0.5, 95.0, 1)], 1.0, 1.5, 4.0)
    (True, False)
    """
    a, fa, _ = tried[-1]
    if scale is not None and a * step > SATURATION * scale:
        return True
    weaker = [(pa, pfa) for pa, pfa, _ in tried[:-1] if pa < a]
    if not weaker:
        return False
    _, prev_fa = max(weaker)
    return prev_fa - fa < tol / 2


def calibrate(
    model: nn.Module,
    ctx: MethodContext,
    config: SFROnConfig,
    *,
    loop: Loop,
    weights: Weights,
    iterations: int,
    mask: Mask,
    budget_iterations: int,
    fixed_alpha: float | None = None,
    fixed_iterations: bool = False,
) -> tuple[_Trial, dict[str, Any]]:
    """Pick alpha0 and the iteration count on the validation probe, within ``budget_iterations``
    SFR-on iterations over all trials together.

    Every trial is a full SFR-on run on a copy of the original (remain steps exclude the probe's
    held-out part), measured on the probe; the best-scoring trial's weights are the result, so
    the chosen run is not repeated. alpha0 starts at ``calibration_start_class`` /
    ``calibration_start_sample`` x :func:`ascent_scale` and moves by geometric steps until the
    target is bracketed, then by interpolation (:func:`next_alpha`). The iteration count starts
    at ``iterations`` and doubles (when the budget allows) where alpha0 cannot help: when the
    ascent is :func:`saturated` (clipping caps every forget step, so only more forget steps
    forget more), and when a trial is on target but costs more than ``calibration_side_tol``
    points of held-out accuracy (then with half the alpha0: the same total ascent, twice the
    remain steps to repair it). ``fixed_alpha`` / ``fixed_iterations``: the user gave that
    value, which is then never changed. ``loop`` and ``weights``: SFR-on's loop and adaptive
    weights (see :class:`Loop`), which run the trials and measure the ascent scale.
    """
    rng = np.random.default_rng(ctx.seed)
    probe, remain_train = _build_probe(ctx, config, rng)
    base = probe.measure(model, ctx.device)
    class_wise = bool(ctx.split.forget_classes)
    tol = config.calibration_tol_class if class_wise else config.calibration_tol_sample
    target = forgetting_target(base, class_wise, tol)
    original_state = copy.deepcopy(model.state_dict())
    scale: float | None = None
    if fixed_alpha is not None:
        alpha = fixed_alpha
    else:
        scale = ascent_scale(model, ctx, config, mask, weights)
        model.load_state_dict(original_state)
        start = config.calibration_start_class if class_wise else config.calibration_start_sample
        alpha = min(max(start * scale, _ALPHA_BOUNDS[0]), _ALPHA_BOUNDS[1])
    n = iterations
    trials: list[_Trial] = []
    spent = 0
    stop_reason = "budget"
    extra = config.calibration_extra_trials
    while True:
        within = spent + n <= budget_iterations
        # Past the budget only while no trial has reached the target yet (a small model's
        # budget can end before the target is bracketed): a few bold x4 steps, then stop.
        short = bool(trials) and all(t.direction > 0 for t in trials) and fixed_alpha is None
        if not within:
            if not (short and extra > 0):
                break
            extra -= 1
            alpha = min(max(t.alpha0 for t in trials) * 4.0, _ALPHA_BOUNDS[1])
        model.load_state_dict(original_state)
        loop(
            model,
            ctx,
            config,
            alpha0=alpha,
            iterations=n,
            mask=mask,
            remain=remain_train,
            phase="calibrate",
            stream_seed=0,
        )
        spent += n
        m = probe.measure(model, ctx.device)
        d = direction(m, base, target, config.calibration_side_tol)
        trial = _Trial(
            alpha0=alpha,
            iterations=n,
            metrics=m,
            score=trial_score(m, base, target, config.calibration_entropy_weight),
            direction=d,
            state=copy.deepcopy(model.state_dict()),
        )
        trials.append(trial)
        ctx.reporter.step(
            "calibrate", spent, budget_iterations, {"trial_FA": m["FA"], "trial_alpha0": alpha}
        )
        side = max(0.0, base["RA_heldout"] - m["RA_heldout"]) + max(0.0, base["VA"] - m["VA"])
        if d == 0 or fixed_alpha is not None:
            # alpha0 settled (or given): more iterations when still short of the target or
            # when the remain side needs more repair steps, unless the user gave N
            grow = d > 0 or (d == 0 and side > config.calibration_side_tol)
            if fixed_iterations or not grow:
                stop_reason = "on target" if d == 0 else "alpha0 given"
                break
            n, alpha = 2 * n, (alpha if fixed_alpha is not None or d > 0 else alpha / 2.0)
            continue
        same_n = [(t.alpha0, t.metrics["FA"], t.direction) for t in trials if t.iterations == n]
        # class-wise FA falls from ~100 to 0 within a narrow alpha0 range: finer steps
        step = math.sqrt(config.calibration_step) if class_wise else config.calibration_step
        if d > 0 and not fixed_iterations and saturated(same_n, scale, target.tol, step):
            # every forget step is already clipped: alpha0 no longer moves FA, iterations do
            n = 2 * n
            continue
        # class-wise FA(alpha0) is flat at 0 past the edge, so interpolating it says little
        # about where the edge is: bisect (in log space) instead
        nxt = next_alpha(same_n, target.fa, step, bisect=class_wise)
        if nxt is None or any(abs(math.log(nxt / a)) < 1e-6 for a, _, _ in same_n):
            stop_reason = "no new alpha0"
            break
        alpha = nxt
    if not trials:  # the budget is below one trial: run one anyway
        return calibrate(
            model,
            ctx,
            config,
            loop=loop,
            weights=weights,
            iterations=iterations,
            mask=mask,
            budget_iterations=iterations,
            fixed_alpha=fixed_alpha,
            fixed_iterations=fixed_iterations,
        )
    best = min(trials, key=lambda tr: tr.score)
    record = {
        "target_FA": round(target.fa, 2),
        "tolerance": target.tol,
        "target_entropy": round(target.entropy, 2),
        "ascent_scale": None if scale is None else round(scale, 4),
        "baseline": {k: round(v, 2) for k, v in base.items()},
        "budget_iterations": budget_iterations,
        "spent_iterations": spent,
        "stop": stop_reason,
        "extra_trials": config.calibration_extra_trials - extra,
        "trials": [t.summary() for t in trials],
        "chosen_alpha0": best.alpha0,
        "chosen_iterations": best.iterations,
    }
    return best, record


def calibration_budget(iterations: int, share: float) -> int:
    """Iterations for all trials together: ``iterations`` is the run's own share ``1 - share``.

    >>> calibration_budget(22, 0.5), calibration_budget(14, 2 / 3), calibration_budget(22, 0.0)
    (44, 42, 22)
    """
    return max(iterations, int(iterations / (1.0 - share) + 1e-6))
