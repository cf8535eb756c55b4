"""The one loop behind every optimisation-family method: transform, forward, gradient of the
objective with respect to the parameterisation, a step, regularisers.

Steps are scale-free so the same defaults work on learned and on random weights (whose class
scores are about 1e-2): "normalized" moves each image by a fixed L2 length along its own gradient
(the Keras example's L2-normalised ascent), "sgd" adds momentum to that, "mean_abs" is Deep
Dream's lr * g / mean |g|, "adam" is Adam (per value, scale-free too). Every image of the batch is its own problem: its objective value depends
on it alone, its step is normalised by its own gradient, regularisers act per image and random
transforms are shared, so K objectives optimised together give what K separate runs give.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from deconvnet.core.layout import channels_last_on_cpu
from deconvnet.core.precision import dtype_name, full_float32
from deconvnet.core.probe import check_point, probe
from deconvnet.core.validation import (
    check_bool,
    check_callable,
    check_callables,
    check_count,
    check_model_values,
    check_positive,
    check_real,
    check_seed,
    check_text,
)
from deconvnet.optim.objectives import Objective
from deconvnet.optim.transforms import Transform, compose

STEP_RULES = ("normalized", "sgd", "adam", "mean_abs")
SCHEDULES = ("constant", "cosine")
Regularizer = Callable[[Tensor, Tensor, int], None]
Stop = Callable[[Tensor], bool]
# On the CPU, layers whose output is bigger than this run on pieces of the batch (probe's budget):
# glibc serves big blocks by mmap, and their page faults on every step made a batch of 16 at
# 128 px 3.5x slower per image than one image alone.
CPU_CHUNK_BYTES = 4 * 2**20


@dataclass
class Optimized:
    """What an optimisation made: `images` [B, 3, H, W] in the model's normalised input space,
    `history` [steps run, B] of the objective per step, the `settings` that made them (for
    provenance), why it stopped, and method-specific `report` values."""

    images: Tensor
    history: Tensor
    settings: dict[str, Any]
    stopped: str = "steps"
    report: dict[str, Any] = field(default_factory=dict)


def schedule_factor(schedule: str, step: int, steps: int) -> float:
    """Step-size multiplier: 1 ("constant") or a cosine from 1 down towards 0 ("cosine")."""
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * step / steps))


def check_step_rule(step_rule: object) -> str:
    if step_rule not in STEP_RULES:
        raise ValueError(f"step_rule: expected one of {', '.join(STEP_RULES)}, got {step_rule!r}")
    return step_rule  # type: ignore[return-value]


class _Stepper:
    """Applies one step to the parameter tensor from its gradient (ascent)."""

    def __init__(self, tensor: Tensor, rule: str, lr: float, step_length: float, momentum: float):
        self.tensor, self.rule, self.length, self.momentum = tensor, rule, step_length, momentum
        self.lr = lr
        self.velocity: Tensor | None = None
        self.adam = torch.optim.Adam([tensor], lr=lr, maximize=True) if rule == "adam" else None

    def __call__(self, grad: Tensor, factor: float = 1.0) -> None:
        """One ascent step; `factor` scales it (the schedule)."""
        if self.adam is not None:
            self.adam.param_groups[0]["lr"] = self.lr * factor
            self.tensor.grad = grad
            self.adam.step()
            self.tensor.grad = None
            return
        tiny = torch.finfo(grad.dtype).tiny
        shape = (-1, *([1] * (grad.dim() - 1)))
        if self.rule == "mean_abs":
            length = self.lr / grad.flatten(1).abs().mean(dim=1).clamp_min(tiny)
            with torch.no_grad():
                self.tensor.add_(grad * (length.view(shape) * factor))
            return
        direction = grad / grad.flatten(1).norm(dim=1).clamp_min(tiny).view(shape)
        if self.rule == "sgd":
            self.velocity = direction if self.velocity is None else self.momentum * self.velocity + direction
            direction = self.velocity
        with torch.no_grad():
            self.tensor.add_(direction, alpha=self.length * factor)


def values_and_gradient(model: nn.Module, objective: Objective, x: Tensor) -> tuple[Tensor, Tensor]:
    """Objective values [B] and their gradient with respect to x [B, 3, H, W]."""
    part = x.detach()
    budget = None
    if part.device.type == "cpu":
        budget = CPU_CHUNK_BYTES
    part = channels_last_on_cpu(part)  # oneDNN's fast path: every map channels last
    part.requires_grad_(True)
    value = objective(probe(model, part, objective.points, budget=budget))
    (grad,) = torch.autograd.grad(value.sum(), part)
    return value.detach(), grad


def _describe(items: Sequence[object]) -> list[str]:
    return [repr(item) for item in items]


def _check_optimize(
    model: nn.Module,
    objective: Objective,
    param: Any,
    steps: object,
    lr: object,
    step_rule: object,
    momentum: object,
    step_values: object,
    schedule: object,
    regularizers: Sequence[Regularizer],
) -> int:
    """`optimize`'s arguments checked, in its order (ValueError naming the argument) -> steps."""
    check_model_values(model)
    if not isinstance(objective, Objective):
        raise ValueError(f"objective: expected a deconvnet.optim Objective, got {type(objective).__name__}")
    if not all(callable(getattr(param, name, None)) for name in ("parameters", "image")):
        raise ValueError(
            f"param: expected a parameterisation (deconvnet.optim.params PixelImage or "
            f"FourierImage), got {type(param).__name__}"
        )
    steps = check_count("steps", steps)
    check_positive("lr", lr)
    check_step_rule(step_rule)
    if not 0 <= check_real("momentum", momentum) < 1:
        raise ValueError(f"momentum: expected a number in [0, 1), got {momentum!r}")
    if step_values is not None:
        check_count("step_values", step_values)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    for point in objective.points:
        check_point(model, point)
    if regularizers and getattr(param, "kind", None) != "pixels":
        raise ValueError("regularizers: pixel regularisers need param='pixels'")
    return steps


def _check_loop(
    transforms: object,
    regularizers: object,
    seed: object,
    stop: object,
    progress: object,
    description: object,
) -> int:
    """`optimize`'s loop options checked (ValueError naming the option) -> the seed as an int."""
    check_callables("transforms", transforms)
    check_callables("regularizers", regularizers)
    check_callable("stop", stop)
    check_bool("progress", progress)
    check_text("description", description)
    return check_seed(seed)


def _ascend(
    model: nn.Module,
    objective: Objective,
    param: Any,
    stepper: _Stepper,
    transform: Transform,
    regularizers: Sequence[Regularizer],
    steps: int,
    schedule: str,
    seed: int,
    stop: Stop | None,
    bar: tqdm,
) -> tuple[list[Tensor], str]:
    """The ascent loop over `bar` (range(steps)): transform (seeded by `seed`), forward, gradient,
    step, regularisers -> (the objective's values [B] per step run, why it stopped)."""
    tensor = stepper.tensor
    generator = torch.Generator().manual_seed(seed)
    history, stopped = [], "steps"
    for step in bar:
        x = transform(param.image(), generator)
        values, x_grad = values_and_gradient(model, objective, x)
        history.append(values.float().cpu())
        if stop is not None and stop(values):
            stopped = "stop"
            break
        (grad,) = torch.autograd.grad(x, tensor, grad_outputs=x_grad)
        stepper(grad, schedule_factor(schedule, step, steps))
        with torch.no_grad():
            for regularizer in regularizers:
                regularizer(tensor, grad, step)
        bar.set_postfix(objective=f"{float(values.mean().detach()):.4g}")
    return history, stopped


@full_float32()
def optimize(
    model: nn.Module,
    objective: Objective,
    param: Any,
    *,
    steps: int,
    lr: float,
    step_rule: str = "normalized",
    momentum: float = 0.9,
    step_values: int | None = None,
    schedule: str = "constant",
    transforms: Sequence[Transform] = (),
    regularizers: Sequence[Regularizer] = (),
    seed: int = 0,
    stop: Stop | None = None,
    progress: bool = False,
    description: str = "optimise",
) -> Optimized:
    """Maximise `objective` (one value per image) over `param` (`params.PixelImage` /
    `FourierImage`) for `steps` steps -> Optimized with images [B, 3, H, W].

    lr: for "normalized"/"sgd" the RMS change of a value per step, over `step_values` values
    (default: the parameter's own count per image), i.e. each step has L2 length
    lr * sqrt(step_values); for "mean_abs" the mean absolute change; for "adam" Adam's learning
    rate. `schedule` "cosine" lowers it to 0 over the steps. Regularisers need `PixelImage`.
    `stop(values)` is asked before each step with the objective's values [B]; True ends the loop
    (the image it saw is returned, unchanged).
    """
    steps = _check_optimize(
        model, objective, param, steps, lr, step_rule, momentum, step_values, schedule, regularizers
    )
    seed = _check_loop(transforms, regularizers, seed, stop, progress, description)
    tensor = param.parameters()[0]
    per_image = step_values if step_values is not None else tensor[0].numel()
    stepper = _Stepper(tensor, step_rule, lr, lr * math.sqrt(per_image), momentum)
    transform = compose(transforms)
    bar = tqdm(range(steps), desc=description, disable=not progress, leave=False)
    history, stopped = _ascend(
        model, objective, param, stepper, transform, regularizers, steps, schedule, seed, stop, bar
    )
    settings = {
        "objective": objective.name,
        "param": getattr(param, "kind", type(param).__name__),
        "steps": steps,
        "steps_run": len(history),
        "lr": lr,
        "step_rule": step_rule,
        "momentum": momentum if step_rule == "sgd" else None,
        "schedule": schedule,
        "transforms": _describe(transforms),
        "regularizers": _describe(regularizers),
        "seed": seed,
        "dtype": dtype_name(tensor.dtype),
    }
    with torch.no_grad():
        images = param.image().detach().clone()
    return Optimized(images, torch.stack(history), settings, stopped)
