"""Fooling images (Nguyen, Yosinski & Clune 2015; the cs231n exercise): change an image, within
valid colours, until the network gives an arbitrary class with a high confidence.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from deconvnet.core.probe import probe
from deconvnet.core.validation import check_count, check_images, check_real
from deconvnet.data.models import Preprocessing, preprocessing
from deconvnet.optim import objectives as obj
from deconvnet.optim.checks import check_classes, model_device
from deconvnet.optim.engine import Optimized, optimize
from deconvnet.optim.params import PixelImage, valid_range
from deconvnet.optim.regularizers import Clamp


def _probabilities(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.softmax(probe(model, x, ["logits"])["logits"], dim=1)[0]


def _check_fooling(
    model: nn.Module, image: object, target: object, confidence: object, steps: object
) -> tuple[Tensor, int, float, int]:
    """`fooling_image`'s arguments checked, in its order (ValueError naming the argument) ->
    (image [1, 3, H, W], target, confidence, steps)."""
    image = check_images(image, model, "image")
    if image.shape[0] != 1:
        raise ValueError(f"image: expected one image [1, 3, H, W], got a batch of {image.shape[0]}")
    target = check_classes(model, target, "target")[0]
    confidence = check_real("confidence", confidence)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a probability in (0, 1), got {confidence!r}")
    steps = check_count("steps", steps)
    return image, target, confidence, steps


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
    )


def fooling_image(
    model: nn.Module,
    image: Tensor,
    target: int,
    confidence: float = 0.99,
    steps: int = 200,
    lr: float = 0.01,
    seed: int = 0,
    progress: bool = False,
    details: bool = False,
) -> Tensor | Optimized:
    """Push `image` [1, 3, H, W] (normalised) until softmax(target) >= `confidence` or `steps`
    steps -> [1, 3, H, W], colours kept valid. The image is checked before every step, so the
    result is the first image that reaches the confidence (at most `steps` steps).

    L2-normalised ascent on log softmax(target) (each step moves an average value by `lr`).
    If the step limit comes first, a warning says so. The report (details=True) has the
    probabilities and predicted classes before and after, and the perturbation's L-inf and L2,
    in the normalised space and in [0, 1] colour units.
    """
    image, target, confidence, steps = _check_fooling(model, image, target, confidence, steps)
    prep = preprocessing(model)
    device, dtype = model_device(model)
    image = image.detach().to(device=device, dtype=dtype)
    low, high = valid_range(prep, dtype, device)
    threshold = float(torch.log(torch.tensor(confidence, dtype=torch.float64)))
    result = optimize(
        model,
        obj.class_log_probability(target),
        PixelImage(image.clamp(low, high)),
        steps=steps,
        lr=lr,
        regularizers=[Clamp(low, high)],
        seed=seed,
        stop=lambda values: bool(values[0] >= threshold),
        progress=progress,
        description=f"fooling -> class {target}",
    )
    _report_fooling(model, image, result, target, confidence, prep)
    result.settings.update(method="fooling_image", target=target, confidence=confidence, steps=steps)
    if not result.report["reached"]:
        warnings.warn(
            f"fooling_image: after {steps} steps class {target} has probability "
            f"{result.report['probability_after']:.4g} < confidence {confidence}; raise steps or lr",
            stacklevel=2,
        )
    return result if details else result.images
