"""SFR-on for a diffusion model with alpha0 and the iteration count decided on the run itself:
every ``calibration_probe_every`` iterations a probe generates a few images of the forgotten
class(es) with a short DDIM schedule and the evaluator classifier judges them; the run stops once
``calibration_confirm`` consecutive probes are at or below the forgetting target, or at the
budget (``calibration_max_iterations``, which is also the horizon of alpha_t's cosine, so a run
that stops early is the first part of the budget-long run, not a compressed one).

alpha0 is raised (x ``calibration_alpha_step``) at a probe only when the run is too slow to reach
the target within the budget (a straight line through the last two probes' forget accuracy
misses it) and most forget steps since the previous probe were not clipped. A clipped step is
``max_norm`` long whatever alpha0 is, and Adam normalises step sizes on top, so raising alpha0
there changes nothing: on 8x8 digits alpha0 1, 10 and 100 gave the same forget accuracy at every
probe (bench/README.md, "Generation"). alpha0 is never lowered.

What is explicit is never changed: with ``iterations`` given the run is exactly that long (probes
only steer alpha0, and stop once they cannot change anything); with ``alpha0`` given only the
stopping point is decided; with both, or with ``calibrate`` off, this is
:func:`app.unlearning.diffusion.engine.forget_class` (the spec's recipe, no probes).

Cost: the probes' sampling and classification run inside the method, so they are in
``wall_time_s`` and the counters (one forward pass per DDIM step of a batch, two per evaluator
batch: features and logits), and ``details["calibration"]`` lists every probe with its own cost.
Every probe draws fresh noise (seeds of its own, :func:`probe_seed`, never the evaluation's):
with the same noise at every probe, consecutive probes re-judge the same few images and a
confirmation adds no evidence. On Fashion-MNIST the first defaults used one noise set and stopped
with 2.8% and 5.4% of the evaluation's 500 images still the forgotten class (bench/README.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from app.unlearning.diffusion.config import DiffusionSFROnConfig, SamplingConfig
from app.unlearning.diffusion.ddpm import cosine
from app.unlearning.diffusion.engine import ForgetResult, forget_class
from app.unlearning.diffusion.evaluation import GenerationEvaluator, generate
from app.unlearning.diffusion.methods.common import DiffusionContext, masked_density
from app.unlearning.diffusion.methods.sfr_on import ascent_loop, config_mask
from app.unlearning.runtime import Counters

__all__ = ["PROBE_SEED", "forget_class_calibrated", "probe_forgetting", "probe_seed", "too_slow"]

#: Base of the probes' sampling seeds; the evaluation's seeds are small (the run's seed).
PROBE_SEED = 1_000_003
_PROBE_STRIDE = 10_007


def probe_seed(run_seed: int, index: int) -> int:
    """The sampling seed of a run's ``index``-th probe: a fresh noise set for every probe.

    >>> probe_seed(0, 0), probe_seed(1, 0), probe_seed(0, 1)
    (1000003, 1000004, 1010010)
    """
    return PROBE_SEED + run_seed + _PROBE_STRIDE * index


#: The fields the calibration may decide.
DECIDED = frozenset({"alpha0", "iterations"})
_ALPHA_MAX = 1e6  # alpha0's bound in the config


def probe_forgetting(
    model: nn.Module,
    ctx: DiffusionContext,
    evaluator: GenerationEvaluator,
    *,
    samples: int,
    sampling: SamplingConfig,
    seed: int,
) -> dict[str, float]:
    """Forget accuracy (points) and mean forgotten-class probability of ``samples`` images per
    forgotten class generated with ``sampling`` from ``seed``, with the probe cost (counted on
    the reporter)."""
    rep = ctx.reporter
    start, forward = time.perf_counter(), rep.counters.forward
    shape = tuple(int(s) for s in ctx.split.forget_images.shape[1:])
    x, y = generate(
        model, ctx.schedule, list(ctx.split.forget_classes), samples,
        image_shape=(shape[0], shape[1], shape[2]), sampling=sampling,
        seed=seed, device=ctx.device, reporter=rep,
    )  # fmt: skip
    batch = 256
    logits, _ = evaluator.logits_and_features(x, batch_size=batch)
    batches = -(-int(x.shape[0]) // batch)
    rep.counters.forward += 2 * batches
    rep.counters.samples += 2 * int(x.shape[0])
    y = y.cpu()
    prob = torch.softmax(logits.double(), 1).gather(1, y.view(-1, 1))
    return {
        "FA": 100.0 * float((logits.argmax(1) == y).float().mean()),
        "p_forget": float(prob.mean()),
        "wall_s": time.perf_counter() - start,
        "forward_passes": float(rep.counters.forward - forward),
    }


def too_slow(previous: float | None, now: float, probes_left: int, target: float) -> bool:
    """Whether a straight line through the last two probes' forget accuracy stays above the
    target for the probes left in the budget (no previous probe: no verdict).

    >>> too_slow(None, 100.0, 10, 0.0), too_slow(100.0, 90.0, 10, 0.0), too_slow(100, 80, 3, 0)
    (False, False, True)
    """
    if previous is None:
        return False
    return now - probes_left * max(previous - now, 0.0) > target


@dataclass
class _Steering:
    """The run's state between probes: the hook :func:`ascent_loop` calls after each iteration."""

    model: nn.Module
    ctx: DiffusionContext
    config: DiffusionSFROnConfig
    evaluator: GenerationEvaluator
    probe_sampling: SamplingConfig
    alpha0: float
    horizon: int
    budget: int
    fixed_alpha: bool
    fixed_iterations: bool
    probes: list[dict[str, Any]] = field(default_factory=list)
    raises: list[dict[str, Any]] = field(default_factory=list)
    streak: int = 0
    done: int = 0
    stop: str = "budget"
    _clipped: torch.Tensor | None = None
    _since: int = 0

    def alpha_at(self, t: int) -> float:
        return cosine(self.alpha0, t, self.horizon)

    def steering(self) -> bool:
        """Whether a probe can still change anything (the stop or alpha0)."""
        if not self.fixed_iterations:
            return True
        return not self.fixed_alpha and self.streak == 0

    def after(self, done: int, norm: torch.Tensor) -> bool:
        self.done = done
        clipped = (norm > self.config.max_norm).float()
        self._clipped = clipped if self._clipped is None else self._clipped + clipped
        self._since += 1
        cfg = self.config
        if done % cfg.calibration_probe_every or not self.steering():
            return False
        seed = probe_seed(self.ctx.seed, len(self.probes))
        m = probe_forgetting(
            self.model, self.ctx, self.evaluator,
            samples=cfg.calibration_probe_samples, sampling=self.probe_sampling, seed=seed,
        )  # fmt: skip
        clipped_share = float(self._clipped) / self._since if self._clipped is not None else 0.0
        self._clipped, self._since = None, 0
        previous = self.probes[-1]["FA"] if self.probes else None
        self.probes.append(
            {
                "iteration": done,
                "alpha0": self.alpha0,
                "FA": round(m["FA"], 3),
                "p_forget": round(m["p_forget"], 5),
                "clipped_share": round(clipped_share, 3),
                "wall_s": round(m["wall_s"], 3),
                "forward_passes": int(m["forward_passes"]),
                "seed": seed,
            }
        )
        if m["FA"] <= cfg.calibration_target_fa:
            self.streak += 1
            if not self.fixed_iterations and self.streak >= cfg.calibration_confirm:
                self.stop = "on target"
                return True
            return False
        self.streak = 0
        left = (self.budget - done) // cfg.calibration_probe_every
        if (
            not self.fixed_alpha
            and done < self.budget
            and clipped_share < 0.5
            and self.alpha0 < _ALPHA_MAX
            and too_slow(previous, m["FA"], left, cfg.calibration_target_fa)
        ):
            new = min(self.alpha0 * cfg.calibration_alpha_step, _ALPHA_MAX)
            self.raises.append(
                {"iteration": done, "from": self.alpha0, "to": new, "clipped_share": clipped_share}
            )
            self.alpha0 = new
        return False


def forget_class_calibrated(
    model: nn.Module,
    ctx: DiffusionContext,
    config: DiffusionSFROnConfig,
    evaluator: GenerationEvaluator,
    *,
    sampling: SamplingConfig,
    explicit: frozenset[str],
) -> ForgetResult:
    """Run SFR-on on ``model`` in place, deciding alpha0 and the iteration count on probes of
    generated samples of the forgotten class(es) (see the module's docstring).

    ``explicit``: the config fields the user set (never changed). ``sampling``: the request's
    sampling settings; probes use them with ``calibration_probe_steps`` DDIM steps.
    ``details["calibration"]`` records what was decided and every probe."""
    unknown = set(explicit) - set(DiffusionSFROnConfig.model_fields)
    if unknown:
        raise ValueError(f"explicit names unknown sfr_on fields: {sorted(unknown)}")
    fixed_alpha, fixed_iterations = "alpha0" in explicit, "iterations" in explicit
    if not config.calibrate or (fixed_alpha and fixed_iterations):
        result = forget_class(model, ctx, config)
        reason = "calibrate is off" if not config.calibrate else "alpha0 and iterations given"
        result.details["calibration"] = {"calibrated": False, "reason": reason}
        return result
    rep = ctx.reporter
    before = Counters()
    before.add(rep.counters)
    start = time.perf_counter()
    mask = config_mask(model, ctx, config)
    budget = config.iterations if fixed_iterations else config.calibration_max_iterations
    steer = _Steering(
        model=model,
        ctx=ctx,
        config=config,
        evaluator=evaluator,
        probe_sampling=sampling.model_copy(
            update={"steps": config.calibration_probe_steps, "eta": 0.0}
        ),
        alpha0=config.alpha0,
        horizon=budget,
        budget=budget,
        fixed_alpha=fixed_alpha,
        fixed_iterations=fixed_iterations,
    )
    final = ascent_loop(
        model,
        ctx,
        iterations=budget,
        batch_size=config.batch_size,
        lr=config.lr,
        alpha0=config.alpha0,
        lam=config.lam,
        loss_floor=config.loss_floor,
        max_norm=config.max_norm,
        mask=mask,
        alpha_at=steer.alpha_at,
        after=steer.after,
    )
    wall = time.perf_counter() - start
    if fixed_iterations:
        steer.stop = "iterations given"
    now = rep.counters
    spent = Counters(
        forward=now.forward - before.forward,
        backward=now.backward - before.backward,
        optimizer_steps=now.optimizer_steps - before.optimizer_steps,
        samples=now.samples - before.samples,
    )
    record = {
        "calibrated": True,
        "explicit": sorted(explicit),
        "decided": sorted(DECIDED - explicit),
        "target_FA": config.calibration_target_fa,
        "confirm": config.calibration_confirm,
        "probe": {
            "every": config.calibration_probe_every,
            "samples_per_class": config.calibration_probe_samples,
            "ddim_steps": config.calibration_probe_steps,
            "guidance": sampling.guidance,
            "seeds": "fresh per probe (see each probe's seed)",
        },
        "budget_iterations": budget,
        "horizon": budget,
        "stop": steer.stop,
        "iterations": steer.done,
        "alpha0_start": config.alpha0,
        "alpha0_end": steer.alpha0,
        "alpha0_raises": steer.raises,
        "probes": steer.probes,
        "probe_wall_s": round(sum(p["wall_s"] for p in steer.probes), 3),
        "probe_forward_passes": sum(p["forward_passes"] for p in steer.probes),
        "cost": "wall_time_s and the counters include the probes (sampling and evaluator "
        "passes) and the mask",
    }
    return ForgetResult(
        method="sfr_on",
        wall_time_s=wall,
        counters=spent.as_dict(),
        steps=2 * steer.done,
        mask_density=masked_density(mask),
        details={
            "iterations": steer.done,
            "alpha0": steer.alpha0,
            "final_losses": final,
            "calibration": record,
        },
    )
