"""A grid of gradient-family maps: images x methods, all explaining one target.

`run_saliency(out_dir, ...)` (the work behind `python -m experiments.saliency`) loads the model,
explains every image with every method of `deconvnet.METHODS` asked for, and writes into `out_dir`:

    <image>__input.png       the input as the model sees it (after the weights' preprocessing)
    <image>__<method>.png    one picture per cell (display per method: `deconvnet.figures.saliency.DISPLAYS`)
    maps.npz                 every raw map, float32, key `<image>__<method>` ([3, H, W]; Grad-CAM
                             [H, W])
    grid.png                 rows = images, columns = input + methods; the title names the weights
                             exactly (`weights_label`) and what is explained
    result.json, config.yaml

Each image is explained on its own ([1, 3, H, W]): a cell depends only on its image, the method,
the target and the options, so `images=cat` alone gives the same map as the cat row of a grid.

The target is one for the whole grid: target=None each image's predicted class, target=c class c
(the unnormalised logit), or unit=[stage] (the stage's strongest unit in each image),
[stage, channel] (that channel's strongest unit), [stage, channel, y, x] (that unit). Class scores
of a model whose classifier is random (weights "random", or "hed": learned convolutions, random
classifier) mean nothing; the title and result.json say so.

`render_saliency(job_dir)` redraws grid.png from the saved PNGs and result.json, without the model.
The drawing is in `deconvnet.figures.saliency`, integrated gradients' completeness check in
`deconvnet.gradient.integrated`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from deconvnet.core.architecture import STAGES
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.display import save_png
from deconvnet.core.geometry import stage_sizes
from deconvnet.core.targets import Rows, Unit, class_count
from deconvnet.core.validation import check_count, check_real, check_seed, is_int
from deconvnet.data.images import denormalize, describe_image, open_image, preprocess
from deconvnet.data.models import class_names, preprocessing, weights_label
from deconvnet.figures.saliency import DISPLAY_DESCRIPTIONS, DISPLAYS, draw_grid, read_tile, redraw_grid, show
from deconvnet.gradient.explained import describe_explained, resolve_explained
from deconvnet.gradient.integrated import ZERO_BASELINE, completeness
from deconvnet.gradient.methods import CAM_METHODS, CLASS_ONLY_METHODS, METHODS, explain, options_for
from deconvnet.gradient.passes import GradientPass
from deconvnet.jobs.folder import CONFIG_FILE, RESULT_FILE, Checkpoints, JobFolder
from deconvnet.jobs.provenance import provenance
from deconvnet.jobs.request import ModelRequest, check_model, load_logged, model_arguments

log = logging.getLogger(__name__)

DEFAULT_IMAGES = ("cat", "coffee", "astronaut", "motorcycle")
RANDOM_CLASSIFIER_NOTE = "class scores of a RANDOM classifier: not meaningful"
GRID_FILE, MAPS_FILE = "grid.png", "maps.npz"


@dataclass(frozen=True)
class Picture:
    """One validated input image: its label (file names, maps.npz keys) and where it comes from."""

    label: str
    image: Image.Image
    info: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """A validated request."""

    pictures: tuple[Picture, ...]
    methods: tuple[str, ...]
    target: int | None
    unit: tuple[int, ...] | None
    samples: int
    noise: float
    steps: int
    cam_stage: int
    noise_seed: int
    request: ModelRequest

    @property
    def device(self) -> torch.device:
        return self.request.device


# ------------------------------------------------------------------------------------- validation


def _as_int(value: object) -> int | None:
    """An int, or a string of digits as an int; None for anything else."""
    if is_int(value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _listed(value: object) -> list | None:
    """A list / tuple (Hydra ListConfig included) as a list, else None."""
    if isinstance(value, (list, tuple)):
        return list(value)
    try:
        from omegaconf import ListConfig
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core
        return None
    return list(value) if isinstance(value, ListConfig) else None


def image_label(source: str | Path) -> str:
    """A sample's name, or a file's stem, made safe for file names and maps.npz keys."""
    path = Path(source).expanduser()
    name = path.stem if path.is_file() else str(source)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "image"


def parse_images(images: object) -> list[str]:
    """null -> DEFAULT_IMAGES; a string -> [it]; a list of strings -> it; ValueError otherwise."""
    accepted = "a sample name or image path, or a non-empty list of them"
    if images is None:
        return list(DEFAULT_IMAGES)
    if isinstance(images, (str, Path)):
        items = [images]
    else:
        items = _listed(images)
        if items is None:
            raise ValueError(f"images: expected {accepted}, got {images!r}")
    if not items:
        raise ValueError(f"images: expected {accepted}, got an empty list")
    for item in items:
        if not isinstance(item, (str, Path)) or not str(item).strip():
            raise ValueError(f"images: expected {accepted}, got the item {item!r}")
    return [str(item) for item in items]


def parse_methods(methods: object, unit: bool = False) -> list[str]:
    """null -> every method of METHODS in order (for a `unit` target those that explain units);
    a name -> [it]; a list of names -> it."""
    accepted = f"one of {', '.join(METHODS)}, a list of them, or null (all)"
    if methods is None:
        return [m for m in METHODS if not (unit and m in CLASS_ONLY_METHODS)]
    items = [methods] if isinstance(methods, str) else _listed(methods)
    if not items:
        raise ValueError(f"methods: expected {accepted}, got {methods!r}")
    for item in items:
        if not isinstance(item, str) or item not in METHODS:
            raise ValueError(f"methods: expected {accepted}, got {item!r}")
    repeated = sorted({m for m in items if items.count(m) > 1})
    if repeated:
        raise ValueError(f"methods: each method once, got {', '.join(repeated)} more than once")
    if unit and set(items) & set(CLASS_ONLY_METHODS):
        only = ", ".join(m for m in items if m in CLASS_ONLY_METHODS)
        raise ValueError(f"methods: {only} explains class targets only; drop it or give a class target")
    return list(items)


def parse_target(target: object, classes: int) -> int | None:
    """null (each image's predicted class) or a class int in 0..classes-1."""
    if target is None:
        return None
    value = _as_int(target)
    if value is None or not 0 <= value < classes:
        raise ValueError(
            f"target: expected null (each image's predicted class) or a class int in "
            f"0..{classes - 1}, got {target!r}"
        )
    return value


def parse_unit(unit: object, skeleton: nn.Module, size: tuple[int, int]) -> tuple[int, ...] | None:
    """null, [stage], [stage, channel] or [stage, channel, y, x] (a bare int: [stage]), each
    within the model at the input size `size`."""
    accepted = (
        "null, [stage] (its strongest unit), [stage, channel] (that channel's strongest "
        "unit) or [stage, channel, y, x]"
    )
    if unit is None:
        return None
    items = [unit] if is_int(unit) else _listed(unit)
    values = None if items is None else [_as_int(v) for v in items]
    if values is None or len(values) not in (1, 2, 4) or None in values:
        raise ValueError(f"unit: expected {accepted}, got {unit!r}")
    stage = values[0]
    if stage not in STAGES:
        raise ValueError(f"unit: the stage must be an int in 1..5, got {stage!r} in {unit!r}")
    if len(values) >= 2:
        channels = stage_of(skeleton, stage).channels
        if not 0 <= values[1] < channels:
            raise ValueError(
                f"unit: channel {values[1]} is outside stage {stage}'s channels 0..{channels - 1}"
            )
    if len(values) == 4:
        h, w = stage_sizes(skeleton, *size)[stage]
        y, x = values[2], values[3]
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(
                f"unit: position (y, x) = ({y}, {x}) is outside stage {stage}'s "
                f"{h}x{w} map at {size[0]}x{size[1]} input (y in 0..{h - 1}, "
                f"x in 0..{w - 1})"
            )
    return tuple(values)


def validate(
    model: str,
    weights: object,
    seed: object,
    images: object,
    methods: object,
    target: object,
    unit: object,
    samples: object,
    noise: object,
    steps: object,
    cam_stage: object,
    noise_seed: object,
    device: object,
) -> Plan:
    """Check every value before anything heavy runs; ValueError / FileNotFoundError naming the
    key, before the model is built and before anything is written."""
    request = check_model(model, weights, seed, device)  # the architecture only: no weights
    chosen_target, chosen_unit = parse_explained(target, unit, request)
    method_names = parse_methods(methods, chosen_unit is not None)
    samples = check_count("samples", samples)
    noise = check_real("noise", noise)
    steps = check_count("steps", steps)
    stage = parse_cam_stage(cam_stage, chosen_unit, method_names)
    noise_seed = check_seed(noise_seed, "SmoothGrad's noise")
    return Plan(
        open_pictures(images),
        tuple(method_names),
        chosen_target,
        chosen_unit,
        samples,
        noise,
        steps,
        stage,
        noise_seed,
        request,
    )


def parse_explained(
    target: object, unit: object, request: ModelRequest
) -> tuple[int | None, tuple[int, ...] | None]:
    """The class target and the unit, each checked against the model (at its crop size); at most
    one of them given."""
    skeleton = request.skeleton
    crop = preprocessing(request.name).crop_size
    chosen_target = parse_target(target, class_count(skeleton))
    chosen_unit = parse_unit(unit, skeleton, (crop, crop))
    if chosen_target is not None and chosen_unit is not None:
        raise ValueError(
            f"target: give a class target or a unit, not both (got target={target!r}, unit={unit!r})"
        )
    return chosen_target, chosen_unit


def parse_cam_stage(cam_stage: object, unit: tuple[int, ...] | None, methods: Sequence[str]) -> int:
    """Grad-CAM's stage, an int in 1..5, not above the unit's stage when a Grad-CAM method runs."""
    stage = _as_int(cam_stage)
    if stage not in STAGES:
        raise ValueError(f"cam_stage: expected an int in 1..5 (Grad-CAM's stage), got {cam_stage!r}")
    if unit is not None and stage > unit[0] and set(methods) & set(CAM_METHODS):
        raise ValueError(
            f"cam_stage: Grad-CAM at stage {stage} lies above the unit's stage "
            f"{unit[0]}; choose cam_stage in 1..{unit[0]}"
        )
    return int(stage)


def open_pictures(images: object) -> tuple[Picture, ...]:
    """Every requested image opened (FileNotFoundError for a missing file or unknown sample), each
    with its own label."""
    pictures = []
    for source in parse_images(images):
        picture = open_image(source)  # missing file / unknown sample -> FileNotFoundError
        pictures.append(
            Picture(
                image_label(source),
                picture,
                describe_image(source) | {"original_size_wh": list(picture.size)},
            )
        )
    labels = [p.label for p in pictures]
    repeated = sorted({name for name in labels if labels.count(name) > 1})
    if repeated:
        raise ValueError(
            f"images: each image needs its own name; {', '.join(repeated)} appears more than once"
        )
    return tuple(pictures)


# ----------------------------------------------------------------------------------------- targets


def explain_target(plan: Plan) -> int | Unit | None:
    """What `deconvnet.explain` is given: None, a class, or a Unit."""
    if plan.unit is None:
        return plan.target
    return Unit(*plan.unit)


def classifier_is_random(weights: Mapping[str, Any]) -> bool | None:
    """True for random and HED weights (random classifier), False for ImageNet, None unknown."""
    kind = weights.get("weights")
    if kind in ("random", "hed"):
        return True
    if kind == "imagenet":
        return False
    return None


def describe_request(plan: Plan) -> str:
    """The grid's target in words."""
    if plan.unit is not None:
        if len(plan.unit) == 1:
            return f"unit: the strongest unit of stage {plan.unit[0]} in each image"
        if len(plan.unit) == 2:
            return f"unit: the strongest unit of stage {plan.unit[0]} channel {plan.unit[1]}"
        stage, channel, y, x = plan.unit
        return f"unit: stage {stage} channel {channel} at ({y}, {x})"
    if plan.target is None:
        return "class: each image's predicted class (its logit)"
    return f"class: {plan.target} (its logit)"


# ----------------------------------------------------------------------------------------- display


def _uint8(shown: Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> [H, W, 3] uint8, rounded exactly as `save_png` does."""
    return (shown.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _stats(r: Tensor) -> dict[str, Any]:
    r = r.double()
    return {
        "shape": list(r.shape),
        "min": float(r.min()),
        "max": float(r.max()),
        "sum": float(r.sum()),
        "l2_norm": float(r.norm()),
    }


# -------------------------------------------------------------------------------------------- run


def run_saliency(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    images: str | Sequence[str] | None = DEFAULT_IMAGES,
    methods: str | Sequence[str] | None = None,
    target: int | None = None,
    unit: int | Sequence[int] | None = None,
    samples: int = 50,
    noise: float = 0.15,
    steps: int = 50,
    cam_stage: int = 5,
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    noise_seed: int = 0,
) -> dict[str, Any]:
    """Explain every image with every method for one target; write PNGs, maps.npz, grid.png,
    config.yaml and result.json into `out_dir`; return the result dict.

    seed: the model's (random initialisation); noise_seed: SmoothGrad's noise (config key `seed`).
    images None: DEFAULT_IMAGES; methods None: all of METHODS; target None and unit None: each
    image's predicted class. samples / noise: SmoothGrad; steps: integrated gradients; cam_stage:
    Grad-CAM's `stage`. Every value is checked before the model is built (ValueError /
    FileNotFoundError naming the key; nothing written).
    """
    started = time.perf_counter()
    plan = validate(
        model,
        weights,
        seed,
        images,
        methods,
        target,
        unit,
        samples,
        noise,
        steps,
        cam_stage,
        noise_seed,
        device,
    )
    config = plan_config(plan, model, weights, seed, device) if config is None else config
    with JobFolder(out_dir) as folder:
        out = folder.path
        done = folder.start(config)  # a rerun with the same config resumes from finished cells
        net, wdict, warning = load_for(plan)
        request = describe_request(plan)
        log_plan(plan, request)
        rows = explain_images(net, plan, out, done, progress)
        grid = grid_record(model, wdict, request, warning, plan, rows)
        draw_grid(out / GRID_FILE, grid, [r.input_tile for r in rows], [r.tiles for r in rows])
        result = build_result(plan, model, wdict, warning, rows, grid, config)
        result["seconds"] = round(time.perf_counter() - started, 3)
        folder.write_result(result)
        done.clear()
    total = len(plan.pictures) * len(plan.methods)
    log.info("wrote %d map(s), %s, %s and %s to %s", total, GRID_FILE, MAPS_FILE, RESULT_FILE, out)
    return result


def log_plan(plan: Plan, request: str) -> None:
    """Log what the grid will hold: images x methods, the target, the options, the device."""
    log.info(
        "%d image(s) x %d method(s); %s; samples %d noise %g steps %d cam_stage %d seed %d; device %s",
        len(plan.pictures),
        len(plan.methods),
        request,
        plan.samples,
        plan.noise,
        plan.steps,
        plan.cam_stage,
        plan.noise_seed,
        plan.device,
    )


def explain_images(
    net: nn.Module, plan: Plan, out: Path, done: Checkpoints, progress: bool
) -> list[ImageRow]:
    """Every image's row of maps, under one progress bar (cells already in `done` are reused);
    every raw map then saved into maps.npz."""
    rows: list[ImageRow] = []
    total = len(plan.pictures) * len(plan.methods)
    with (
        logging_redirect_tqdm(),
        tqdm(total=total, desc="saliency", unit="map", disable=total <= 1 or not progress) as bar,
    ):
        for picture in plan.pictures:
            rows.append(explain_image(net, plan, picture, out, done, bar))
    np.savez(out / MAPS_FILE, **{c["key"]: done.map(c["key"]) for r in rows for c in r.cells})
    return rows


def grid_record(
    model: str,
    wdict: Mapping[str, Any],
    request: str,
    warning: str | None,
    plan: Plan,
    rows: Sequence[ImageRow],
) -> dict[str, Any]:
    """What grid.png shows (kept in result.json, so the grid can be redrawn without the model)."""
    return {
        "title": grid_title(model, wdict, request, warning, plan),
        "columns": ["input", *plan.methods],
        "row_labels": [f"{r.entry['label']}\n{r.entry['explained_label']}" for r in rows],
        "warning": warning is not None,
        "random_weights": wdict.get("weights") == "random",
    }


def plan_config(plan: Plan, model: str, weights: object, seed: int, device: str) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    return {
        "model": {"name": model, "weights": str(weights), "seed": seed},
        "images": [p.info["source"] for p in plan.pictures],
        "methods": list(plan.methods),
        "target": plan.target,
        "unit": None if plan.unit is None else list(plan.unit),
        "samples": plan.samples,
        "noise": plan.noise,
        "steps": plan.steps,
        "cam_stage": plan.cam_stage,
        "seed": plan.noise_seed,
        "device": device,
    }


def load_for(plan: Plan) -> tuple[nn.Module, dict[str, Any], str | None]:
    """The model, its weights record, and the random-classifier warning (None if not needed)."""
    net, wdict = load_logged(plan.request, shown="Maps")
    warning = None
    if plan.unit is None and classifier_is_random(wdict):
        warning = RANDOM_CLASSIFIER_NOTE
        log.warning(
            "target: %s (weights: %s); a unit target (unit=[5]) explains learned features instead",
            warning,
            weights_label(wdict),
        )
    return net, wdict, warning


@dataclass
class ImageRow:
    """One image's row of the grid: its result.json entry, cells, and pictures."""

    entry: dict[str, Any]
    cells: list[dict[str, Any]]
    input_tile: np.ndarray
    tiles: list[np.ndarray]


def explain_image(
    net: nn.Module, plan: Plan, picture: Picture, out: Path, done: Checkpoints, bar: tqdm
) -> ImageRow:
    """Every method's map of one image: PNGs written, cells checkpointed (or taken from `done`)."""
    try:
        names = class_names(net)
    except ValueError:
        names = None
    target = explain_target(plan)
    x = preprocess(picture.image, net).unsqueeze(0).to(plan.device)
    input_shown = denormalize(x, net)[0].cpu()
    input_file = f"{picture.label}__input.png"
    save_png(input_shown, out / input_file)
    explained, rows, gradient_pass = resolve_explained(net, x, target, names)
    described = describe_explained(explained)
    log.info("image %s: explaining %s", picture.label, described)
    entry = {
        "label": picture.label,
        **picture.info,
        "input": input_file,
        "explained": explained,
        "explained_label": described,
    }
    cells, tiles = [], []
    for method in plan.methods:
        key = f"{picture.label}__{method}"
        cell = done.load(key)
        if cell is None:
            cell = explain_cell(
                net, plan, x, method, key, (explained, rows, gradient_pass), input_shown, out, done
            )
        cells.append(cell)
        tiles.append(read_tile(out / cell["file"]))
        bar.update(1)
    return ImageRow(entry, cells, _uint8(input_shown), tiles)


def explain_cell(
    net: nn.Module,
    plan: Plan,
    x: Tensor,
    method: str,
    key: str,
    resolved: tuple[dict[str, Any], Rows, GradientPass],
    input_shown: Tensor,
    out: Path,
    done: Checkpoints,
) -> dict[str, Any]:
    """One method's map of image x [1, 3, H, W]: PNG written, cell record checkpointed."""
    explained, rows, gradient_pass = resolved
    options = {
        "samples": plan.samples,
        "noise": plan.noise,
        "steps": plan.steps,
        "stage": plan.cam_stage,
        "seed": plan.noise_seed,
    }
    t0 = time.perf_counter()
    r = explain(net, x, method, explain_target(plan), **options_for(method, options))[0].float().cpu()
    save_png(show(method, r, input_shown), out / f"{key}.png")
    cell = {
        "image": key.split("__")[0],
        "method": method,
        "key": key,
        "file": f"{key}.png",
        "display": DISPLAYS[method],
        "target": explained,
        "map": _stats(r),
    }
    if method == "integrated_gradients":
        cell["completeness"] = check = completeness(x, rows, gradient_pass, r, explained)
        log.info(
            "%s integrated_gradients: sum %.4g vs score difference %.4g (relative error %s)",
            key,
            check["map_sum"],
            check["score_difference"],
            check["relative_error"],
        )
    cell["seconds"] = round(time.perf_counter() - t0, 4)
    done.save(key, r.numpy(), cell)
    return cell


def build_result(
    plan: Plan,
    model: str,
    wdict: Mapping[str, Any],
    warning: str | None,
    rows: list[ImageRow],
    grid: Mapping[str, Any],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """result.json's content."""
    return {
        "experiment": "saliency",
        "model": model,
        "weights": dict(wdict),
        "weights_label": weights_label(wdict),
        "random_weights": wdict.get("weights") == "random",
        "random_classifier": classifier_is_random(wdict),
        "target": {
            "request": describe_request(plan),
            "class": plan.target,
            "unit": None if plan.unit is None else list(plan.unit),
            "kind": "class" if plan.unit is None else "unit",
            "warning": warning,
        },
        "methods": list(plan.methods),
        "options": {
            "samples": plan.samples,
            "noise": plan.noise,
            "steps": plan.steps,
            "cam_stage": plan.cam_stage,
            "seed": plan.noise_seed,
            "integrated_gradients_baseline": ZERO_BASELINE,
        },
        "displays": {m: DISPLAY_DESCRIPTIONS[DISPLAYS[m]] for m in plan.methods},
        "images": [r.entry for r in rows],
        "data": {"label": "images: " + ", ".join(p.info["source"] for p in plan.pictures)},
        "device": str(plan.device),
        "image_size": list(rows[0].input_tile.shape[:2]),
        "files": {"grid": GRID_FILE, "maps": MAPS_FILE, "config": CONFIG_FILE},
        "grid": dict(grid),
        "cells": [c for r in rows for c in r.cells],
        "config": dict(config),
        "provenance": provenance(),
    }


# -------------------------------------------------------------------------------------------- grid


def grid_title(model: str, weights: Mapping[str, Any], request: str, warning: str | None, plan: Plan) -> str:
    """The grid's title: the model and its weights exactly, the target, the options."""
    label = weights_label(weights)
    random = weights.get("weights") == "random"
    lines = [f"{model} [{label.upper() if random else label}]", f"target = {request}"]
    if warning:
        lines.append(f"{warning.upper()} — the classifier's weights are random")
    lines.append(
        f"SmoothGrad {plan.samples} samples noise {plan.noise:g} seed {plan.noise_seed}; "
        f"integrated gradients {plan.steps} steps, baseline zeros; Grad-CAM at stage "
        f"{plan.cam_stage}"
    )
    lines.append(
        "gradient / smoothgrad_gradient: max|.| over colour, p99 grayscale; guided, "
        "deconvnet, guided_gradcam: signed, zero grey; IG, gradient x image: red + / "
        "blue -; gradcam: jet over the input"
    )
    return "\n".join(lines)


def render_saliency(job_dir: str | Path) -> Path:
    """Redraw `grid.png` of a finished job from its saved PNGs and result.json (no model)."""
    job = Path(job_dir)
    source = job / RESULT_FILE
    if not source.is_file():
        raise FileNotFoundError(f"job_dir: {source} does not exist (run experiments.saliency first)")
    return redraw_grid(job, json.loads(source.read_text()))


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.saliency`: the config as the arguments of `run_saliency`."""
    return run_saliency(
        out,
        **model_arguments(config),
        images=config["images"],
        methods=config["methods"],
        target=config["target"],
        unit=config["unit"],
        samples=config["samples"],
        noise=config["noise"],
        steps=config["steps"],
        cam_stage=config["cam_stage"],
        noise_seed=config["seed"],
        device=config["device"],
        config=dict(config),
    )
