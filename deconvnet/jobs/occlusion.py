"""Fig. 7 of Zeiler & Fergus (occlusion sensitivity) as a job folder: `run_occlusion`, the work
behind `python -m experiments.occlusion`.

One row per image, five panels as in the paper: (a) the input with the occluder's positions (the
square at its first position, a dot at every square's centre), (b) the total activation of the
strongest stage-5 feature map at each position, (c) that feature map's strongest activation in
this image projected to pixels by the deconvnet, beside the top projections of the same channel
from a dataset scan (`deconvnet.analysis.scan.scan_topk` over `data`, each projected in its own image),
(d) the probability of the target class at each position, (e) the most probable label at each
position. Files: input_<image>.png, occlusion.png (the figure), maps.npz via images.npz (every
raw map: `<image>__probability` etc.), result.json, config.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.analysis.occlusion import check_method, check_occluder, occlusion
from deconvnet.analysis.scan import scan_topk
from deconvnet.core.reconstruct import reconstruct
from deconvnet.core.validation import check_count, is_int
from deconvnet.data.models import class_names, weights_label
from deconvnet.figures.occlusion import draw_occlusion
from deconvnet.figures.sheet import colours, save_tile
from deconvnet.jobs.data_config import check_data, make_dataset, require_whole_dataset
from deconvnet.jobs.job import (
    Job,
    Picture,
    check_image_size,
    check_pictures,
    classifier_note,
    model_header,
    prepare,
)
from deconvnet.jobs.request import ModelRequest, check_model, model_arguments

FIGURE_FILE = "occlusion.png"


@dataclass(frozen=True)
class OcclusionPlan:
    """A checked request."""

    request: ModelRequest
    pictures: tuple[Picture, ...]
    target: tuple[int | None, ...]  # one per picture (None: its predicted class)
    patch: int
    stride: int
    fill: float
    size: int
    top_k: int
    data: dict[str, Any]
    method: str
    batch_size: int
    stage: int = 5  # the stage whose strongest map (b) and (c) show


def check_targets(target: object, count: int, classes: int) -> tuple[int | None, ...]:
    """null, one class int for every image, or a list of one class int per image -> a tuple of
    `count` targets (None: that image's predicted class); ValueError naming `target`."""
    items = list(target) if isinstance(target, (list, tuple)) else [target] * count
    accepted = (
        f"null (each image's predicted class), a class int in 0..{classes - 1}, or a list of "
        f"{count} of them (one per image)"
    )
    if len(items) != count:
        raise ValueError(f"target: expected {accepted}, got {len(items)} targets for {count} images")
    for item in items:
        if item is not None and (not is_int(item) or not 0 <= int(item) < classes):
            raise ValueError(f"target: expected {accepted}, got {item!r}")
    return tuple(None if item is None else int(item) for item in items)


def validate_occlusion(
    model: object,
    weights: object,
    seed: object,
    images: object,
    target: object,
    patch: object,
    stride: object,
    fill: object,
    size: object,
    top_k: object,
    data: object,
    method: object,
    batch_size: object,
    device: object,
    stage: object = 5,
) -> OcclusionPlan:
    """Every value checked before anything is built or written (ValueError naming the key)."""
    request = check_model(model, weights, seed, device)
    if not is_int(stage) or not 1 <= stage <= 5:
        raise ValueError(f"stage: expected the stage of panels (b) and (c), an int in 1..5, got {stage!r}")
    size = check_image_size(request, size, 5)
    patch, stride, fill = check_occluder(torch.empty(1, 3, size, size), patch, stride, fill)
    pictures = tuple(check_pictures(images))
    targets = check_targets(target, len(pictures), len(class_names(request.name)))
    data = check_data(data)
    require_whole_dataset(data, "occlusion")
    if data["kind"] == "samples" and data.get("size") is None:
        data["size"] = size  # the gallery at the images' size: panel (c) tiles them together
    return OcclusionPlan(
        request,
        pictures,
        targets,
        patch,
        stride,
        fill,
        size,
        check_count("top_k", top_k),
        data,
        check_method(method),
        check_count("batch_size", batch_size),
        int(stage),
    )


def scan_cell(
    net: nn.Module, plan: OcclusionPlan, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The dataset's top-k images of every channel of the plan's stage: arrays values / image / y /
    x [C, k]."""
    from deconvnet.data.datasets import batches

    dataset, summary = make_dataset(plan.data, net, progress)
    top = scan_topk(
        net,
        (b.to(plan.request.device) for b in batches(dataset, 16)),
        k=plan.top_k,
        stages=(plan.stage,),
        progress=progress,
        total=len(batches(dataset, 16)),
    )[plan.stage]
    arrays = {name: getattr(top, name).cpu().numpy() for name in ("values", "image", "y", "x")}
    return arrays, {"data": summary, "ids": list(dataset.ids)}


def image_cell(
    net: nn.Module,
    plan: OcclusionPlan,
    x: Tensor,
    target: int | None,
    dataset: Any,
    top: Mapping[str, np.ndarray],
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One image's maps [1, ny, nx], and the strongest map projected in it and in the scan's top k
    by the deconvnet and by guided backprop ([k+1, 3, H, W] each)."""
    made = occlusion(
        net,
        x,
        target,
        plan.patch,
        plan.stride,
        plan.fill,
        method=plan.method,
        batch_size=plan.batch_size,
        progress=progress,
        stage=plan.stage,
    )
    channel = int(made.channel[0])
    gallery = [int(i) for i in top["image"][channel]]
    images = torch.cat([x, *(dataset[i][0].unsqueeze(0).to(x.device) for i in gallery)])
    arrays = {
        "probability": made.probability.numpy(),
        "feature": made.feature.numpy(),
        "label": made.label.numpy(),
        "projections": reconstruct(net, images, plan.stage, keep=channel).cpu().numpy(),
        "guided": reconstruct(net, images, plan.stage, keep=channel, rule="guided").cpu().numpy(),
    }
    record = {
        "target": int(made.target[0]),
        "channel": channel,
        "unoccluded": {
            "probability": float(made.unoccluded_probability[0]),
            "feature": float(made.unoccluded_feature[0]),
            "label": int(made.unoccluded_label[0]),
        },
        "top": made.top.tolist(),
        "left": made.left.tolist(),
        "gallery_images": gallery,
        "gallery_values": top["values"][channel].tolist(),
        "settings": made.settings,
    }
    return arrays, record


def run_occlusion(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    images: str | Sequence[str] = ("cat", "motorcycle", "astronaut"),
    target: int | None = None,
    patch: int = 48,
    stride: int = 16,
    fill: float = 0.0,
    size: int | None = None,
    top_k: int = 3,
    data: Mapping[str, Any] | None = None,
    method: str = "incremental",
    batch_size: int = 16,
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
    stage: int = 5,
) -> dict[str, Any]:
    """Fig. 7 for each image into `out_dir` (module doc); the result dict. Every value is checked
    before the model is built (nothing written)."""
    plan = validate_occlusion(
        model,
        weights,
        seed,
        images,
        target,
        patch,
        stride,
        fill,
        size,
        top_k,
        data,
        method,
        batch_size,
        device,
        stage,
    )
    config = config if config is not None else occlusion_config(plan, weights)
    job = Job(out_dir, "occlusion", plan.request, config, len(plan.pictures) + 1, progress)
    with job.progress():
        scanned = job.cell("scan", lambda: scan_cell(job.net, plan, progress))
        rows = image_rows(job, plan, progress)
    return occlusion_result(job, plan, scanned, rows)


def image_rows(job: Job, plan: OcclusionPlan, progress: bool) -> list[dict[str, Any]]:
    """Each image's cell (after the scan's), its input written: the figure's rows (the cell's
    record, label, input colours [3, H, W] and arrays)."""
    top = job.done.arrays("scan")
    dataset, _ = make_dataset(plan.data, job.net, progress)
    rows = []
    for picture, target in zip(plan.pictures, plan.target):
        x = prepare(picture.image, job.net, plan.size).to(plan.request.device)
        cell = job.cell(picture.label, lambda: image_cell(job.net, plan, x, target, dataset, top, progress))
        colours_x = colours(x.cpu(), plan.request.preprocessing)[0]
        save_tile(colours_x, job.out / f"input_{picture.label}.png")
        job.keep(f"{picture.label}__input", x)
        rows.append(
            {**cell, "label": picture.label, "input": colours_x, "arrays": job.done.arrays(picture.label)}
        )
    return rows


def occlusion_result(
    job: Job, plan: OcclusionPlan, scanned: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The figure drawn, then result.json written (`Job.finish`); the result dict."""
    names = class_names(plan.request.name)
    note = classifier_note(job.weights)
    figure = draw_occlusion(
        job.out / FIGURE_FILE,
        rows,
        names,
        plan.patch,
        plan.stride,
        plan.request.name,
        weights_label(job.weights),
        note,
    )
    cells = [{k: v for k, v in r.items() if k not in ("input", "arrays")} for r in rows]
    for cell in cells:
        cell["target_name"] = names[cell["target"]]
    result = {
        **model_header("occlusion", plan.request, job.weights, note),
        "settings": occlusion_settings(plan),
        "scan": scanned,
        "cells": cells,
        "figure": figure.name,
    }
    return job.finish(result, [])


def occlusion_settings(plan: OcclusionPlan) -> dict[str, Any]:
    """result.json's "settings": every value used and what the maps mean."""
    return {
        "target": None if all(t is None for t in plan.target) else list(plan.target),
        "patch": plan.patch,
        "stride": plan.stride,
        "fill": plan.fill,
        "size": plan.size,
        "top_k": plan.top_k,
        "method": plan.method,
        "batch_size": plan.batch_size,
        "data": plan.data,
        "fill_meaning": "normalised input space: 0.0 is the dataset's mean colour (grey)",
        "stage": plan.stage,
        "feature": f"total activation of the stage-{plan.stage} map with the largest single activation "
        "on the unoccluded image",
    }


def occlusion_config(plan: OcclusionPlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r = plan.request
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "images": [p.info["source"] for p in plan.pictures],
        "target": None if all(t is None for t in plan.target) else list(plan.target),
        "patch": plan.patch,
        "stride": plan.stride,
        "fill": plan.fill,
        "size": plan.size,
        "top_k": plan.top_k,
        "data": plan.data,
        "method": plan.method,
        "batch_size": plan.batch_size,
        "stage": plan.stage,
        "device": str(r.device),
    }


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.occlusion`: the config as the arguments of `run_occlusion`."""
    return run_occlusion(
        out,
        **model_arguments(config),
        images=config["images"],
        target=config["target"],
        patch=config["patch"],
        stride=config["stride"],
        fill=config["fill"],
        size=config["size"],
        top_k=config["top_k"],
        data=config["data"],
        method=config["method"],
        batch_size=config["batch_size"],
        device=config["device"],
        config=dict(config),
        stage=config.get("stage", 5),
    )
