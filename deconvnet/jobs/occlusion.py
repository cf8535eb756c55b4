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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.analysis.occlusion import check_method, check_occluder, occlusion
from deconvnet.analysis.scan import scan_topk
from deconvnet.core.display import tile_grid, to_display
from deconvnet.core.reconstruct import reconstruct
from deconvnet.core.validation import check_count, is_int
from deconvnet.data.models import class_names, weights_label
from deconvnet.jobs.data_config import check_data, make_dataset, require_whole_dataset
from deconvnet.jobs.job import (
    Job,
    ModelRequest,
    Picture,
    check_image_size,
    check_model,
    check_pictures,
    classifier_note,
    colours,
    model_header,
    prepare,
    save_tile,
)

FIGURE_FILE = "occlusion.png"


@dataclass(frozen=True)
class OcclusionPlan:
    """A checked request."""

    request: ModelRequest
    pictures: tuple[Picture, ...]
    target: int | None
    patch: int
    stride: int
    fill: float
    size: int
    top_k: int
    data: dict[str, Any]
    method: str
    batch_size: int


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
) -> OcclusionPlan:
    """Every value checked before anything is built or written (ValueError naming the key)."""
    request = check_model(model, weights, seed, device)
    size = check_image_size(request, size, 5)
    patch, stride, fill = check_occluder(torch.empty(1, 3, size, size), patch, stride, fill)
    classes = len(class_names(request.name))
    if target is not None and (not is_int(target) or not 0 <= int(target) < classes):
        raise ValueError(
            f"target: expected null (each image's predicted class) or a class int "
            f"in 0..{classes - 1}, got {target!r}"
        )
    data = check_data(data)
    require_whole_dataset(data, "occlusion")
    if data["kind"] == "samples" and data.get("size") is None:
        data["size"] = size  # the gallery at the images' size: panel (c) tiles them together
    return OcclusionPlan(
        request,
        tuple(check_pictures(images)),
        None if target is None else int(target),
        patch,
        stride,
        fill,
        size,
        check_count("top_k", top_k),
        data,
        check_method(method),
        check_count("batch_size", batch_size),
    )


def scan_cell(
    net: nn.Module, plan: OcclusionPlan, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The dataset's top-k images of every stage-5 channel: arrays values / image / y / x [C, k]."""
    from deconvnet.data.datasets import batches

    dataset, summary = make_dataset(plan.data, net, progress)
    top = scan_topk(
        net,
        (b.to(plan.request.device) for b in batches(dataset, 16)),
        k=plan.top_k,
        stages=(5,),
        progress=progress,
        total=len(batches(dataset, 16)),
    )[5]
    arrays = {name: getattr(top, name).cpu().numpy() for name in ("values", "image", "y", "x")}
    return arrays, {"data": summary, "ids": list(dataset.ids)}


def image_cell(
    net: nn.Module,
    plan: OcclusionPlan,
    x: Tensor,
    dataset: Any,
    top: Mapping[str, np.ndarray],
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One image's maps [1, ny, nx], its projection and the scan's projections [k+1, 3, H, W]."""
    made = occlusion(
        net,
        x,
        plan.target,
        plan.patch,
        plan.stride,
        plan.fill,
        method=plan.method,
        batch_size=plan.batch_size,
        progress=progress,
    )
    channel = int(made.channel[0])
    shown = [reconstruct(net, x, 5, keep=channel)]
    gallery = [int(i) for i in top["image"][channel]]
    for index in gallery:
        image = dataset[index][0].unsqueeze(0).to(x.device)
        shown.append(reconstruct(net, image, 5, keep=channel))
    arrays = {
        "probability": made.probability.numpy(),
        "feature": made.feature.numpy(),
        "label": made.label.numpy(),
        "projections": torch.cat(shown).cpu().numpy(),
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
    )
    config = config if config is not None else occlusion_config(plan, weights)
    job = Job(out_dir, "occlusion", plan.request, config, len(plan.pictures) + 1, progress)
    with job.progress():
        scanned = job.cell("scan", lambda: scan_cell(job.net, plan, progress))
        top = job.done.arrays("scan")
        dataset, _ = make_dataset(plan.data, job.net, progress)
        rows = []
        for picture in plan.pictures:
            x = prepare(picture.image, job.net, plan.size).to(plan.request.device)
            cell = job.cell(picture.label, lambda: image_cell(job.net, plan, x, dataset, top, progress))
            colours_x = colours(x.cpu(), plan.request.preprocessing)[0]
            save_tile(colours_x, job.out / f"input_{picture.label}.png")
            job.keep(f"{picture.label}__input", x)
            rows.append(
                {**cell, "label": picture.label, "input": colours_x, "arrays": job.done.arrays(picture.label)}
            )
    names = class_names(plan.request.name)
    note = classifier_note(job.weights)
    figure = draw_occlusion(
        job.out / FIGURE_FILE, plan, rows, names, scanned["ids"], weights_label(job.weights), note
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
    return {
        "target": plan.target,
        "patch": plan.patch,
        "stride": plan.stride,
        "fill": plan.fill,
        "size": plan.size,
        "top_k": plan.top_k,
        "method": plan.method,
        "batch_size": plan.batch_size,
        "data": plan.data,
        "fill_meaning": "normalised input space: 0.0 is the dataset's mean colour (grey)",
        "feature": "total activation of the stage-5 map with the largest single activation "
        "on the unoccluded image",
    }


def occlusion_config(plan: OcclusionPlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r = plan.request
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "images": [p.info["source"] for p in plan.pictures],
        "target": plan.target,
        "patch": plan.patch,
        "stride": plan.stride,
        "fill": plan.fill,
        "size": plan.size,
        "top_k": plan.top_k,
        "data": plan.data,
        "method": plan.method,
        "batch_size": plan.batch_size,
        "device": str(r.device),
    }


# ------------------------------------------------------------------------------------ figure


def _mosaic(projections: np.ndarray) -> np.ndarray:
    """[1 + k, 3, H, W] projections -> [H', W', 3]: this image's projection first, then the k
    dataset projections, in a near-square grid (each scaled by its own max |r|)."""
    shown = to_display(torch.from_numpy(projections))
    cols = math.ceil(math.sqrt(len(shown)))
    rows = math.ceil(len(shown) / cols)
    return tile_grid(shown, rows, cols, pad=6).permute(1, 2, 0).numpy()


def _label_panel(ax, labels: np.ndarray, names: Sequence[str], note: str | None) -> None:
    """(e): the most probable class per position, one colour per class, the classes named."""
    import matplotlib.pyplot as plt

    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse.ravel())
    order = np.argsort(-counts, kind="stable")
    cmap = plt.get_cmap("tab10")
    colour_of = {int(c): cmap(rank % 10) for rank, c in enumerate(classes[order])}
    picture = np.array([[colour_of[int(v)] for v in row] for row in labels])
    ax.imshow(picture, interpolation="nearest")
    text = "\n".join(f"{names[int(classes[i])][:18]} ({counts[i]})" for i in order[:4])
    ax.text(1.02, 1.0, text, transform=ax.transAxes, fontsize=6, va="top")
    for _rank, i in enumerate(order[:4]):
        ax.plot([], [], "s", color=colour_of[int(classes[i])])
    ax.set_title("(e) most probable label" + ("\n" + note if note else ""), fontsize=7)


def draw_occlusion(
    path: Path,
    plan: OcclusionPlan,
    rows: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    ids: Sequence[str],
    label: str,
    note: str | None,
) -> Path:
    """The figure: one row per image, panels (a)..(e) (module doc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3.3 * len(rows) + 0.8), squeeze=False)
    for ax_row, row in zip(axes, rows):
        a = row["arrays"]
        ax = ax_row[0]
        ax.imshow(row["input"].permute(1, 2, 0).numpy())
        centres = [(t + plan.patch / 2, l + plan.patch / 2) for t in row["top"] for l in row["left"]]
        ax.plot([c[1] for c in centres], [c[0] for c in centres], ".", ms=2, color="white")
        ax.add_patch(
            Rectangle(
                (row["left"][0] - 0.5, row["top"][0] - 0.5),
                plan.patch,
                plan.patch,
                facecolor=(0.5, 0.5, 0.5),
                edgecolor="white",
            )
        )
        ax.set_title(
            f"(a) {row['label']}: {len(row['top'])}x{len(row['left'])} positions of a {plan.patch} px square",
            fontsize=7,
        )
        im = ax_row[1].imshow(a["feature"][0], cmap="viridis")
        fig.colorbar(im, ax=ax_row[1], fraction=0.046)
        ax_row[1].set_title(
            f"(b) total activation of stage-5 map {row['channel']}\n"
            f"(unoccluded {row['unoccluded']['feature']:.4g})",
            fontsize=7,
        )
        ax_row[2].imshow(_mosaic(a["projections"]))
        ax_row[2].set_title(
            f"(c) map {row['channel']} projected (deconvnet):\nthis image (top left), "
            f"then the scan's top {len(row['gallery_images'])}",
            fontsize=7,
        )
        im = ax_row[3].imshow(a["probability"][0], cmap="jet")
        fig.colorbar(im, ax=ax_row[3], fraction=0.046)
        ax_row[3].set_title(f"(d) p({names[row['target']][:20]})" + (f"\n{note}" if note else ""), fontsize=7)
        _label_panel(ax_row[4], a["label"][0], names, note)
        for ax in ax_row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"Occlusion sensitivity (Zeiler & Fergus Fig. 7): {plan.request.name} "
        f"[{label}]; grey square = the mean colour, stride {plan.stride} px",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
