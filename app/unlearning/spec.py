"""Architectures a model spec may name, described without torch.

The API validates uploads against this registry; :mod:`app.unlearning.architectures` builds the
matching torch modules from the same names and arguments. Keep the two in step: a test checks that
every name here can be built there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmallCNNArgs(_Args):
    """Two conv blocks and a small classifier head, for small grey images (28x28, 8x8)."""

    num_classes: int = Field(ge=2, le=10_000)
    in_channels: int = Field(default=1, ge=1, le=4)
    width: int = Field(default=32, ge=4, le=256, description="Channels of the first conv block.")
    hidden: int = Field(default=128, ge=8, le=4096, description="Units of the hidden FC layer.")


class ResNet18Args(_Args):
    """ResNet-18 with the CIFAR stem: a 3x3 stride-1 first convolution and no max-pool."""

    num_classes: int = Field(ge=2, le=10_000)
    in_channels: int = Field(default=3, ge=1, le=16)
    width: int = Field(default=64, ge=8, le=256, description="Channels of the first stage.")


class ArchitectureInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    args_schema: type[_Args]
    min_size: int
    max_size: int


ARCHITECTURES: dict[str, ArchitectureInfo] = {
    "small_cnn": ArchitectureInfo(
        name="small_cnn",
        description="Small CNN for small grey images: Fashion-MNIST (28x28), digits (8x8).",
        args_schema=SmallCNNArgs,
        min_size=8,
        max_size=64,
    ),
    "resnet18_cifar": ArchitectureInfo(
        name="resnet18_cifar",
        description="ResNet-18 with the CIFAR stem, any number of classes and input channels.",
        args_schema=ResNet18Args,
        min_size=8,
        max_size=512,
    ),
}


class SpecError(ValueError):
    """A model spec does not fit the registry; ``field`` names the offending part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_args(architecture: str, args: dict[str, Any]) -> BaseModel:
    """The architecture's arguments, validated by its schema with defaults filled in; a
    :class:`SpecError` names the unknown architecture or the first bad field."""
    info = ARCHITECTURES.get(architecture)
    if info is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise SpecError("architecture", f"unknown architecture {architecture!r}; known: {known}")
    try:
        return info.args_schema.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise SpecError(f"args.{loc}", first["msg"]) from None


def validate_architecture(
    architecture: str, args: dict[str, Any], input_shape: list[int]
) -> dict[str, Any]:
    """Check a spec's architecture, arguments and input shape; return the arguments with defaults
    filled in.

    >>> validate_architecture("small_cnn", {"num_classes": 10}, [1, 28, 28])["width"]
    32
    """
    parsed = parse_args(architecture, args)
    info = ARCHITECTURES[architecture]
    if len(input_shape) != 3 or any(not isinstance(d, int) or d <= 0 for d in input_shape):
        raise SpecError("input_shape", "must be [channels, height, width] of positive integers")
    channels, height, width = input_shape
    in_channels = int(getattr(parsed, "in_channels", 1))
    if channels != in_channels:
        raise SpecError(
            "input_shape", f"has {channels} channels but args.in_channels is {in_channels}"
        )
    for size in (height, width):
        if not info.min_size <= size <= info.max_size:
            raise SpecError(
                "input_shape",
                f"{architecture} takes images from {info.min_size} to {info.max_size} pixels",
            )
    return parsed.model_dump()
