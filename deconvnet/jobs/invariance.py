"""Zeiler & Fergus's Fig. 5 as a job folder (`run_invariance`, the work behind
`python -m experiments.invariance`): a few photos under vertical translation, scale and rotation,
and the paper's 3 x 4 panel figure, one row per transformation: (a) the images under a few of the
amounts, (b) the Euclidean distance between the feature vectors of the original and the
transformed image at layer 1, (c) the same at layer 7 (fc7), (d) the probability of the label
(each original's predicted class unless labels are given); one curve per image. The curves are
`deconvnet.analysis.invariance.invariance`'s; its module doc states every choice the paper leaves
open (what is transformed, the fill, directions, interpolation, the default amounts).

Any supported model: layers are stage numbers or names, module paths, "logits" (and fc6 / fc7
on VGG / AlexNet); by default the paper's (1, fc7) on VGG / AlexNet, elsewhere stage 1 and fc7's
analogue, the vector the logits are computed from (`deconvnet.analysis.layers`). Images get each
model's own preprocessing (EfficientNet-Lite0: (255 x - 127) / 128), so fill 0 is that
normalisation's mean colour (mid grey 127/255 on Lite0).

Where the classifier is random (random weights, and HED: learned VGG16 convolutions, no
classifier), the probability column says "class scores of a RANDOM classifier: not meaningful"
and every column of a layer computed by the classifier's weights (fc6, fc7, logits, the
classifier's modules) says that it is a random layer (with HED a random projection of the learned
pool5 maps); the title names the weights exactly (`weights_label`). With ImageNet weights
(EfficientNet-Lite0, offline) nothing is marked: the probability column is a real classifier's.

Files: `invariance.png` (the figure), `<transform>_examples.png` (column (a): rows = images,
columns = the amounts shown, colours clipped to [0, 1]), `invariance.npz` (`inputs` [B, 3, S, S]
float32 in the normalised input space, `labels` [B] int64, and per transform
`<t>__values` [T], `<t>__distance_<layer>` [B, T], `<t>__probability` [B, T] float64,
`<t>__predicted` [B, T] int64), result.json (model header, every setting, all curves,
provenance), config.yaml. Each transformation is one cell, checkpointed in `partial/`: an
interrupted job resumes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deconvnet.analysis import invariance as inv
from deconvnet.analysis.layers import default_layers, reads_classifier
from deconvnet.core.probe import point_key
from deconvnet.core.targets import class_count
from deconvnet.core.validation import as_list, check_count
from deconvnet.data.datasets import IMAGENET_MEAN
from deconvnet.data.models import Preprocessing, class_names
from deconvnet.figures.invariance import draw_examples, draw_invariance, examples_file, layer_title
from deconvnet.figures.sheet import COLOURS, colours
from deconvnet.jobs.class_model import check_class_list
from deconvnet.jobs.folder import CONFIG_FILE, RESULT_FILE, jsonable
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
from deconvnet.jobs.provenance import provenance
from deconvnet.jobs.request import ModelRequest, check_model, model_arguments

log = logging.getLogger(__name__)

EXPERIMENT = "invariance"
FIGURE_FILE, ARRAYS_FILE = "invariance.png", "invariance.npz"
DEFAULT_IMAGES = ("cat", "coffee", "motorcycle", "astronaut", "horse")
# a layer computed by the classifier's weights where they are random (random weights, HED)
RANDOM_HIDDEN_NOTE = "a RANDOM layer (the classifier's weights are random)"


@dataclass(frozen=True)
class InvariancePlan:
    """A checked request."""

    request: ModelRequest
    pictures: tuple[Picture, ...]
    transforms: tuple[str, ...]
    values: dict[str, tuple[float, ...]]
    layers: tuple[int | str, ...]
    labels: tuple[int, ...] | None
    fill: float
    size: int
    batch_size: int
    shown: int


def check_value_config(values: object, key: str = "values") -> dict[str, tuple[float, ...]]:
    """None or a mapping {transform: null or a list of amounts} -> every transform's amounts
    (null / missing: the paper's)."""
    if values is None:
        values = {}
    try:
        items = dict(values)  # a dict or Hydra's DictConfig
    except (TypeError, ValueError):
        items = None
    if items is None:
        raise ValueError(
            f"{key}: expected a mapping {{translate: ..., scale: ..., rotate: ...}} "
            f"(null: the paper's amounts), got {values!r}"
        )
    for name in items:
        if name not in inv.TRANSFORMS:
            raise ValueError(
                f"{key}: unknown transformation {name!r}; expected keys {', '.join(inv.TRANSFORMS)}"
            )
    return {n: inv.check_values(n, _plain_list(items.get(n)), f"{key}.{n}") for n in inv.TRANSFORMS}


def _plain_list(value: object) -> object:
    """Hydra's ListConfig (or a tuple / range) as a list; anything else unchanged."""
    listed = as_list(value)
    return value if listed is None else listed


def check_label_config(labels: object, count: int, names: Sequence[str]) -> tuple[int, ...] | None:
    """null, or one class (int or name, any case) per image -> class ints."""
    if labels is None:
        return None
    items = as_list(labels)
    if items is None or len(items) != count:
        raise ValueError(
            f"labels: expected null (each original image's predicted class) or a "
            f"list of {count} classes (ints or names), one per image, got {labels!r}"
        )
    return tuple(check_class_list(item, names, "labels", single=True)[0] for item in items)


def validate_invariance(
    model: object,
    weights: object,
    seed: object,
    images: object,
    transforms: object,
    values: object,
    layers: object,
    labels: object,
    fill: object,
    size: object,
    batch_size: object,
    shown: object,
    device: object,
) -> InvariancePlan:
    """Every value checked before anything is built or written (ValueError naming the key)."""
    request = check_model(model, weights, seed, device)
    names = inv.check_transforms(_plain_list(transforms))
    amounts = check_value_config(values)
    skeleton = request.skeleton
    chosen = (
        default_layers(skeleton, 1) if layers is None else inv.check_layers(skeleton, _plain_list(layers))
    )
    pictures = check_pictures(images)
    classes = class_names(request.name)[: class_count(request.skeleton)]
    return InvariancePlan(
        request,
        tuple(pictures),
        tuple(names),
        {n: amounts[n] for n in names},
        chosen,
        check_label_config(labels, len(pictures), classes),
        inv.check_fill(fill),
        check_image_size(request, size),
        check_count("batch_size", batch_size),
        check_count("shown", shown),
    )


def invariance_cell(
    net: nn.Module, plan: InvariancePlan, x: Tensor, transform: str, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One transformation's curves (all in the record: JSON keeps float64 exactly)."""
    labels = None if plan.labels is None else list(plan.labels)
    made = inv.invariance(
        net,
        x,
        transform,
        plan.values[transform],
        plan.layers,
        labels,
        plan.fill,
        plan.batch_size,
        progress=progress,
    )
    record = {
        "transform": transform,
        "values": list(plan.values[transform]),
        "distance": {point_key(layer): d for layer, d in made.distance.items()},
        "probability": made.probability,
        "predicted": made.predicted,
        "labels": made.labels,
        "labels_from": made.labels_from,
        "settings": made.settings,
    }
    return {}, record


def run_invariance(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    images: str | Sequence[str] = DEFAULT_IMAGES,
    transforms: str | Sequence[str] = inv.TRANSFORMS,
    values: Mapping[str, Sequence[float] | None] | None = None,
    layers: int | str | Sequence[int | str] | None = None,
    labels: Sequence[int | str] | None = None,
    fill: float = 0.0,
    size: int | None = None,
    batch_size: int = 8,
    shown: int = 5,
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fig. 5 for `images` (sample names or paths); files written into `out_dir` (module doc);
    the result dict.

    values: {transform: amounts or None (the paper's, `PAPER_VALUES`)}; layers: a curve column
    each (module doc; None: the model's default); labels: None (each original's predicted class)
    or one class per image; size None: the weights' crop size; shown: amounts drawn in column
    (a). Every value is checked before the model is built (nothing written); config.yaml
    records the layers used.
    """
    plan = validate_invariance(
        model,
        weights,
        seed,
        images,
        transforms,
        values,
        layers,
        labels,
        fill,
        size,
        batch_size,
        shown,
        device,
    )
    config = invariance_config(plan, weights) if config is None else {**config, "layers": list(plan.layers)}
    job = Job(out_dir, EXPERIMENT, plan.request, config, len(plan.transforms), progress)
    x = torch.cat([prepare(p.image, job.net, plan.size) for p in plan.pictures])
    x = x.to(plan.request.device)
    with job.progress():
        cells = [job.cell(t, lambda: invariance_cell(job.net, plan, x, t, progress)) for t in plan.transforms]
    note = classifier_note(job.weights)
    result = {
        **model_header(EXPERIMENT, plan.request, job.weights, note),
        "settings": invariance_settings(plan),
        "display": {"examples": COLOURS},
        "images": image_records(plan, cells[0]),
        "cells": cells,
        "figure": figure_spec(plan, job.weights, note),
    }
    for t in plan.transforms:
        draw_examples(job.out / examples_file(t), example_tiles(x.cpu(), plan, t))
    return finish(job, result, x)


def finish(job: Job, result: Mapping[str, Any], x: Tensor) -> dict[str, Any]:
    """invariance.npz, the figure and result.json; the checkpoints dropped; the result."""
    np.savez(job.out / ARRAYS_FILE, **arrays(result, x))
    full = {
        **jsonable(result),
        "files": {
            "figure": FIGURE_FILE,
            "arrays": ARRAYS_FILE,
            "config": CONFIG_FILE,
            "examples": [examples_file(c["transform"]) for c in result["cells"]],
        },
        "config": job.config,
        "provenance": provenance(),
        "seconds": round(time.perf_counter() - job.started, 3),
    }
    draw_invariance(job.out, full)
    job.complete(full)
    log.info("wrote %s, %s and %s to %s", FIGURE_FILE, ARRAYS_FILE, RESULT_FILE, job.out)
    return full


def arrays(result: Mapping[str, Any], x: Tensor) -> dict[str, np.ndarray]:
    """invariance.npz's arrays (module doc) from the cells' records and the inputs."""
    out = {
        "inputs": x.detach().cpu().float().numpy(),
        "labels": np.asarray(result["cells"][0]["labels"], dtype=np.int64),
    }
    for cell in result["cells"]:
        t = cell["transform"]
        out[f"{t}__values"] = np.asarray(cell["values"], dtype=np.float64)
        for layer, d in cell["distance"].items():
            out[f"{t}__distance_{layer}"] = np.asarray(d, dtype=np.float64)
        out[f"{t}__probability"] = np.asarray(cell["probability"], dtype=np.float64)
        out[f"{t}__predicted"] = np.asarray(cell["predicted"], dtype=np.int64)
    return out


# ---------------------------------------------------------------------------- records, config


def image_records(plan: InvariancePlan, cell: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each image: its label, where it is from, its label class and name."""
    names = class_names(plan.request.name)
    return [
        {"label": p.label, **p.info, "class": int(c), "class_name": names[int(c)]}
        for p, c in zip(plan.pictures, cell["labels"])
    ]


def invariance_settings(plan: InvariancePlan) -> dict[str, Any]:
    """result.json's "settings": every value used and what each curve means."""
    return {
        "transforms": list(plan.transforms),
        "values": {t: list(v) for t, v in plan.values.items()},
        "units": {t: inv.UNITS[t] for t in plan.transforms},
        "layers": [point_key(layer) for layer in plan.layers],
        "labels": None if plan.labels is None else list(plan.labels),
        "labels_from": "given"
        if plan.labels is not None
        else "each original image's predicted class (argmax of its logits)",
        "fill": plan.fill,
        "fill_means": fill_meaning(plan.request.preprocessing),
        "size": plan.size,
        "batch_size": plan.batch_size,
        "shown": plan.shown,
        "transformed": "the preprocessed tensor (resize, centre crop, resized to size), "
        "output the input's size",
        "distance": inv.DISTANCE,
        "probability": inv.PROBABILITY,
        "paper_values": {t: list(v) for t, v in inv.PAPER_VALUES.items()},
    }


def invariance_config(plan: InvariancePlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r = plan.request
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "images": [p.info["source"] for p in plan.pictures],
        "transforms": list(plan.transforms),
        "values": {t: list(v) for t, v in plan.values.items()},
        "layers": list(plan.layers),
        "labels": None if plan.labels is None else list(plan.labels),
        "fill": plan.fill,
        "size": plan.size,
        "batch_size": plan.batch_size,
        "shown": plan.shown,
        "device": str(r.device),
    }


# ------------------------------------------------------------------------------------ figure


def example_tiles(x: Tensor, plan: InvariancePlan, transform: str) -> Tensor:
    """x [B, 3, S, S] -> column (a)'s tiles [B, P, 3, S, S] in [0, 1]: each image under the P
    amounts shown, transformed as for the curves, shown as its colours."""
    values = plan.values[transform]
    picks = [values[i] for i in inv.shown_indices(len(values), plan.shown)]
    count = x.shape[0]
    moved = inv.transform_images(x.repeat_interleave(len(picks), dim=0), transform, picks * count, plan.fill)
    return colours(moved.float(), plan.request.preprocessing).unflatten(0, (count, len(picks)))


def fill_meaning(prep: Preprocessing) -> str:
    """What fill 0.0 is for these weights: the dataset's mean colour for torchvision's
    normalisation (`inv.FILL`), else the normalisation's own mean (EfficientNet-Lite0: 127/255)."""
    if tuple(prep.mean) == IMAGENET_MEAN:
        return inv.FILL
    return f"fill in the normalised input space (0.0 = {mean_colour(prep)})"


def mean_colour(prep: Preprocessing) -> str:
    """'the normalisation's mean colour, RGB (127, 127, 127)/255'."""
    rgb = ", ".join(f"{255 * m:.0f}" for m in prep.mean)
    return f"the normalisation's mean colour, RGB ({rgb})/255"


def figure_spec(plan: InvariancePlan, wdict: Mapping[str, Any], note: str | None) -> dict[str, Any]:
    """What the figure says besides the curves: titles, column headings, alarms."""
    lines = title_lines(
        "Invariance to vertical translation, scale and rotation (Zeiler & Fergus 2014, Fig. 5)",
        plan.request,
        wdict,
        note,
    )
    label = "the given label" if plan.labels is not None else "the class predicted on the original"
    prep = plan.request.preprocessing
    fill = "in the normalised input"
    if plan.fill == 0:
        fill = "the dataset's mean colour" if tuple(prep.mean) == IMAGENET_MEAN else mean_colour(prep)
    lines.append(
        f"{len(plan.pictures)} images at {plan.size} px; uncovered area filled with "
        f"{plan.fill:g} ({fill}); distance ||phi(x) - phi(T x)||_2; probability of "
        f"{label}"
    )
    letters = "abcdefghij"
    columns = [f"({letters[0]}) the images under the transformation"]
    alarms = [False]
    skeleton = plan.request.skeleton
    for i, layer in enumerate(plan.layers):
        random_layer = note is not None and reads_classifier(skeleton, layer)
        columns.append(
            f"({letters[i + 1]}) {layer_title(skeleton, layer)}: distance"
            + (f"\n{RANDOM_HIDDEN_NOTE}" if random_layer else "")
        )
        alarms.append(random_layer)
    columns.append(f"({letters[len(plan.layers) + 1]}) P({label})" + (f"\n{note}" if note else ""))
    alarms.append(note is not None)
    return {
        "file": FIGURE_FILE,
        "title": "\n".join(lines),
        "alarm": wdict.get("weights") == "random",
        "columns": columns,
        "column_alarms": alarms,
        "layers": [point_key(layer) for layer in plan.layers],
    }


def render_invariance(job_dir: str | Path) -> Path:
    """Redraw the figure of a finished invariance job from its result.json and example PNGs,
    without the model."""
    job = Path(job_dir)
    source = job / RESULT_FILE
    if not source.is_file():
        raise FileNotFoundError(f"job_dir: {source} does not exist (run the experiment first)")
    result = json.loads(source.read_text())
    if result.get("experiment") != EXPERIMENT:
        raise ValueError(
            f"job_dir: {source} names experiment {result.get('experiment')!r}; expected {EXPERIMENT!r}"
        )
    return draw_invariance(job, result)


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.invariance`: the config as the arguments of `run_invariance`."""
    return run_invariance(
        out,
        **model_arguments(config),
        images=config["images"],
        transforms=config["transforms"],
        values=config["values"],
        layers=config["layers"],
        labels=config["labels"],
        fill=config["fill"],
        size=config["size"],
        batch_size=config["batch_size"],
        shown=config["shown"],
        device=config["device"],
        config=dict(config),
    )
