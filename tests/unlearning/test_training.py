from __future__ import annotations

import math

import torch

from app.unlearning.architectures import build_model
from app.unlearning.config import TrainingRecipe
from app.unlearning.data import ArrayDataset
from app.unlearning.evaluation import accuracy, predict
from app.unlearning.training import cosine_lr, train

from .conftest import CPU, TINY_ARGS, Trained


def test_trained_fixture_learns_digits(trained: Trained) -> None:
    logits = predict(trained.model, trained.test, CPU)
    assert accuracy(logits, torch.from_numpy(trained.test.labels)) > 90.0
    assert trained.original.optimizer_steps == 15 * math.ceil(len(trained.train) / 64)


def test_same_seed_same_weights(digits: tuple[ArrayDataset, ArrayDataset]) -> None:
    train_set = digits[0].take(torch.arange(256).numpy())
    recipe = TrainingRecipe(epochs=1, batch_size=64, augment="shift")
    states = []
    for _ in range(2):
        model = build_model("small_cnn", TINY_ARGS)
        torch.manual_seed(123)  # identical init; train() seeds its own randomness
        model = build_model("small_cnn", TINY_ARGS)
        train(model, train_set, recipe, device=CPU, seed=7)
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_cosine_lr() -> None:
    assert cosine_lr(0.1, 0, 10) == 0.1
    assert abs(cosine_lr(0.1, 5, 10) - 0.05) < 1e-12
    assert cosine_lr(0.1, 10, 10) == 0.0
