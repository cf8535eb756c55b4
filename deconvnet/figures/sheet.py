"""Drawing only: a titled grid of saved PNG tiles, described by a plain dict (kept in result.json,
so the sheet can be redrawn from the job folder without a model).

    {"file": "grid.png", "title": "...", "alarm": bool,
     "rows": [{"label": "...", "tiles": [{"file": "a.png", "title": "...", "alarm": bool}, ...]}]}

Rows may have different numbers of tiles; missing places stay empty. `alarm` draws the title (or a
tile's title) in dark red: random weights, a random classifier, a target not reached.

The tiles themselves: an image in the model's normalised input space shown as its colours
(`colours`) or with the Keras example's deprocess (`keras_deprocess`), saved as an 8-bit PNG
(`save_tile`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from deconvnet.core.display import save_png
from deconvnet.data.models import Preprocessing

DPI = 100
TITLE_LINE_IN = 0.15  # inches per line of 7-pt text
CHARS_PER_INCH = 17  # 7-pt characters per inch of a tile's width


def _colour_tensors(prep: Preprocessing, x: Tensor) -> tuple[Tensor, Tensor]:
    """The weights' mean and std as [1, 3, 1, 1] tensors of x's dtype."""
    mean = torch.tensor(prep.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype).view(1, 3, 1, 1)
    return mean, std


COLOURS = "colours: x * std + mean, clipped to [0, 1]"  # how `colours` shows an image


def colours(x: Tensor, prep: Preprocessing) -> Tensor:
    """[K, 3, H, W] normalised -> the colours x * std + mean, clipped to [0, 1]."""
    mean, std = _colour_tensors(prep, x)
    return (x * std + mean).clamp(0, 1)


KERAS_DEPROCESS = (
    "the Keras example's deprocess_image on each image's colours (x * std + mean, "
    "not clipped): subtract the image's mean, divide by its std (+1e-5; over "
    "colour and space), * 0.15, + 0.5, clip to [0, 1] (no border crop)"
)


def keras_deprocess(x: Tensor, prep: Preprocessing) -> Tensor:
    """[K, 3, H, W] normalised -> [K, 3, H, W] in [0, 1] (`KERAS_DEPROCESS`)."""
    mean, std = _colour_tensors(prep, x)
    c = x.double() * std + mean
    centred = c - c.mean(dim=(1, 2, 3), keepdim=True)
    spread = c.std(dim=(1, 2, 3), correction=0, keepdim=True)
    return (centred / (spread + 1e-5) * 0.15 + 0.5).clamp(0, 1).float()


def save_tile(image: Tensor, path: Path) -> None:
    """[3, H, W] in [0, 1] as an 8-bit PNG."""
    save_png(image, path)


def _tile(job: Path, name: str) -> np.ndarray:
    with Image.open(job / name) as im:
        return np.asarray(im.convert("RGB"))


def _side(tiles: list[list[np.ndarray]]) -> float:
    """Inches per tile: about its own pixel size, within 1.3 to 3."""
    biggest = max(max(t.shape[:2]) for row in tiles for t in row)
    return min(max(biggest / DPI, 1.3), 3.0)


def wrap(text: str, side: float) -> str:
    """Each line of `text` wrapped to what fits in `side` inches."""
    width = max(12, int(side * CHARS_PER_INCH))
    return "\n".join(textwrap.fill(line, width) if line else line for line in text.split("\n"))


def _lines(text: str) -> int:
    return text.count("\n") + 1 if text else 0


def _figure_size(
    title: str, titles: list[list[str]], tiles: list[list[np.ndarray]], side: float
) -> tuple[float, float]:
    """Width and height in inches: each row as tall as its tallest tile drawn `shown` inches
    wide (tiles widen to fill a sheet of at least 6 inches), plus its titles."""
    cols = max(len(row) for row in tiles)
    width = max(cols * side + 0.4, 6.0)
    shown = (width - 0.4) / cols
    height = sum(
        shown * max(t.shape[0] / t.shape[1] for t in row)
        + TITLE_LINE_IN * max([_lines(t) for t in names] or [0])
        for row, names in zip(tiles, titles)
    )
    return width, height + TITLE_LINE_IN * _lines(title) + 0.3


def draw_sheet(job_dir: str | Path, sheet: Mapping[str, Any]) -> Path:
    """Draw `sheet` (see the module doc) from the PNGs in `job_dir` into job_dir/sheet['file']."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    job = Path(job_dir)
    tiles = [[_tile(job, t["file"]) for t in row["tiles"]] for row in sheet["rows"]]
    rows, cols = len(tiles), max(len(row) for row in tiles)
    side = _side(tiles)
    titles = [[wrap(t["title"], side) for t in row["tiles"]] for row in sheet["rows"]]
    title = wrap(sheet["title"], max(cols * side + 0.2, 5.8))
    fig = Figure(figsize=_figure_size(title, titles, tiles, side), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, row in enumerate(sheet["rows"]):
        axes[i][0].set_ylabel(row["label"], fontsize=7)
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row["tiles"]):
                ax.set_axis_off()
                continue
            tile = row["tiles"][j]
            ax.imshow(tiles[i][j])
            ax.set_title(titles[i][j], fontsize=7, color="darkred" if tile.get("alarm") else "black")
    fig.suptitle(title, fontsize=7, color="darkred" if sheet.get("alarm") else "black")
    path = job / sheet["file"]
    fig.savefig(path)
    return path
