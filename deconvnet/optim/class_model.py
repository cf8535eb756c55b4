"""Class model visualisation (Simonyan, Vedaldi & Zisserman 2014): the image I that maximises the
raw class score S_c(I) - lambda R(I), started from zero (the dataset mean colour), with
R = ||I||_2^2 ("l2"), ||I||_1 ("l1") or nothing ("none"); pytorch-cnn-visualizations adds blur.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.core.validation import check_count, check_real
from deconvnet.optim import objectives as obj
from deconvnet.optim.checks import batches, check_classes, check_param, check_size, model_device
from deconvnet.optim.engine import Optimized, optimize
from deconvnet.optim.filters import make_param, merge, start_images
from deconvnet.optim.regularizers import Blur, Decay, Shrink
from deconvnet.optim.starts import SPREADS, live_starts, warn_dead

CLASS_REGULARIZERS = ("l2", "l1", "none")


def penalty_steps(regularizer: str, weight: float, lr: float) -> list:
    """The penalty's proximal step after each ascent step: l2 -> x <- (1 - weight) x (the step
    of lambda ||x||^2 with lambda = weight / (2 lr) per unit of step), l1 -> soft threshold by
    weight * lr, none -> nothing. Steps are normalised, so the weight is in those units and does
    not depend on how large the model's scores are."""
    if regularizer not in CLASS_REGULARIZERS:
        raise ValueError(f"regularizer: expected one of {', '.join(CLASS_REGULARIZERS)}, got {regularizer!r}")
    weight = check_real("weight", weight)
    if regularizer == "l2":
        return [Decay(weight)]
    if regularizer == "l1":
        return [Shrink(weight * lr)]
    return []


START_NOISE = 0.01  # fallback noise relative to the Keras example's spread
START_NAMES = {
    "pixels": ["zeros"] + [f"grey noise, spread {0.25 * START_NOISE * f:g}" for f in SPREADS],
    "fourier": [f"random spectrum, sd {0.01 * f:g}" for f in SPREADS],
}


def class_starts(
    model: nn.Module, objective: obj.Objective, classes: Sequence[int], size: int, seed: int, param: str
) -> tuple[Tensor, list[int]]:
    """Simonyan's zero start; where the score has no gradient there (random VGG16 has zero
    biases: a zero image switches every ReLU off), faint seeded grey noise of growing spread.
    Fourier: lucid's random spectrum, growing likewise. Class c's start depends on (seed, c)."""
    if param == "pixels":
        noise = [start_images(model, classes, size, size, seed, param, START_NOISE * f) for f in SPREADS]
        candidates = [torch.zeros_like(noise[0]), *noise]
    else:
        candidates = [start_images(model, classes, size, size, seed, param, f) for f in SPREADS]
    return live_starts(
        model,
        objective,
        candidates,
        lambda start: make_param(model, start, size, size, param).image().detach(),
    )


def _class_regularizers(
    regularizer: str, weight: float, lr: float, blur_sigma: float, blur_every: int, param: str
) -> list:
    """The steps after each ascent step: the penalty's proximal step (`penalty_steps`), then a
    blur every `blur_every` steps if blur_sigma > 0; none with param 'fourier'."""
    regs = penalty_steps(regularizer, weight, lr)
    if check_real("blur_sigma", blur_sigma) > 0:
        regs.append(Blur(blur_sigma, every=check_count("blur_every", blur_every)))
    if param == "fourier":
        regs = []
    return regs


def _class_batches(
    model: nn.Module,
    classes: list[int],
    size: int,
    param: str,
    batch_size: int,
    negate: bool,
    seed: int,
    **options: Any,
) -> tuple[list[Optimized], list[int]]:
    """The classes optimised `batch_size` at a time from `class_starts` -> (each batch's
    Optimized, the index of each class's start in START_NAMES[param], -1 where none has a
    gradient). options: the rest of `optimize`'s keyword arguments."""
    parts, starts = [], []
    for group in batches(classes, batch_size):
        objective = obj.class_logit(list(group))
        start, chosen = class_starts(model, objective, group, size, seed, param)
        warn_dead(chosen, group, "classes", woke=False)
        starts += chosen
        parts.append(
            optimize(
                model,
                -objective if negate else objective,
                make_param(model, start, size, size, param),
                seed=seed,
                description="class models",
                **options,
            )
        )
    return parts, starts


def class_model(
    model: nn.Module,
    classes: int | Sequence[int],
    size: int = 224,
    regularizer: str = "l2",
    weight: float = 0.02,
    steps: int = 100,
    lr: float = 0.05,
    blur_sigma: float = 0.0,
    blur_every: int = 4,
    transforms: Sequence = (),
    param: str = "pixels",
    negate: bool = False,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    details: bool = False,
) -> Tensor | Optimized:
    """Class models -> [K, 3, size, size] in the model's normalised input space, one per class.

    Maximises (with `negate`, minimises) the logit S_c by L2-normalised ascent from zero (or,
    where the score has no gradient at zero, from faint noise: `class_starts`); each
    step is followed by the regulariser's proximal step (`penalty_steps`) and, if blur_sigma > 0,
    a Gaussian blur every `blur_every` steps. param='fourier' starts from lucid's random
    spectrum (its sigmoid bounds the colours; pixel regularisers are then not used).
    """
    classes = check_classes(model, classes)
    size = check_size(model, size)
    param = check_param(param)
    regs = _class_regularizers(regularizer, weight, lr, blur_sigma, blur_every, param)
    model_device(model)
    parts, starts = _class_batches(
        model,
        classes,
        size,
        param,
        batch_size,
        negate,
        seed,
        steps=steps,
        lr=lr,
        transforms=transforms,
        regularizers=regs,
        progress=progress,
    )
    result = merge(parts)
    result.settings.update(
        method="class_model",
        classes=classes,
        size=size,
        regularizer=regularizer,
        weight=weight,
        blur_sigma=blur_sigma,
        blur_every=blur_every,
        negate=negate,
        start=[START_NAMES[param][k] if k >= 0 else "no gradient at any start" for k in starts],
    )
    return result if details else result.images
