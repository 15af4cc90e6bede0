from __future__ import annotations

import pytest
import torch

from app.unlearning.architectures import BUILDERS, build_model, count_parameters
from app.unlearning.spec import ARCHITECTURES, SpecError


def test_registry_matches_the_spec() -> None:
    assert set(BUILDERS) == set(ARCHITECTURES)


@pytest.mark.parametrize("size", [8, 28])
def test_small_cnn_takes_small_grey_images(size: int) -> None:
    model = build_model("small_cnn", {"num_classes": 10})
    assert model(torch.zeros(3, 1, size, size)).shape == (3, 10)


def test_small_cnn_size_is_about_the_reference() -> None:
    n = count_parameters(build_model("small_cnn", {"num_classes": 10}))
    assert 150_000 < n < 250_000


def test_resnet18_cifar_stem_and_channels() -> None:
    model = build_model("resnet18_cifar", {"num_classes": 7, "in_channels": 1, "width": 8})
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.kernel_size == (3, 3) and first.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 7)


def test_bad_args_name_the_field() -> None:
    with pytest.raises(SpecError) as info:
        build_model("small_cnn", {"num_classes": 1})
    assert info.value.field == "args.num_classes"
    with pytest.raises(SpecError):
        build_model("vgg", {"num_classes": 10})
