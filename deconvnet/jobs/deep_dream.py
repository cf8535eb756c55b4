"""Deep Dream (Mordvintsev, Olah & Tyka 2015) of one or more images (`run_deep_dream`, the work
behind `python -m experiments.deep_dream`).

Each image (a sample name or a path, the weights' preprocessing, then `size`) is dreamt at one
stage, on all its channels' energy or one channel's (`deconvnet.optim.deep_dream`: octaves carrying
the detail upwards, jitter, steps of step_size / mean |g|). result.json records the energy
0.5 ||a||^2 at that stage (or channel) before and after. Panels: input | dream, both as colours
(the dream stays within valid colours).

Files: `<image>__input.png`, `<image>__dream.png`, `grid.png`, images.npz (`<image>` the dream,
`<image>__input`, `<image>__history`), result.json, config.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.geometry import min_input_size
from deconvnet.core.precision import dtype_name
from deconvnet.core.validation import check_count, check_positive, check_seed, is_int
from deconvnet.figures.sheet import COLOURS, colours, save_tile
from deconvnet.figures.synthesis import dream_sheet
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
from deconvnet.optim import deep_dream, probe
from deconvnet.optim import objectives as obj
from deconvnet.optim.dream import octave_sizes
from deconvnet.optim.points import map_point

DEFAULT_IMAGES = ("cat",)


@dataclass(frozen=True)
class DreamPlan:
    """A checked request."""

    request: ModelRequest
    pictures: tuple[Picture, ...]
    stage: int | str  # a stage number or a module path
    channel: int | None
    octaves: int
    scale: float
    jitter: int
    steps: int
    step_size: float
    size: int
    seed: int


def _check_octaves(request: ModelRequest, size: int, stage: int, octaves: int, scale: float) -> None:
    """The smallest octave must still be an input the stage accepts."""
    smallest = octave_sizes(size, size, octaves, scale)[0]
    need = min_input_size(request.skeleton, stage)
    if min(smallest) < need:
        raise ValueError(
            f"octaves: {octaves} octaves of scale {scale:g} shrink the {size} px "
            f"image to {smallest[0]} px, below the {need} px stage {stage} needs; "
            "use fewer octaves or a larger size"
        )


def stage_name(plan: DreamPlan) -> str:
    """The stage's name (e.g. 'pool4', 'layer3'), or the module path as given."""
    return stage_of(plan.request.skeleton, plan.stage).name if is_int(plan.stage) else str(plan.stage)


def validate_dream(
    model: object,
    weights: object,
    seed: object,
    images: object,
    stage: object,
    channel: object,
    octaves: object,
    scale: object,
    jitter: object,
    steps: object,
    step_size: object,
    size: object,
    opt_seed: object,
    device: object,
    dtype: object = "float32",
) -> DreamPlan:
    """Every value checked before anything is built or written (ValueError naming the key)."""
    request = check_model(model, weights, seed, device, dtype=dtype)
    if not (is_int(stage) or isinstance(stage, str)):
        raise ValueError(f"stage: expected a stage 1..5, a stage name or a module path, got {stage!r}")
    point, named = map_point(request.skeleton, stage)
    channel = named if channel is None else channel
    count = point.channels
    if channel is not None and (not is_int(channel) or not 0 <= channel < count):
        raise ValueError(
            f"channel: expected null (every channel) or an int in 0..{count - 1} "
            f"({point.label}'s channels), got {channel!r}"
        )
    stage = point.key
    octaves = check_count("octaves", octaves)
    if check_positive("scale", scale) <= 1:
        raise ValueError(f"scale: expected an octave scale > 1, got {scale!r}")
    size = check_image_size(request, size, stage)
    _check_octaves(request, size, stage, octaves, scale)
    return DreamPlan(
        request,
        tuple(check_pictures(images)),
        stage,
        None if channel is None else int(channel),
        octaves,
        float(scale),
        check_count("jitter", jitter, low=0),
        check_count("steps", steps),
        check_positive("step_size", step_size),
        size,
        check_seed(opt_seed),
    )


def energy(net: nn.Module, x: Tensor, stage: int, channel: int | None) -> float:
    """0.5 ||a||^2 at the stage (or of one channel) for one image [1, 3, H, W]."""
    with torch.no_grad():
        return float(obj.energy(stage, channel)(probe(net, x, [stage]))[0])


def dream_cell(
    net: nn.Module, plan: DreamPlan, picture: Picture, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One image's dream: arrays (images [1, 3, S, S], input, history) and its record."""
    x = prepare(picture.image, net, plan.size).to(plan.request.device)
    made = deep_dream(
        net,
        x,
        plan.stage,
        plan.channel,
        octaves=plan.octaves,
        scale=plan.scale,
        jitter=plan.jitter,
        steps=plan.steps,
        step_size=plan.step_size,
        seed=plan.seed,
        progress=progress,
        details=True,
    )
    before = energy(net, x, plan.stage, plan.channel)
    after = energy(net, made.images, plan.stage, plan.channel)
    record = {
        "image": picture.label,
        **picture.info,
        "input_file": f"{picture.label}__input.png",
        "file": f"{picture.label}__dream.png",
        "energy_before": before,
        "energy_after": after,
        "energy_ratio": after / before if before > 0 else None,
        "settings": made.settings,
    }
    arrays = {
        "images": made.images.detach().float().cpu().numpy(),
        "input": x.float().cpu().numpy(),
        "history": made.history.numpy(),
    }
    return arrays, record


def run_deep_dream(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    images: str | Sequence[str] = DEFAULT_IMAGES,
    stage: int = 4,
    channel: int | None = None,
    octaves: int = 4,
    scale: float = 1.4,
    jitter: int = 32,
    steps: int = 20,
    step_size: float = 1.5,
    size: int | None = None,
    opt_seed: int = 0,
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Dream every image; files written into `out_dir` (module doc); the result dict.

    size None: the weights' crop size (224); steps: per octave; seed: the model's; opt_seed:
    config key `seed` (the jitter). Every value is checked before the model is built
    (ValueError / FileNotFoundError naming the key; nothing written).
    """
    plan = validate_dream(
        model,
        weights,
        seed,
        images,
        stage,
        channel,
        octaves,
        scale,
        jitter,
        steps,
        step_size,
        size,
        opt_seed,
        device,
        dtype,
    )
    config = config if config is not None else dream_config(plan, weights)
    job = Job(out_dir, "deep_dream", plan.request, config, len(plan.pictures), progress)
    with job.progress():
        cells = [job.cell(p.label, lambda: dream_cell(job.net, plan, p, progress)) for p in plan.pictures]
    prep = plan.request.preprocessing
    for cell in cells:
        save_tile(colours(job.images(cell["key"], "input"), prep)[0], job.out / cell["input_file"])
        save_tile(colours(job.images(cell["key"]), prep)[0], job.out / cell["file"])
    result = {
        **model_header("deep_dream", plan.request, job.weights),
        "settings": dream_settings(plan),
        "display": {"images": COLOURS},
        "data": {"label": "images: " + ", ".join(str(p.info["source"]) for p in plan.pictures)},
        "cells": cells,
    }
    return job.finish(result, [dream_sheet(dream_title(plan, job.weights), result)])


def dream_settings(plan: DreamPlan) -> dict[str, Any]:
    return {
        "stage": plan.stage,
        "stage_name": stage_name(plan),
        "channel": plan.channel,
        "octaves": plan.octaves,
        "scale": plan.scale,
        "jitter": plan.jitter,
        "steps_per_octave": plan.steps,
        "step_size": plan.step_size,
        "size": plan.size,
        "seed": plan.seed,
        "energy": "0.5 ||a||^2 of the stage's maps (or of the channel's)",
    }


def dream_config(plan: DreamPlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r = plan.request
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "images": [p.info["source"] for p in plan.pictures],
        "stage": plan.stage,
        "channel": plan.channel,
        "octaves": plan.octaves,
        "scale": plan.scale,
        "jitter": plan.jitter,
        "steps": plan.steps,
        "step_size": plan.step_size,
        "size": plan.size,
        "seed": plan.seed,
        "device": str(r.device),
        "dtype": dtype_name(r.dtype),
    }


def dream_title(plan: DreamPlan, wdict: Mapping[str, Any]) -> list[str]:
    """The sheet title's first lines: Deep Dream at the stage (or one channel), the model, its weights."""
    name = stage_name(plan)
    what = f"stage {plan.stage} ({name})" + ("" if plan.channel is None else f" channel {plan.channel}")
    return title_lines(f"Deep Dream at {what}", plan.request, wdict)


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.deep_dream`: the config as the arguments of `run_deep_dream`."""
    return run_deep_dream(
        out,
        **model_arguments(config),
        images=config["images"],
        stage=config["stage"],
        channel=config["channel"],
        octaves=config["octaves"],
        scale=config["scale"],
        jitter=config["jitter"],
        steps=config["steps"],
        step_size=config["step_size"],
        size=config["size"],
        opt_seed=config["seed"],
        device=config["device"],
        config=dict(config),
        dtype=config.get("dtype", "float32"),
    )
