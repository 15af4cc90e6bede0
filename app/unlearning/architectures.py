"""Torch modules for the architecture names of :mod:`app.unlearning.spec`.

>>> model = build_model("small_cnn", {"num_classes": 10})
>>> model(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from app.unlearning.spec import ResNet18Args, SmallCNNArgs, parse_args


class SmallCNN(nn.Module):
    """Three conv layers with BatchNorm, two 2x max-pools and an adaptive 4x4 average pool, so the
    same weights' shapes work for 8x8 and 28x28 inputs (about 188k parameters with the defaults).
    """

    def __init__(self, args: SmallCNNArgs) -> None:
        super().__init__()
        w = args.width
        self.features = nn.Sequential(
            nn.Conv2d(args.in_channels, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * w * 16, args.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(args.hidden, args.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """ResNet-18 with the CIFAR stem: 3x3 stride-1 first conv, no max-pool; stages of 2 blocks at
    widths w, 2w, 4w, 8w; global average pool; one linear layer."""

    def __init__(self, args: ResNet18Args) -> None:
        super().__init__()
        w = args.width
        self.stem = nn.Sequential(
            nn.Conv2d(args.in_channels, w, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        in_planes = w
        for i, planes in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            layers.append(BasicBlock(in_planes, planes, stride))
            layers.append(BasicBlock(planes, planes, 1))
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, args.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.layers(self.stem(x)))
        logits: torch.Tensor = self.fc(torch.flatten(out, 1))
        return logits


def _small_cnn(args: dict[str, Any]) -> nn.Module:
    return SmallCNN(SmallCNNArgs.model_validate(args))


def _resnet18(args: dict[str, Any]) -> nn.Module:
    return ResNet18Cifar(ResNet18Args.model_validate(args))


# One explicit mapping; its keys must equal spec.ARCHITECTURES' (a test checks).
BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "small_cnn": _small_cnn,
    "resnet18_cifar": _resnet18,
}


def build_model(architecture: str, args: dict[str, Any]) -> nn.Module:
    """Build the module named ``architecture`` from ``args`` validated by the spec's schema;
    raise :class:`~app.unlearning.spec.SpecError` naming the field otherwise."""
    parsed = parse_args(architecture, args)
    # Every registered architecture has a builder (a test checks); a missing one is a bug.
    return BUILDERS[architecture](parsed.model_dump())


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The activations that feed a classifier's last linear layer, ``(N, D)``: the feature space
    of Frechet distances between generated and real images ("Frechet LeNet distance")."""
    if isinstance(model, SmallCNN):
        out: torch.Tensor = model.classifier[:-1](model.features(x))
        return out
    if isinstance(model, ResNet18Cifar):
        return torch.flatten(model.pool(model.layers(model.stem(x))), 1)
    raise TypeError(f"no penultimate features for {type(model).__name__}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
