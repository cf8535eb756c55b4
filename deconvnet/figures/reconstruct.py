"""Drawing only: the reconstruct job's overview (rows = keeps, columns = input + stages), from the
reconstructions' PNG tiles and their result.json records; redrawn from a job folder without a
model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deconvnet.data.models import weights_label

KeepItem = str | int  # "all", "max" or a channel


def keep_tag(item: KeepItem) -> str:
    """File-name tag of a keep: 'all', 'max', 'ch<c>'."""
    return item if isinstance(item, str) else f"ch{item}"


def mark_receptive_field(ax: Any, kept: Mapping[str, Any]) -> None:
    """Box the receptive field of the kept unit (dashed, yellow) on a tile's axes, and label the unit."""
    from matplotlib.patches import Rectangle

    box = kept["receptive_field_box"]
    ax.add_patch(
        Rectangle(
            (box["left"] - 0.5, box["top"] - 0.5),
            box["right"] - box["left"],
            box["bottom"] - box["top"],
            fill=False,
            edgecolor="yellow",
            linewidth=0.8,
            linestyle="--",
        )
    )
    ax.set_xlabel(f"c{kept['channel']} @({kept['y']},{kept['x']}) = {kept['value']:.3g}", fontsize=7)


def overview_title(weights: Mapping[str, Any], model: str, image_source: str, rule: str) -> str:
    """The overview's title: the model and its weights exactly, the image, the rule, the display."""
    random = weights.get("weights") == "random"
    weights_line = weights_label(weights)
    return (
        f"{model} [{weights_line.upper() if random else weights_line}]\nimage: "
        f"{image_source}   rule: {rule}\n"
        "zero = mid-grey, each tile scaled by its own max|r|; dashed box: receptive "
        "field of the kept unit"
    )


def draw_overview(
    path: Path,
    input_tile: np.ndarray,
    tiles: Mapping[tuple[str, int], np.ndarray],
    entries: list[dict[str, Any]],
    keeps: list[KeepItem],
    stages: list[tuple[int, str]],
    image_source: str,
    weights: Mapping[str, Any],
    model: str,
    rule: str,
) -> None:
    """Rows = keeps, columns = input + stages; each tile labelled, receptive field of a seed boxed.
    input_tile and tiles ({(keep tag, stage): tile}): [H, W, 3] uint8 arrays; entries: the
    reconstructions' result.json records."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    by_key = {(keep_tag(e["keep"]), e["stage"]): e for e in entries}
    rows, cols = len(keeps), 1 + len(stages)
    fig = Figure(figsize=(max(2.3 * cols, 6.0), 2.5 * rows + 0.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, item in enumerate(keeps):
        tag = keep_tag(item)
        axes[i][0].imshow(input_tile)
        axes[i][0].set_ylabel(f"keep={item}", fontsize=10)
        for j, (number, name) in enumerate(stages, start=1):
            ax = axes[i][j]
            ax.imshow(tiles[(tag, number)])
            kept = by_key[(tag, number)]["kept"]
            if kept["mode"] != "all":
                mark_receptive_field(ax, kept)
            if i == 0:
                ax.set_title(f"stage {number}: {name}", fontsize=9)
    axes[0][0].set_title("input", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    random = weights.get("weights") == "random"
    fig.suptitle(
        overview_title(weights, model, image_source, rule), fontsize=8, color="darkred" if random else "black"
    )
    fig.savefig(path)


def redraw_overview(job: Path, result: Mapping[str, Any]) -> Path:
    """Draw a finished job's overview again from its saved PNGs and its result.json record."""
    entries = result["reconstructions"]
    tiles = {
        (keep_tag(e["keep"]), e["stage"]): np.asarray(Image.open(job / e["file"]).convert("RGB"))
        for e in entries
    }
    stages = sorted({(e["stage"], e["stage_name"]) for e in entries})
    input_tile = np.asarray(Image.open(job / result["files"]["input"]).convert("RGB"))
    path = job / result["files"]["overview"]
    draw_overview(
        path,
        input_tile,
        tiles,
        entries,
        result["keeps"],
        stages,
        result["image"]["source"],
        result["weights"],
        result["model"],
        result["rule"],
    )
    return path
