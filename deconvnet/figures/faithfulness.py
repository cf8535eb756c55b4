"""Drawing only, for the faithfulness table (docs/faithfulness.md#the-table): the markdown table, the
mean deletion / insertion curves, and one tile per method and image (its scores over the photo).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.figures.saliency import heatmap
from deconvnet.figures.sheet import save_tile

TILES_DIR = "tiles"
TILE_PX = 112  # the largest side of a tile


def scores_tile(out: Path, method: str, label: str, scores: Tensor, shown: Tensor) -> str:
    """Save scores [H, W] over the photo shown [3, H, W] (in [0, 1]) as a jet heatmap: the scores
    between their 1st and 99th percentiles scaled to [0, 1] (the order the metrics follow), at
    most TILE_PX on a side (area average: the committed grid stays small); returns the tile's
    path relative to `out`."""
    low, high = torch.quantile(scores.double().flatten(), torch.tensor([0.01, 0.99], dtype=torch.float64))
    scaled = ((scores.double() - low) / (high - low) if high > low else torch.zeros_like(scores)).clamp(0, 1)
    factor = max(1, -(-max(scaled.shape[-2:]) // TILE_PX))
    if factor > 1:
        scaled = F.avg_pool2d(scaled[None, None], factor, ceil_mode=True)[0, 0]
        shown = F.avg_pool2d(shown[None].double(), factor, ceil_mode=True)[0]
    name = f"{TILES_DIR}/{method}__{label}.png"
    (out / TILES_DIR).mkdir(parents=True, exist_ok=True)
    save_tile(heatmap(scaled, shown), out / name)
    return name


def verdict_cell(sanity: Mapping[str, Any] | None) -> str:
    """'passes (0.12)' / 'fails (0.83)' / '—' (no sanity check: a baseline map, or turned off)."""
    if sanity is None:
        return "—"
    if sanity["value"] is None:
        return "undefined (constant maps)"
    return f"{'passes' if sanity['passes'] else 'fails'} ({sanity['value']:.2f})"


def table_markdown(result: Mapping[str, Any]) -> str:
    """The table: a row per method, deletion and insertion AUC (mean ± std over images) and the
    sanity verdict, with what it was measured on."""
    s = result["settings"]
    images = ", ".join(f"{i['label']} ({i['class_name']})" for i in result["images"])
    lines = [
        f"Faithfulness on {result['model']} [{result['weights_label']}], {len(result['images'])} "
        f"photos with the classes it predicts: {images}.",
        "",
        f"Deletion / insertion (Petsiuk et al. 2018): {s['steps']} steps; pixels deleted to the "
        f"{s['baselines']['deletion']!r} baseline, inserted over the {s['baselines']['insertion']!r} "
        "one; mean ± std over the photos. Deletion: lower is better; insertion: higher is better.",
        f"Sanity: {s['sanity'] or 'not run'}.",
        "",
        "| method | pixel score | deletion AUC ↓ | insertion AUC ↑ | sanity check |",
        "|---|---|---|---|---|",
    ]
    for row in result["table"]:
        d, i = row["deletion_auc"], row["insertion_auc"]
        lines.append(
            f"| {row['method']} | {row['score_rule']} | {d['mean']:.3f} ± {d['std']:.3f} | "
            f"{i['mean']:.3f} ± {i['std']:.3f} | {verdict_cell(row['sanity'])} |"
        )
    return "\n".join(lines) + "\n"


def draw_curves(
    path: Path, curves: Mapping[str, Mapping[str, Sequence[float]]], title: Sequence[str]
) -> Path:
    """Mean deletion and insertion curves per method (probability against the fraction of pixels
    removed / revealed), side by side, into `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    for k, (method, curve) in enumerate(curves.items()):
        for ax, name in zip(axes, ("deletion", "insertion")):
            values = curve[name]
            fractions = [j / (len(values) - 1) for j in range(len(values))]
            ax.plot(fractions, values, styles[k // 10 % 4], label=method, linewidth=1)
    for ax, name in zip(axes, ("deletion (lower is better)", "insertion (higher is better)")):
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("fraction of pixels", fontsize=8)
        ax.set_ylabel("probability of the class (mean over photos)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("\n".join(title), fontsize=8)
    fig.savefig(path)
    return path
