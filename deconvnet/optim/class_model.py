"""Class model visualisation (Simonyan, Vedaldi & Zisserman 2014): the image I that maximises the
raw class score S_c(I) - lambda R(I), started from zero (the dataset mean colour), with
R = ||I||_2^2 ("l2"), ||I||_1 ("l1") or nothing ("none"); pytorch-cnn-visualizations adds blur.

Several classes together in one image (keras-vis' several `filter_indices`: what a cat-fish looks
like): an element of `classes` that is itself a list of classes, e.g. `[281, (281, 1)]` -> two
images, the tabby cat's and one that maximises the soft minimum of S_tabby and S_goldfish
(`class_logit_softmin`), an image both classes score high on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.core.precision import full_float32
from deconvnet.core.targets import class_count
from deconvnet.core.validation import check_count, check_real, is_int
from deconvnet.optim import objectives as obj
from deconvnet.optim.checks import batches, check_classes, check_param, check_run, check_size, model_device
from deconvnet.optim.engine import Optimized, optimize
from deconvnet.optim.filters import make_param, merge, start_images
from deconvnet.optim.regularizers import Blur, Decay, Shrink
from deconvnet.optim.starts import SPREADS, live_starts, warn_dead

CLASS_REGULARIZERS = ("l2", "l1", "none")
Group = tuple[int, ...]  # the classes one image maximises together (one class: a plain class model)


def check_class_groups(model: nn.Module, classes: object, name: str = "classes") -> list[Group]:
    """`class_model`'s classes -> one group per image: a class int is (c,); a list / tuple of
    distinct class ints is one image for all of them together. ValueError naming `name` for an
    empty list, a class outside 0..classes-1, a class twice in a group, or deeper nesting."""
    count = class_count(model)
    accepted = (
        f"a class int in 0..{count - 1}, or a non-empty list whose items are class ints or "
        "lists of class ints (one image maximising their logits together)"
    )
    items = [classes] if is_int(classes) else classes
    if not isinstance(items, (list, tuple, range)) or not items:
        raise ValueError(f"{name}: expected {accepted}, got {classes!r}")
    groups = []
    for item in items:
        group = [item] if is_int(item) else item
        if not isinstance(group, (list, tuple, range)) or not group:
            raise ValueError(f"{name}: expected {accepted}; got the item {item!r}")
        group = check_classes(model, group, name)  # each class within the model's
        if len(set(group)) != len(group):
            raise ValueError(f"{name}: each class once within a group of classes together, got {item!r}")
        groups.append(tuple(group))
    return groups


def class_logit_softmin(groups: Sequence[Group]) -> obj.Objective:
    """Image b's value: the soft minimum of the raw scores of groups[b]'s classes,
    -log sum_c exp(-S_c) (at most min_c S_c, within log of the group's size of it): raising it
    raises the lowest score most, so every class of the group rises and none takes over. Reads
    "logits" [B, classes] -> [B]. (keras-vis sums the scores of several filter_indices; on
    EfficientNet-Lite0 the sum let one class of 4 of 5 pairs win alone, p = 1.0 vs 0.0.)"""
    width = max(len(g) for g in groups)
    index = torch.tensor([list(g) + [g[0]] * (width - len(g)) for g in groups], dtype=torch.long)
    padding = torch.tensor([[0.0] * len(g) + [math.inf] * (width - len(g)) for g in groups])

    def fn(a: obj.Activations) -> Tensor:
        logits = a["logits"]
        if logits.shape[0] != len(groups):
            raise ValueError(f"class: {len(groups)} groups for a batch of {logits.shape[0]} images")
        picked = logits.gather(1, index.to(logits.device))
        picked = picked + padding.to(device=logits.device, dtype=logits.dtype)  # +inf: left out
        return -torch.logsumexp(-picked, dim=1)

    return obj.Objective(fn, frozenset({"logits"}), f"class_logit_softmin({[list(g) for g in groups]})")


def group_objective(groups: Sequence[Group]) -> obj.Objective:
    """One class per image: `objectives.class_logit` (as for plain class models); any group of
    several: `class_logit_softmin`."""
    if all(len(g) == 1 for g in groups):
        return obj.class_logit([g[0] for g in groups])
    return class_logit_softmin(groups)


def describe_groups(groups: Sequence[Group]) -> list[int | list[int]]:
    """Groups as given: a class int for one class, a list for several together."""
    return [g[0] if len(g) == 1 else list(g) for g in groups]


def penalty_steps(regularizer: str, weight: float, lr: float) -> list:
    """The penalty's proximal step after each ascent step: l2 -> x <- (1 - weight) x (the step
    of lambda ||x||^2 with lambda = weight / (2 lr) per unit of step), l1 -> soft threshold by
    weight * lr, none -> nothing. Steps are normalised, so the weight is in those units and does
    not depend on how large the model's scores are."""
    if regularizer not in CLASS_REGULARIZERS:
        raise ValueError(f"regularizer: expected one of {', '.join(CLASS_REGULARIZERS)}, got {regularizer!r}")
    weight = check_real("weight", weight)
    if regularizer == "l2" and weight >= 1:
        raise ValueError(f"weight: expected a number in [0, 1) for regularizer 'l2', got {weight!r}")
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
    Fourier: lucid's random spectrum, growing likewise. Class c's start depends on (seed, c);
    a group of classes together starts where its first class would. -> ([K, 3, size, size] or
    spectra, the index of each start in START_NAMES[param])."""
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
    every = check_count("blur_every", blur_every)
    if check_real("blur_sigma", blur_sigma) > 0:
        regs.append(Blur(blur_sigma, every=every))
    if param == "fourier":
        regs = []
    return regs


def _class_batches(
    model: nn.Module,
    groups: list[Group],
    size: int,
    param: str,
    batch_size: int,
    negate: bool,
    seed: int,
    **options: Any,
) -> tuple[list[Optimized], list[int]]:
    """The images ([K, 3, size, size], one per group of classes) optimised `batch_size` at a time
    from `class_starts` -> (each batch's Optimized, the index of each image's start in
    START_NAMES[param], -1 where none has a gradient). options: the rest of `optimize`'s keyword
    arguments."""
    parts, starts = [], []
    for batch in batches(groups, batch_size):
        objective = group_objective(batch)
        firsts = [g[0] for g in batch]
        start, chosen = class_starts(model, objective, firsts, size, seed, param)
        warn_dead(chosen, describe_groups(batch), "classes", woke=False)
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


@full_float32()
def class_model(
    model: nn.Module,
    classes: int | Sequence[int | Sequence[int]],
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
    """Class models -> [K, 3, size, size] in the model's normalised input space, one per item of
    `classes`: a class int c, or a list / tuple of distinct classes for one image of them all
    together (`[281, (281, 1)]`: a tabby cat, then a tabby-goldfish; `class_logit_softmin`).

    Maximises (with `negate`, minimises) the logit S_c by L2-normalised ascent from zero (or,
    where the score has no gradient at zero, from faint noise: `class_starts`); each
    step is followed by the regulariser's proximal step (`penalty_steps`) and, if blur_sigma > 0,
    a Gaussian blur every `blur_every` steps. param='fourier' starts from lucid's random
    spectrum (its sigmoid bounds the colours; pixel regularisers are then not used).
    """
    groups, size = check_class_groups(model, classes), check_size(model, size)
    param = check_param(param)
    check_run(steps, lr, seed, batch_size, transforms, negate=negate, progress=progress, details=details)
    regs = _class_regularizers(regularizer, weight, lr, blur_sigma, blur_every, param)
    model_device(model)
    parts, starts = _class_batches(
        model,
        groups,
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
        classes=describe_groups(groups),
        size=size,
        regularizer=regularizer,
        weight=weight,
        blur_sigma=blur_sigma,
        blur_every=blur_every,
        negate=negate,
        start=[START_NAMES[param][k] if k >= 0 else "no gradient at any start" for k in starts],
    )
    return result if details else result.images
