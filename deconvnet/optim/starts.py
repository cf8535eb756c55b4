"""Starts that can move: an image whose objective has no gradient at its start (every unit it
reads is switched off there: a ReLU passes nothing) would never change, and a method would return
its noise as if it were a result. Each image takes the first of a list of candidate starts at
which its objective has a gradient; where none has one, `wake` raises the largest input of the
ReLUs it reads (the convolution's output, which always has a gradient) until one switches on.
Every choice depends on that image alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from deconvnet.optim.engine import optimize, values_and_gradient
from deconvnet.optim.objectives import Objective

SPREADS = (1.0, 4.0, 16.0)  # multiples of a start's noise tried in turn
WAKE_STEPS = 64  # at most this many steps on the pre-ReLU input before giving up


def has_gradient(model: nn.Module, objective: Objective, images: Tensor) -> Tensor:
    """[B] bool: whether each image's objective has a non-zero gradient at `images` [B, 3, H, W]."""
    _, grad = values_and_gradient(model, objective, images)
    return grad.flatten(1).abs().amax(dim=1) > 0


def live_starts(
    model: nn.Module, objective: Objective, candidates: Sequence[Tensor], image_of: Callable[[Tensor], Tensor]
) -> tuple[Tensor, list[int]]:
    """Per image, the first candidate start (each [B, ...], e.g. noise of growing spread) at
    which the objective has a gradient -> (starts [B, ...], index of the candidate taken, -1 where
    none had one: the first candidate is kept). `image_of(start)` -> [B, 3, H, W] normalised."""
    start = candidates[0].clone()
    chosen = [0] * start.shape[0]
    dead = ~has_gradient(model, objective, image_of(start)).cpu()
    for k, candidate in enumerate(candidates[1:], start=1):
        if not bool(dead.any()):
            break
        start[dead] = candidate[dead].to(start.dtype)
        for b in torch.nonzero(dead).flatten().tolist():
            chosen[b] = k
        dead = dead & ~has_gradient(model, objective, image_of(start)).cpu()
    for b in torch.nonzero(dead).flatten().tolist():
        chosen[b] = -1
        start[b] = candidates[0][b].to(start.dtype)
    return start, chosen


def wake(
    model: nn.Module,
    chosen: list[int],
    start: Tensor,
    preactivation: Callable[[int], Objective],
    build_param: Callable[[Tensor], object],
    lr: float,
    seed: int,
    step_values: int | None = None,
) -> tuple[Tensor, list[int]]:
    """For each image b that no candidate woke (chosen[b] == -1): normalised ascent on
    `preactivation(b)` (the largest input of the ReLUs its objective reads) from its start until
    that is > 0, at most WAKE_STEPS steps of the method's own length (`step_values`, see
    `engine.optimize`) -> (starts, steps taken per image; -1 where it failed)."""
    start = start.clone()
    taken = [0] * start.shape[0]
    for b in [b for b, k in enumerate(chosen) if k < 0]:
        param = build_param(start[b : b + 1])
        run = optimize(
            model,
            preactivation(b),
            param,
            steps=WAKE_STEPS,
            lr=lr,
            seed=seed,
            step_values=step_values,
            stop=lambda values: bool(values[0] > 0),
        )
        taken[b] = len(run.history) - 1 if run.stopped == "stop" else -1
        start[b] = param.parameters()[0].detach()[0].to(start.dtype).cpu()
    return start, taken


def warn_dead(status: Sequence[int], names: Sequence[object], what: str, woke: bool = True) -> None:
    """A warning naming the images (status -1) whose objective has no gradient at any start
    (`woke`: nor after `wake`)."""
    dead = [names[b] for b, k in enumerate(status) if k < 0]
    if dead:
        tried = f", and {WAKE_STEPS} steps on the ReLUs' inputs did not switch one on" if woke else ""
        warnings.warn(
            f"{what} {dead}: no gradient at any start{tried}; their images are the "
            f"unchanged start. Try another seed, a `start` image, or another size",
            stacklevel=3,
        )
