"""Class models (Simonyan, Vedaldi & Zisserman 2014) for a list of classes (`run_class_model`, the
work behind `python -m experiments.class_model`).

Each class c gets the image that maximises its raw score S_c(I) - lambda R(I) from zero (the mean
colour), R = L2 (default), L1 or none, with an optional Gaussian blur every 4 steps
(`deconvnet.optim.class_model`); an item of `classes` that is itself a list of classes gets one
image for all of them together (keras-vis' several filter_indices: `[[tabby, goldfish]]`, a
cat-fish). Any supported model. Each tile is titled with the class name(s) and the probability the
model gives its own class(es) on the image (softmax of the logits). A classifier with random
weights (weights random, or hed: learned convolutions, random classifier) makes class scores
meaningless: the title and result.json say "class scores of a RANDOM classifier: not meaningful".

Files: `class<c>.png` (a group: `class<c1>+<c2>.png`; Keras deprocess, like the filter images:
optimised from nothing, their raw colours are faint), `grid.png`, images.npz, result.json,
config.yaml.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deconvnet.core.precision import dtype_name
from deconvnet.core.targets import class_count
from deconvnet.core.validation import as_list, check_count, check_positive, check_real, check_seed, is_int
from deconvnet.data.models import class_names
from deconvnet.figures.sheet import KERAS_DEPROCESS, keras_deprocess, save_tile
from deconvnet.figures.synthesis import class_sheet
from deconvnet.jobs.job import Job, classifier_note, model_header, title_lines
from deconvnet.jobs.request import ModelRequest, check_model, model_arguments
from deconvnet.optim import class_model, probe
from deconvnet.optim.checks import check_size
from deconvnet.optim.class_model import CLASS_REGULARIZERS

log = logging.getLogger(__name__)

# Simonyan et al. 2014, Fig. 1's first row: dumbbell, cup, dalmatian, bell pepper
DEFAULT_CLASSES = (543, 968, 251, 945)
BLUR_EVERY = 4  # steps between blurs when blur > 0 (Yosinski's every 4)


@dataclass(frozen=True)
class ClassPlan:
    """A checked request."""

    request: ModelRequest
    classes: tuple[int | tuple[int, ...], ...]  # a class, or a group of classes together
    regularizer: str
    weight: float
    steps: int
    lr: float
    size: int
    blur: float
    seed: int


def check_class_list(
    value: object, names: Sequence[str], key: str = "classes", single: bool = False
) -> list[int]:
    """A class int or class name (any case), or (unless `single`) a non-empty list of them,
    each once."""
    accepted = f"a class int in 0..{len(names) - 1} or a class name"
    items = [value] if is_int(value) or isinstance(value, str) else None if single else as_list(value)
    if not items:
        more = "" if single else ", or a non-empty list of them"
        raise ValueError(f"{key}: expected {accepted}{more}, got {value!r}")
    lower = {n.lower(): i for i, n in enumerate(names)}
    chosen = []
    for item in items:
        if is_int(item) and 0 <= item < len(names):
            chosen.append(int(item))
        elif isinstance(item, str) and item.strip().lower() in lower:
            chosen.append(lower[item.strip().lower()])
        else:
            raise ValueError(f"{key}: expected {accepted}, got {item!r}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"{key}: each class once, got {items!r}")
    return chosen


def check_class_items(
    value: object, names: Sequence[str], key: str = "classes"
) -> list[int | tuple[int, ...]]:
    """`check_class_list`, where an item may also be a list of classes (ints or names, each once)
    maximised together in one image -> a class int per item, or a tuple of two or more for a
    group (a group of one is that class). Each item once (a group: once as a set)."""
    items = [value] if is_int(value) or isinstance(value, str) else as_list(value)
    if not items:
        raise ValueError(
            f"{key}: expected a class int in 0..{len(names) - 1} or a class name, or a non-empty list "
            f"of them and of lists of them (classes together), got {value!r}"
        )
    chosen: list[int | tuple[int, ...]] = []
    for item in items:
        group = as_list(item)
        if group is None:
            chosen += check_class_list(item, names, key, single=True)
            continue
        if not group:
            raise ValueError(f"{key}: a group of classes together needs at least one class, got {item!r}")
        classes = check_class_list(group, names, key)
        chosen.append(classes[0] if len(classes) == 1 else tuple(classes))
    seen = [frozenset(c) if isinstance(c, tuple) else c for c in chosen]
    if len(set(seen)) != len(seen):
        raise ValueError(f"{key}: each class once, and each group of classes once, got {value!r}")
    return chosen


def item_key(item: int | tuple[int, ...]) -> str:
    """A class's or group's name in files and keys: '281', '281+1'."""
    return "+".join(str(c) for c in (item if isinstance(item, tuple) else (item,)))


def validate_class_model(
    model: object,
    weights: object,
    seed: object,
    classes: object,
    regularizer: object,
    weight: object,
    steps: object,
    lr: object,
    size: object,
    blur: object,
    opt_seed: object,
    device: object,
    dtype: object = "float32",
) -> ClassPlan:
    """Every value checked before anything is built or written (ValueError naming the key)."""
    request = check_model(model, weights, seed, device, dtype=dtype)
    names = class_names(request.name)[: class_count(request.skeleton)]
    if regularizer not in CLASS_REGULARIZERS:
        raise ValueError(f"regularizer: expected one of {', '.join(CLASS_REGULARIZERS)}, got {regularizer!r}")
    return ClassPlan(
        request,
        tuple(check_class_items(classes, names)),
        str(regularizer),
        check_real("weight", weight),
        check_count("steps", steps),
        check_positive("lr", lr),
        check_size(request.skeleton, size),
        check_real("blur", blur),
        check_seed(opt_seed),
    )


def class_cell(
    net: nn.Module, plan: ClassPlan, item: int | tuple[int, ...], names: Sequence[str], progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The model of class `item` (or of a group of classes together): arrays (images [1, 3, S, S],
    history [steps, 1]) and its record, with the probability the model gives each of its classes
    (softmax of its logits), their sum, each class's logit and rank among the logits (1: the
    top), and the objective's logit (a group: the soft minimum of its logits)."""
    group = list(item) if isinstance(item, tuple) else [item]
    made = class_model(
        net,
        [item],
        size=plan.size,
        regularizer=plan.regularizer,
        weight=plan.weight,
        steps=plan.steps,
        lr=plan.lr,
        blur_sigma=plan.blur,
        blur_every=BLUR_EVERY,
        seed=plan.seed,
        progress=progress,
        details=True,
    )
    with torch.no_grad():
        logits = probe(net, made.images, ["logits"])["logits"][0].double().cpu()
    p = torch.softmax(logits, dim=0)
    top = int(p.argmax())
    record = {
        "class": group[0] if len(group) == 1 else group,
        "class_name": " + ".join(names[c] for c in group),
        "classes": group,
        "file": f"class{item_key(item)}.png",
        "probability": float(p[group].sum()),
        "probabilities": [float(p[c]) for c in group],
        "logit": float(-torch.logsumexp(-logits[group], dim=0)),
        "logits": [float(logits[c]) for c in group],
        "ranks": [int((logits > logits[c]).sum()) + 1 for c in group],
        "top_class": top,
        "top_class_name": names[top],
        "top_probability": float(p[top]),
        "final_objective": made.history[-1].tolist(),
        "settings": made.settings,
    }
    images = made.images.detach().float().cpu().numpy()
    return {"images": images, "history": made.history.numpy()}, record


def run_class_model(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    classes: int | str | Sequence[int | str | Sequence[int | str]] = DEFAULT_CLASSES,
    regularizer: str = "l2",
    weight: float = 0.02,
    steps: int = 100,
    lr: float = 0.05,
    size: int = 224,
    blur: float = 0.0,
    opt_seed: int = 0,
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Class models of `classes` (an item that is a list of classes: one image for all of them
    together); files written into `out_dir` (module doc); the result dict.

    weight: the regulariser's weight (`deconvnet.optim.class_model.penalty_steps`); blur: Gaussian
    sigma in pixels every 4 steps (0: none); seed: the model's; opt_seed: config key `seed`.
    Every value is checked before the model is built (ValueError naming the key; nothing written).
    """
    plan = validate_class_model(
        model, weights, seed, classes, regularizer, weight, steps, lr, size, blur, opt_seed, device, dtype
    )
    config = config if config is not None else class_config(plan, weights)
    job = Job(out_dir, "class_model", plan.request, config, len(plan.classes), progress)
    names = class_names(plan.request.name)
    note = classifier_note(job.weights)
    if note:
        log.warning("classes: %s (weights: %s)", note, job.weights.get("description"))
    with job.progress():
        cells = [
            job.cell(f"class{item_key(c)}", lambda: class_cell(job.net, plan, c, names, progress))
            for c in plan.classes
        ]
    for cell in cells:
        save_tile(
            keras_deprocess(job.images(cell["key"]), plan.request.preprocessing)[0], job.out / cell["file"]
        )
    result = {
        **model_header("class_model", plan.request, job.weights, note),
        **class_settings(plan),
        "cells": cells,
    }
    header = title_lines("Class models (Simonyan et al. 2014)", plan.request, job.weights, note)
    return job.finish(result, [class_sheet(header, result)])


def class_settings(plan: ClassPlan) -> dict[str, Any]:
    """result.json's settings, display and data."""
    return {
        "settings": {
            "classes": class_items(plan),
            "regularizer": plan.regularizer,
            "weight": plan.weight,
            "steps": plan.steps,
            "lr": plan.lr,
            "size": plan.size,
            "blur": plan.blur,
            "blur_every": BLUR_EVERY,
            "together": "a list of classes: one image maximising the soft minimum of their logits, "
            "-log sum exp(-S_c)",
            "seed": plan.seed,
            "start": "zeros (the dataset's mean colour)",
        },
        "display": {
            "images": KERAS_DEPROCESS,
            "probability": "softmax of the model's logits on the class model, for its own class "
            "(a group: the sum over its classes; each in probabilities)",
        },
        "data": {"label": "no input image (class models start from the mean colour)"},
    }


def class_items(plan: ClassPlan) -> list[int | list[int]]:
    """The checked classes for JSON / YAML: an int per class, a list per group."""
    return [list(c) if isinstance(c, tuple) else c for c in plan.classes]


def class_config(plan: ClassPlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r = plan.request
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "classes": class_items(plan),
        "regularizer": plan.regularizer,
        "weight": plan.weight,
        "steps": plan.steps,
        "lr": plan.lr,
        "size": plan.size,
        "blur": plan.blur,
        "seed": plan.seed,
        "device": str(r.device),
        "dtype": dtype_name(r.dtype),
    }


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.class_model`: the config as the arguments of `run_class_model`."""
    return run_class_model(
        out,
        **model_arguments(config),
        classes=config["classes"],
        regularizer=config["regularizer"],
        weight=config["weight"],
        steps=config["steps"],
        lr=config["lr"],
        size=config["size"],
        blur=config["blur"],
        opt_seed=config["seed"],
        device=config["device"],
        config=dict(config),
        dtype=config.get("dtype", "float32"),
    )
