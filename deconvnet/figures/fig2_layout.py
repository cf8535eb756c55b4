"""Fig. 2 layout and drawing, model-free: tiles (reconstructions and image patches) in, PNGs out.

Per feature map one block: a k-tile group of reconstructions per backward rule, side by side, then
the group of matching image patches (rank 1..k row-major in every group); blocks in a grid per
layer; layers stacked on one sheet.

Text is never scaled with the pictures: every label and header is drawn at a fixed font size
(`LABEL_FONT`, `TEXT_FONT`, ...: DejaVu Sans, cap height >= 12 px), long lines are wrapped to the
page width, and a layer that is too wide for the sheet is redrawn with smaller TILES (Lanczos)
around full-size labels, never shrunk as a picture.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from deconvnet.analysis.top_projections import to_uint8
from deconvnet.core.display import to_display
from deconvnet.core.validation import check_int
from deconvnet.data.models import titled

# Fonts: (size px, bold). DejaVu Sans at 16 px has a 12 px cap height.
TITLE_FONT = (20, True)
TEXT_FONT = (16, False)
LABEL_FONT = (16, False)
SHEET_TITLE_FONT = (24, True)
LAYER_FONT = (20, True)

TILE_PAD = 2  # between the tiles of one group
HALF_GAP = 8  # between the groups of one block (each rule's reconstructions, image patches)
BLOCK_GAP_X = 18  # between feature-map blocks
BLOCK_GAP_Y = 10
LABEL_H = LABEL_FONT[0] + 6  # one label line above a block ("feature map c"; group names)
MARGIN = 12
LINE_GAP = 4
HEADER_GAP = 6  # between a page's header text and its body
MIN_TEXT_WIDTH = 900  # a stage page is at least this wide for its header text
MIN_SHEET_TILE = 8  # the sheet never shrinks tiles below this (then it grows wider instead)
MIN_FIT_TILE = 32  # below this the sheet rather uses fewer block columns
BACKGROUND = (255, 255, 255)
PATCH_NAME = "image"
WIDEST_LABEL = "feature map 000"  # blocks are at least this label wide (channels < 1000)


@dataclass(frozen=True)
class DisplayOptions:
    """How tiles are shown: receptive fields smaller than `min_tile_px` are enlarged by the smallest
    integer factor (nearest neighbour) reaching it; larger than `max_tile_px` are reduced to it
    (Lanczos); the sheet is at most `sheet_max_width` px wide (tiles of a wider layer are redrawn
    smaller there; text keeps its size)."""

    min_tile_px: int = 48
    max_tile_px: int = 96
    sheet_max_width: int = 2000

    def __post_init__(self) -> None:
        for name in ("min_tile_px", "max_tile_px", "sheet_max_width"):
            check_int(getattr(self, name), f"display.{name}", 1)
        if self.min_tile_px > self.max_tile_px:
            raise ValueError(
                f"display.min_tile_px ({self.min_tile_px}) must not exceed "
                f"display.max_tile_px ({self.max_tile_px})"
            )
        if self.sheet_max_width < 200:
            raise ValueError(f"display.sheet_max_width: expected >= 200 px, got {self.sheet_max_width}")

    @classmethod
    def from_any(cls, value: DisplayOptions | Mapping[str, Any] | None) -> DisplayOptions:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"min_tile_px", "max_tile_px", "sheet_max_width"})
            if unknown:
                raise ValueError(
                    f"display: unknown key(s) {unknown}; accepted: min_tile_px, max_tile_px, sheet_max_width"
                )
            return cls(**dict(value))
        raise ValueError(f"display: expected a mapping, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# text


_FONT_CACHE: dict[tuple[bool, int], Any] = {}


def _font(size: int, bold: bool = False):
    """DejaVu Sans from matplotlib's bundled fonts (same glyphs everywhere); PIL's default else."""
    key = (bold, size)
    if key not in _FONT_CACHE:
        try:
            import matplotlib

            name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
            _FONT_CACHE[key] = ImageFont.truetype(
                os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size
            )
        except (ImportError, OSError):
            _FONT_CACHE[key] = ImageFont.load_default(size=size)
    return _FONT_CACHE[key]


def _text_height(font_spec: tuple[int, bool]) -> int:
    return font_spec[0] + 5


def _text_width(text: str, font_spec: tuple[int, bool]) -> int:
    return int(math.ceil(_font(*font_spec).getlength(text)))


def _lines_height(lines: Sequence[tuple[str, tuple[int, bool]]]) -> int:
    return sum(_text_height(spec) + LINE_GAP for _, spec in lines)


def _wrap_one(text: str, spec: tuple[int, bool], width: int) -> list[str]:
    """Greedy word wrap of `text` to lines at most `width` px wide (a single longer word stays
    whole on its own line)."""
    out: list[str] = []
    line = ""
    for word in text.split(" "):
        trial = word if not line else f"{line} {word}"
        if line and _text_width(trial, spec) > width:
            out.append(line)
            line = word
        else:
            line = trial
    return out + [line]


def wrap_lines(
    lines: Sequence[tuple[str, tuple[int, bool]]], width: int
) -> list[tuple[str, tuple[int, bool]]]:
    """Text lines [(text, font spec)] word-wrapped so each drawn line is at most `width` px."""
    return [(piece, spec) for text, spec in lines for piece in _wrap_one(text, spec, width)]


def _draw_lines(draw: ImageDraw.ImageDraw, lines, top: int, left: int) -> int:
    y = top
    for text, spec in lines:
        draw.text((left, y), text, fill=(0, 0, 0), font=_font(*spec))
        y += _text_height(spec) + LINE_GAP
    return y


# ---------------------------------------------------------------------------------------------
# display geometry


def display_size(rf_size: Sequence[int], options: DisplayOptions | None = None) -> tuple[int, int]:
    """Display size (h, w) of a layer's tiles: receptive field enlarged by the smallest integer
    factor reaching `min_tile_px` (nearest neighbour), or reduced to `max_tile_px` (Lanczos)."""
    options = options or DisplayOptions()
    h, w = int(rf_size[0]), int(rf_size[1])
    side = max(h, w)
    if side < options.min_tile_px:
        f = math.ceil(options.min_tile_px / side)
        return h * f, w * f
    if side > options.max_tile_px:
        scale = options.max_tile_px / side
        return max(1, round(h * scale)), max(1, round(w * scale))
    return h, w


def _grid(n: int, groups: int = 2) -> tuple[int, int]:
    """(rows, cols) of the block grid for n blocks of `groups` tile groups each: near-square for
    the usual 2 groups (cols >= rows), fewer columns when more groups make each block wider."""
    cols = max(1, math.ceil(math.sqrt(n) * 2 / groups))
    return math.ceil(n / cols), cols


@dataclass(frozen=True)
class PanelLayout:
    """Where everything sits in one layer's body (the blocks, without the header).

    A block: label line(s), then `groups` tile groups side by side (one per rule, then the image
    patches), each `cells` tiles of size `tile`, `group_w` wide.
    """

    width: int
    height: int
    tile: tuple[int, int]
    grid: tuple[int, int]  # feature-map blocks: rows, cols
    cells: tuple[int, int]  # tiles per group: rows, cols
    block: tuple[int, int]  # block height, width (labels included)
    groups: int = 2  # rules + 1
    group_w: int = 0  # width of one group (tiles, or its name if wider)
    label_h: int = LABEL_H  # label lines above the tiles

    def block_origin(self, m: int) -> tuple[int, int]:
        """(top, left) of feature map m's block (its label line)."""
        row, col = divmod(m, self.grid[1])
        return row * (self.block[0] + BLOCK_GAP_Y), col * (self.block[1] + BLOCK_GAP_X)

    def group_left(self, m: int, g: int) -> int:
        """Left edge of group g (0..rules-1: reconstructions, rules: image patches) of block m."""
        return self.block_origin(m)[1] + g * (self.group_w + HALF_GAP)

    def tile_boxes(self, m: int, r: int) -> tuple[list[list[int]], list[int]]:
        """([top, left, bottom, right] of rank r's reconstruction under each rule, that of its
        image patch) in block m."""
        top, _ = self.block_origin(m)
        row, col = divmod(r, self.cells[1])
        th, tw = self.tile
        y = top + self.label_h + row * (th + TILE_PAD)
        boxes = []
        for g in range(self.groups):
            x = self.group_left(m, g) + col * (tw + TILE_PAD)
            boxes.append([y, x, y + th, x + tw])
        return boxes[:-1], boxes[-1]


def group_names(rules: Sequence[str]) -> list[str]:
    """Names drawn above the groups of a block: the rules, then the image patches."""
    return [*rules, PATCH_NAME]


def panel_layout(
    n_maps: int, k: int, tile: tuple[int, int], rules: Sequence[str] = ("deconvnet",), cols: int | None = None
) -> PanelLayout:
    """Geometry of a layer body with n_maps blocks of k tiles of size `tile` (h, w) per rule and k
    image patches, in `cols` block columns (default `_grid`). With one rule the groups are unnamed
    ("feature map c" only, the legend says left/right); with several, a second label line names
    each group."""
    th, tw = tile
    groups = len(rules) + 1
    crows, ccols = _grid(k)
    grows, gcols = _grid(n_maps, groups)
    if cols is not None:
        gcols = max(1, min(int(cols), n_maps))
        grows = math.ceil(n_maps / gcols)
    group_w = ccols * tw + (ccols - 1) * TILE_PAD
    label_h = LABEL_H
    if len(rules) > 1:
        group_w = max([group_w] + [_text_width(n, LABEL_FONT) for n in group_names(rules)])
        label_h = 2 * LABEL_H
    block_w = max(groups * group_w + (groups - 1) * HALF_GAP, _text_width(WIDEST_LABEL, LABEL_FONT))
    block = (label_h + crows * th + (crows - 1) * TILE_PAD, block_w)
    width = gcols * block[1] + (gcols - 1) * BLOCK_GAP_X
    height = grows * block[0] + (grows - 1) * BLOCK_GAP_Y
    return PanelLayout(
        width, height, (th, tw), (grows, gcols), (crows, ccols), block, groups, group_w, label_h
    )


def _fit_tile(
    n_maps: int, k: int, tile: tuple[int, int], rules: Sequence[str], room: int, cols: int
) -> tuple[int, int] | None:
    """The largest tile size <= `tile` (same aspect, at least MIN_SHEET_TILE) whose panel with
    `cols` block columns is at most `room` px wide; None if there is none."""
    th, tw = tile
    for h in range(th, min(th, MIN_SHEET_TILE) - 1, -1):
        size = (h, max(1, round(tw * h / th)))
        if panel_layout(n_maps, k, size, rules, cols).width <= room:
            return size
    return None


def fit_panel(n_maps: int, k: int, tile: tuple[int, int], rules: Sequence[str], room: int) -> PanelLayout:
    """A layer's layout for a sheet `room` px wide: the usual block grid with the largest tiles
    (<= `tile`) that fit; fewer block columns when tiles would drop below `MIN_FIT_TILE` px (or
    not fit at all). Text keeps its size; if even one column of `MIN_SHEET_TILE` px tiles is too
    wide, that is the layout (the sheet grows)."""
    default = _grid(n_maps, len(rules) + 1)[1]
    for cols in range(default, 0, -1):
        size = _fit_tile(n_maps, k, tile, rules, room, cols)
        if size is not None and (size[0] >= min(MIN_FIT_TILE, tile[0]) or cols == 1):
            return panel_layout(n_maps, k, size, rules, cols)
    small = (min(tile[0], MIN_SHEET_TILE), max(1, round(tile[1] * min(tile[0], MIN_SHEET_TILE) / tile[0])))
    return panel_layout(n_maps, k, small, rules, 1)


# ---------------------------------------------------------------------------------------------
# tiles (model-free: everything comes from StageTiles arrays + meta)


def display_tiles(
    recon: np.ndarray, patch: np.ndarray, tile: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, th, tw, 3] display versions of raw reconstructions [N, 3, h, w] (each normalised on
    its own by `to_display`) and of uint8 patches [N, 3, h, w], resized to `tile`."""
    return _display_recon(recon, tile), _resize_tiles(patch, tile)


def _display_recon(recon: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """Raw reconstructions [N, 3, h, w] -> uint8 [N, th, tw, 3], each normalised on its own."""
    shown = to_uint8(to_display(torch.from_numpy(np.ascontiguousarray(recon))))
    return _resize_tiles(shown, tile)


def _resize_tiles(tiles: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """uint8 [N, 3, h, w] -> [N, th, tw, 3]: nearest for an integer enlargement, Lanczos else."""
    hwc = np.ascontiguousarray(tiles.transpose(0, 2, 3, 1))
    return _resize_hwc(hwc, tile)


def _resize_hwc(hwc: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    n, h, w, _ = hwc.shape
    th, tw = tile
    if (th, tw) == (h, w):
        return hwc
    if th % h == 0 and tw % w == 0 and th // h == tw // w and th >= h:
        f = th // h
        return hwc.repeat(f, axis=1).repeat(f, axis=2)
    return (
        np.stack([np.asarray(Image.fromarray(t).resize((tw, th), Image.Resampling.LANCZOS)) for t in hwc])
        if n
        else np.zeros((0, th, tw, 3), np.uint8)
    )


def as_recon_dict(recon: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    """{rule: [M, k, 3, h, w]}; a bare array is the deconvnet rule's."""
    if isinstance(recon, Mapping):
        return dict(recon)
    return {"deconvnet": recon}


@dataclass(frozen=True)
class PanelData:
    """One layer's arrays: recon {rule: [M, k, 3, h, w] float32} (rules in display order), patch
    [M, k, 3, h, w] uint8, the M channels, and the layer's display tile size (h, w)."""

    recon: Mapping[str, np.ndarray]
    patch: np.ndarray
    channels: Sequence[int]
    tile: tuple[int, int]

    @property
    def rules(self) -> list[str]:
        return list(self.recon)

    def layout(self, tile: tuple[int, int] | None = None, cols: int | None = None) -> PanelLayout:
        """The body's layout with tiles of `tile` (default: the layer's display size) in `cols`
        block columns (default: `_grid`)."""
        m, k = self.patch.shape[:2]
        return panel_layout(m, k, tuple(tile or self.tile), self.rules, cols)

    def fit(self, room: int) -> PanelLayout:
        """The layout of this layer in a sheet `room` px wide (`fit_panel`)."""
        m, k = self.patch.shape[:2]
        return fit_panel(m, k, tuple(self.tile), self.rules, room)


def _shown_groups(panel: PanelData, tile: tuple[int, int]) -> list[np.ndarray]:
    """uint8 [M * k, th, tw, 3] per group (rules, then patches): display tiles made at the layer's
    display size, then reduced to `tile` (Lanczos) if that is smaller."""
    m, k = panel.patch.shape[:2]
    groups = []
    for rule in panel.rules:
        recon = np.asarray(panel.recon[rule])
        groups.append(_display_recon(recon.reshape(m * k, *recon.shape[2:]), panel.tile))
    groups.append(_resize_tiles(panel.patch.reshape(m * k, *panel.patch.shape[2:]), panel.tile))
    return [_resize_hwc(g, tile) for g in groups]


def render_body(panel: PanelData, layout: PanelLayout | None = None) -> Image.Image:
    """One layer's blocks as a PIL image (default layout `panel.layout()`), labels at LABEL_FONT."""
    layout = layout or panel.layout()
    m, k = panel.patch.shape[:2]
    canvas = np.full((layout.height, layout.width, 3), 255, np.uint8)
    shown = _shown_groups(panel, layout.tile)
    for mi in range(m):
        for r in range(k):
            recon_boxes, patch_box = layout.tile_boxes(mi, r)
            for g, box in enumerate([*recon_boxes, patch_box]):
                canvas[box[0] : box[2], box[1] : box[3]] = shown[g][mi * k + r]
    body = Image.fromarray(canvas)
    _draw_block_labels(ImageDraw.Draw(body), layout, panel.channels, panel.rules)
    return body


def _draw_block_labels(
    draw: ImageDraw.ImageDraw, layout: PanelLayout, channels: Sequence[int], rules: Sequence[str]
) -> None:
    font = _font(*LABEL_FONT)
    for mi, c in enumerate(channels):
        top, left = layout.block_origin(mi)
        draw.text((left, top), f"feature map {int(c)}", fill=(0, 0, 0), font=font)
        if len(rules) > 1:
            for g, name in enumerate(group_names(rules)):
                draw.text((layout.group_left(mi, g), top + LABEL_H), name, fill=(70, 70, 70), font=font)


# ---------------------------------------------------------------------------------------------
# the per-layer figure


def stage_header_lines(meta: Mapping[str, Any], stage_meta: Mapping[str, Any]) -> list:
    """A layer page's header lines [(text, font spec)]: title, the layer's detail line, the dataset
    line and the legend, from a fig2 job's meta and the layer's entry of it."""
    return [
        (
            f"Layer {stage_meta['stage']} ({stage_meta['name']}) — "
            f"{titled(meta['model_label'], meta['weights_label'])}",
            TITLE_FONT,
        ),
        (stage_meta["detail"], TEXT_FONT),
        (meta["dataset_label"], TEXT_FONT),
        (meta["legend"], TEXT_FONT),
    ]


def stage_page_layout(
    lines: Sequence, body_size: tuple[int, int]
) -> tuple[list, tuple[int, int], tuple[int, int]]:
    """(wrapped header lines, page (height, width), body (top, left)) of a per-layer figure whose
    body is (height, width): text wrapped to max(body width, MIN_TEXT_WIDTH)."""
    room = max(body_size[1], MIN_TEXT_WIDTH)
    wrapped = wrap_lines(lines, room)
    text_w = max(_text_width(t, s) for t, s in wrapped)
    width = max(body_size[1], text_w) + 2 * MARGIN
    header_h = _lines_height(wrapped) + HEADER_GAP
    return wrapped, (header_h + body_size[0] + 2 * MARGIN, width), (MARGIN + header_h, MARGIN)


def render_stage(
    panel: PanelData, meta: Mapping[str, Any], stage_meta: Mapping[str, Any], body: Image.Image | None = None
) -> Image.Image:
    """The per-layer figure: header lines (wrapped) + body (`render_body`, drawn unless given)."""
    if body is None:
        body = render_body(panel)
    lines, (height, width), (top, left) = stage_page_layout(
        stage_header_lines(meta, stage_meta), (body.height, body.width)
    )
    page = Image.new("RGB", (width, height), BACKGROUND)
    _draw_lines(ImageDraw.Draw(page), lines, MARGIN, MARGIN)
    page.paste(body, (left, top))
    return page


# ---------------------------------------------------------------------------------------------
# the sheet


@dataclass(frozen=True)
class Placement:
    """Where a layer sits in the sheet: label lines from (top, left), body at (body_top, left),
    drawn with `layout` (tiles possibly smaller than the layer's own display size)."""

    top: int
    left: int
    body_top: int
    layout: PanelLayout
    label_lines: tuple

    @property
    def height(self) -> int:
        return self.layout.height

    @property
    def width(self) -> int:
        return self.layout.width


@dataclass(frozen=True)
class SheetLayout:
    """size (height, width), the wrapped title lines and one Placement per layer."""

    size: tuple[int, int]
    title_lines: list
    placements: list[Placement]


def sheet_layout(
    title_lines: Sequence, labels: Sequence[Sequence], panels: Sequence[PanelData], max_width: int
) -> SheetLayout:
    """Layers stacked vertically under their label lines, below the title lines. Text is wrapped,
    at its own font size, to the widest layer (at least MIN_TEXT_WIDTH, at most
    max_width - 2 * MARGIN); a layer wider than the room is laid out again (`fit_panel`: smaller
    tiles, fewer block columns if need be), its labels keep their size.
    `labels[i]`: a layer's lines [(text, font spec)]."""
    room = max_width - 2 * MARGIN
    layouts = [panel.fit(room) for panel in panels]
    text_room = min(room, max([MIN_TEXT_WIDTH] + [layout.width for layout in layouts]))
    title = wrap_lines(title_lines, text_room)
    y = MARGIN + _lines_height(title) + LINE_GAP
    placements, widest = [], max(_text_width(t, s) for t, s in title) if title else 0
    for lines, layout in zip(labels, layouts):
        lines = wrap_lines(lines, text_room)
        body_top = y + _lines_height(lines)
        placements.append(Placement(y, MARGIN, body_top, layout, tuple(lines)))
        widest = max([widest, layout.width] + [_text_width(t, s) for t, s in lines])
        y = body_top + layout.height + 3 * MARGIN
    # widest <= room unless a panel does not fit even at MIN_SHEET_TILE: then the sheet grows
    return SheetLayout((y - 2 * MARGIN, widest + 2 * MARGIN), title, placements)


def render_sheet(
    title_lines: Sequence, labels: Sequence[Sequence], panels: Sequence[PanelData], max_width: int
) -> Image.Image:
    """The sheet (`sheet_layout`): every layer's body redrawn at its sheet tile size."""
    layout = sheet_layout(title_lines, labels, panels, max_width)
    sheet = Image.new("RGB", (layout.size[1], layout.size[0]), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _draw_lines(draw, layout.title_lines, MARGIN, MARGIN)
    for panel, p in zip(panels, layout.placements):
        _draw_lines(draw, p.label_lines, p.top, p.left)
        sheet.paste(render_body(panel, p.layout), (p.left, p.body_top))
    return sheet


def sheet_label_lines(meta: Mapping[str, Any], with_model: bool = False) -> list[list]:
    """Per layer of a fig2 job's meta: its bold label line, then its feature-map selection line."""
    labels = []
    for sm in meta["stages"]:
        label = f"Layer {sm['stage']}  ({sm['name']}, receptive field {sm['rf_size'][0]} px)"
        if with_model:
            label += f"  — {titled(meta['model_label'], meta['weights_label'])}"
        labels.append([(label, LAYER_FONT), (sm["selection"], TEXT_FONT)])
    return labels


def sheet_title_lines(meta: Mapping[str, Any]) -> list:
    """A job's sheet title lines [(text, font spec)]: title, dataset line and legend."""
    return [
        (f"Fig. 2 reproduction — {titled(meta['model_label'], meta['weights_label'])}", SHEET_TITLE_FONT),
        (meta["dataset_label"], TEXT_FONT),
        (meta["legend"], TEXT_FONT),
    ]
