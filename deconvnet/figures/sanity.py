"""The sanity-check figures (Adebayo et al. 2018), drawn from a job's result dict and maps
(`deconvnet.jobs.sanity` writes them):
- `draw_curves`: one panel per similarity metric (columns) and mode (rows); x = the layer
  randomised, top -> bottom; y = the mean similarity over the images; one curve per method; steps
  that cannot change the map shaded.
- `draw_cascade`: one image's cascading randomisation: rows = methods, columns = input, original
  map, the map after each cascading step that changes it (`normalized` maps).
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
    for j, c in enumerate(records):
        if not c["affects_map"]:
            ax.axvspan(j + 0.5, j + 1.5, color="0.9", lw=0)
    for m in result["settings"]["methods"]:
        values = [1.0] + [np.nan if v is None else v for v in result["curves"][mode][metric][m]]
        ax.plot(range(len(labels)), values, marker="o", ms=3, label=m)
    _pass_marks(ax, result, mode, metric, labels)
    ax.set_title(f"{mode}: {METRIC_TITLES[metric]}", fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_ylim(-1.05 if metric.startswith("spearman") or metric == "hog" else -0.05, 1.05)
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("layers randomised, top -> bottom (grey: not used by the target)", fontsize=7)


def draw_curves(path: Path, heading: Sequence[str], result: Mapping[str, Any]) -> Path:
    """curves.png from the result dict (module doc); `heading`: the title's first lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modes = list(result["curves"])
    fig = Figure(figsize=(4.2 * len(METRICS), 3.4 * len(modes) + 1.2), dpi=100, layout="constrained")
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
    extra = f"\n{', '.join(skipped)}: not used by the target, map unchanged (not shown)" if skipped else ""
    title = _title(heading, result) + extra
    fig.suptitle(wrap(title, 1.1 * len(columns) + 0.6), fontsize=7)
    fig.savefig(path)
    return path
