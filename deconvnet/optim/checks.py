"""Checks shared by the optimisation-family methods, run before any optimisation step."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deconvnet.core.geometry import min_input_size
from deconvnet.core.targets import class_count
from deconvnet.core.validation import (
    check_bool,
    check_callables,
    check_count,
    check_positive,
    check_seed,
    is_int,
)
from deconvnet.data.models import Preprocessing, preprocessing
from deconvnet.optim.engine import check_step_rule
from deconvnet.optim.points import MapPoint, map_point
from deconvnet.optim.regularizers import Blur, Decay

PARAMS = ("pixels", "fourier")
MAX_SIDE = 4096  # the largest image side the methods optimise (a 4096 px batch of 16 is 3 GiB)


def _check_indices(value: object, count: int, name: str, expected: str, outside: str) -> list[int]:
    """One int or a non-empty list of ints in 0..count-1 -> list of ints; ValueError
    "<name>: expected <expected>, got ..." or "<name>: <c> is outside <outside> 0..count-1"."""
    values = [value] if is_int(value) else value
    if not isinstance(values, (list, tuple, range)) or not values:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    for c in values:
        if not is_int(c) or not 0 <= c < count:
            raise ValueError(f"{name}: {c!r} is outside {outside} 0..{count - 1}")
    return [int(c) for c in values]


def check_channels(model: nn.Module, stage: object, channels: object, name: str = "channels") -> list[int]:
    """One int or a non-empty list of ints within the channels of a feature map (`map_point`:
    a stage, a stage name or a module path) -> list of ints."""
    point = stage if isinstance(stage, MapPoint) else map_point(model, stage)[0]
    count = point.channels
    return _check_indices(
        channels,
        count,
        name,
        f"an int or a non-empty list of ints in 0..{count - 1} ({point.label}'s channels)",
        f"{point.label}'s channels",
    )


def check_classes(model: nn.Module, classes: object, name: str = "classes") -> list[int]:
    """One class int or a non-empty list of them -> list of ints."""
    count = class_count(model)
    return _check_indices(
        classes,
        count,
        name,
        f"a class int or a non-empty list of them in 0..{count - 1}",
        "the model's classes",
    )


def check_size(model: nn.Module, size: object, stage: int | str | None = None, name: str = "size") -> int:
    """An image side the model (or its part up to `stage`: a stage or a module path) accepts."""
    smallest = min_input_size(model, stage)
    if not is_int(size) or size < smallest:
        part = f"stage {stage}" if isinstance(stage, int) else stage or "the whole model"
        raise ValueError(
            f"{name}: expected an int >= {smallest} (the smallest input "
            f"{type(model).__name__} accepts up to {part}), got {size!r}"
        )
    if size > MAX_SIDE:
        raise ValueError(f"{name}: expected an int in [{smallest}, {MAX_SIDE}] (pixels), got {size!r}")
    return int(size)


def check_run(
    steps: object = 1,
    lr: object = 1.0,
    seed: object = 0,
    batch_size: object = 1,
    transforms: object = (),
    step_rule: object = "normalized",
    **flags: object,
) -> int:
    """The options the optimisation methods share, checked before any step (ValueError naming
    the option): steps and batch_size ints >= 1, lr a finite number > 0, seed an int in
    [0, 2**63 - 1], transforms a list or tuple of callables, step_rule one of STEP_RULES, and
    every flag (progress, details, negate, ...) True or False. Returns the seed as an int."""
    check_count("steps", steps)
    check_positive("lr", lr)
    seed = check_seed(seed)
    check_count("batch_size", batch_size)
    check_step_rule(step_rule)
    check_callables("transforms", transforms)
    for name, value in flags.items():
        check_bool(name, value)
    return seed


def check_param(param: object) -> str:
    if param not in PARAMS:
        raise ValueError(f"param: expected one of {', '.join(PARAMS)}, got {param!r}")
    return param  # type: ignore[return-value]


REGULARIZER_PRESETS = ("none", "yosinski")


def regularizer_preset(regularizers: object) -> list:
    """A preset name ('none'; 'yosinski': decay 1e-4 and blur 1.0 every 4, their "row 3") or a
    list of regulariser objects -> list."""
    if regularizers is None or regularizers == "none":
        return []
    if regularizers == "yosinski":
        return [Decay(1e-4), Blur(1.0, every=4)]
    if isinstance(regularizers, (list, tuple)) and all(callable(r) for r in regularizers):
        return list(regularizers)
    raise ValueError(
        f"regularizers: expected {' or '.join(map(repr, REGULARIZER_PRESETS))} or a "
        f"list of regularisers (deconvnet.optim Decay, Blur, ...), got {regularizers!r}"
    )


def model_device(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first parameter; a clear error for the meta device."""
    weight = next(model.parameters())
    if weight.device.type == "meta":
        raise ValueError("model: its weights are on the meta device (no values); load real weights")
    return weight.device, weight.dtype


def model_preprocessing(model: nn.Module) -> Preprocessing:
    return preprocessing(model)


def batches(items: Sequence, size: int) -> list[Sequence]:
    size = check_count("batch_size", size)
    return [items[i : i + size] for i in range(0, len(items), size)]
