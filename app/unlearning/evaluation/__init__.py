"""Metrics (pure functions) and the evaluator shared by every method and the benchmark."""

from app.unlearning.evaluation.evaluator import Reference, evaluate_split, predict
from app.unlearning.evaluation.membership import (
    AlphaFigures,
    OfflineScores,
    OnlineScores,
    SetAudit,
    audit_set,
    binomial_tolerance,
    clopper_pearson,
    epsilon_lower_bound,
    logit_margin,
    offline_scores,
    online_scores,
)
from app.unlearning.evaluation.metrics import (
    GAP_KEYS,
    accuracy,
    avg_gap,
    entropy,
    gaps,
    kl_to_reference,
    mia_efficacy,
    mia_entropy,
)

__all__ = [
    "GAP_KEYS",
    "AlphaFigures",
    "OfflineScores",
    "OnlineScores",
    "Reference",
    "SetAudit",
    "accuracy",
    "audit_set",
    "avg_gap",
    "binomial_tolerance",
    "clopper_pearson",
    "entropy",
    "epsilon_lower_bound",
    "evaluate_split",
    "gaps",
    "kl_to_reference",
    "logit_margin",
    "mia_efficacy",
    "mia_entropy",
    "offline_scores",
    "online_scores",
    "predict",
]
