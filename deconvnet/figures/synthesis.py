"""Drawing only, for the optimisation family's jobs (filters, class_model, deep_dream, invert,
fooling): the filters' mosaic, the fooling difference panel, and each job's sheet (grid.png) as the
plain dict `sheet.draw_sheet` draws, composed from the job's result (its settings and cell
records) and the title's first lines (`deconvnet.jobs.job.title_lines`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.display import tile_grid
from deconvnet.data.models import Preprocessing
from deconvnet.figures.sheet import keras_deprocess

GRID_FILE = "grid.png"


# ------------------------------------------------------------------------------------ filters


def filters_mosaic(images: Tensor, prep: Preprocessing, size: int) -> Tensor:
    """[K, 3, S, S] normalised -> the Keras example's n x n layout [3, H, W] with black gaps
    of max(2, size // 32) px."""
    n = math.ceil(math.sqrt(images.shape[0]))
    rows = math.ceil(images.shape[0] / n)
    gap = max(2, size // 32)
    return tile_grid(keras_deprocess(images, prep), rows, n, pad=gap, fill=0.0)


def _channel_text(channels: Sequence[int]) -> str:
    """'channels a-b' for a run of consecutive channels, else the list."""
    if list(channels) == list(range(channels[0], channels[0] + len(channels))):
        return f"channels {channels[0]}-{channels[-1]}"
    return "channels " + ", ".join(map(str, channels))


def _filters_tile_title(cell: Mapping[str, Any], variant_title: str) -> str:
    """A mosaic's title: its variant, and how strongly its images excite their own channels."""
    e = cell["excitation"]
    median = "n/a" if e["median_ratio"] is None else f"{e['median_ratio']:.3g}x"
    k = len(cell["channels"])
    return (
        f"{variant_title}\n"
        f"own channel: median {median} the photos' mean; "
        f"{e['above_photos_max']}/{k} above the photos' max"
    )


def filters_sheet(
    header: Sequence[str], result: Mapping[str, Any], skeleton: nn.Module, variant_titles: Mapping[str, str]
) -> dict[str, Any]:
    """grid.png of the filters job: rows = stages, plain | regularized mosaics. header: the
    title's first lines; result: the job's result (settings, cells); variant_titles: each
    variant's tile title."""
    s = result["settings"]
    lines = list(header)
    lines.append(
        f"{s['size']} px, {s['steps']} steps, lr {s['lr']:g}, param {s['param']}, "
        f"seed {s['seed']}; start grey noise; display: Keras deprocess per image"
    )
    rows = []
    for stage in s["stages"]:
        own = [c for c in result["cells"] if c["stage"] == stage]
        name = stage_of(skeleton, stage).name
        rows.append(
            {
                "label": f"stage {stage} ({name})\n{_channel_text(own[0]['channels'])}",
                "tiles": [
                    {"file": c["file"], "title": _filters_tile_title(c, variant_titles[c["variant"]])}
                    for c in own
                ],
            }
        )
    return {"file": GRID_FILE, "title": "\n".join(lines), "alarm": result["random_weights"], "rows": rows}


# -------------------------------------------------------------------------------- class models


def _class_tile_title(cell: Mapping[str, Any]) -> str:
    """A class model's tile title: its class, name and p(own class); a group of classes together:
    its classes, their names, each one's probability and its rank among the logits."""
    if not isinstance(cell["class"], list):
        return f"{cell['class']} {cell['class_name']}\np(own class) = {cell['probability']:.3g}"
    numbers = " + ".join(str(c) for c in cell["classes"])
    p = ", ".join(f"{v:.3g}" for v in cell["probabilities"])
    ranks = ", ".join(str(r) for r in cell["ranks"])
    return f"{numbers} together\n{cell['class_name']}\np = {p} (ranks {ranks})"


def class_sheet(header: Sequence[str], result: Mapping[str, Any]) -> dict[str, Any]:
    """grid.png of the class_model job: one row of class models, each titled with its class and
    its probability. header: the title's first lines; result: the job's result."""
    s, note = result["settings"], result["classifier_note"]
    lines = list(header)
    blur = f"blur {s['blur']:g} px every {s['blur_every']}" if s["blur"] > 0 else "no blur"
    lines.append(
        f"{s['size']} px, {s['steps']} steps, lr {s['lr']:g}, regulariser "
        f"{s['regularizer']} weight {s['weight']:g}, {blur}; start the mean colour; "
        "display: Keras deprocess"
    )
    tiles = [
        {
            "file": c["file"],
            "alarm": bool(note),
            "title": _class_tile_title(c) + (" (random classifier)" if note else ""),
        }
        for c in result["cells"]
    ]
    return {
        "file": GRID_FILE,
        "title": "\n".join(lines),
        "alarm": bool(note),
        "rows": [{"label": "class model", "tiles": tiles}],
    }


# --------------------------------------------------------------------------------- deep dream


def dream_sheet(header: Sequence[str], result: Mapping[str, Any]) -> dict[str, Any]:
    """grid.png of the deep_dream job: a row per image, input | dream, titled with the energies.
    header: the title's first lines; result: the job's result."""
    s = result["settings"]
    lines = list(header)
    lines.append(
        f"{s['octaves']} octaves of scale {s['scale']:g}, {s['steps_per_octave']} steps each, "
        f"step {s['step_size']:g}/mean|g|, jitter {s['jitter']} px, seed {s['seed']}; "
        f"{s['size']} px"
    )
    rows = []
    for c in result["cells"]:
        ratio = "" if c["energy_ratio"] is None else f" (x{c['energy_ratio']:.3g})"
        rows.append(
            {
                "label": c["image"],
                "tiles": [
                    {"file": c["input_file"], "title": f"input\nenergy {c['energy_before']:.4g}"},
                    {"file": c["file"], "title": f"dream\nenergy {c['energy_after']:.4g}{ratio}"},
                ],
            }
        )
    return {"file": GRID_FILE, "title": "\n".join(lines), "alarm": result["random_weights"], "rows": rows}


# ------------------------------------------------------------------------------------- invert


def _point_name(skeleton: nn.Module, point: int | str) -> str:
    """'stage s (its name)', or the head point's own name ('fc6')."""
    if isinstance(point, str):
        return point
    return f"stage {point} ({stage_of(skeleton, point).name})"


def invert_sheet(header: Sequence[str], result: Mapping[str, Any], skeleton: nn.Module) -> dict[str, Any]:
    """grid.png of the invert job: one row, input | inversion per stage, titled with the feature
    error. header: the title's first lines; result: the job's result (settings, image, cells)."""
    s, image = result["settings"], result["image"]
    lines = list(header)
    lines.append(
        f"{image['label']} at {s['size']} px; Adam lr {s['lr']:g} (cosine), "
        f"{s['steps']} steps, alpha-norm + TV prior, start grey noise seed {s['seed']}"
    )
    tiles = [{"file": image["file"], "title": f"input\n{image['label']}"}]
    tiles += [
        {
            "file": c["file"],
            "title": f"from {_point_name(skeleton, c['stage'])}\nfeature error {c['feature_error']:.3g}",
        }
        for c in result["cells"]
    ]
    return {
        "file": GRID_FILE,
        "title": "\n".join(lines),
        "alarm": result["random_weights"],
        "rows": [{"label": image["label"], "tiles": tiles}],
    }


# ------------------------------------------------------------------------------------ fooling


def fooling_difference(fooled: Tensor, image: Tensor, prep: Preprocessing, amplify: float) -> Tensor:
    """[1, 3, H, W] pair (normalised) -> 0.5 + amplify * their difference in [0, 1] colour
    units, clipped: [3, H, W]."""
    std = torch.tensor(prep.std, dtype=fooled.dtype).view(1, 3, 1, 1)
    return (0.5 + amplify * (fooled - image) * std).clamp(0, 1)[0]


def _fooling_row(
    settings: Mapping[str, Any], names: Sequence[str], cell: Mapping[str, Any]
) -> dict[str, Any]:
    """One image's row: image | fooling image | difference, titled from the method's report."""
    r, target = cell["report"], names[settings["target"]]
    outcome = (
        f"p({target}) = {r['probability_after']:.3g} after {r['steps_taken']} steps"
        if cell["reached"]
        else f"NOT REACHED {settings['confidence']:g}: p({target}) = {r['probability_after']:.3g} "
        f"after {settings['steps']} steps"
    )
    return {
        "label": cell["image"],
        "tiles": [
            {
                "file": cell["input_file"],
                "title": f"image: p({target}) = {r['probability_before']:.3g}\n"
                f"predicted {names[r['predicted_before']]}",
            },
            {
                "file": cell["file"],
                "alarm": not cell["reached"],
                "title": f"fooling image: {outcome}\npredicted {names[r['predicted_after']]}",
            },
            {
                "file": cell["difference_file"],
                "title": f"difference x{settings['amplify']:g} (grey = 0)\nL-inf {r['linf_colour']:.3g} "
                f"= {r['linf_colour'] * 255:.3g}/255, L2 {r['l2_colour']:.3g} (colour 0..1)",
            },
        ],
    }


def fooling_steps_text(settings: Mapping[str, Any]) -> str:
    """The step rule and budget of a fooling job in words (settings: result.json's; older results
    without `step` used the L2-normalised ascent and only valid colours)."""
    steps, lr = settings["steps"], settings["lr"]
    if settings.get("step", "normalized") == "sign":
        rule = f"at most {steps} sign-gradient steps of {lr * 255:.3g}/255 per colour value on log p"
    else:
        rule = f"at most {steps} steps of lr {lr:g} (L2-normalised ascent on log p)"
    budget = settings.get("max_change")
    limit = (
        "colours kept valid"
        if budget is None
        else f"each colour within {budget * 255:.3g}/255 of the image's"
    )
    return f"{rule}, {limit}"


def fooling_sheet(header: Sequence[str], result: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """grid.png of the fooling job: a row per image, image | fooling image | difference. header:
    the title's first lines; result: the job's result; names: the model's class names."""
    s = result["settings"]
    lines = list(header)
    lines.append(f"confidence {s['confidence']:g}, {fooling_steps_text(s)}; {s['size']} px")
    return {
        "file": GRID_FILE,
        "title": "\n".join(lines),
        "alarm": bool(result["classifier_note"]) or not result["all_reached"],
        "rows": [_fooling_row(s, names, c) for c in result["cells"]],
    }
