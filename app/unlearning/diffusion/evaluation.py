"""How well a diffusion model forgot a class, judged by a classifier trained on the same data
(see ``shared/spec/generation.md``, "Evaluation").

Returned keys (percentages unless stated):

- ``FA``/``UA``: share of images generated for the forgotten class(es) that the evaluator assigns
  to that class / 100 - FA. Retrain's FA is the target, not 0.
- ``forget_entropy``: mean entropy (nats) of the evaluator's predictions on them;
  ``forget_prob``: mean probability of the forgotten class.
- ``kept_accuracy``: mean over kept classes of the share of images generated for class k that are
  classified as k; ``kept_accuracy_per_class``.
- ``fd_pooled``: Frechet distance in the evaluator's penultimate features between all generated
  and real test images of the kept classes; ``fd_per_class`` and their mean ``fd_class_mean``.
- ``sampling_wall_s``, ``sampling_forward_passes``: the evaluation's own cost.

>>> a = np.random.default_rng(0).normal(size=(500, 3))
>>> round(frechet_distance(a, a), 6)
0.0
>>> round(frechet_distance(a, a + 1.0), 1)
3.0
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from app.unlearning.architectures import penultimate_features
from app.unlearning.data import ArrayDataset
from app.unlearning.diffusion.config import SamplingConfig
from app.unlearning.diffusion.data import to_uint8
from app.unlearning.diffusion.ddpm import NoiseSchedule, ddim_sample
from app.unlearning.runtime import Reporter


@dataclass
class GenerationEvaluator:
    """A classifier of the dataset's images and the normalisation it was trained with."""

    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = "trained by the engine"

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        mean = torch.tensor(self.mean, device=x.device).view(1, c, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, c, 1, 1)
        return (to_uint8(x).float() / 255.0 - mean) / std

    @torch.no_grad()
    def logits_and_features(
        self, x: torch.Tensor, batch_size: int = 256
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For images in [-1, 1]: logits and penultimate features (CPU tensors)."""
        was = self.model.training
        self.model.eval()
        logits, feats = [], []
        for start in range(0, x.shape[0], batch_size):
            xb = self._prepare(x[start : start + batch_size])
            f = penultimate_features(self.model, xb)
            feats.append(f.float().cpu())
            logits.append(self.model(xb).float().cpu())
        self.model.train(was)
        return torch.cat(logits), torch.cat(feats)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to the rows
    of ``a`` and ``b``. The trace of the matrix square root is taken from the eigenvalues of the
    symmetric ``S_a^(1/2) S_b S_a^(1/2)``, which stays real and stable for singular covariances."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu = a64.mean(0) - b64.mean(0)
    sa, sb = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    sa, sb = np.atleast_2d(sa), np.atleast_2d(sb)
    w, v = np.linalg.eigh(sa)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ sb @ root_a)
    tr_sqrt = float(np.sqrt(np.clip(cross, 0, None)).sum())
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2.0 * tr_sqrt)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = torch.log_softmax(logits.double(), dim=1)
    return -(log_p.exp() * log_p).sum(1)


def generate(
    model: nn.Module,
    schedule: NoiseSchedule,
    classes: list[int],
    n_per_class: int,
    *,
    image_shape: tuple[int, int, int],
    sampling: SamplingConfig,
    seed: int,
    device: torch.device,
    reporter: Reporter | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_class`` images of every class in ``classes`` (class-major order) and their labels.
    Each class gets its own seed stream, so adding a class does not change another's images."""
    images, labels = [], []
    for c in classes:
        y = torch.full((n_per_class,), c, dtype=torch.long, device=device)
        images.append(
            ddim_sample(
                model,
                schedule,
                y,
                image_shape=image_shape,
                config=sampling,
                seed=seed * 1009 + c,
                reporter=reporter,
            )
        )
        labels.append(y)
    if not images:
        return torch.zeros((0, *image_shape), device=device), torch.zeros(
            0, dtype=torch.long, device=device
        )
    return torch.cat(images), torch.cat(labels)


def evaluate_generation(
    model: nn.Module,
    schedule: NoiseSchedule,
    evaluator: GenerationEvaluator,
    *,
    forget_classes: tuple[int, ...],
    num_classes: int,
    real_test: ArrayDataset,
    n_forget: int,
    n_kept: int,
    sampling: SamplingConfig,
    device: torch.device,
    seed: int = 0,
    reporter: Reporter | None = None,
) -> tuple[dict[str, Any], dict[int, torch.Tensor]]:
    """The spec's generation metrics of ``model``, and the generated images by class (for grids).

    ``n_forget`` images per forgotten class, ``n_kept`` per kept class; the real side of the
    Frechet distances is ``real_test`` (test images of the kept classes)."""
    rep = reporter or Reporter()
    start = time.perf_counter()
    forward_before = rep.counters.forward
    _, ch, hh, ww = (int(s) for s in real_test.images.shape)
    shape = (ch, hh, ww)
    kept = [c for c in range(num_classes) if c not in forget_classes]
    fx, fy = generate(
        model, schedule, list(forget_classes), n_forget,
        image_shape=shape, sampling=sampling, seed=seed, device=device, reporter=rep,
    )  # fmt: skip
    kx, ky = generate(
        model, schedule, kept, n_kept,
        image_shape=shape, sampling=sampling, seed=seed, device=device, reporter=rep,
    )  # fmt: skip
    k_logits, k_feats = evaluator.logits_and_features(kx)
    ky_c = ky.cpu()
    out: dict[str, Any] = {}
    if forget_classes:
        f_logits, _ = evaluator.logits_and_features(fx)
        fy_c = fy.cpu()
        probs = torch.softmax(f_logits.double(), 1)
        out["FA"] = 100.0 * float((f_logits.argmax(1) == fy_c).float().mean())
        out["UA"] = 100.0 - out["FA"]
        out["forget_entropy"] = float(_entropy(f_logits).mean())
        out["forget_prob"] = float(probs.gather(1, fy_c.view(-1, 1)).mean())
    per_class = {
        str(c): 100.0 * float((k_logits[ky_c == c].argmax(1) == c).float().mean()) for c in kept
    }
    out["kept_accuracy_per_class"] = per_class
    out["kept_accuracy"] = float(np.mean(list(per_class.values())))
    real_mask = np.isin(real_test.labels, np.asarray(kept))
    real_x = torch.from_numpy(real_test.images[real_mask]).float().div(127.5).sub(1.0)
    _, real_feats = evaluator.logits_and_features(real_x.to(device))
    real_y = torch.from_numpy(real_test.labels[real_mask])
    fd = {
        str(c): frechet_distance(k_feats[ky_c == c].numpy(), real_feats[real_y == c].numpy())
        for c in kept
    }
    out["fd_per_class"] = fd
    out["fd_class_mean"] = float(np.mean(list(fd.values())))
    out["fd_pooled"] = frechet_distance(k_feats.numpy(), real_feats.numpy())
    out["sampling_wall_s"] = time.perf_counter() - start
    out["sampling_forward_passes"] = rep.counters.forward - forward_before
    out["n_forget"], out["n_kept"] = n_forget, n_kept
    by_class: dict[int, torch.Tensor] = {}
    for c in forget_classes:
        by_class[c] = fx[fy == c].cpu()
    for c in kept:
        by_class[c] = kx[ky == c].cpu()
    return out, by_class
