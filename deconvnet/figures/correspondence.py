"""The correspondence job's pictures and table (Zeiler & Fergus 2014, Table 1), drawn from its
images and result dict (`deconvnet.jobs.correspondence` writes them):
- `layer_title`: a layer of any model in words, the table's column heading;
- `write_tiles`: per image its part boxes outlined, then per part the part occluded and the first
  random draw of that part's box occluded (the tiles of boxes.png);
- `table_markdown`: table.md, the normalised table (the paper's form) and the raw Delta table,
  with every choice stated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from torch import Tensor, nn

from deconvnet.analysis.correspondence import Box
from deconvnet.analysis.layers import Layer, penultimate_point, stage_number
from deconvnet.core.architecture import stage
from deconvnet.core.display import save_png, to_pil

PALETTE = (
    (230, 25, 75),
    (0, 130, 200),
    (60, 180, 75),
    (255, 225, 25),
    (145, 30, 180),
    (70, 240, 240),
    (245, 130, 48),
    (240, 50, 230),
)
PALETTE_NAMES = ("red", "blue", "green", "yellow", "purple", "cyan", "orange", "magenta")


# ------------------------------------------------------------------------------- the titles


def layer_title(model: nn.Module, layer: Layer) -> str:
    """A table column's layer in words: 'stage 5 (pool5)' for a stage (by number, name or
    path), 'avgpool (the logits' input)' for fc7's analogue on other models, else the layer
    itself ('fc7', 'logits', 'layer3.1')."""
    number = stage_number(model, layer)
    if number is not None:
        return f"stage {number} ({stage(model, number).name})"
    if isinstance(layer, str) and layer not in ("fc6", "fc7") and layer == penultimate_point(model):
        return f"{layer} (the logits' input)"
    return str(layer)


# ------------------------------------------------------------------------------- the tiles


def outlined(image: Tensor, boxes: Sequence[Box], colours_: Sequence[tuple[int, int, int]]) -> Image.Image:
    """[3, S, S] in [0, 1] -> an RGB image with each box outlined (2 px, inside the box)."""
    picture = to_pil(image)
    draw = ImageDraw.Draw(picture)
    for (top, left, height, width), colour in zip(boxes, colours_):
        draw.rectangle([left, top, left + width - 1, top + height - 1], outline=colour, width=2)
    return picture


def part_colour(k: int) -> tuple[tuple[int, int, int], str]:
    """The k-th part's outline colour (RGB) and its name."""
    return PALETTE[k % len(PALETTE)], PALETTE_NAMES[k % len(PALETTE)]


def occlusion_tile(out: Path, shown: Tensor, file: str, box: Box, what: str) -> dict[str, Any]:
    """Save shown [3, S, S] (colours in [0, 1] of an image with `box` occluded) -> its tile."""
    save_png(shown, out / file)
    return {"file": file, "title": f"{what} occluded\n[top, left, h, w] = {list(box)}"}


def write_tiles(
    out: Path,
    labels: Sequence[str],
    boxes: Mapping[str, Sequence[Box]],
    randoms: Mapping[str, Sequence[Sequence[Box]]],
    views: Sequence[Mapping[str, Tensor]],
) -> list[dict[str, Any]]:
    """Write each image's tiles: its part boxes outlined, then per part the part occluded and the
    first random draw occluded -> the sheet's rows. views[k]: image k's colours [3, S, S] as
    "boxes" (the image), "<part>__part" and "<part>__random0" (those boxes occluded)."""
    parts = list(boxes)
    rows = []
    for k, label in enumerate(labels):
        name = f"{label}__boxes.png"
        outlined(
            views[k]["boxes"], [boxes[p][k] for p in parts], [part_colour(i)[0] for i in range(len(parts))]
        ).save(out / name)
        legend = ", ".join(f"{p.replace('_', ' ')} {part_colour(i)[1]}" for i, p in enumerate(parts))
        row = [{"file": name, "title": f"{label}: {legend}"}]
        for part in parts:
            what = part.replace("_", " ")
            row.append(
                occlusion_tile(
                    out, views[k][f"{part}__part"], f"{label}__{part}__part.png", boxes[part][k], what
                )
            )
            row.append(
                occlusion_tile(
                    out,
                    views[k][f"{part}__random0"],
                    f"{label}__{part}__random0.png",
                    randoms[part][0][k],
                    f"random box (draw 0), {what}'s size",
                )
            )
        rows.append({"label": label, "tiles": row})
    return rows


# ------------------------------------------------------------------------------- the table


def _pm(mean: float, std: float, digits: int = 4) -> str:
    """'mean ± std' with `digits` decimals."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _table_intro(result: Mapping[str, Any]) -> list[str]:
    """table.md's heading and text: the images, the model and weights, the note, the choices."""
    boxes, settings, images = result["boxes_file"], result["settings"], result["images"]
    n, note = len(images), result["classifier_note"]
    lines = [
        "# Correspondence analysis (Zeiler & Fergus 2014, Sec. 5, Table 1)",
        "",
        f"**Images: {boxes['description']} ({', '.join(image['label'] for image in images)})"
        f" — {n} images, NOT the paper's 5 dog images.** Boxes: `{boxes['source']}`, in "
        f"pixels of the {boxes['image_size']}x{boxes['image_size']} view the model sees.",
        "",
        f"Model: {result['model']}, {result['weights_label']}.",
    ]
    if note:
        lines += ["", f"**Note: {note}.**"]
    lines += [
        "",
        "eps_i = x_i - x~_i (features of image i minus those with the part occluded, "
        f"occluder = {settings['fill']:g} in the normalised input, the mean colour); "
        "Delta_l = sum over ordered pairs i != j of the Hamming distance between "
        "sign(eps_i) and sign(eps_j), sign(0) = 0. Lower = the occlusion changes the "
        "features more consistently across images. Random: each image's box moved to a "
        f"uniformly random position inside the image (same size; may overlap the part), "
        f"{settings['random_draws']} draws, seed {settings['seed']}.",
    ]
    return lines


def _normalized_table(result: Mapping[str, Any], names: Sequence[str], keys: Sequence[str]) -> list[str]:
    """The normalised Delta table (the paper's form): a row per part and per part's random boxes."""
    n = len(result["images"])
    lines = [
        "",
        "## Normalised Delta = Delta / (N (N - 1) D) (the paper's form)",
        "",
        "Part rows: mean ± population std over the "
        f"{n * (n - 1) // 2} image pairs of H / D; random rows: mean ± population std over "
        "the draws of the draw's normalised Delta.",
        "",
        "| occlusion | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for part, row in result["table"].items():
        label = part.replace("_", " ")
        lines.append(
            f"| {label} | "
            + " | ".join(_pm(row[k]["normalized_mean"], row[k]["normalized_std"]) for k in keys)
            + " |"
        )
        lines.append(
            f"| random, {label}'s box sizes | "
            + " | ".join(
                _pm(row[k]["random"]["normalized_mean"], row[k]["random"]["normalized_std"]) for k in keys
            )
            + " |"
        )
    return lines


def _delta_table(result: Mapping[str, Any], names: Sequence[str], keys: Sequence[str]) -> list[str]:
    """The raw Delta table: a row per part and per part's random boxes (mean ± std over draws)."""
    lines = [
        "",
        "## Delta (sum over i != j; = 2 x the sum over i < j)",
        "",
        "| occlusion | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for part, row in result["table"].items():
        label = part.replace("_", " ")
        lines.append(f"| {label} | " + " | ".join(str(row[k]["delta"]) for k in keys) + " |")
        lines.append(
            f"| random, {label}'s box sizes | "
            + " | ".join(_pm(row[k]["random"]["delta_mean"], row[k]["random"]["delta_std"], 1) for k in keys)
            + " |"
        )
    return lines


def table_markdown(result: Mapping[str, Any]) -> str:
    """table.md from the job's result dict: what the images are, the model and weights, the
    normalised table (the paper's form) and the raw Delta table, with every choice stated."""
    keys, names = list(result["layer_names"]), list(result["layer_names"].values())
    lines = _table_intro(result) + _normalized_table(result, names, keys) + _delta_table(result, names, keys)
    lines += [
        "",
        "Feature length D: "
        + ", ".join(f"{name} {result['feature_length'][k]}" for name, k in zip(names, keys))
        + ".",
        "",
        "The paper (5 dogs, its own ImageNet-trained model) finds the parts lower than random "
        "occlusion at layer 5 and the two close at layer 7; compare the pattern, not the "
        "numbers (other images, other model and weights).",
        "",
    ]
    return "\n".join(lines)
