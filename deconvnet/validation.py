"""Checks on user input that run before any heavy work, each naming the input and what is accepted."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from deconvnet.geometry import min_input_size


def is_int(value: object) -> bool:
    """An integral number that is not a bool (numpy ints included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_count(name: str, value: object, low: int = 1) -> int:
    """`value` as an int >= low, or ValueError naming `name`."""
    if not is_int(value) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


def check_real(name: str, value: object, low: float = 0.0) -> float:
    """`value` as a finite real >= low, or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(float(value)) or value < low:
        raise ValueError(f"{name}: expected a finite number >= {low}, got {value!r}")
    return float(value)


def check_model_values(model: nn.Module) -> nn.Module:
    """ValueError when the model's parameters are on the meta device (a structure, no values)."""
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("model: its parameters are on the meta device (built under "
                         "torch.device('meta'): shapes, no values); load real weights first, e.g. "
                         "deconvnet.load_model(name) or model.to_empty(device='cpu') followed by "
                         "model.load_state_dict(...)")
    return model


def check_images(images: object, model: nn.Module, name: str = "images",
                 stage: int | None = None) -> Tensor:
    """`images` as a float tensor [B, 3, H, W] the model (or its part up to `stage`) accepts;
    ValueError otherwise."""
    if not isinstance(images, Tensor):
        raise ValueError(f"{name}: expected a float tensor [B, 3, H, W], got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: expected shape [B, 3, H, W] (4-D, 3 colour channels), "
                         f"got {list(images.shape)}")
    if images.shape[0] < 1:
        raise ValueError(f"{name}: the batch is empty (shape {list(images.shape)})")
    if images.is_meta:
        raise ValueError(f"{name}: the tensor is on the meta device (a shape, no values); give "
                         f"real pixel values, e.g. from deconvnet.load_image")
    if not images.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor in the model's normalised "
                         f"input space, got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s); all values must be finite")
    check_model_values(model)
    smallest = min_input_size(model, stage)
    h, w = images.shape[-2:]
    if h < smallest or w < smallest:
        part = "" if stage is None else f" up to stage {stage}"
        raise ValueError(f"{name}: {h}x{w} is smaller than {type(model).__name__}{part} accepts; "
                         f"height and width must be at least {smallest}")
    return images
