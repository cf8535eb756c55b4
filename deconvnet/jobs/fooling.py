"""Fooling images (Nguyen, Yosinski & Clune 2015; the cs231n exercise) of one or more images
(`run_fooling`, the work behind `python -m experiments.fooling`).

Each image is pushed, within valid colours and at most `max_change` per colour value from the
image (default 8/255), until the model gives the target class at least `confidence`
(`deconvnet.optim.fooling_image`: sign-gradient steps of lr colour units, default 1/255, on log
softmax; step "normalized": the L2-normalised ascent). Any supported model. Panels: image
| fooling image | difference, shown as 0.5 + amplify * (fooling - image) in [0, 1] colour units
(mid-grey = no change; clipped), titled with the target's probability before and after and the
perturbation's L-inf / L2 (colour units, from the method's report). When the confidence is not
reached within `steps`, the panel and result.json say so. A random classifier (weights random or
hed) is labelled as such: its class scores mean nothing.

Files: `<image>__input.png`, `<image>__fooling.png`, `<image>__difference.png`, `grid.png`,
images.npz (`<image>` the fooling image, `<image>__input`, `<image>__history`), result.json,
config.yaml.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from deconvnet.core.precision import dtype_name
from deconvnet.core.targets import class_count
from deconvnet.core.validation import check_count, check_positive, check_real, check_seed
from deconvnet.data.models import class_names
from deconvnet.figures.sheet import COLOURS, colours, save_tile
from deconvnet.figures.synthesis import fooling_difference, fooling_sheet
from deconvnet.jobs.class_model import check_class_list
from deconvnet.jobs.job import (
    Job,
    Picture,
    check_image_size,
    check_pictures,
    classifier_note,
    model_header,
    prepare,
    title_lines,
)
from deconvnet.jobs.request import ModelRequest, check_model, model_arguments
from deconvnet.optim import fooling_image
from deconvnet.optim.fooling import MAX_CHANGE, check_fooling_step

log = logging.getLogger(__name__)

DEFAULT_IMAGES = ("cat",)
DEFAULT_TARGET = 368  # gibbon: Goodfellow et al.'s panda that became a gibbon


@dataclass(frozen=True)
class FoolingPlan:
    """A checked request."""

    request: ModelRequest
    pictures: tuple[Picture, ...]
    target: int
    confidence: float
    steps: int
    lr: float  # resolved: the step rule's default where the request said None
    step: str
    max_change: float | None
    size: int
    amplify: float
    seed: int


def validate_fooling(
    model: object,
    weights: object,
    seed: object,
    images: object,
    target: object,
    confidence: object,
    steps: object,
    lr: object,
    size: object,
    amplify: object,
    opt_seed: object,
    device: object,
    step: object = "sign",
    max_change: object = MAX_CHANGE,
    dtype: object = "float32",
) -> FoolingPlan:
    """Every value checked before anything is built or written (ValueError naming the key)."""
    request = check_model(model, weights, seed, device, dtype=dtype)
    names = class_names(request.name)[: class_count(request.skeleton)]
    (chosen,) = check_class_list(target, names, "target", single=True)
    confidence_value = check_real("confidence", confidence)
    if not 0 < confidence_value < 1:
        raise ValueError(f"confidence: expected a probability in (0, 1), got {confidence!r}")
    pictures = tuple(check_pictures(images))
    steps_value = check_count("steps", steps)
    lr_value, step_rule, budget = check_fooling_step(lr, step, max_change)
    return FoolingPlan(
        request,
        pictures,
        chosen,
        confidence_value,
        steps_value,
        lr_value,
        step_rule,
        budget,
        check_image_size(request, size),
        check_positive("amplify", amplify),
        check_seed(opt_seed),
    )


def fooling_cell(
    net: nn.Module, plan: FoolingPlan, picture: Picture, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One image's fooling image: arrays (images [1, 3, S, S], input, history) and its record
    (the method's report: probabilities, predictions, L-inf / L2, reached)."""
    x = prepare(picture.image, net, plan.size).to(plan.request.device)
    with warnings.catch_warnings():  # "not reached" is logged here and written in result.json
        warnings.simplefilter("ignore")
        made = fooling_image(
            net,
            x,
            plan.target,
            confidence=plan.confidence,
            steps=plan.steps,
            lr=plan.lr,
            seed=plan.seed,
            progress=progress,
            details=True,
            step=plan.step,
            max_change=plan.max_change,
        )
    report = made.report
    if not report["reached"]:
        log.warning(
            "%s: class %d has probability %.4g < confidence %g after %d steps",
            picture.label,
            plan.target,
            report["probability_after"],
            plan.confidence,
            plan.steps,
        )
    record = {
        "image": picture.label,
        **picture.info,
        "input_file": f"{picture.label}__input.png",
        "file": f"{picture.label}__fooling.png",
        "difference_file": f"{picture.label}__difference.png",
        "report": report,
        "reached": report["reached"],
        "stopped": made.stopped,
        "settings": made.settings,
    }
    arrays = {
        "images": made.images.detach().float().cpu().numpy(),
        "input": x.float().cpu().numpy(),
        "history": made.history.numpy(),
    }
    return arrays, record


def run_fooling(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    images: str | Sequence[str] = DEFAULT_IMAGES,
    target: int | str = DEFAULT_TARGET,
    confidence: float = 0.99,
    steps: int = 200,
    lr: float | None = None,
    size: int | None = None,
    amplify: float = 10.0,
    opt_seed: int = 0,
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    step: str = "sign",
    max_change: float | None = MAX_CHANGE,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Fool the model into `target` with every image; files written into `out_dir` (module doc);
    the result dict.

    step: "sign" (lr in colour units per step, None: 1/255) or "normalized" (lr: RMS change of a
    normalised value, None: 0.01); max_change: the largest change of a colour value ([0, 1]
    colour units; None: only valid colours). size None: the weights' crop size; seed: the
    model's; opt_seed: config key `seed`. Every value is checked before the model is built
    (ValueError / FileNotFoundError naming the key; nothing written).
    """
    checked = (images, target, confidence, steps, lr, size, amplify, opt_seed, device, step, max_change)
    plan = validate_fooling(model, weights, seed, *checked, dtype=dtype)
    config = config if config is not None else fooling_config(plan, weights)
    job = Job(out_dir, "fooling", plan.request, config, len(plan.pictures), progress)
    note = classifier_note(job.weights)
    if note:
        log.warning("target: %s (weights: %s)", note, job.weights.get("description"))
    with job.progress():
        cells = [job.cell(p.label, lambda: fooling_cell(job.net, plan, p, progress)) for p in plan.pictures]
    write_tiles(job, plan, cells)
    names = class_names(plan.request.name)
    result = {
        **model_header("fooling", plan.request, job.weights, note),
        "settings": fooling_settings(plan, names),
        "display": {
            "images": COLOURS,
            "difference": f"0.5 + {plan.amplify:g} * (fooling - image) in [0, 1] "
            "colour units, clipped (mid-grey = unchanged)",
        },
        "data": {"label": "images: " + ", ".join(str(p.info["source"]) for p in plan.pictures)},
        "all_reached": all(c["reached"] for c in cells),
        "cells": cells,
    }
    header = title_lines(
        f"Fooling images towards class {plan.target} ({names[plan.target]})", plan.request, job.weights, note
    )
    return job.finish(result, [fooling_sheet(header, result, names)])


def write_tiles(job: Job, plan: FoolingPlan, cells: Sequence[Mapping[str, Any]]) -> None:
    """Each cell's three PNGs, from its saved arrays: image, fooling image, difference."""
    prep = plan.request.preprocessing
    for cell in cells:
        image, fooled = job.images(cell["key"], "input"), job.images(cell["key"])
        save_tile(colours(image, prep)[0], job.out / cell["input_file"])
        save_tile(colours(fooled, prep)[0], job.out / cell["file"])
        save_tile(fooling_difference(fooled, image, prep, plan.amplify), job.out / cell["difference_file"])


def fooling_settings(plan: FoolingPlan, names: Sequence[str]) -> dict[str, Any]:
    return {
        "target": plan.target,
        "target_name": names[plan.target],
        "confidence": plan.confidence,
        "steps": plan.steps,
        "lr": plan.lr,
        "step": plan.step,
        "max_change": plan.max_change,
        "size": plan.size,
        "amplify": plan.amplify,
        "seed": plan.seed,
    }


def fooling_config(plan: FoolingPlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r = plan.request
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "images": [p.info["source"] for p in plan.pictures],
        "target": plan.target,
        "confidence": plan.confidence,
        "steps": plan.steps,
        "lr": plan.lr,
        "step": plan.step,
        "max_change": plan.max_change,
        "size": plan.size,
        "amplify": plan.amplify,
        "seed": plan.seed,
        "device": str(r.device),
        "dtype": dtype_name(r.dtype),
    }


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.fooling`: the config as the arguments of `run_fooling`."""
    return run_fooling(
        out,
        **model_arguments(config),
        images=config["images"],
        target=config["target"],
        confidence=config["confidence"],
        steps=config["steps"],
        lr=config["lr"],
        size=config["size"],
        amplify=config["amplify"],
        opt_seed=config["seed"],
        device=config["device"],
        config=dict(config),
        step=config["step"],
        max_change=config["max_change"],
        dtype=config.get("dtype", "float32"),
    )
