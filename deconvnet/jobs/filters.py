"""Filter visualisations of every stage, without and with regularisers (`run_filters`, the work
behind `python -m experiments.filters`).

Per stage, the first `channels` channels (or a list) are each given an image that maximises the
mean of its map (`deconvnet.optim.visualize_filters`: the Keras example's recipe, grey-noise start,
L2-normalised ascent), twice:

    plain        regularizers "none", no transforms (the Keras example as it is)
    regularized  regularizers "yosinski" (decay 1e-4, Gaussian blur 1.0 px every 4 steps: their
                 "row 3") and transforms Pad(j) then Jitter(j), j = max(1, size // 16) px
                 (lucid-style robustness; the pad, mean colour, keeps the rolled content from
                 wrapping into view). With param=fourier the decorrelated parameterisation is the
                 prior and only the transforms are added (pixel regularisers need pixels).

Each variant's images are laid out as in the Keras example: n x n tiles (n = ceil(sqrt(K))),
small black gaps, each image shown with the example's deprocess (`figures.sheet.KERAS_DEPROCESS`;
drawn by `figures.synthesis`). Files: `stage<s>__<variant>.png` (the mosaic), `grid.png` (rows =
stages, plain | regularized), images.npz, result.json, config.yaml.

result.json also says how strongly each image excites its own channel compared with natural
photos: the channel's spatial mean on the image (the objective, border 0) against that channel's
mean (and max) over every bundled sample photo (`deconvnet.sample_names()`, preprocessed and resized
to `size`), both read with `deconvnet.core.probe`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.precision import dtype_name
from deconvnet.core.validation import as_list, check_count, check_positive, check_seed, check_stages, is_int
from deconvnet.data.images import open_image
from deconvnet.data.samples import sample_names
from deconvnet.figures.sheet import KERAS_DEPROCESS, save_tile
from deconvnet.figures.synthesis import filters_mosaic, filters_sheet
from deconvnet.jobs.job import Job, model_header, prepare, title_lines
from deconvnet.jobs.request import ModelRequest, check_model, model_arguments
from deconvnet.optim import Jitter, Pad, probe, visualize_filters
from deconvnet.optim.checks import check_channels, check_param, check_size

log = logging.getLogger(__name__)

VARIANTS = ("plain", "regularized")
DEFAULT_STAGES = (1, 2, 3, 4, 5)
JITTER_DIVISOR = 16  # jitter (and pad) = size // 16 px


@dataclass(frozen=True)
class FiltersPlan:
    """A checked request: channels per stage, the optimisation's settings."""

    request: ModelRequest
    stages: tuple[int, ...]
    channels: dict[int, list[int]]
    size: int
    steps: int
    lr: float
    seed: int
    param: str


def check_filter_channels(
    skeleton: nn.Module, stages: Sequence[int], channels: object
) -> dict[int, list[int]]:
    """A count n (the first n channels of each stage) or a list of channels (the same for every
    stage), each once -> {stage: channels}."""
    if is_int(channels):
        count = check_count("channels", channels)
        fewest = min(stage_of(skeleton, s).channels for s in stages)
        if count > fewest:
            raise ValueError(
                f"channels: expected a count in 1..{fewest} (the fewest channels of "
                f"the stages asked) or a list of channels, got {channels!r}"
            )
        return {s: list(range(count)) for s in stages}
    items = as_list(channels)
    if not items:
        raise ValueError(f"channels: expected a count >= 1 or a non-empty list of channels, got {channels!r}")
    if len(set(map(repr, items))) != len(items):
        raise ValueError(f"channels: each channel once, got {items!r}")
    return {s: check_channels(skeleton, s, items) for s in stages}


def validate_filters(
    model: object,
    weights: object,
    seed: object,
    stages: object,
    channels: object,
    size: object,
    steps: object,
    lr: object,
    opt_seed: object,
    param: object,
    device: object,
    dtype: object = "float32",
) -> FiltersPlan:
    """Every value checked before anything is built or written (ValueError naming the key)."""
    request = check_model(model, weights, seed, device, dtype=dtype)
    chosen = [int(s) for s in check_stages(stages)]
    return FiltersPlan(
        request,
        tuple(chosen),
        check_filter_channels(request.skeleton, chosen, channels),
        check_size(request.skeleton, size, max(chosen)),
        check_count("steps", steps),
        check_positive("lr", lr),
        check_seed(opt_seed),
        check_param(param),
    )


def variant_options(variant: str, size: int, param: str) -> dict[str, Any]:
    """The regularisers and transforms of a variant (see the module doc)."""
    if variant == "plain":
        return {"regularizers": "none", "transforms": []}
    j = max(1, size // JITTER_DIVISOR)
    return {"regularizers": "yosinski" if param == "pixels" else "none", "transforms": [Pad(j), Jitter(j)]}


def describe_variant(variant: str, size: int, param: str, short: bool = False) -> str:
    """A variant in words (result.json; `short`: tile titles)."""
    j = max(1, size // JITTER_DIVISOR)
    if short:
        regs = "decay + blur, " if param == "pixels" else ""
        return (
            "WITHOUT regularisers" if variant == "plain" else f"WITH regularisers ({regs}pad + jitter {j} px)"
        )
    if variant == "plain":
        return "without regularisers (plain ascent, no transforms)"
    regs = "Yosinski decay 1e-4 + blur 1.0 px every 4 steps; " if param == "pixels" else ""
    return f"with regularisers: {regs}pad {j} + jitter {j} px"


# ------------------------------------------------------------------------------- excitation


def photo_channel_means(
    net: nn.Module, size: int, stages: Sequence[int], device: torch.device
) -> dict[int, Tensor]:
    """Every sample photo at size x size -> {stage: [photos, C] spatial mean of each channel}."""
    photos = torch.cat([prepare(open_image(n), net, size) for n in sample_names()])
    with torch.no_grad():
        acts = probe(net, photos.to(device), stages)
    return {s: acts[s].mean(dim=(2, 3)).double().cpu() for s in stages}


def excitation(
    net: nn.Module, stage: int, channels: Sequence[int], images: Tensor, photos: Tensor
) -> dict[str, Any]:
    """How strongly each image [K, 3, S, S] excites its own channel (spatial mean of its map)
    against that channel's mean and max over the photos ([P, C] from `photo_channel_means`)."""
    weight = next(net.parameters())
    with torch.no_grad():
        maps = probe(net, images.to(weight), [stage])[stage].mean(dim=(2, 3)).double().cpu()
    index = torch.tensor(list(channels))
    own = maps[torch.arange(len(index)), index]
    mean, peak = photos[:, index].mean(dim=0), photos[:, index].amax(dim=0)
    ratio = [float(o / m) if m > 0 else None for o, m in zip(own, mean)]
    known = sorted(r for r in ratio if r is not None)
    return {
        "image": own.tolist(),
        "photos_mean": mean.tolist(),
        "photos_max": peak.tolist(),
        "ratio": ratio,
        "median_ratio": float(np.median(known)) if known else None,
        "above_photos_mean": int((own > mean).sum()),
        "above_photos_max": int((own > peak).sum()),
    }


# ---------------------------------------------------------------------------------------- run


def filters_cell(
    net: nn.Module, plan: FiltersPlan, stage: int, variant: str, photos: Tensor, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One stage's images in one variant: arrays (images [K, 3, S, S], history [steps, K]) and
    the cell's record."""
    channels = plan.channels[stage]
    options = variant_options(variant, plan.size, plan.param)
    made = visualize_filters(
        net,
        stage,
        channels,
        size=plan.size,
        steps=plan.steps,
        seed=plan.seed,
        lr=plan.lr,
        param=plan.param,
        progress=progress,
        details=True,
        **options,
    )
    images = made.images.detach().float().cpu()
    record = {
        "stage": stage,
        "variant": variant,
        "channels": channels,
        "file": f"stage{stage}__{variant}.png",
        "description": describe_variant(variant, plan.size, plan.param),
        "excitation": excitation(net, stage, channels, images, photos),
        "final_objective": made.history[-1].tolist(),
        "stopped": made.stopped,
        "settings": made.settings,
    }
    return {"images": images.numpy(), "history": made.history.numpy()}, record


def run_filters(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    stages: int | Sequence[int] = DEFAULT_STAGES,
    channels: int | Sequence[int] = 16,
    size: int = 96,
    steps: int = 32,
    lr: float = 0.05,
    opt_seed: int = 0,
    param: str = "pixels",
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Filter visualisations per stage, plain and regularized; files written into `out_dir`
    (module doc); returns the result dict.

    seed: the model's (random initialisation); opt_seed: the starts' and transforms' (config key
    `seed`). Every value is checked before the model is built (ValueError naming the key; nothing
    written).
    """
    plan = validate_filters(
        model, weights, seed, stages, channels, size, steps, lr, opt_seed, param, device, dtype
    )
    config = config if config is not None else filters_config(plan, weights)
    job = Job(out_dir, "filters", plan.request, config, 2 * len(plan.stages), progress)
    photos = photo_channel_means(job.net, plan.size, plan.stages, plan.request.device)
    cells = []
    with job.progress():
        for stage in plan.stages:
            for variant in VARIANTS:
                cells.append(
                    job.cell(
                        f"stage{stage}__{variant}",
                        lambda: filters_cell(job.net, plan, stage, variant, photos[stage], progress),
                    )
                )
    for cell in cells:
        save_tile(
            filters_mosaic(job.images(cell["key"]), plan.request.preprocessing, plan.size),
            job.out / cell["file"],
        )
    result = {
        **model_header("filters", plan.request, job.weights),
        **filters_settings(plan),
        "data": {
            "label": f"no input image (grey-noise starts); excitation compared with "
            f"{len(sample_names())} sample photos at {plan.size} px",
            "photos": sample_names(),
        },
        "cells": cells,
    }
    header = title_lines("Filter visualisations (activation maximisation)", plan.request, job.weights)
    titles = {v: describe_variant(v, plan.size, plan.param, short=True) for v in VARIANTS}
    return job.finish(result, [filters_sheet(header, result, plan.request.skeleton, titles)])


def filters_config(plan: FiltersPlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r = plan.request
    first = plan.channels[plan.stages[0]]
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "stages": list(plan.stages),
        "channels": first,
        "size": plan.size,
        "steps": plan.steps,
        "lr": plan.lr,
        "seed": plan.seed,
        "param": plan.param,
        "device": str(r.device),
        "dtype": dtype_name(r.dtype),
    }


def filters_settings(plan: FiltersPlan) -> dict[str, Any]:
    """result.json's settings and display."""
    return {
        "settings": {
            "stages": list(plan.stages),
            "channels": plan.channels,
            "size": plan.size,
            "steps": plan.steps,
            "lr": plan.lr,
            "seed": plan.seed,
            "param": plan.param,
            "variants": {v: describe_variant(v, plan.size, plan.param) for v in VARIANTS},
        },
        "display": {
            "images": KERAS_DEPROCESS,
            "layout": "Keras example: n x n tiles (n = ceil(sqrt(K))), row by row "
            "in channel order, black gaps of max(2, size // 32) px",
        },
        "excitation_measure": "channel's spatial mean on the image / its mean over the sample "
        "photos (ratio, per image); counts above the photos' mean and "
        "max",
    }


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.filters`: the config as the arguments of `run_filters`."""
    return run_filters(
        out,
        **model_arguments(config),
        stages=config["stages"],
        channels=config["channels"],
        size=config["size"],
        steps=config["steps"],
        lr=config["lr"],
        param=config["param"],
        opt_seed=config["seed"],
        device=config["device"],
        config=dict(config),
        dtype=config.get("dtype", "float32"),
    )
