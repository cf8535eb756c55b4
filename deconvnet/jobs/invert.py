"""One image inverted from each of a list of stages (`run_invert`, the work behind
`python -m experiments.invert`), like Mahendran & Vedaldi's (CVPR 2015) progression figure: a row
input | inversion from stage 1 | ... | from fc7, each titled with its relative feature error
||phi(x) - phi0||^2 / ||phi0||^2 (`deconvnet.optim.invert`'s report["feature_error"]).

Files: `input.png`, `from_<stage>.png` (e.g. from_stage3, from_fc6; colours clipped to [0, 1]),
`grid.png`, images.npz (`<cell>` the inversion, `<cell>__history`, and `input`), result.json,
config.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from deconvnet.core.precision import dtype_name
from deconvnet.core.probe import check_point, point_key
from deconvnet.core.validation import (
    as_list,
    check_count,
    check_positive,
    check_real,
    check_seed,
    check_stages,
    is_int,
)
from deconvnet.figures.sheet import COLOURS, colours, save_tile
from deconvnet.figures.synthesis import invert_sheet
from deconvnet.jobs.job import (
    Job,
    Picture,
    check_image_size,
    check_pictures,
    model_header,
    prepare,
    title_lines,
)
from deconvnet.jobs.request import ModelRequest, check_model, model_arguments
from deconvnet.optim import invert
from deconvnet.optim.invert import DEFAULT_TV_WEIGHT, TV_WEIGHTS

DEFAULT_STAGES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class InvertPlan:
    """A checked request."""

    request: ModelRequest
    picture: Picture
    stages: tuple[int | str, ...]
    steps: int
    lr: float
    size: int
    tv_weight: float | None
    jitter: int
    seed: int


def check_points(request: ModelRequest, stages: object) -> list[int | str]:
    """Stages 1..5 or points of `deconvnet.core.probe` ("fc7", "logits", "layer3.1", ...) the
    model has, each once (ValueError naming `stages`)."""
    items = [stages] if is_int(stages) or isinstance(stages, str) else as_list(stages)
    names = sorted({str(p) for p in items if isinstance(p, str)})
    check_stages(items, names)  # ints 1..5, non-empty, each once
    for p in items:
        try:
            check_point(request.skeleton, p)
        except ValueError as error:
            raise ValueError(f"stages: {str(error).removeprefix('stage: ')}") from None
        if p == "input":
            raise ValueError("stages: 'input' has nothing to invert")
    return [int(p) if is_int(p) else str(p) for p in items]


def validate_invert(
    model: object,
    weights: object,
    seed: object,
    image: object,
    stages: object,
    steps: object,
    lr: object,
    size: object,
    tv_weight: object,
    jitter: object,
    opt_seed: object,
    device: object,
    dtype: object = "float32",
) -> InvertPlan:
    """Every value checked before anything is built or written (ValueError naming the key)."""
    request = check_model(model, weights, seed, device, dtype=dtype)
    points = check_points(request, stages)
    deepest = None if any(isinstance(p, str) for p in points) else max(points)
    size = check_image_size(request, size, deepest)
    tv = None if tv_weight is None else check_real("tv_weight", tv_weight)
    (picture,) = check_pictures(image, "image", single=True)
    return InvertPlan(
        request,
        picture,
        tuple(points),
        check_count("steps", steps),
        check_positive("lr", lr),
        size,
        tv,
        check_count("jitter", jitter, low=0),
        check_seed(opt_seed),
    )


def invert_cell(
    net: nn.Module, plan: InvertPlan, x: Tensor, point: int | str, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The inversion from one stage: arrays (images [1, 3, S, S], history) and its record."""
    made = invert(
        net,
        x,
        point,
        steps=plan.steps,
        lr=plan.lr,
        tv_weight=plan.tv_weight,
        jitter=plan.jitter,
        seed=plan.seed,
        progress=progress,
        details=True,
    )
    record = {
        "stage": point,
        "file": f"from_{point_key(point)}.png",
        "feature_error": made.report["feature_error"],
        "report": made.report,
        "final_objective": made.history[-1].tolist(),
        "settings": made.settings,
    }
    return {"images": made.images.detach().float().cpu().numpy(), "history": made.history.numpy()}, record


def run_invert(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    image: str = "cat",
    stages: int | str | Sequence[int | str] = DEFAULT_STAGES,
    steps: int = 200,
    lr: float = 0.05,
    size: int | None = None,
    tv_weight: float | None = None,
    jitter: int = 0,
    opt_seed: int = 0,
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Invert `image` from each stage (1..5, "fc6", "fc7"); files written into `out_dir`
    (module doc); the result dict.

    size None: the weights' crop size; tv_weight None: the library's per-stage weight
    (`deconvnet.optim.invert.TV_WEIGHTS`); seed: the model's; opt_seed: config key `seed` (the
    grey-noise start). Every value is checked before the model is built (nothing written).
    """
    plan = validate_invert(
        model, weights, seed, image, stages, steps, lr, size, tv_weight, jitter, opt_seed, device, dtype
    )
    config = config if config is not None else invert_config(plan, weights)
    job = Job(out_dir, "invert", plan.request, config, len(plan.stages), progress)
    x = prepare(plan.picture.image, job.net, plan.size).to(plan.request.device)
    with job.progress():
        cells = [
            job.cell(point_key(p), lambda: invert_cell(job.net, plan, x, p, progress)) for p in plan.stages
        ]
    prep = plan.request.preprocessing
    save_tile(colours(x.cpu(), prep)[0], job.out / "input.png")
    for cell in cells:
        save_tile(colours(job.images(cell["key"]), prep)[0], job.out / cell["file"])
    job.keep("input", x)
    result = {
        **model_header("invert", plan.request, job.weights),
        "settings": invert_settings(plan),
        "display": {"images": COLOURS},
        "image": {"label": plan.picture.label, **plan.picture.info, "file": "input.png"},
        "data": {"label": f"image: {plan.picture.info['source']}"},
        "cells": cells,
    }
    header = title_lines("Inverted representations (Mahendran & Vedaldi 2015)", plan.request, job.weights)
    return job.finish(result, [invert_sheet(header, result, plan.request.skeleton)])


def invert_settings(plan: InvertPlan) -> dict[str, Any]:
    return {
        "stages": list(plan.stages),
        "steps": plan.steps,
        "lr": plan.lr,
        "size": plan.size,
        "tv_weight": plan.tv_weight,
        "tv_weights_used": {
            str(p): TV_WEIGHTS.get(p, DEFAULT_TV_WEIGHT) if plan.tv_weight is None else plan.tv_weight
            for p in plan.stages
        },
        "jitter": plan.jitter,
        "seed": plan.seed,
        "feature_error": "||phi(x) - phi0||^2 / ||phi0||^2 at the stage, final image",
    }


def invert_config(plan: InvertPlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r = plan.request
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "image": plan.picture.info["source"],
        "stages": list(plan.stages),
        "steps": plan.steps,
        "lr": plan.lr,
        "size": plan.size,
        "tv_weight": plan.tv_weight,
        "jitter": plan.jitter,
        "seed": plan.seed,
        "device": str(r.device),
        "dtype": dtype_name(r.dtype),
    }


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.invert`: the config as the arguments of `run_invert`."""
    return run_invert(
        out,
        **model_arguments(config),
        image=config["image"],
        stages=config["stages"],
        steps=config["steps"],
        lr=config["lr"],
        size=config["size"],
        tv_weight=config["tv_weight"],
        jitter=config["jitter"],
        opt_seed=config["seed"],
        device=config["device"],
        config=dict(config),
        dtype=config.get("dtype", "float32"),
    )
