"""Evaluate a model on a split the same way for every method, the original and retrain.

Returned keys (percentages unless stated):

- ``FA``/``UA``: accuracy on the forget set / 100 - FA.
- ``RA``: accuracy on the remain set.
- ``TA``: test accuracy; class-wise requests: on the kept classes' test samples only, with
  ``TA_forgotten`` the accuracy on the forgotten classes' test samples.
- ``MIA_entropy``: the authors' attack (see :func:`~.metrics.mia_entropy`).
- ``MIA_efficacy``: the SalUn line's attack (see :func:`~.metrics.mia_efficacy`).
- with a reference (retrain): ``gap_<k>`` for FA, RA, TA and both MIAs; ``avg_gap`` (FA, RA, TA,
  MIA_entropy: the paper's), ``avg_gap_efficacy`` (same with MIA_efficacy), ``avg_gap_no_mia``
  (FA, RA, TA); ``kl_forget``: mean KL(p_retrain || p_model) on the forget set (nats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from app.unlearning.data import ArrayDataset, DeviceData, Split
from app.unlearning.device import use_channels_last
from app.unlearning.evaluation.metrics import (
    accuracy,
    avg_gap,
    gaps,
    kl_to_reference,
    mia_efficacy,
    mia_entropy,
)


@dataclass(frozen=True)
class Reference:
    """What evaluation needs from the retrained model: its metrics and its forget-set logits."""

    metrics: dict[str, float]
    forget_logits: torch.Tensor


@torch.no_grad()
def predict(
    model: nn.Module, data: ArrayDataset | DeviceData, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Logits of ``model`` in eval mode on every sample of ``data`` in order, as a CPU tensor."""
    was_training = model.training
    model.eval()
    dev = (
        data
        if isinstance(data, DeviceData)
        else DeviceData(data, device, channels_last=use_channels_last(device, data.input_shape))
    )
    outs = [model(x) for x, _ in dev.iterate(batch_size)]
    model.train(was_training)
    if not outs:
        return torch.zeros(0, dev.num_classes)
    return torch.cat(outs).float().cpu()


def evaluate_split(
    model: nn.Module,
    split: Split,
    *,
    device: torch.device,
    reference: Reference | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[dict[str, float], torch.Tensor]:
    """Evaluate ``model`` on ``split``; return the metrics and the forget-set logits (so this
    result can serve as a :class:`Reference` when the model is the retrained one)."""
    f_logits = predict(model, split.forget, device, batch_size)
    r_logits = predict(model, split.remain, device, batch_size)
    t_logits = predict(model, split.test, device, batch_size)
    f_y = torch.from_numpy(split.forget.labels)
    r_y = torch.from_numpy(split.remain.labels)
    t_y = torch.from_numpy(split.test.labels)
    out: dict[str, float] = {"FA": accuracy(f_logits, f_y)}
    out["UA"] = 100.0 - out["FA"]
    out["RA"] = accuracy(r_logits, r_y)
    if split.forget_classes:
        forgotten = torch.from_numpy(
            np.isin(split.test.labels, np.asarray(split.forget_classes, dtype=np.int64))
        )
        out["TA"] = accuracy(t_logits[~forgotten], t_y[~forgotten])
        out["TA_forgotten"] = accuracy(t_logits[forgotten], t_y[forgotten])
    else:
        out["TA"] = accuracy(t_logits, t_y)
    out["MIA_entropy"] = mia_entropy(r_logits, t_logits, f_logits, seed=seed)
    out["MIA_efficacy"] = mia_efficacy(r_logits, r_y, t_logits, t_y, f_logits, f_y, seed=seed)
    if reference is not None:
        g = gaps(out, reference.metrics)
        out.update(g)
        out["avg_gap"] = avg_gap(g, ("FA", "RA", "TA", "MIA_entropy"))
        out["avg_gap_efficacy"] = avg_gap(g, ("FA", "RA", "TA", "MIA_efficacy"))
        out["avg_gap_no_mia"] = avg_gap(g, ("FA", "RA", "TA"))
        out["kl_forget"] = kl_to_reference(reference.forget_logits, f_logits)
    return out, f_logits
