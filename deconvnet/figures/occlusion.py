"""The occlusion figure (Zeiler & Fergus Fig. 7), drawn from a job's rows: one row per image, five
panels: (a) the input with the occluder's positions, (b) the total activation of the strongest
stage-5 feature map at each position, (c) that map projected by the deconvnet in this image and in
the dataset scan's top images, (d) the probability of the target class at each position, (e) the
most probable label at each position (`deconvnet.jobs.occlusion` writes the rows' files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deconvnet.core.display import tile_grid, to_display

SHOWN_PERCENTILE = 99.5  # panel (c): each projection scaled by this percentile of its |r|


def _mosaic(projections: np.ndarray, guided: np.ndarray | None) -> np.ndarray:
    """[1 + k, 3, H, W] projections (and the guided ones) -> [H', W', 3]: this image's projection
    first, then the k dataset projections, in a row (the guided ones in a second row), each
    scaled by the 99.5th percentile of its |r| (a few extreme pixels would leave the rest grey)."""
    rows = [projections] if guided is None else [projections, guided]
    shown = torch.cat([percentile_display(torch.from_numpy(r)) for r in rows])
    return tile_grid(shown, len(rows), len(projections), pad=6).permute(1, 2, 0).numpy()


def percentile_display(r: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, H, W] in [0, 1]: 0.5 + 0.5 r / q, q the 99.5th percentile of the
    image's |r| (its max where that is 0), clipped."""
    flat = r.abs().flatten(1).double()
    q = torch.quantile(flat, SHOWN_PERCENTILE / 100, dim=1)
    q = torch.where(q > 0, q, flat.amax(dim=1)).to(r.dtype).view(-1, 1, 1, 1)
    return to_display(r) if bool((q == 0).all()) else (0.5 + 0.5 * r / q.clamp_min(1e-30)).clamp(0, 1)


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


def _input_panel(ax: Any, row: Mapping[str, Any], patch: int) -> None:
    """(a): the input [3, H, W] with a dot at every square's centre and the square at its first
    position."""
    from matplotlib.patches import Rectangle

    ax.imshow(row["input"].permute(1, 2, 0).numpy())
    centres = [(t + patch / 2, l + patch / 2) for t in row["top"] for l in row["left"]]
    ax.plot([c[1] for c in centres], [c[0] for c in centres], ".", ms=2, color="white")
    ax.add_patch(
        Rectangle(
            (row["left"][0] - 0.5, row["top"][0] - 0.5),
            patch,
            patch,
            facecolor=(0.5, 0.5, 0.5),
            edgecolor="white",
        )
    )
    ax.set_title(
        f"(a) {row['label']}: {len(row['top'])}x{len(row['left'])} positions of a {patch} px square",
        fontsize=7,
    )


def _draw_row(
    fig: Any,
    ax_row: Sequence[Any],
    row: Mapping[str, Any],
    names: Sequence[str],
    patch: int,
    note: str | None,
) -> None:
    """One image's panels (a)..(e) from its row (maps [1, ny, nx], projections [k+1, 3, H, W])."""
    a = row["arrays"]
    _input_panel(ax_row[0], row, patch)
    im = ax_row[1].imshow(a["feature"][0], cmap="viridis")
    fig.colorbar(im, ax=ax_row[1], fraction=0.046)
    ax_row[1].set_title(
        f"(b) total activation of stage-{row['settings'].get('stage', 5)} map {row['channel']}\n"
        f"(unoccluded {row['unoccluded']['feature']:.4g})",
        fontsize=7,
    )
    guided = a.get("guided")
    ax_row[2].imshow(_mosaic(a["projections"], guided))
    rules = "deconvnet (top), guided backprop (bottom)" if guided is not None else "deconvnet"
    ax_row[2].set_title(
        f"(c) map {row['channel']} projected, {rules}:\nthis image (left), "
        f"then the scan's top {len(row['gallery_images'])}; 99.5th-percentile scaling",
        fontsize=7,
    )
    im = ax_row[3].imshow(a["probability"][0], cmap="jet")
    fig.colorbar(im, ax=ax_row[3], fraction=0.046)
    ax_row[3].set_title(f"(d) p({names[row['target']][:20]})" + (f"\n{note}" if note else ""), fontsize=7)
    _label_panel(ax_row[4], a["label"][0], names, note)
    for ax in ax_row:
        ax.set_xticks([])
        ax.set_yticks([])


def draw_occlusion(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    patch: int,
    stride: int,
    model: str,
    label: str,
    note: str | None,
) -> Path:
    """The figure: one row per image, panels (a)..(e) (module doc); `names`: the class names,
    `label`: the weights' label, `note`: the random-classifier note or None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3.3 * len(rows) + 0.8), squeeze=False)
    for ax_row, row in zip(axes, rows):
        _draw_row(fig, ax_row, row, names, patch, note)
    fig.suptitle(
        f"Occlusion sensitivity (Zeiler & Fergus Fig. 7): {model} "
        f"[{label}]; grey square = the mean colour, stride {stride} px",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
