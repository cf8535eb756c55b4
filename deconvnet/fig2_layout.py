"""Fig. 2 layout and drawing, model-free: tiles (reconstructions and image patches) in, PNGs out.

Per feature map a block of reconstructions beside the block of matching image patches (rank 1..k
row-major), feature maps in a near-square grid per layer, layers stacked on one sheet.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from deconvnet.display import to_display

def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


TILE_PAD = 2       # between the tiles of one block
HALF_GAP = 8       # between the reconstruction block and the image-patch block
BLOCK_GAP_X = 18   # between feature-map blocks
BLOCK_GAP_Y = 8
LABEL_H = 15       # channel label above each block
MARGIN = 12
LINE_GAP = 4
GREY = 128         # 0.5 in 8 bits: zero of a reconstruction, and the fill outside the image
BACKGROUND = (255, 255, 255)


def _check_int(value: Any, name: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected an int, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class DisplayOptions:
    """How tiles are shown: receptive fields smaller than `min_tile_px` are enlarged by the smallest
    integer factor (nearest neighbour) reaching it; larger than `max_tile_px` are reduced to it
    (Lanczos); the sheet is at most `sheet_max_width` px wide (layer panels are scaled down)."""

    min_tile_px: int = 48
    max_tile_px: int = 96
    sheet_max_width: int = 2000

    def __post_init__(self) -> None:
        for name in ("min_tile_px", "max_tile_px", "sheet_max_width"):
            _check_int(getattr(self, name), f"display.{name}", 1)
        if self.min_tile_px > self.max_tile_px:
            raise ValueError(f"display.min_tile_px ({self.min_tile_px}) must not exceed "
                             f"display.max_tile_px ({self.max_tile_px})")
        if self.sheet_max_width < 200:
            raise ValueError(f"display.sheet_max_width: expected >= 200 px, got {self.sheet_max_width}")

    @classmethod
    def from_any(cls, value: "DisplayOptions | Mapping[str, Any] | None") -> "DisplayOptions":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - {"min_tile_px", "max_tile_px", "sheet_max_width"})
            if unknown:
                raise ValueError(f"display: unknown key(s) {unknown}; accepted: min_tile_px, "
                                 "max_tile_px, sheet_max_width")
            return cls(**dict(value))
        raise ValueError(f"display: expected a mapping, got {type(value).__name__}")


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


def _grid(n: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for n items, cols >= rows."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


@dataclass(frozen=True)
class PanelLayout:
    """Where everything sits in one layer's body (the blocks, without title)."""

    width: int
    height: int
    tile: tuple[int, int]
    grid: tuple[int, int]       # feature-map blocks: rows, cols
    cells: tuple[int, int]      # tiles per half-block: rows, cols
    block: tuple[int, int]      # block height, width (label included)

    def block_origin(self, m: int) -> tuple[int, int]:
        """(top, left) of feature map m's block (its label line)."""
        row, col = divmod(m, self.grid[1])
        return row * (self.block[0] + BLOCK_GAP_Y), col * (self.block[1] + BLOCK_GAP_X)

    def tile_boxes(self, m: int, r: int) -> tuple[list[int], list[int]]:
        """[top, left, bottom, right] of rank r's reconstruction and image patch in block m."""
        top, left = self.block_origin(m)
        row, col = divmod(r, self.cells[1])
        th, tw = self.tile
        y = top + LABEL_H + row * (th + TILE_PAD)
        x = left + col * (tw + TILE_PAD)
        half = self.cells[1] * tw + (self.cells[1] - 1) * TILE_PAD + HALF_GAP
        return [y, x, y + th, x + tw], [y, x + half, y + th, x + half + tw]


def panel_layout(n_maps: int, k: int, tile: tuple[int, int]) -> PanelLayout:
    """Geometry of a layer body with n_maps blocks of k + k tiles of size `tile` (h, w)."""
    th, tw = tile
    crows, ccols = _grid(k)
    grows, gcols = _grid(n_maps)
    half_w = ccols * tw + (ccols - 1) * TILE_PAD
    half_h = crows * th + (crows - 1) * TILE_PAD
    block = (LABEL_H + half_h, 2 * half_w + HALF_GAP)
    width = gcols * block[1] + (gcols - 1) * BLOCK_GAP_X
    height = grows * block[0] + (grows - 1) * BLOCK_GAP_Y
    return PanelLayout(width, height, (th, tw), (grows, gcols), (crows, ccols), block)


_FONT_CACHE: dict[tuple[bool, int], Any] = {}


def _font(size: int, bold: bool = False):
    """DejaVu Sans from matplotlib's bundled fonts (same glyphs everywhere); PIL's default else."""
    key = (bold, size)
    if key not in _FONT_CACHE:
        try:
            import matplotlib

            name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
            _FONT_CACHE[key] = ImageFont.truetype(
                os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name), size)
        except (ImportError, OSError):
            _FONT_CACHE[key] = ImageFont.load_default(size=size)
    return _FONT_CACHE[key]


TITLE_FONT = (16, True)
TEXT_FONT = (13, False)
LABEL_FONT = (11, False)
SHEET_TITLE_FONT = (20, True)
LAYER_FONT = (17, True)


def _text_height(font_spec: tuple[int, bool]) -> int:
    return font_spec[0] + 5


def _text_width(text: str, font_spec: tuple[int, bool]) -> int:
    font = _font(*font_spec)
    return int(math.ceil(font.getlength(text)))


def _lines_height(lines: Sequence[tuple[str, tuple[int, bool]]]) -> int:
    return sum(_text_height(spec) + LINE_GAP for _, spec in lines)


def _draw_lines(draw: ImageDraw.ImageDraw, lines, top: int, left: int) -> int:
    y = top
    for text, spec in lines:
        draw.text((left, y), text, fill=(0, 0, 0), font=_font(*spec))
        y += _text_height(spec) + LINE_GAP
    return y


# ---------------------------------------------------------------------------------------------
# rendering (model-free: everything comes from StageTiles arrays + meta)


def display_tiles(recon: np.ndarray, patch: np.ndarray, tile: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, th, tw, 3] display versions of raw reconstructions [N, 3, h, w] (each normalised on
    its own by `to_display`) and of uint8 patches [N, 3, h, w], resized to `tile`."""
    shown = _to_uint8(to_display(torch.from_numpy(np.ascontiguousarray(recon))))
    return _resize_tiles(shown, tile), _resize_tiles(patch, tile)


def _resize_tiles(tiles: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    hwc = np.ascontiguousarray(tiles.transpose(0, 2, 3, 1))
    n, h, w, _ = hwc.shape
    th, tw = tile
    if (th, tw) == (h, w):
        return hwc
    if th % h == 0 and tw % w == 0 and th // h == tw // w and th >= h:
        f = th // h
        return hwc.repeat(f, axis=1).repeat(f, axis=2)
    return np.stack([np.asarray(Image.fromarray(t).resize((tw, th), Image.Resampling.LANCZOS))
                     for t in hwc]) if n else np.zeros((0, th, tw, 3), np.uint8)


def render_body(recon: np.ndarray, patch: np.ndarray, channels: Sequence[int],
                tile: tuple[int, int]) -> Image.Image:
    """One layer's blocks: recon, patch [M, k, 3, h, w] -> PIL image (layout `panel_layout`)."""
    m, k = recon.shape[:2]
    layout = panel_layout(m, k, tile)
    canvas = np.full((layout.height, layout.width, 3), 255, np.uint8)
    shown_r, shown_p = display_tiles(recon.reshape(m * k, *recon.shape[2:]),
                                     patch.reshape(m * k, *patch.shape[2:]), tile)
    for mi in range(m):
        for r in range(k):
            box_r, box_p = layout.tile_boxes(mi, r)
            canvas[box_r[0] : box_r[2], box_r[1] : box_r[3]] = shown_r[mi * k + r]
            canvas[box_p[0] : box_p[2], box_p[1] : box_p[3]] = shown_p[mi * k + r]
    body = Image.fromarray(canvas)
    draw = ImageDraw.Draw(body)
    for mi, c in enumerate(channels):
        top, left = layout.block_origin(mi)
        draw.text((left, top), f"feature map {int(c)}", fill=(0, 0, 0), font=_font(*LABEL_FONT))
    return body


def _stage_header(meta: Mapping[str, Any], stage_meta: Mapping[str, Any]) -> list:
    return [(f"Layer {stage_meta['stage']} ({stage_meta['name']}) — {meta['model_label']}, "
             f"{meta['weights_label']}", TITLE_FONT),
            (stage_meta["detail"], TEXT_FONT),
            (meta["dataset_label"], TEXT_FONT),
            (meta["legend"], TEXT_FONT)]


def render_stage(tiles: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                 stage_meta: Mapping[str, Any], body: Image.Image | None = None) -> Image.Image:
    """The per-layer figure: header lines + body (`render_body`, drawn here unless given)."""
    if body is None:
        body = render_body(tiles["recon"], tiles["patch"], tiles["channels"],
                           tuple(stage_meta["tile_px"]))
    lines = _stage_header(meta, stage_meta)
    header_h = _lines_height(lines)
    width = max(body.width, max(_text_width(t, s) for t, s in lines)) + 2 * MARGIN
    page = Image.new("RGB", (width, header_h + body.height + 2 * MARGIN), BACKGROUND)
    _draw_lines(ImageDraw.Draw(page), lines, MARGIN, MARGIN)
    page.paste(body, (MARGIN, MARGIN + header_h))
    return page


@dataclass(frozen=True)
class Placement:
    """Where a layer body sits in the sheet: label line at (top, left), body at (body_top, left),
    scaled by `scale` to (height, width)."""

    top: int
    left: int
    body_top: int
    scale: float
    height: int
    width: int


def sheet_layout(title_lines: Sequence, labels: Sequence[str], body_sizes: Sequence[tuple[int, int]],
                 max_width: int) -> tuple[tuple[int, int], list[Placement]]:
    """((sheet height, width), placements) for layer bodies of (height, width) stacked vertically,
    each scaled down (never up) to fit `max_width` - 2 * MARGIN."""
    room = max_width - 2 * MARGIN
    y = MARGIN + _lines_height(title_lines) + LINE_GAP
    placements = []
    widest = 0
    for label, (h, w) in zip(labels, body_sizes):
        scale = min(1.0, room / w)
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        body_top = y + _text_height(LAYER_FONT) + LINE_GAP
        placements.append(Placement(y, MARGIN, body_top, scale, sh, sw))
        widest = max(widest, sw, _text_width(label, LAYER_FONT))
        y = body_top + sh + 3 * MARGIN
    text_w = max([_text_width(t, s) for t, s in title_lines] or [0])
    width = min(max_width, max(widest, text_w) + 2 * MARGIN)
    return (y - 2 * MARGIN, width), placements


def render_sheet(title_lines: Sequence, labels: Sequence[str], bodies: Sequence[Image.Image],
                 max_width: int) -> Image.Image:
    """Layer bodies stacked under their labels, below the title lines."""
    (height, width), placements = sheet_layout(title_lines, labels,
                                               [(b.height, b.width) for b in bodies], max_width)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    _draw_lines(draw, title_lines, MARGIN, MARGIN)
    for label, body, p in zip(labels, bodies, placements):
        draw.text((p.left, p.top), label, fill=(0, 0, 0), font=_font(*LAYER_FONT))
        if p.scale != 1.0:
            body = body.resize((p.width, p.height), Image.Resampling.LANCZOS)
        sheet.paste(body, (p.left, p.body_top))
    return sheet


def _sheet_labels(meta: Mapping[str, Any], with_model: bool = False) -> list[str]:
    labels = []
    for sm in meta["stages"]:
        label = f"Layer {sm['stage']}  ({sm['name']}, receptive field {sm['rf_size'][0]} px)"
        if with_model:
            label += f"  — {meta['model_label']}, {meta['weights_label']}"
        labels.append(label)
    return labels


def _sheet_title(meta: Mapping[str, Any]) -> list:
    return [(f"Fig. 2 reproduction — {meta['model_label']}, {meta['weights_label']}",
             SHEET_TITLE_FONT),
            (meta["dataset_label"], TEXT_FONT),
            (meta["legend"], TEXT_FONT)]
