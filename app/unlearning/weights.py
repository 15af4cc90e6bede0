"""Loading weights into an architecture, and the deep check of an uploaded model: do the weights
load into the named architecture, does a forward pass give finite logits of the right shape, and
how accurate is the model on its own training and test splits (its baseline).

Weights are read only from safetensors files; nothing is unpickled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from app.unlearning.architectures import build_model
from app.unlearning.data import ArrayDataset
from app.unlearning.evaluation.evaluator import predict


class ModelRejected(Exception):
    """The upload is not a usable model; the message tells the user what to fix."""


@dataclass(frozen=True)
class Baseline:
    metrics: dict[str, Any]


def _per_class(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, float]]:
    correct = (logits.argmax(dim=1) == labels).float()
    per_class = {
        str(int(c)): round(100.0 * float(correct[labels == c].mean()), 3)
        for c in torch.unique(labels)
    }
    return round(100.0 * float(correct.mean()), 3), per_class


def load_weights(
    path: Path, expected: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Read safetensors weights. With ``expected`` (a model's own state dict), names and shapes
    are compared from the header first, so a file that cannot fit is refused before its bytes
    are read into memory."""
    try:
        if expected is not None:
            with safe_open(str(path), framework="pt") as fh:
                shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
            check_fit(expected, shapes)
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelRejected(f"the weights file cannot be read as safetensors: {exc}") from None


def check_fit(expected: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ModelRejected(
            "the weights do not fit the architecture: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    wrong = [
        f"{k}: {shapes[k]} != {tuple(v.shape)}"
        for k, v in expected.items()
        if shapes[k] != tuple(v.shape)
    ]
    if wrong:
        raise ModelRejected(f"tensor shapes do not fit the architecture: {wrong[:8]}")


def build_and_load(architecture: str, args: dict[str, Any], path: Path) -> torch.nn.Module:
    model = build_model(architecture, args)
    expected = model.state_dict()
    try:
        state = load_weights(path, expected)
    except ModelRejected as exc:
        raise ModelRejected(f"{exc} ({architecture} with args {args})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelRejected(f"weights contain NaN or infinite values: {bad[:8]}")
    model.load_state_dict(state, strict=True)
    return model


def deep_check(
    weights_path: Path,
    architecture: str,
    args: dict[str, Any],
    num_classes: int,
    train: ArrayDataset,
    test: ArrayDataset | None,
    device: torch.device,
) -> Baseline:
    model = build_and_load(architecture, args, weights_path).to(device)
    probe = predict(model, train.take(slice(0, min(8, len(train)))), device)  # type: ignore[arg-type]
    if probe.shape[1] != num_classes or not torch.isfinite(probe).all():
        raise ModelRejected(
            f"a forward pass gave logits of shape {tuple(probe.shape)} with non-finite values"
            f" or not {num_classes} classes"
        )
    metrics: dict[str, Any] = {}
    for name, split in (("train", train), ("test", test)):
        if split is None:
            continue
        logits = predict(model, split, device)
        acc, per_class = _per_class(logits, torch.from_numpy(split.labels))
        metrics[f"{name}_accuracy"] = acc
        metrics[f"{name}_accuracy_per_class"] = per_class
        metrics[f"{name}_samples"] = len(split)
    metrics["device"] = str(device)
    return Baseline(metrics)
