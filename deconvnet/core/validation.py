"""Checks on user input that run before any heavy work, each naming the input and what is accepted."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.core.architecture import STAGES
from deconvnet.core.geometry import min_input_size


def is_int(value: object) -> bool:
    """An integral number that is not a bool (numpy ints included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


INT64_MAX = 2**63 - 1  # the largest count, index or seed a tensor or generator holds


def check_count(name: str, value: object, low: int = 1, high: int = INT64_MAX) -> int:
    """`value` as an int in [low, high], or ValueError naming `name`."""
    if not is_int(value) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if value > high:
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")
    return int(value)


def check_bool(name: str, value: object) -> bool:
    """`value` as a bool (True / False, numpy's included), or ValueError naming `name`."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {value!r:.60}")
    return bool(value)


def check_callable(name: str, value: object, optional: bool = True) -> None:
    """A callable (or None where `optional`), or ValueError naming `name`."""
    if not (callable(value) or (optional and value is None)):
        accepted = "a callable or None" if optional else "a callable"
        raise ValueError(f"{name}: expected {accepted}, got {value!r:.60}")


def check_callables(name: str, value: object) -> list:
    """A list or tuple of callables (e.g. transforms, regularisers) as a list; ValueError naming
    `name` otherwise."""
    if not isinstance(value, (list, tuple)) or not all(callable(v) for v in value):
        raise ValueError(f"{name}: expected a list or tuple of callables (possibly empty), got {value!r:.60}")
    return list(value)


def check_text(name: str, value: object) -> str:
    """A non-empty str, or ValueError naming `name`."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: expected a non-empty str, got {value!r:.60}")
    return value


def check_finite_tensor(name: str, value: object) -> Tensor:
    """A non-empty tensor with only finite values, or ValueError naming `name`."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.numel() == 0:
        raise ValueError(f"{name}: the tensor is empty (shape {list(value.shape)})")
    if value.is_floating_point() and not value.is_meta and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name}: contains NaN or infinite values; all values must be finite")
    return value


def check_real(name: str, value: object, low: float = 0.0) -> float:
    """`value` as a finite real >= low, or ValueError naming `name`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or value < low
    ):
        raise ValueError(f"{name}: expected a finite number >= {low}, got {value!r}")
    return float(value)


def check_module(model: object, name: str = "model") -> nn.Module:
    """`model` if it is a torch.nn.Module, else ValueError naming `name`."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"{name}: expected a torch.nn.Module, got {type(model).__name__}")
    return model


def check_model_values(model: nn.Module, name: str = "model") -> nn.Module:
    """ValueError when `model` is not a torch.nn.Module or its parameters are on the meta device
    (a structure, no values)."""
    check_module(model, name)
    if any(p.is_meta for p in model.parameters()):
        raise ValueError(
            "model: its parameters are on the meta device (built under "
            "torch.device('meta'): shapes, no values); load real weights first, e.g. "
            "deconvnet.load_model(name) or model.to_empty(device='cpu') followed by "
            "model.load_state_dict(...)"
        )
    return model


def check_images(images: object, model: nn.Module, name: str = "images", stage: int | None = None) -> Tensor:
    """`images` as a float tensor [B, 3, H, W] the model (or its part up to `stage`) accepts;
    ValueError otherwise."""
    if not isinstance(images, Tensor):
        raise ValueError(f"{name}: expected a float tensor [B, 3, H, W], got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{name}: expected shape [B, 3, H, W] (4-D, 3 colour channels), got {list(images.shape)}"
        )
    if images.shape[0] < 1:
        raise ValueError(f"{name}: the batch is empty (shape {list(images.shape)})")
    if images.is_meta:
        raise ValueError(
            f"{name}: the tensor is on the meta device (a shape, no values); give "
            f"real pixel values, e.g. from deconvnet.load_image"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"{name}: expected a floating-point tensor in the model's normalised "
            f"input space, got dtype {images.dtype}"
        )
    if not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).sum())
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s); all values must be finite")
    check_model_values(model)
    smallest = min_input_size(model, stage)
    h, w = images.shape[-2:]
    if h < smallest or w < smallest:
        part = "" if stage is None else f" up to stage {stage}"
        raise ValueError(
            f"{name}: {h}x{w} is smaller than {type(model).__name__}{part} accepts; "
            f"height and width must be at least {smallest}"
        )
    return images


def check_image_tensor(x: Tensor, name: str) -> None:
    """A float tensor [3, H, W] or [B, 3, H, W] with values (not on the meta device)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor [3, H, W] or [B, 3, H, W], got {x!r:.60}")
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"{name}: expected shape [3, H, W] or [B, 3, H, W], got {list(x.shape)}")
    if x.is_meta:
        raise ValueError(
            f"{name}: the tensor is on the meta device (a shape, no values); give real pixel values"
        )


def check_device(device: object) -> torch.device:
    """'cpu', 'cuda' or 'cuda:<n>' as a torch.device; ValueError naming the key otherwise."""
    accepted = "'cpu', 'cuda' or 'cuda:<index>'"
    if not isinstance(device, str):
        raise ValueError(f"device: expected {accepted}, got {device!r}")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        target = None
    if target is None or target.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected {accepted}, got {device!r}")
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available here; use device=cpu")
        if target.index is not None and target.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    return target


def as_list(value: object) -> list | None:
    """A list / tuple / range (Hydra's ListConfig included) as a list, else None."""
    if isinstance(value, (list, tuple, range)):
        return list(value)
    try:
        from omegaconf import ListConfig
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core
        return None
    return list(value) if isinstance(value, ListConfig) else None


def check_positive(name: str, value: object) -> float:
    """A finite number > 0."""
    number = check_real(name, value)
    if number <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return number


def check_seed(
    value: object, what: str = "the optimisation's random starts and transforms", name: str = "seed"
) -> int:
    """An int in [0, 2**63 - 1] (Python's or numpy's; a torch.Generator's range), or ValueError
    naming `name` and what the seed draws (`what`)."""
    if not is_int(value) or value < 0:
        raise ValueError(f"{name}: expected an int >= 0 ({what}), got {value!r:.60}")
    if value > INT64_MAX:
        raise ValueError(f"{name}: expected an int in [0, 2**63 - 1] ({what}), got {value!r}")
    return int(value)


def check_stages(value: object, points: Sequence[str] = ()) -> list[int | str]:
    """An int 1..5 (or one of `points`), or a non-empty list of them, each once."""
    accepted = "a stage 1..5" + "".join(f", {p!r}" for p in points)
    items = [value] if is_int(value) or isinstance(value, str) else as_list(value)
    if not items:
        raise ValueError(f"stages: expected {accepted} or a non-empty list of them, got {value!r}")
    for item in items:
        ok = (is_int(item) and 1 <= item <= 5) or (isinstance(item, str) and item in points)
        if not ok:
            raise ValueError(f"stages: expected {accepted} or a list of them, got {item!r}")
    repeated = sorted({str(s) for s in items if items.count(s) > 1})
    if repeated:
        raise ValueError(f"stages: each stage once, got {', '.join(repeated)} more than once")
    return [int(s) if is_int(s) else str(s) for s in items]


def nonempty_list(value: Any, name: str, kind: str, one: str) -> list:
    """`value` as a non-empty list: a single int becomes [int]; strings and non-iterables, or an
    empty sequence, are a ValueError naming `name` and what it takes (`kind`, at least `one`)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name}: expected a list of {kind}, got {value!r}")
    items = list(value)
    if not items:
        raise ValueError(f"{name}: expected at least one {one}, got none")
    return items


def check_stage_numbers(stages: Any) -> list[int]:
    """Sorted distinct stage numbers from an int or a sequence of ints in 1..5."""
    items = nonempty_list(stages, "stages", "ints in 1..5", "stage in 1..5")
    for s in items:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or int(s) not in STAGES:
            raise ValueError(f"stages: unknown stage {s!r}; the paper's layers are 1..5")
    return sorted({int(s) for s in items})


def check_int(value: Any, name: str, low: int | None = None) -> int:
    """`value` as an int (>= low when given), or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected an int, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    if abs(value) > INT64_MAX:
        raise ValueError(f"{name}: expected an int of at most 2**63 - 1 in size, got {value!r}")
    return int(value)
