"""Functional metrics of an unlearned classifier. All accuracies and attack rates are percentages
in [0, 100]; every function states what it measures and which direction is better.

Inputs are logits (``float`` arrays/tensors of shape ``(N, C)``) and integer labels ``(N,)``.

>>> import torch
>>> accuracy(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
50.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

#: Metrics compared with the retrained model. Closer to retrain is better for every one of them.
GAP_KEYS: tuple[str, ...] = ("FA", "RA", "TA", "MIA_entropy", "MIA_efficacy")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent; NaN on an empty set.

    Used for FA (forget set; lower means more forgetting, but the *target* is retrain's FA), RA
    (remain set; higher is better, target retrain's), TA (test set; higher is better).
    """
    if labels.numel() == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == labels).float().mean()) * 100.0


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of the softmax of each row: 0 for a certain prediction, log C for a
    uniform one."""
    log_p = torch.log_softmax(logits.double(), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def true_class_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the given label for each row."""
    return torch.softmax(logits.double(), dim=1).gather(1, labels[:, None]).squeeze(1)


def _balanced(
    members: np.ndarray, non_members: np.ndarray, max_per_side: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = min(len(members), len(non_members), max_per_side)
    m = members[rng.choice(len(members), n, replace=False)]
    nm = non_members[rng.choice(len(non_members), n, replace=False)]
    x = np.concatenate([m, nm])
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    return x, y


def mia_entropy(
    remain_logits: torch.Tensor,
    test_logits: torch.Tensor,
    forget_logits: torch.Tensor,
    *,
    max_per_side: int = 5000,
    seed: int = 0,
) -> float:
    """The authors' attack: a logistic regression on the softmax entropy, trained with remain
    samples as members and test samples as non-members (balanced by subsampling), reporting the
    percentage of forget samples predicted "member".

    Direction: the target is retrain's value, not 0 or 100 (confidently-wrong models score high,
    uncertain ones low).
    """
    from sklearn.linear_model import LogisticRegression

    feats = [entropy(t).numpy()[:, None] for t in (remain_logits, test_logits, forget_logits)]
    x, y = _balanced(feats[0], feats[1], max_per_side, seed)
    clf = LogisticRegression(class_weight="balanced")
    clf.fit(x, y)
    return float(np.mean(clf.predict(feats[2]) == 1)) * 100.0


def mia_efficacy(
    remain_logits: torch.Tensor,
    remain_labels: torch.Tensor,
    test_logits: torch.Tensor,
    test_labels: torch.Tensor,
    forget_logits: torch.Tensor,
    forget_labels: torch.Tensor,
    *,
    max_per_side: int = 2000,
    seed: int = 0,
) -> float:
    """The SalUn line's MIA-efficacy: an RBF SVC on (true-class confidence, entropy), shadow
    members drawn from the remain set as many as test samples (capped), non-members the test set;
    reports 100 x (1 - share of forget samples predicted "member").

    Direction: higher means the forget set looks less like training data; the target is
    retrain's value.
    """
    from sklearn.svm import SVC

    def feats(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        conf = true_class_confidence(logits, labels).numpy()
        return np.stack([conf, entropy(logits).numpy()], axis=1)

    x, y = _balanced(
        feats(remain_logits, remain_labels), feats(test_logits, test_labels), max_per_side, seed
    )
    clf = SVC(C=3.0, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    member = clf.predict(feats(forget_logits, forget_labels)) == 1
    return (1.0 - float(np.mean(member))) * 100.0


def kl_to_reference(reference_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over samples of KL(p_reference || p_model) in nats, on the same inputs (the forget set).

    Direction: lower is better; 0 means the model's outputs equal the retrained model's.
    """
    if reference_logits.shape != logits.shape:
        raise ValueError("reference and model logits must have the same shape")
    if logits.shape[0] == 0:
        return float("nan")
    log_p = torch.log_softmax(reference_logits.double(), dim=1)
    log_q = torch.log_softmax(logits.double(), dim=1)
    return float((log_p.exp() * (log_p - log_q)).sum(dim=1).mean())


def gaps(
    metrics: Mapping[str, float], reference: Mapping[str, float], keys: Sequence[str] = GAP_KEYS
) -> dict[str, float]:
    """``|metric - reference|`` per key present in both, as ``gap_<key>``; lower is better."""
    return {
        f"gap_{k}": abs(float(metrics[k]) - float(reference[k]))
        for k in keys
        if k in metrics and k in reference
    }


def avg_gap(gap_values: Mapping[str, float], keys: Sequence[str]) -> float:
    """Mean of ``gap_<key>`` over ``keys`` (the paper's Avg. Gap with keys FA, RA, TA, MIA);
    lower is better."""
    vals = [float(gap_values[f"gap_{k}"]) for k in keys]
    return float(np.mean(vals)) if vals else float("nan")
