"""Metrics (pure functions) and the evaluator shared by every method and the benchmark."""

from app.unlearning.evaluation.evaluator import Reference, evaluate_split, predict
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
    "Reference",
    "accuracy",
    "avg_gap",
    "entropy",
    "evaluate_split",
    "gaps",
    "kl_to_reference",
    "mia_efficacy",
    "mia_entropy",
    "predict",
]
