"""Fooling images (Nguyen, Yosinski & Clune 2015; the cs231n exercise): change an image, within
valid colours, until the network gives an arbitrary class with a high confidence.

Two step rules. "sign" (the default; the iterative sign-gradient method of Kurakin, Goodfellow &
Bengio 2017): every colour value moves by `lr` (in [0, 1] colour units, default 1/255: one level
of an 8-bit image) in the direction of the gradient's sign, then the image is projected back into
the box of colours at most `max_change` (default 8/255) from the original and into valid colours.
"normalized": the L2-normalised ascent of `engine.optimize` (lr: the RMS change of a normalised
value), projected likewise. A colour change d is a change d / std_c of the normalised value of
channel c (`data.models.preprocessing`: ImageNet's std per channel for torchvision models, 128/255
for EfficientNet-Lite0), so the box is per channel in the normalised space.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from deconvnet.core.precision import dtype_name, full_float32
from deconvnet.core.probe import probe
from deconvnet.core.validation import check_count, check_images, check_real
from deconvnet.data.models import Preprocessing, preprocessing
from deconvnet.optim import objectives as obj
from deconvnet.optim.checks import check_classes, check_run, model_device
from deconvnet.optim.engine import Optimized, optimize, values_and_gradient
from deconvnet.optim.params import PixelImage, valid_range
from deconvnet.optim.regularizers import Clamp

FOOLING_STEPS = ("sign", "normalized")
DEFAULT_LR = {"sign": 1 / 255, "normalized": 0.01}  # colour units / RMS normalised value per step
MAX_CHANGE = 8 / 255  # default budget: the largest change of a colour value, [0, 1] colour units


@dataclass(frozen=True, repr=False)
class ColourBox:
    """Projection onto the colours at most `max_change` from the original and valid: x is kept
    within [low, high], per value ([1, 3, H, W] normalised bounds)."""

    low: Tensor
    high: Tensor
    max_change: float | None

    def __call__(self, x: Tensor, grad: Tensor, step: int) -> None:
        torch.maximum(torch.minimum(x, self.high), self.low, out=x)

    def __repr__(self) -> str:
        return f"ColourBox(valid colours, max_change={self.max_change!r})"


def colour_box(image: Tensor, prep: Preprocessing, max_change: float | None) -> ColourBox:
    """The box of normalised values whose colours are valid ([0, 1]) and, unless `max_change` is
    None, within max_change colour units of image [1, 3, H, W]'s: per channel c the normalised
    half-width is max_change / std_c."""
    low, high = valid_range(prep, image.dtype, image.device)
    if max_change is None:
        return ColourBox(low, high, None)
    std = torch.tensor(prep.std, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    half = max_change / std
    return ColourBox(torch.maximum(image - half, low), torch.minimum(image + half, high), max_change)


def _probabilities(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.softmax(probe(model, x, ["logits"])["logits"], dim=1)[0]


def _check_fooling(
    model: nn.Module, image: object, target: object, confidence: object, steps: object
) -> tuple[Tensor, int, float, int]:
    """`fooling_image`'s first arguments checked, in its order (ValueError naming the argument)
    -> (image [1, 3, H, W], target, confidence, steps)."""
    image = check_images(image, model, "image")
    if image.shape[0] != 1:
        raise ValueError(f"image: expected one image [1, 3, H, W], got a batch of {image.shape[0]}")
    target = check_classes(model, target, "target")[0]
    confidence = check_real("confidence", confidence)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a probability in (0, 1), got {confidence!r}")
    steps = check_count("steps", steps)
    return image, target, confidence, steps


def check_fooling_step(lr: object, step: object, max_change: object) -> tuple[float, str, float | None]:
    """lr (None: DEFAULT_LR[step]; else a finite number > 0), the step rule (FOOLING_STEPS) and
    max_change (None: no limit but valid colours; else in (0, 1] colour units), ValueError naming
    the argument -> (lr, step, max_change)."""
    if step not in FOOLING_STEPS:
        raise ValueError(f"step: expected one of {', '.join(FOOLING_STEPS)}, got {step!r}")
    if lr is not None and check_real("lr", lr) <= 0:
        raise ValueError(f"lr: expected a finite number > 0 or None (the step rule's default), got {lr!r}")
    if max_change is not None and not 0 < check_real("max_change", max_change) <= 1:
        raise ValueError(
            f"max_change: expected None (no limit) or a colour change in (0, 1] "
            f"([0, 1] colour units; 8/255 = {8 / 255:.4g}), got {max_change!r}"
        )
    chosen = DEFAULT_LR[step] if lr is None else float(lr)
    return chosen, step, None if max_change is None else float(max_change)


def sign_ascent(
    model: nn.Module,
    objective: obj.Objective,
    start: Tensor,
    box: ColourBox,
    colour_step: Tensor,
    steps: int,
    stop: Callable[[Tensor], bool],
    bar: tqdm,
) -> tuple[Tensor, list[Tensor], str]:
    """From start [1, 3, H, W]: x <- box(x + colour_step * sign(grad)) for each step of `bar`
    (range(steps)), `stop(values)` asked before each step -> (image [1, 3, H, W], the objective
    [1] per step run, why it stopped). colour_step [1, 3, 1, 1]: lr / std_c, normalised units."""
    x, history, stopped = start.clone(), [], "steps"
    for _ in bar:
        values, grad = values_and_gradient(model, objective, x)
        history.append(values.float().cpu())
        if stop(values):
            stopped = "stop"
            break
        x = x + colour_step * grad.sign()
        box(x, grad, len(history))
        bar.set_postfix(objective=f"{float(values[0]):.4g}")
    return x.contiguous(), history, stopped


def _report_fooling(
    model: nn.Module, image: Tensor, result: Optimized, target: int, confidence: float, prep: Preprocessing
) -> None:
    """result.report: the target's probability and the predicted class before (image [1, 3, H, W],
    on the model's device) and after, whether the confidence is reached, the steps taken, and the
    perturbation's L-inf and L2, normalised and in [0, 1] colour units."""
    before, after = _probabilities(model, image), _probabilities(model, result.images)
    delta = result.images - image
    std = torch.tensor(prep.std, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    reached = float(after[target]) >= confidence  # of the returned image itself
    taken = len(result.history) - 1 if result.stopped == "stop" else len(result.history)
    result.report.update(
        target=target,
        confidence=confidence,
        reached=reached,
        steps_taken=taken,
        probability_before=float(before[target]),
        probability_after=float(after[target]),
        predicted_before=int(before.argmax()),
        predicted_after=int(after.argmax()),
        linf=float(delta.abs().max()),
        l2=float(delta.norm()),
        linf_colour=float((delta * std).abs().max()),
        l2_colour=float((delta * std).norm()),
        max_change=result.settings.get("max_change"),
    )


def _sign_run(
    model: nn.Module,
    objective: obj.Objective,
    start: Tensor,
    box: ColourBox,
    prep: Preprocessing,
    options: dict,
) -> Optimized:
    """`sign_ascent` from start [1, 3, H, W] with options (steps, lr, seed, stop, progress,
    description) -> Optimized with the settings `engine.optimize` records."""
    std = torch.tensor(prep.std, dtype=start.dtype, device=start.device).view(1, 3, 1, 1)
    bar = tqdm(
        range(options["steps"]), desc=options["description"], disable=not options["progress"], leave=False
    )
    image, history, stopped = sign_ascent(
        model, objective, start, box, options["lr"] / std, options["steps"], options["stop"], bar
    )
    settings = {
        "objective": objective.name,
        "param": "pixels",
        "steps": options["steps"],
        "steps_run": len(history),
        "lr": options["lr"],
        "step_rule": "sign",
        "momentum": None,
        "schedule": "constant",
        "transforms": [],
        "regularizers": [repr(box)],
        "seed": options["seed"],
        "dtype": dtype_name(start.dtype),
    }
    return Optimized(image.detach(), torch.stack(history), settings, stopped)


@full_float32()
def fooling_image(
    model: nn.Module,
    image: Tensor,
    target: int,
    confidence: float = 0.99,
    steps: int = 200,
    lr: float | None = None,
    seed: int = 0,
    progress: bool = False,
    details: bool = False,
    step: str = "sign",
    max_change: float | None = MAX_CHANGE,
) -> Tensor | Optimized:
    """Push `image` [1, 3, H, W] (normalised) until softmax(target) >= `confidence` or `steps`
    steps -> [1, 3, H, W], each colour value within `max_change` of the image's ([0, 1] colour
    units; None: no limit) and valid. The image is checked before every step, so the result is
    the first image that reaches the confidence (at most `steps` steps).

    Ascent on log softmax(target). step "sign" (default): each colour value moves by lr colour
    units per step (default 1/255) along the gradient's sign; "normalized": L2-normalised steps
    (each moves an average normalised value by lr, default 0.01). Either is projected into the
    box after each step (module doc). If the step limit comes first, a warning says so. The report
    (details=True) has the probabilities and predicted classes before and after, and the change's
    L-inf and L2, in the normalised space and in [0, 1] colour units, and max_change.
    """
    image, target, confidence, steps = _check_fooling(model, image, target, confidence, steps)
    lr, step, max_change = check_fooling_step(lr, step, max_change)
    seed = check_run(steps, seed=seed, progress=progress, details=details)
    prep, (device, dtype) = preprocessing(model), model_device(model)
    image = image.detach().to(device=device, dtype=dtype)
    low, high = valid_range(prep, dtype, device)
    box = colour_box(image, prep, max_change)
    threshold = float(torch.log(torch.tensor(confidence, dtype=torch.float64)))
    options = dict(
        steps=steps,
        lr=lr,
        seed=seed,
        stop=lambda values: bool(values[0] >= threshold),
        progress=progress,
        description=f"fooling -> class {target}",
    )
    objective = obj.class_log_probability(target)
    start = box.low.maximum(box.high.minimum(image.clamp(low, high)))  # within the box
    if step == "sign":
        result = _sign_run(model, objective, start, box, prep, options)
    else:
        box_step = Clamp(low, high) if max_change is None else box
        result = optimize(model, objective, PixelImage(start), regularizers=[box_step], **options)
    result.settings.update(
        method="fooling_image", target=target, confidence=confidence, steps=steps, max_change=max_change
    )
    _report_fooling(model, image, result, target, confidence, prep)
    if not result.report["reached"]:
        warnings.warn(
            f"fooling_image: after {steps} steps class {target} has probability "
            f"{result.report['probability_after']:.4g} < confidence {confidence}; raise steps, lr "
            f"or max_change ({max_change})",
            stacklevel=2,
        )
    return result if details else result.images
