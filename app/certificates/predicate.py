"""The certificate's predicate: what a signed certificate says about a new model version.

Built here, from plain values, so that what a certificate claims is decided in one place of the
certificates domain; the worker only supplies the facts it measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.certificates.policy import Thresholds, Verdict
from app.core.digests import SAMPLE_SET_DIGEST_METHOD, sample_set_digest
from app.model_registry.snapshot import ModelSnapshot

# What the run record contributes to the certificate: its cost, not its internals.
RUN_FIELDS = (
    "steps",
    "mask_density",
    "wall_time_s",
    "forward_passes",
    "backward_passes",
    "optimizer_steps",
)
#: From the method's ``details``: how SFR-on chose what to ascend on (kit-targeted or not).
RUN_DETAILS = ("mode", "targets", "kit_targets_unavailable")


def build(
    *,
    model: dict[str, Any],
    parent: ModelSnapshot,
    parent_version: int,
    dataset: dict[str, Any],
    this_job_ids: Sequence[int],
    cumulative_ids: Sequence[int],
    class_ids: list[int] | None,
    requests: list[dict[str, Any]],
    job: dict[str, Any],
    method: dict[str, Any],
    run: dict[str, Any],
    environment: dict[str, Any],
    metrics: dict[str, dict[str, float]],
    thresholds: Thresholds,
    verdict: Verdict,
    membership: dict[str, Any] | None,
    chain: list[dict[str, Any]],
    issued_at: str,
    generation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The predicate of an unlearning certificate (see the README's certificate section).

    ``chain`` lists every step from the uploaded original to this version (version, ID,
    digest, request IDs, verdict); ``uncertified_ancestors`` names the earlier steps that failed
    the gate, so a ``pass`` never hides that it was built on one.

    ``generation`` (a diffusion model's class forgetting) says how its metrics were measured:
    the evaluator classifier (which, and its digest), the sampling, the images per class."""
    details = run.get("details") or {}
    predicate = {
        "model": model,
        "parent": {
            "id": parent.id,
            "version": parent_version,
            "digest": {"sha256": parent.weights_digest},
        },
        "dataset": dataset,
        "forgotten": {
            "this_job": {
                "count": len(set(this_job_ids)),
                "sample_ids_sha256": sample_set_digest(this_job_ids),
                "classes": class_ids,
            },
            "cumulative": {
                "count": len(set(cumulative_ids)),
                "sample_ids_sha256": sample_set_digest(cumulative_ids),
            },
            "digest_method": SAMPLE_SET_DIGEST_METHOD,
        },
        "requests": requests,
        "job": job,
        "method": method,
        "run": {
            **{k: run.get(k) for k in RUN_FIELDS},
            # SFR-on's kit-targeted mode aims each forgotten sample at the same kit's OUT level
            # that the membership audit then checks: an auditor must know the two are not
            # independent (bench/unlearning.py re-audits such runs with a fresh kit).
            **{k: details[k] for k in RUN_DETAILS if k in details},
        },
        "environment": environment,
        "metrics": metrics,
        # Which samples each figure covers (forget, remain, test, and what was held out to tune).
        "evaluation_samples": run.get("evaluation_samples"),
        # Per example when the job had a reference kit; otherwise says the evidence is
        # population-only, so no one reads more into the metrics than they show.
        "membership_audit": membership
        or {
            "status": "population-only",
            "reason": "no reference kit for this manifest and recipe: FA, RA, TA and the MIAs are"
            " population figures, which cannot tell whether these samples were forgotten",
        },
        "policy": {
            "thresholds": thresholds.as_dict(generative=generation is not None),
            "verdict": verdict.label,
            "reasons": verdict.reasons,
            "checks": verdict.checks,
        },
        "chain": chain,
        "uncertified_ancestors": [s["version"] for s in chain[:-1] if s["verdict"] == "fail"],
        "issued_at": issued_at,
    }
    if generation is not None:
        predicate["generation"] = generation
    return predicate
