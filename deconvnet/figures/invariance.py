"""The invariance figure (Zeiler & Fergus Fig. 5), drawn from a job folder's result dict and
example PNGs: one row per transformation; columns: (a) the images under a few of the amounts
(`draw_examples`, one PNG per transformation), then one distance curve per layer and the label's
probability, one curve per image (`draw_invariance`); `layer_title` names a layer of any model
for its column. `deconvnet.jobs.invariance` writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.analysis.invariance import shown_indices
from deconvnet.analysis.layers import penultimate_point, stage_number
from deconvnet.core.architecture import is_chain, stage
from deconvnet.core.display import save_png, tile_grid
from deconvnet.core.probe import HIDDEN, PRE

ROW_NAMES = {"translate": "vertical translation", "scale": "scale", "rotate": "rotation"}
AXIS = {
    "translate": "vertical translation (pixels, > 0: down)",
    "scale": "scale (ratio)",
    "rotate": "rotation (degrees, counter-clockwise)",
}
THUMB = 64  # column (a)'s tiles at most this many pixels a side
DPI = 100


def layer_title(model: nn.Module, layer: int | str) -> str:
    """A distance column's layer in words: on VGG / AlexNet the paper's numbering ('layer 1
    (pool1)', 'layer 7 (fc7)'); elsewhere 'stage 3 (layer2)' for a stage (by number, name or
    path), 'avgpool (the logits' input)' for fc7's analogue, 'the logits', the module path."""
    number = stage_number(model, layer)
    if number is not None:
        return f"{'layer' if is_chain(model) else 'stage'} {number} ({stage(model, number).name})"
    if layer in HIDDEN:
        return f"layer {layer[2:]} ({layer})"
    if layer in PRE:
        return f"{layer} (stage {layer[3:]} before its activation)"
    if layer in ("logits", "input"):
        return f"the {layer}"
    if layer == penultimate_point(model):
        return f"{layer} (the logits' input)"
    return str(layer)


def examples_file(transform: str) -> str:
    """Column (a)'s PNG of one transformation."""
    return f"{transform}_examples.png"


def draw_examples(path: Path, tiles: Tensor) -> Path:
    """Column (a) of one transformation from tiles [B, P, 3, S, S] in [0, 1] (the B images under
    P amounts, as colours): rows = images, columns = amounts, each at most THUMB pixels a side."""
    count, picks, size = tiles.shape[0], tiles.shape[1], tiles.shape[-1]
    side = min(THUMB, size)
    small = F.interpolate(
        tiles.flatten(0, 1), size=(side, side), mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)
    save_png(tile_grid(small, count, picks, pad=2, fill=1.0), path)
    return path


def draw_invariance(job_dir: str | Path, result: Mapping[str, Any]) -> Path:
    """Draw the 3 x 4 figure (rows: transformations; columns: examples, one distance per
    layer, probability) from result.json's content and the example PNGs in `job_dir`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    job, spec, cells = Path(job_dir), result["figure"], result["cells"]
    labels = [image["label"] for image in result["images"]]
    cols = len(spec["columns"])
    fig = Figure(figsize=(3.6 * cols, 2.9 * len(cells) + 0.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(cells), cols, squeeze=False)
    for i, cell in enumerate(cells):
        t, values = cell["transform"], cell["values"]
        with Image.open(job / examples_file(t)) as im:
            axes[i][0].imshow(np.asarray(im.convert("RGB")))
        picks = [values[k] for k in shown_indices(len(values), result["settings"]["shown"])]
        _example_axes(axes[i][0], picks, labels, ROW_NAMES[t], im.size)
        series = [cell["distance"][layer] for layer in spec["layers"]] + [cell["probability"]]
        for j, curves in enumerate(series, start=1):
            ax = axes[i][j]
            for label, curve in zip(labels, curves):
                ax.plot(values, curve, marker="o", markersize=3, linewidth=1.2, label=label)
            ax.set_xlabel(AXIS[t], fontsize=8)
            ax.set_ylabel("P(label)" if j == cols - 1 else "Euclidean distance", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[i][1].legend(fontsize=7)
    for j, (heading, alarm) in enumerate(zip(spec["columns"], spec["column_alarms"])):
        axes[0][j].set_title(heading, fontsize=8, color="darkred" if alarm else "black")
    fig.suptitle(spec["title"], fontsize=8, color="darkred" if spec["alarm"] else "black")
    path = job / spec["file"]
    fig.savefig(path, facecolor="white", metadata={"Software": None})
    return path


def _example_axes(
    ax: Any, picks: Sequence[float], labels: Sequence[str], row: str, size: tuple[int, int]
) -> None:
    """Column (a)'s ticks: the amounts under the columns, the image names beside the rows."""
    width, height = size
    tile_w = (width - 2 * (len(picks) - 1)) / len(picks)
    tile_h = (height - 2 * (len(labels) - 1)) / len(labels)
    ax.set_xticks(
        [(tile_w + 2) * k + tile_w / 2 for k in range(len(picks))], [f"{v:g}" for v in picks], fontsize=7
    )
    ax.set_yticks([(tile_h + 2) * k + tile_h / 2 for k in range(len(labels))], labels, fontsize=7)
    ax.set_ylabel(row, fontsize=9)
