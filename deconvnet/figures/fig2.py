"""Fig. 2's figures from its tiles: the per-layer pages, the sheet, their captions and where each
tile sits in them.

Model-free: everything comes from the tiles' arrays (`deconvnet.analysis.top_projections.StageTiles`,
or the arrays of a job's tiles.npz) and the figure meta stored with them. The geometry and the
drawing itself are `deconvnet.figures.fig2_layout`; `deconvnet.jobs.fig2` writes the files.

    fig2_stage{s}.png  one figure per layer (`render_stage_pages`)
    fig2.png           the sheet: layers stacked, labelled "Layer 1".."Layer 5" (`render_fig2_sheet`)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from deconvnet.analysis.top_projections import MapActivity, StageTiles
from deconvnet.data.models import titled
from deconvnet.figures.fig2_layout import (
    SHEET_TITLE_FONT,
    TEXT_FONT,
    PanelData,
    PanelLayout,
    render_sheet,
    render_stage,
    sheet_label_lines,
    sheet_layout,
    sheet_title_lines,
    stage_header_lines,
    stage_page_layout,
)

__all__ = [
    "RULE_NAMES",
    "SHEET_FILE",
    "STAGE_FILE",
    "combined_sheet",
    "dataset_line",
    "render_fig2_sheet",
    "render_stage_pages",
    "rule_legend",
    "selection_line",
    "stage_panel",
    "tile_places",
    "tile_scaling",
]

STAGE_FILE = "fig2_stage{stage}.png"
SHEET_FILE = "fig2.png"

RULE_NAMES = {
    "deconvnet": "deconvnet = relu(R), Zeiler & Fergus",
    "guided": "guided = relu(R)·[f>0], guided backpropagation",
    "backprop": "backprop = R·[f>0], the plain gradient",
}


# ---------------------------------------------------------------------------------------------
# captions


def rule_legend(rules: Sequence[str], k: int) -> str:
    """Which group of a block is which."""
    if len(rules) == 1:
        return (
            f"Per feature map: left, the {rules[0]} reconstructions of its top {k} activations "
            "(each tile scaled on its own, zero = grey); right, the matching image patches "
            f"(receptive field, grey outside the image); rank 1..{k} row-major."
        )
    names = "; ".join(RULE_NAMES[r] for r in rules)
    return (
        f"Per feature map, left to right: the reconstructions of its top {k} activations "
        f"under each backward rule named above its group ({names}), all from the same forward "
        "pass of each image, each tile scaled on its own (zero = grey); then the matching "
        f'image patches ("image": receptive field, grey outside the image); rank 1..{k} '
        "row-major in every group."
    )


def selection_line(shown: int, a: MapActivity, explicit: bool, live_only: bool, channel_seed: int) -> str:
    """One line: how a layer's feature maps were chosen, and how many are dead."""
    if explicit:
        how = "chosen explicitly"
    elif live_only:
        how = f"drawn (seed {channel_seed}) among the {len(a.eligible)} that fire on >= {a.k} images"
    else:
        how = f"drawn (seed {channel_seed}) among all, dead ones included (live_only off)"
    text = f"{shown} of {a.channels} feature maps, {how}; {len(a.dead)} dead (fire on no image)"
    if a.k > 1:
        fewer = f"1-{a.k - 1} images" if a.k > 2 else "1 image"
        text += f", {len(a.sparse)} fire on only {fewer}"
    return text


def tile_scaling(rf: int, tile: int) -> str:
    """How tiles of a receptive field `rf` px wide are shown `tile` px wide."""
    if tile > rf:
        return f"enlarged ×{tile // rf}, nearest neighbour"
    return "reduced, Lanczos" if tile < rf else "actual size"


def dataset_line(data_summary: Mapping[str, Any], k: int, border: int) -> str:
    """The dataset, its skipped files and what the scan took from each image, in one line."""
    skipped = data_summary.get("skipped_count", 0)
    where = (
        "in the whole map"
        if border == 0
        else f"at least {border} from the map's edge (exclude_border={border})"
    )
    return (
        f"Dataset: {data_summary['label']}, {data_summary['images']} images"
        + (f" ({skipped} unreadable file(s) skipped)" if skipped else "")
        + f"; per feature map the top {k} images (each image's strongest position {where})"
    )


# ---------------------------------------------------------------------------------------------
# pages and sheets


def stage_panel(arrays: Mapping[str, Any], stage_meta: Mapping[str, Any]) -> PanelData:
    """One layer's PanelData from its tiles.npz arrays (recon {rule: [M, k, 3, h, w]}, patch, channels)."""
    return PanelData(
        arrays["recon"], arrays["patch"], [int(c) for c in arrays["channels"]], tuple(stage_meta["tile_px"])
    )


def render_stage_pages(
    meta: Mapping[str, Any], stages: Mapping[int, Mapping[str, Any]]
) -> Iterator[tuple[int, Image.Image]]:
    """(stage, its page) per layer of `meta`, in order, from the layers' tiles.npz arrays `stages`."""
    for sm in meta["stages"]:
        yield sm["stage"], render_stage(stage_panel(stages[sm["stage"]], sm), meta, sm)


def render_fig2_sheet(meta: Mapping[str, Any], stages: Mapping[int, Mapping[str, Any]]) -> Image.Image:
    """The sheet of one job: its layers stacked under the job's title, at most sheet_max_width wide."""
    panels = [stage_panel(stages[sm["stage"]], sm) for sm in meta["stages"]]
    return render_sheet(
        sheet_title_lines(meta), sheet_label_lines(meta), panels, meta["display"]["sheet_max_width"]
    )


def combined_sheet(
    loaded: Sequence[tuple[Mapping[str, Any], Mapping[int, Mapping[str, Any]]]],
    max_width: int | None = None,
    title: str | None = None,
) -> Image.Image:
    """One sheet from several jobs' (meta, arrays per stage): every layer of every job one labelled
    panel, in the order given; labels name the model and weights when the jobs differ in them."""
    keys = {(m["model_label"], m["weights_label"]) for m, _ in loaded}
    datasets = {m["dataset_label"] for m, _ in loaded}
    mixed = len(keys) > 1
    first = loaded[0][0]
    panels, labels = [], []
    for meta, stages in loaded:
        for sm, label in zip(meta["stages"], sheet_label_lines(meta, with_model=mixed)):
            panels.append(stage_panel(stages[sm["stage"]], sm))
            labels.append(label)
    if title is None:
        title = "Fig. 2 reproduction — " + (
            "several models / weights (see labels)"
            if mixed
            else titled(first["model_label"], first["weights_label"])
        )
    lines = [(title, SHEET_TITLE_FONT)]
    lines += [(d, TEXT_FONT) for d in sorted(datasets)]
    lines += [(legend, TEXT_FONT) for legend in dict.fromkeys(m["legend"] for m, _ in loaded)]
    width = max_width or max(m["display"]["sheet_max_width"] for m, _ in loaded)
    return render_sheet(lines, labels, panels, width)


# ---------------------------------------------------------------------------------------------
# where each tile sits


def _boxes(layout: PanelLayout, mi: int, r: int, top: int, left: int, rules: Sequence[str]) -> dict[str, Any]:
    """Tile [mi, r]'s boxes [top, left, bottom, right] in a PNG whose body sits at (top, left)."""
    recon_boxes, patch_box = layout.tile_boxes(mi, r)

    def shift(b: list[int]) -> list[int]:
        return [b[0] + top, b[1] + left, b[2] + top, b[3] + left]

    return {
        "reconstruction_boxes": {rule: shift(b) for rule, b in zip(rules, recon_boxes)},
        "patch_box": shift(patch_box),
    }


def tile_places(tiles: Mapping[int, StageTiles], meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where every tile sits: {"figure": its block, cell and boxes (per rule) in its layer's PNG,
    "sheet": its boxes in the sheet}, per layer of `meta` in order, then [map, rank] row-major."""
    panels = [
        PanelData(
            tiles[sm["stage"]].recon,
            tiles[sm["stage"]].patch,
            tiles[sm["stage"]].channels,
            tuple(sm["tile_px"]),
        )
        for sm in meta["stages"]
    ]
    sheet = sheet_layout(
        sheet_title_lines(meta), sheet_label_lines(meta), panels, meta["display"]["sheet_max_width"]
    )
    places = []
    for sm, panel, place in zip(meta["stages"], panels, sheet.placements):
        t, layout = tiles[sm["stage"]], panel.layout()
        _, _, (top, left) = stage_page_layout(stage_header_lines(meta, sm), (layout.height, layout.width))
        for mi, r in np.ndindex(*t.image.shape):
            grow, gcol = divmod(mi, layout.grid[1])
            crow, ccol = divmod(r, layout.cells[1])
            figure = {
                "file": STAGE_FILE.format(stage=t.stage),
                "map_index": mi,
                "block_row": grow,
                "block_col": gcol,
                "cell_row": crow,
                "cell_col": ccol,
                **_boxes(layout, mi, r, top, left, t.rules),
            }
            sheet_place = {
                "file": SHEET_FILE,
                **_boxes(place.layout, mi, r, place.body_top, place.left, t.rules),
            }
            places.append({"figure": figure, "sheet": sheet_place})
    return places
