"""Zeiler & Fergus's Table 1 as a job folder (`run_correspondence`, the work behind
`python -m experiments.correspondence`): the images and part boxes of a box file
(`deconvnet.analysis.correspondence.load_box_file`; default conf/correspondence/faces.yaml:
2 human portraits and 1 cat, not the paper's 5 dogs), each part occluded in each image and at
random positions, Delta per part and layer against the random control. Any supported model
(each with its own preprocessing; the boxes are in the 224-px crop every supported model's
preprocessing makes); layers by stage number or name, module path, "logits" (fc6 / fc7 on VGG /
AlexNet), by default the paper's (5, fc7) on VGG / AlexNet and stage 5 and fc7's analogue
elsewhere (`deconvnet.analysis.layers`). With HED weights the layers computed by its random
classifier are marked random (`hidden_note`).

Files: `table.md` (the table, markdown), `result.json` (model header, every setting, the box
file, the table's numbers per part and layer, per-pair distances, the random boxes, provenance),
`boxes.png` (a row per image: its part boxes outlined, then each part occluded and the first
random draw of that part's box as the model sees them; titles name the weights exactly), those
tiles as PNGs, `images.npz` (`input` [N, 3, 224, 224] normalised; `<part>__<layer>` [N, N] and
`<part>__random_<layer>` [draws, N, N] Hamming distances, float32, exact integers), config.yaml.
One cell per part, checkpointed in `partial/`: an interrupted job resumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from deconvnet.analysis.correspondence import (
    BoxFile,
    Correspondence,
    Layer,
    check_fill,
    check_layers,
    draw_random_boxes,
    features,
    layer_key,
    load_box_file,
    occlude,
    part_distances,
)
from deconvnet.analysis.layers import default_layers, reads_classifier
from deconvnet.core.validation import check_count, check_seed
from deconvnet.data.paths import REPO_ROOT
from deconvnet.figures.correspondence import layer_title, table_markdown, write_tiles
from deconvnet.figures.sheet import COLOURS, colours
from deconvnet.jobs.job import Job, Picture, check_pictures, model_header, prepare, title_lines
from deconvnet.jobs.request import ModelRequest, check_model, model_arguments

BOXES_DIR = REPO_ROOT / "conf" / "correspondence"
TABLE_FILE, SHEET_FILE = "table.md", "boxes.png"
HIDDEN_NOTE = (
    "fc6 / fc7 are RANDOM layers with HED weights (HED has no classifier): their "
    "sign changes are those of a random projection of HED's learned pool5"
)
# the same for other layers computed by HED's random classifier ("logits", "classifier.3", ...)
CLASSIFIER_NOTE = (
    "{layers} {verb} computed by HED's RANDOM classifier (HED has no classifier): their "
    "sign changes are those of a random projection of HED's learned pool5"
)


@dataclass(frozen=True)
class CorrespondencePlan:
    """A checked request."""

    request: ModelRequest
    boxes: BoxFile
    pictures: tuple[Picture, ...]
    layers: tuple[Layer, ...]
    random_draws: int
    seed: int
    fill: float
    batch_size: int


def box_file_path(boxes: object) -> Path:
    """A name of a file in conf/correspondence/ ('faces') or a path to a YAML / JSON file."""
    if not isinstance(boxes, (str, Path)) or not str(boxes).strip():
        raise ValueError(
            f"boxes: expected a box file's name in {BOXES_DIR} (e.g. 'faces') or a "
            f"path to a YAML / JSON box file, got {boxes!r}"
        )
    text = str(boxes)
    if "/" not in text and "\\" not in text and not Path(text).suffix:
        return BOXES_DIR / f"{text}.yaml"
    return Path(text).expanduser()


def validate_correspondence(
    model: object,
    weights: object,
    seed: object,
    boxes: object,
    layers: object,
    random_draws: object,
    draw_seed: object,
    fill: object,
    batch_size: object,
    device: object,
) -> CorrespondencePlan:
    """Every value checked before anything is built or written (ValueError / FileNotFoundError
    naming the key)."""
    request = check_model(model, weights, seed, device)
    skeleton = request.skeleton
    checked_layers = default_layers(skeleton, 5) if layers is None else check_layers(skeleton, layers)
    box_file = load_box_file(box_file_path(boxes))
    crop = request.preprocessing.crop_size
    if box_file.image_size != crop:
        raise ValueError(
            f"boxes: {box_file.source} gives boxes in a {box_file.image_size}-px "
            f"frame; {request.name}'s preprocessing makes {crop}x{crop} images"
        )
    pictures = check_pictures(list(box_file.images), f"boxes: {box_file.source}: images")
    if len(pictures) < 2:
        raise ValueError(
            f"boxes: {box_file.source}: images: expected at least 2 images "
            f"(Delta sums over pairs), got {len(pictures)}"
        )
    return CorrespondencePlan(
        request,
        box_file,
        tuple(pictures),
        checked_layers,
        check_count("random_draws", random_draws),
        check_seed(draw_seed, "the random boxes' draws"),
        check_fill(fill),
        check_count("batch_size", batch_size),
    )


def part_cell(
    net: nn.Module,
    plan: CorrespondencePlan,
    x: Tensor,
    base: Mapping[Layer, Tensor],
    part: str,
    randoms: Sequence[Sequence[tuple[int, int, int, int]]],
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One part: its boxes and each random draw occluded in x [N, 3, S, S] -> arrays
    (`<layer>` [N, N], `random_<layer>` [draws, N, N]) and its record."""
    n = x.shape[0]
    with tqdm(
        total=n * (1 + len(randoms)), desc=part, unit="image", leave=False, disable=not progress
    ) as bar:
        found = part_distances(net, x, base, plan.boxes.parts[part], plan.fill, plan.batch_size, bar)
        shuffled = [part_distances(net, x, base, r, plan.fill, plan.batch_size, bar) for r in randoms]
    arrays = {}
    for layer in plan.layers:
        arrays[layer_key(layer)] = found[layer]
        arrays[f"random_{layer_key(layer)}"] = np.stack([d[layer] for d in shuffled])
    record = {"part": part, "boxes": plan.boxes.parts[part], "random_boxes": randoms}
    return arrays, record


def run_correspondence(
    out_dir: str | Path,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    boxes: str = "faces",
    layers: Layer | Sequence[Layer] | None = None,
    random_draws: int = 10,
    draw_seed: int = 0,
    fill: float = 0.0,
    batch_size: int = 1,
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Table 1 for the box file `boxes` (a name in conf/correspondence/ or a path); files
    written into `out_dir` (module doc); the result dict.

    layers: stage numbers or names, module paths, "logits" (and "fc6", "fc7" on VGG / AlexNet);
    None: the model's default (`deconvnet.analysis.layers`: (5, "fc7") on VGG / AlexNet).
    seed: the model's; draw_seed: config key `seed` (the random boxes). Every value is checked
    before the model is built (nothing written); config.yaml records the layers used.
    """
    plan = validate_correspondence(
        model, weights, seed, boxes, layers, random_draws, draw_seed, fill, batch_size, device
    )
    config = (
        correspondence_config(plan, weights) if config is None else {**config, "layers": list(plan.layers)}
    )
    job = Job(out_dir, "correspondence", plan.request, config, len(plan.boxes.parts), progress)
    size = plan.request.preprocessing.crop_size
    x = torch.cat([prepare(p.image, job.net, size) for p in plan.pictures]).to(plan.request.device)
    randoms = draw_random_boxes(plan.boxes.parts, size, size, plan.random_draws, plan.seed)
    base = features(job.net, x, plan.layers, plan.batch_size)
    with job.progress():
        cells = [
            job.cell(part, lambda: part_cell(job.net, plan, x, base, part, randoms[part], progress))
            for part in plan.boxes.parts
        ]
    outcome = gathered(job, plan, randoms, {layer_key(k): int(v.shape[1]) for k, v in base.items()})
    job.keep("input", x)
    labels = [p.label for p in plan.pictures]
    rows = write_tiles(job.out, labels, plan.boxes.parts, randoms, tile_colours(plan, x.cpu(), randoms))
    result = correspondence_result(plan, job.weights, job.net, outcome, cells)
    (job.out / TABLE_FILE).write_text(table_markdown(result))
    return job.finish(result, [boxes_sheet(plan, job.weights, rows, outcome)])


def correspondence_result(
    plan: CorrespondencePlan,
    wdict: Mapping[str, Any],
    net: nn.Module,
    outcome: Correspondence,
    cells: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """result.json's content (before `Job.finish` adds sheets, files, config, provenance)."""
    return {
        **model_header("correspondence", plan.request, wdict, hidden_note(plan, wdict)),
        "settings": correspondence_settings(plan),
        "display": {"images": COLOURS},
        "images": [{"label": p.label, **p.info} for p in plan.pictures],
        "boxes_file": {
            "source": plan.boxes.source,
            "description": plan.boxes.description,
            "image_size": plan.boxes.image_size,
        },
        "layer_names": {layer_key(layer): layer_title(net, layer) for layer in plan.layers},
        "feature_length": outcome.feature_length,
        "table": outcome.summary(),
        "table_file": TABLE_FILE,
        "cells": list(cells),
    }


def gathered(
    job: Job, plan: CorrespondencePlan, randoms: Mapping[str, Any], lengths: Mapping[str, int]
) -> Correspondence:
    """The finished cells' arrays (float32 in the checkpoints: exact integers) as one result."""

    def ints(part: str, name: str) -> np.ndarray:
        return np.rint(job.done.arrays(part)[name]).astype(np.int64)

    parts = tuple(plan.boxes.parts)
    keys = [layer_key(layer) for layer in plan.layers]
    return Correspondence(
        parts=parts,
        layers=plan.layers,
        boxes=plan.boxes.parts,
        random_boxes=dict(randoms),
        feature_length=dict(lengths),
        distances={p: {k: ints(p, k) for k in keys} for p in parts},
        random_distances={p: {k: ints(p, f"random_{k}") for k in keys} for p in parts},
        settings=correspondence_settings(plan),
    )


def correspondence_settings(plan: CorrespondencePlan) -> dict[str, Any]:
    """result.json's "settings": every value used and every choice, in words."""
    return {
        "layers": list(plan.layers),
        "random_draws": plan.random_draws,
        "seed": plan.seed,
        "fill": plan.fill,
        "batch_size": plan.batch_size,
        "parts": list(plan.boxes.parts),
        "delta": "sum over ordered pairs i != j of the Hamming distance of sign(eps_i) and "
        "sign(eps_j) (the paper's formula; = 2 x the sum over i < j)",
        "eps": "x_i - x~_i: the layer's activation (after its ReLU / pool), flattened, of "
        "the image minus that of the image with the box occluded",
        "sign": "torch.sign: sign(0) = 0; H counts positions whose signs in {-1, 0, +1} differ",
        "normalized": "Delta / (N (N - 1) D), D the feature length; +- the population std "
        "over the N (N - 1) / 2 pairs of H / D (part rows) or over the draws "
        "(random rows)",
        "occluder": f"the box set to {plan.fill:g} in every channel of the normalised input "
        "(0 = the mean colour, Fig. 7's grey)",
        "random_boxes": "per image one box of that image's part-box size, top-left uniform "
        "over the positions inside the image, may overlap the part; numpy "
        "PCG64 seeded with (seed, crc32(part), draw)",
        "features": "deconvnet.optim.probe under no_grad, Dropout as the identity, "
        f"{plan.batch_size} image(s) per forward pass",
    }


def correspondence_config(plan: CorrespondencePlan, weights: object) -> dict[str, Any]:
    """The resolved config of a direct call (what config.yaml records)."""
    r = plan.request
    return {
        "model": {"name": r.name, "weights": str(weights), "seed": r.seed},
        "boxes": plan.boxes.source,
        "layers": list(plan.layers),
        "random_draws": plan.random_draws,
        "seed": plan.seed,
        "fill": plan.fill,
        "batch_size": plan.batch_size,
        "device": str(r.device),
    }


# ------------------------------------------------------------------------------- the figure


def tile_colours(plan: CorrespondencePlan, x: Tensor, randoms: Mapping[str, Any]) -> list[dict[str, Tensor]]:
    """Each image of x [N, 3, S, S] as the tiles show it, colours [3, S, S]: "boxes" the image,
    "<part>__part" / "<part>__random0" with the part's box / the first random draw's box occluded
    (as the model sees it)."""
    prep = plan.request.preprocessing
    views = []
    for k in range(x.shape[0]):
        image = x[k : k + 1]
        view = {"boxes": colours(image, prep)[0]}
        for part, boxes in plan.boxes.parts.items():
            view[f"{part}__part"] = colours(occlude(image, [boxes[k]], plan.fill), prep)[0]
            view[f"{part}__random0"] = colours(occlude(image, [randoms[part][0][k]], plan.fill), prep)[0]
        views.append(view)
    return views


def hidden_note(plan: CorrespondencePlan, wdict: Mapping[str, Any]) -> str | None:
    """With HED weights (learned convolutions, random classifier), for the layers the classifier's
    weights compute: HIDDEN_NOTE for fc6 / fc7, CLASSIFIER_NOTE naming any other; else None
    (random weights: the title says every layer is random; ImageNet: none is)."""
    if wdict.get("weights") != "hed":
        return None
    random_layers = [str(layer) for layer in plan.layers if reads_classifier(plan.request.skeleton, layer)]
    if not random_layers:
        return None
    if set(random_layers) <= {"fc6", "fc7"}:
        return HIDDEN_NOTE
    verb = "is" if len(random_layers) == 1 else "are"
    return CLASSIFIER_NOTE.format(layers=", ".join(random_layers), verb=verb)


def boxes_sheet(
    plan: CorrespondencePlan, wdict: Mapping[str, Any], rows: list[dict[str, Any]], outcome: Correspondence
) -> dict[str, Any]:
    """boxes.png: a row per image; the title names the weights and the images' kind."""
    note = hidden_note(plan, wdict)
    lines = title_lines("Correspondence (Zeiler & Fergus 2014, Table 1): occluded parts", plan.request, wdict)
    lines.append(
        f"{plan.boxes.description}; NOT the paper's 5 dogs. Occluder: "
        f"{plan.fill:g} (normalised; 0 = mean colour); {plan.random_draws} random draws "
        f"per part, seed {plan.seed}"
    )
    summary = outcome.summary()
    lines.append(
        "normalised Delta, part vs random (mean over draws): "
        + "; ".join(
            f"{p.replace('_', ' ')} "
            + ", ".join(
                f"{k} {v['normalized_mean']:.3f} vs {v['random']['normalized_mean']:.3f}"
                for k, v in summary[p].items()
            )
            for p in outcome.parts
        )
    )
    if note:
        lines.append(note.upper())
    return {
        "file": SHEET_FILE,
        "title": "\n".join(lines),
        "alarm": wdict.get("weights") == "random",
        "rows": rows,
    }


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.correspondence`: the config as the arguments of `run_correspondence`."""
    return run_correspondence(
        out,
        **model_arguments(config),
        boxes=config["boxes"],
        layers=config["layers"],
        random_draws=config["random_draws"],
        draw_seed=config["seed"],
        fill=config["fill"],
        batch_size=config["batch_size"],
        device=config["device"],
        config=dict(config),
    )
