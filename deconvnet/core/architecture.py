"""Which torchvision model this is, and where the paper's five layers ("stages") sit in it.

The paper's layer is conv -> relu -> [max pool]; the thing a deconvnet projects is that layer's
output. On VGG16 the five stages are the five pooling layers; on AlexNet they are pool1, pool2,
relu3, relu4 and pool5 (docs/stages.md). Both are derived from the modules, not hard-coded.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from torch import nn

STAGES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Stage:
    """One of the paper's layers on a concrete model: `index` into `model.features`, `name`."""

    number: int
    index: int
    name: str
    channels: int


def architecture_name(model: nn.Module) -> str:
    """'vgg' or 'alexnet' for torchvision's VGG (11/13/16/19, not *_bn) / AlexNet; a clear error
    for anything else."""
    from torchvision.models import VGG, AlexNet

    if isinstance(model, VGG):
        if any(isinstance(m, nn.BatchNorm2d) for m in model.features):
            raise ValueError(
                "model: a VGG with BatchNorm2d in model.features (vgg*_bn) is not "
                "supported: batch normalisation has no deconvnet mirror; use "
                "vgg11, vgg13, vgg16 or vgg19"
            )
        return "vgg"
    if isinstance(model, AlexNet):
        return "alexnet"
    raise ValueError(
        f"model: expected a torchvision VGG (vgg11/13/16/19) or AlexNet instance, got {type(model).__name__}"
    )


def features_of(model: nn.Module) -> nn.Sequential:
    """The convolutional part (`model.features`) of a supported model."""
    architecture_name(model)
    return model.features


def _stage_indices(model: nn.Module) -> list[int]:
    """Indices into `model.features` of the five stage outputs."""
    kind = architecture_name(model)
    layers = list(model.features)
    if kind == "vgg":
        # VGG's paper layers are its five conv blocks, each closed by a max pool.
        ends = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
    else:
        # AlexNet: one paper layer per conv, ending at the ReLU or at the max pool right after it.
        ends = []
        for i, m in enumerate(layers):
            if isinstance(m, nn.Conv2d):
                end = i + 1
                if end + 1 < len(layers) and isinstance(layers[end + 1], nn.MaxPool2d):
                    end += 1
                ends.append(end)
    if len(ends) != 5:
        raise ValueError(
            f"model: expected 5 paper layers in model.features, found {len(ends)} "
            f"({type(model).__name__} with {len(layers)} feature modules)"
        )
    return ends


def _channels_before(layers: list[nn.Module], index: int) -> int:
    for m in reversed(layers[: index + 1]):
        if isinstance(m, nn.Conv2d):
            return m.out_channels
    raise ValueError("model: no convolution before the stage")


def stages(model: nn.Module) -> list[Stage]:
    """The five paper layers of `model` with their feature index, name and channel count."""
    layers = list(features_of(model))
    out = []
    for number, index in enumerate(_stage_indices(model), start=1):
        kind = type(layers[index]).__name__
        base = "pool" if kind == "MaxPool2d" else "relu"
        out.append(Stage(number, index, f"{base}{number}", _channels_before(layers, index)))
    return out


def stage(model: nn.Module, number: int) -> Stage:
    """Stage `number` (1..5) of `model`; ValueError naming the accepted range otherwise."""
    if isinstance(number, bool) or not isinstance(number, numbers.Integral) or number not in STAGES:
        raise ValueError(f"stage: expected an int in 1..5 (the paper's layers), got {number!r}")
    return stages(model)[int(number) - 1]
