"""Shared fixtures: sklearn digits and a tiny small_cnn trained on them once per session."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from app.unlearning.architectures import build_model
from app.unlearning.config import OriginalTraining, TrainingRecipe
from app.unlearning.data import ArrayDataset, load_digits
from app.unlearning.training import train

CPU = torch.device("cpu")
TINY_ARGS = {"num_classes": 10, "width": 8, "hidden": 32}


@dataclass(frozen=True)
class Trained:
    model: nn.Module
    train: ArrayDataset
    test: ArrayDataset
    original: OriginalTraining

    def fresh(self) -> nn.Module:
        return copy.deepcopy(self.model)


@pytest.fixture(scope="session")
def digits() -> tuple[ArrayDataset, ArrayDataset]:
    return load_digits()


@pytest.fixture(scope="session")
def trained(digits: tuple[ArrayDataset, ArrayDataset]) -> Trained:
    torch.set_num_threads(2)
    train_set, test_set = digits
    recipe = TrainingRecipe(epochs=15, batch_size=64, lr=0.05)
    # Seed the initialisation too: `train` seeds only its own batches, and an unseeded original
    # made results (gradient ascent's above all) differ from one test process to the next.
    torch.manual_seed(0)
    model = build_model("small_cnn", TINY_ARGS)
    report = train(model, train_set, recipe, device=CPU, seed=0)
    model.eval()
    return Trained(
        model=model,
        train=train_set,
        test=test_set,
        original=OriginalTraining(recipe=recipe, optimizer_steps=report.optimizer_steps),
    )


def random_ids(ds: ArrayDataset, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(ds.sample_ids, n, replace=False)
