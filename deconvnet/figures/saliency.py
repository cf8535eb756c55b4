"""Drawing only: the saliency grid (rows = images, columns = input + methods) and each method's map
as a picture (`DISPLAYS`), from maps and saved PNG tiles; the grid can be redrawn from a job
folder's files and result.json without a model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from deconvnet.core.display import saliency_map, to_display, to_diverging, to_grayscale

# how each method's map becomes a picture
DISPLAYS: dict[str, str] = {
    "gradient": "saliency",
    "smoothgrad_gradient": "saliency",
    "guided": "signed",
    "deconvnet": "signed",
    "smoothgrad_guided": "signed",
    "smoothgrad_deconvnet": "signed",
    "guided_gradcam": "signed",
    "integrated_gradients": "diverging",
    "gradient_x_image": "diverging",
    "gradcam": "heatmap",
    "gradcam_plus_plus": "heatmap",
    "layercam": "heatmap",
    "scorecam": "heatmap",
    "lrp": "diverging",
    "lrp_epsilon_plus_flat": "diverging",
    "lrp_epsilon_alpha2_beta1": "diverging",
    "lrp_epsilon_plus": "diverging",
}
DISPLAY_DESCRIPTIONS: dict[str, str] = {
    "saliency": "Simonyan et al. saliency max|.| over colour, shown in grayscale clipped at its "
    "99th percentile (to_grayscale)",
    "signed": "signed RGB, zero at mid-grey, scaled by max|.| of the map (to_display)",
    "diverging": "sum over colour, red positive / blue negative, clipped at the 99th percentile "
    "of |.| (to_diverging)",
    "heatmap": "the CAM (Grad-CAM, Grad-CAM++, LayerCAM, Score-CAM) / its max in matplotlib 'jet', "
    "alpha 0.5 over the input",
}
HEATMAP_ALPHA = 0.5


def heatmap(cam: Tensor, input_shown: Tensor) -> Tensor:
    """Grad-CAM [H, W] (>= 0) / its max in matplotlib 'jet', alpha HEATMAP_ALPHA over the input
    [3, H, W] in [0, 1] -> [3, H, W] in [0, 1]. An all-zero map is jet's lowest colour."""
    import matplotlib

    cam = cam.double().cpu()
    peak = float(cam.max())
    scaled = (cam / peak if peak > 0 else torch.zeros_like(cam)).clamp(0, 1).numpy()
    colours = torch.from_numpy(matplotlib.colormaps["jet"](scaled)[..., :3]).permute(2, 0, 1)
    return (HEATMAP_ALPHA * colours + (1 - HEATMAP_ALPHA) * input_shown.double().cpu()).float()


def show(method: str, r: Tensor, input_shown: Tensor) -> Tensor:
    """A method's raw map (pixel [3, H, W] or Grad-CAM [H, W]) as an RGB picture [3, H, W]."""
    kind = DISPLAYS[method]
    if kind == "heatmap":
        return heatmap(r, input_shown)
    if kind == "saliency":
        gray = to_grayscale(saliency_map(r).unsqueeze(0))  # [1, H, W] in [0, 1]
        return gray.expand(3, -1, -1)
    if kind == "diverging":
        return to_diverging(r)
    return to_display(r)


def read_tile(path: Path) -> np.ndarray:
    """A saved PNG tile as an [H, W, 3] uint8 array."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def draw_grid(
    path: Path, grid: Mapping[str, Any], inputs: Sequence[np.ndarray], tiles: Sequence[Sequence[np.ndarray]]
) -> Path:
    """Rows = images, columns = input + methods, titled and labelled from `grid` (result.json);
    inputs: one [H, W, 3] uint8 array per row, tiles: one per method of each row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns, labels = grid["columns"], grid["row_labels"]
    rows, cols = len(labels), len(columns)
    fig = Figure(figsize=(max(1.45 * cols, 7.0), 1.55 * rows + 1.3), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        axes[i][0].imshow(inputs[i])
        axes[i][0].set_ylabel(labels[i], fontsize=7)
        for j in range(1, cols):
            axes[i][j].imshow(tiles[i][j - 1])
    for j, name in enumerate(columns):
        axes[0][j].set_title(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    alarm = grid.get("warning") or grid.get("random_weights")
    fig.suptitle(grid["title"], fontsize=7, color="darkred" if alarm else "black")
    path = Path(path)
    fig.savefig(path)
    return path


def redraw_grid(job: Path, result: Mapping[str, Any]) -> Path:
    """Draw a finished job's grid again from its saved PNG tiles and its result.json record."""
    by_cell = {(c["image"], c["method"]): c["file"] for c in result["cells"]}
    inputs = [read_tile(job / e["input"]) for e in result["images"]]
    tiles = [[read_tile(job / by_cell[(e["label"], m)]) for m in result["methods"]] for e in result["images"]]
    return draw_grid(job / result["files"]["grid"], result["grid"], inputs, tiles)
