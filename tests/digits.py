"""Real data for pipeline tests: scikit-learn's digits and a small CNN trained on it once per
test session (a few seconds on the CPU)."""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from app.datasets import sources
from app.unlearning.architectures import build_model
from app.unlearning.config import TrainingRecipe
from app.unlearning.data import make_dataset
from app.unlearning.training import train
from tests.factories import safetensors_bytes

ARGS = {"num_classes": 10, "width": 16, "hidden": 64}
RECIPE = TrainingRecipe(epochs=12, batch_size=64, lr=0.05)


@functools.cache
def arrays() -> dict[str, Any]:
    return sources.digits()


@functools.cache
def dataset_bytes() -> bytes:
    return safetensors_bytes(arrays())


@functools.cache
def trained() -> tuple[bytes, dict[str, Any]]:
    a = arrays()
    ds = make_dataset(a["images"], a["labels"], sample_ids=a["sample_ids"], num_classes=10)
    torch.manual_seed(0)
    model = build_model("small_cnn", ARGS)
    report = train(model, ds, RECIPE, device=torch.device("cpu"), seed=0)
    weights = bytes(save({k: v.contiguous() for k, v in model.state_dict().items()}))
    norm = {"mean": list(ds.mean), "std": list(ds.std)}
    return weights, {"normalization": norm, "optimizer_steps": report.optimizer_steps}


def spec(dataset_id: str) -> str:
    _, info = trained()
    return json.dumps(
        {
            "name": "digits-cnn",
            "architecture": "small_cnn",
            "args": ARGS,
            "input_shape": [1, 8, 8],
            "normalization": info["normalization"],
            "dataset_id": dataset_id,
            "training": {**RECIPE.model_dump(), "optimizer_steps": info["optimizer_steps"]},
        }
    )


def sample_ids_of_class(label: int) -> list[int]:
    a = arrays()
    return [int(i) for i in np.asarray(a["sample_ids"])[np.asarray(a["labels"]) == label]]


# A tiny class-conditional denoiser on the same digits (about half a minute on one CPU core).
@functools.cache
def trained_denoiser() -> bytes:
    from app.unlearning.diffusion.tiny import train_tiny_denoiser

    a = arrays()
    return train_tiny_denoiser(a["images"], a["labels"], num_classes=10)


def denoiser_spec(dataset_id: str) -> str:
    from app.unlearning.diffusion.tiny import tiny_denoiser_spec

    return json.dumps(tiny_denoiser_spec(dataset_id))
