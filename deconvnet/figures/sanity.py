"""The sanity-check figures (Adebayo et al. 2018), drawn from a job's result dict and maps
(`deconvnet.jobs.sanity` writes them):
- `draw_curves`: one panel per similarity metric (columns) and mode (rows); x = the layer
  randomised, top -> bottom; y = the mean similarity over the images; one curve per method; steps
  that cannot change the map shaded. With more than 24 steps (graph models: ResNet-50 has 107
  learnable layers) every step is still plotted, as a line without markers, and only the steps
  `cascade_columns` picks (plus the pass layer) are labelled on the x axis.
- `draw_cascade`: one image's cascading randomisation: rows = methods, columns = input, original
  map, the map after each SHOWN cascading step (`normalized` maps): the job passes the steps of
  `cascade_columns` (or the ones asked for) and the title says how many of how many it shows.

`cascade_columns` (COLUMN_RULE): every step when there are at most MAX_COLUMNS (20; VGG16's 16
layers all show); else the step that completes each module block: the layers are grouped by the
first d parts of their module path ("layer4.1.conv2" -> "layer4.1" at d = 2), d the smallest depth
giving at least MAX_COLUMNS / 2 groups, and each group's bottom layer is shown (after it, the whole
block and everything above it is random), thinned evenly to at most MAX_COLUMNS (first and last
kept). ResNet-18: conv1, bn1 and its 8 residual blocks; ResNet-50: conv1, bn1, 16 blocks;
EfficientNet-Lite0: its stem, 7 block stages and head; MobileNetV2: its 19 feature blocks.
Each title starts with the lines the job gives (what, the model and its weights exactly, the
classifier note), then the target and the settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from deconvnet.analysis.similarity import METRIC_TITLES, METRICS, normalized
from deconvnet.figures.sheet import wrap

MAX_COLUMNS = 20
MANY_STEPS = 24  # above this, curves lose their markers and most x labels
COLUMN_RULE = (
    f"every cascading step that changes the maps when there are at most {MAX_COLUMNS}; else the "
    "step completing each module block (layers grouped by the first d parts of their module path, "
    f"d the smallest depth giving at least {MAX_COLUMNS // 2} groups; each group's bottom layer), "
    f"thinned evenly to at most {MAX_COLUMNS} (first and last kept)"
)


def block_ends(layers: Sequence[str], depth: int) -> list[str]:
    """Top-first layer names -> the bottom layer of each group of names sharing their first
    `depth` dotted parts, top first."""
    bottom = {}
    for name in layers:
        bottom[".".join(name.split(".")[:depth])] = name
    ends = set(bottom.values())
    return [name for name in layers if name in ends]


def cascade_columns(layers: Sequence[str], limit: int = MAX_COLUMNS) -> list[str]:
    """The cascading steps a figure shows (module doc, COLUMN_RULE), top first, from the steps
    `layers` (top first)."""
    if len(layers) <= limit:
        return list(layers)
    depth, deepest = 1, max(len(name.split(".")) for name in layers)
    while depth < deepest and len(block_ends(layers, depth)) < limit // 2:
        depth += 1
    ends = block_ends(layers, depth)
    if len(ends) <= limit:
        return ends
    picks = sorted({int(i) for i in np.linspace(0, len(ends) - 1, limit).round()})
    return [ends[i] for i in picks]


def _title(heading: Sequence[str], result: Mapping[str, Any]) -> str:
    """The figure's title: the heading lines (what, the model and its weights exactly, the note),
    the target, the settings."""
    lines = list(heading)
    lines.append(f"target: {result['target']}")
    s = result["settings"]
    lines.append(
        f"{len(result['images'])} image(s) at {s['size']} px; SmoothGrad "
        f"{s['smoothgrad']['samples']} samples, IG {s['integrated_gradients']['steps']} "
        f"steps, Grad-CAM at stage {s['gradcam']['stage']}; re-initialisation seed "
        f"{s['seed']}"
    )
    return "\n".join(lines)


def _curve_panel(ax: Any, result: Mapping[str, Any], mode: str, metric: str, records: list) -> None:
    """One mode's curves of one metric, a curve per method (`records`: the mode's step cells)."""
    labels = ["none"] + [c["layer"] for c in records]
    many = len(records) > MANY_STEPS
    for j, c in enumerate(records):
        if not c["affects_map"]:
            ax.axvspan(j + 0.5, j + 1.5, color="0.9", lw=0)
    for m in result["settings"]["methods"]:
        values = [1.0] + [np.nan if v is None else v for v in result["curves"][mode][metric][m]]
        ax.plot(range(len(labels)), values, marker="" if many else "o", ms=3, label=m)
    _pass_marks(ax, result, mode, metric, labels)
    ax.set_title(f"{mode}: {METRIC_TITLES[metric]}", fontsize=9)
    ticks = list(range(len(labels)))
    if many:
        named = set(cascade_columns(labels[1:])) | {result["settings"]["pass_layer"]}
        ticks = [0] + [j for j, name in enumerate(labels) if j and name in named]
    ax.set_xticks(ticks, [labels[j] for j in ticks], rotation=90, fontsize=7 if not many else 6)
    ax.set_ylim(-1.05 if metric.startswith("spearman") or metric == "hog" else -0.05, 1.05)
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("layers randomised, top -> bottom (grey: not used by the target)", fontsize=7)


def draw_curves(path: Path, heading: Sequence[str], result: Mapping[str, Any]) -> Path:
    """curves.png from the result dict (module doc); `heading`: the title's first lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modes = list(result["curves"])
    many = max(len(steps) for steps in result["steps"].values()) > MANY_STEPS
    width = (5.6 if many else 4.2) * len(METRICS)
    fig = Figure(figsize=(width, 3.4 * len(modes) + 1.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(modes), len(METRICS), squeeze=False)
    for r, mode in enumerate(modes):
        records = [c for c in result["cells"][1:] if c["mode"] == mode]
        for k, metric in enumerate(METRICS):
            _curve_panel(axes[r][k], result, mode, metric, records)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(_title(heading, result), fontsize=9)
    fig.savefig(path)
    return path


def _pass_marks(ax: Any, result: Mapping[str, Any], mode: str, metric: str, labels: list[str]) -> None:
    """The pass threshold and layer on the cascading Spearman(|.|) panel."""
    layer = result["settings"]["pass_layer"]
    if mode != "cascading" or metric != result["settings"]["pass_metric"] or layer not in labels:
        return
    ax.axhline(result["settings"]["pass_below"], color="k", ls="--", lw=0.8)
    ax.axvline(labels.index(layer), color="k", ls=":", lw=0.8)


def draw_cascade(
    path: Path,
    heading: Sequence[str],
    result: Mapping[str, Any],
    shown: Tensor,
    original: Mapping[str, Tensor],
    maps: Mapping[str, Tensor],
) -> Path:
    """cascade_<image>.png: rows = methods; input (shown: [3, S, S] colours), original map
    (original[method]: the raw map), the map after each cascading step that changes it
    (maps[layer]: [M, S, S] normalised); `heading`: the title's first lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = result["settings"]["methods"]
    columns = ["input", "original", *maps]
    fig = Figure(figsize=(1.1 * len(columns) + 0.6, 1.15 * len(methods) + 1.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(methods), len(columns), squeeze=False)
    for i, method in enumerate(methods):
        tiles = [shown.permute(1, 2, 0).numpy() if i == 0 else None, normalized(original[method])]
        tiles += [maps[layer][i].numpy() for layer in maps]
        for j, tile in enumerate(tiles):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if tile is None:
                ax.set_axis_off()
                continue
            ax.imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if i == 0:
                ax.set_title(columns[j], fontsize=7)
        axes[i][1].set_ylabel(method, fontsize=7)
    skipped = [c["layer"] for c in result["cells"][1:] if c["mode"] == "cascading" and not c["affects_map"]]
    if len(skipped) > 6:  # graph models: whole blocks above a unit's stage
        skipped = [f"{len(skipped)} layers from {skipped[0]} down to {skipped[-1]}"]
    extra = f"\n{', '.join(skipped)}: not used by the target, map unchanged (not shown)" if skipped else ""
    changing = result["display"]["cascade_steps_changing_the_maps"]
    if len(maps) < len(changing):
        extra += (
            f"\nshowing {len(maps)} of the {len(changing)} cascading steps that change the maps "
            f"(every step computed; {result['display']['cascade_rule']})"
        )
    title = _title(heading, result) + extra
    fig.suptitle(wrap(title, 1.1 * len(columns) + 0.6), fontsize=7)
    fig.savefig(path)
    return path
