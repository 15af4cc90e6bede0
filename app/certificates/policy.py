"""The policy gate: does an unlearned model meet the thresholds for its request shape?

All numbers are accuracy points (0-100).
- class-wise: FA <= ``class_fa_max``, and TA on the kept classes dropped by at most
  ``class_ta_drop_max`` from the original model's.
- sample-wise: |FA - target| <= ``sample_fa_gap_max`` where the target is the retrained
  reference's FA when one was run, else the model's own TA (a never-seen sample is recognised
  about as often as test data), and RA dropped by at most ``sample_ra_drop_max``.
- a class forgotten by a diffusion model (:func:`judge_generation`), on generated images: FA at
  most the retrained reference's + ``gen_fa_margin`` when one ran, else at most ``gen_fa_max``;
  kept-class accuracy dropped by at most ``gen_kept_drop_max``; the pooled Frechet distance on
  kept classes at most ``gen_fd_ratio_max`` times the original's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from app.core.config import Settings


@dataclass(frozen=True)
class Thresholds:
    class_fa_max: float = 1.0
    class_ta_drop_max: float = 3.0
    sample_fa_gap_max: float = 5.0
    sample_ra_drop_max: float = 3.0
    gen_fa_max: float = 10.0
    gen_fa_margin: float = 5.0
    gen_kept_drop_max: float = 5.0
    gen_fd_ratio_max: float = 1.5

    def as_dict(self, *, generative: bool | None = None) -> dict[str, float]:
        """Every threshold, or (``generative`` given) only those that judge that kind of model,
        so that a certificate lists the limits its verdict was held to and no others."""
        out = asdict(self)
        if generative is None:
            return out
        return {k: v for k, v in out.items() if k.startswith("gen_") == generative}

    @classmethod
    def effective(cls, settings: Settings, tenant_settings: dict[str, Any] | None) -> Thresholds:
        """The service's ``policy_*`` settings, each overridden by the tenant's ``policy``."""
        overrides = dict((tenant_settings or {}).get("policy") or {})
        return cls(
            **{
                f.name: float(overrides.get(f.name, getattr(settings, f"policy_{f.name}")))
                for f in fields(cls)
            }
        )


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str]
    checks: dict[str, Any]

    @property
    def label(self) -> str:
        return "pass" if self.passed else "fail"


def membership_checks(kind: str, membership: dict[str, Any] | None) -> tuple[Any, list[str]]:
    """The per-example audit's part of the verdict. Sample-wise: at every FPR alpha, the share
    of the forgotten samples still flagged as members must be at most what a model that never
    saw them shows (the retrained reference's share when it ran, else alpha) plus the binomial
    tolerance for the set's size, so an unchanged model whose samples are still flagged fails.
    Class-wise requests report it only (the spec's reason: the shadows saw other samples of the
    class, so the one-sided test passes easily there)."""
    audits = (membership or {}).get("audits")
    if not audits or "unlearned" not in audits:
        return "population-only (no reference kit for this manifest and recipe)", []
    unlearned, retrained = audits["unlearned"], audits.get("retrained")
    rows, reasons = [], []
    for i, fig in enumerate(unlearned["alphas"]):
        alpha = float(fig["alpha"])
        expected = float(retrained["alphas"][i]["share_flagged"]) if retrained else alpha
        limit = expected + float(unlearned["tolerance"][str(fig["alpha"])])
        share = float(fig["share_flagged"])
        rows.append({"alpha": alpha, "share_flagged": share, "limit": limit})
        if kind != "class" and share > limit:
            reasons.append(
                f"per-example audit: {100 * share:.1f}% of the forgotten samples still look like"
                f" members at FPR {100 * alpha:g}% (a model that never saw them: at most"
                f" {100 * limit:.1f}%)"
            )
    return {"checked": kind != "class", "by_alpha": rows}, reasons


def judge(
    kind: str,
    original: dict[str, float],
    unlearned: dict[str, float],
    thresholds: Thresholds,
    retrained: dict[str, float] | None = None,
    membership: dict[str, Any] | None = None,
) -> Verdict:
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    if kind == "class":
        fa = unlearned["FA"]
        drop = original["TA"] - unlearned["TA"]
        checks = {"FA": fa, "TA_drop": drop}
        if fa > thresholds.class_fa_max:
            reasons.append(f"forget accuracy {fa:.2f} is above {thresholds.class_fa_max}")
        if drop > thresholds.class_ta_drop_max:
            reasons.append(
                f"test accuracy on kept classes fell {drop:.2f} points"
                f" (limit {thresholds.class_ta_drop_max})"
            )
    else:
        target = retrained["FA"] if retrained is not None else unlearned["TA"]
        gap = abs(unlearned["FA"] - target)
        drop = original["RA"] - unlearned["RA"]
        checks = {
            "FA": unlearned["FA"],
            "FA_target": target,
            "FA_target_source": "retrained FA" if retrained is not None else "TA",
            "FA_gap": gap,
            "RA_drop": drop,
        }
        if gap > thresholds.sample_fa_gap_max:
            reasons.append(
                f"forget accuracy {unlearned['FA']:.2f} is {gap:.2f} points from its target"
                f" {target:.2f} (limit {thresholds.sample_fa_gap_max})"
            )
        if drop > thresholds.sample_ra_drop_max:
            reasons.append(
                f"remain accuracy fell {drop:.2f} points (limit {thresholds.sample_ra_drop_max})"
            )
    checks["membership"], more = membership_checks(kind, membership)
    reasons += more
    return Verdict(not reasons, reasons, checks)


def judge_generation(
    original: dict[str, Any],
    unlearned: dict[str, Any],
    thresholds: Thresholds,
    retrained: dict[str, Any] | None = None,
) -> Verdict:
    """The gate for a class forgotten by a diffusion model, on the generation metrics of
    :mod:`app.unlearning.diffusion.evaluation` (all measured on the same seeded samples)."""
    reasons: list[str] = []
    fa = float(unlearned["FA"])
    if retrained is not None:
        fa_limit = float(retrained["FA"]) + thresholds.gen_fa_margin
        source = f"retrained FA {float(retrained['FA']):.1f} + {thresholds.gen_fa_margin:g}"
    else:
        fa_limit, source = thresholds.gen_fa_max, "fixed limit (no retrained reference ran)"
    drop = float(original["kept_accuracy"]) - float(unlearned["kept_accuracy"])
    base_fd = float(original["fd_pooled"])
    ratio = float(unlearned["fd_pooled"]) / base_fd if base_fd > 0 else float("inf")
    checks: dict[str, Any] = {
        "FA": fa,
        "FA_limit": fa_limit,
        "FA_limit_source": source,
        "kept_accuracy_drop": drop,
        "fd_pooled_ratio": ratio,
        "membership": "not applicable: a class forgotten by a generator is judged on the images"
        " it generates, not by membership inference",
    }
    if fa > fa_limit:
        reasons.append(
            f"{fa:.1f}% of the images generated for the forgotten class are still recognised as"
            f" it (limit {fa_limit:.1f}%: {source})"
        )
    if drop > thresholds.gen_kept_drop_max:
        reasons.append(
            f"kept-class accuracy of generated images fell {drop:.1f} points"
            f" (limit {thresholds.gen_kept_drop_max:g})"
        )
    if ratio > thresholds.gen_fd_ratio_max:
        reasons.append(
            f"the pooled Frechet distance on kept classes is {ratio:.2f}x the original's"
            f" (limit {thresholds.gen_fd_ratio_max:g}x)"
        )
    return Verdict(not reasons, reasons, checks)
