"""Fig. 1 of Zeiler & Fergus (2014), drawn from the data of `deconvnet.analysis.layer_maps.fig1_data`.

Top: one deconvnet layer (left, top-down) attached to one convnet layer (right, bottom-up), every
intermediate map an image panel with the paper's label. Bottom: unpooling with "switches" on a small
real patch of the rectified feature map, numbers printed in the cells.

    draw_fig1(data, "fig1.png")   # draws, no model needed

`draw_fig1` reads only the arrays and the "meta" dict of the data, so a figure redrawn from the
saved `fig1_data.npz` is pixel-identical.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deconvnet.core.display import to_display
from deconvnet.data.models import display_name
from deconvnet.data.models import weights_label as weights_label_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIG_SIZE = (16.0, 12.0)  # inches
DPI = 100  # -> 1600 x 1200 px
WIDTH, HEIGHT = FIG_SIZE[0] * DPI, FIG_SIZE[1] * DPI  # the overlay's coordinates: pixels, origin bottom-left

# geometry of the top part (pixels of the figure)
PANEL = 122  # panel side
GAP = 60  # between rows of panels
ROWS_TOP = HEIGHT - 160  # top edge of row 0
ROW_Y = [ROWS_TOP - PANEL - r * (PANEL + GAP) for r in range(4)]  # bottom edges of rows 0..3
X_DECONV, X_CONV = 390, 1080  # left edges: deconvnet, convnet columns
CX_DECONV, CX_CONV = X_DECONV + PANEL / 2, X_CONV + PANEL / 2  # their centres
X_MIDDLE = (X_DECONV + PANEL + X_CONV) / 2  # centre of the middle column (switches, image)
SYMMETRIC_NOTE = "zero = mid-grey, white = +max|x| of the panel"

GREY = "#444444"
WINDOW_COLOURS = [
    "#d62728",
    "#1f77b4",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
]
LIGHT = ["#f7c6c6", "#c6dcf2", "#c9ebc9", "#ffdcb8", "#e2d5ee", "#e6d3cf", "#f7d4ec", "#c3ecf1", "#ecedb5"]


def _crop(a: np.ndarray, zoom: list[list[int]] | None) -> np.ndarray:
    """a [..., h, w] cut to the zoom window [[y0, y1], [x0, x1]] (None: whole)."""
    if zoom is None:
        return a
    (y0, y1), (x0, x1) = zoom
    return a[..., y0:y1, x0:x1]


def _shown(a: np.ndarray) -> np.ndarray:
    """Zero -> mid-grey, symmetric per panel (deconvnet.core.display.to_display), as an HxW(x3) array."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if t.dim() == 2:
        return to_display(t[None])[0].numpy()
    return to_display(t).permute(1, 2, 0).numpy()


def _panel(
    fig: Figure,
    box: tuple[float, float, float, float],
    a: np.ndarray,
    rgb: bool = False,
    symmetric: bool = True,
) -> Axes:
    """An image panel at box = (left, bottom, width, height) in pixels of the figure."""
    W, H = fig.get_size_inches() * fig.dpi
    ax = fig.add_axes((box[0] / W, box[1] / H, box[2] / W, box[3] / H))
    if rgb and not symmetric:
        ax.imshow(np.clip(np.transpose(a, (1, 2, 0)), 0, 1), interpolation="antialiased")
    elif rgb:
        ax.imshow(_shown(a), interpolation="antialiased")
    else:
        ax.imshow(
            _shown(a),
            cmap="gray",
            vmin=0,
            vmax=1,
            interpolation="nearest" if max(a.shape) <= 64 else "antialiased",
        )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(GREY)
    return ax


def _box_on(ax: Axes, zoom: list[list[int]] | None, colour: str = "#e6550d", lw: float = 1.2) -> None:
    """Outline a zoom window [[y0, y1], [x0, x1]] (map positions) on a full-map panel."""
    from matplotlib.patches import Rectangle

    if zoom is None:
        return
    (y0, y1), (x0, x1) = zoom
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=lw))


def _ring(ax: Axes, y: float, x: float, colour: str = "#e6550d", r: float = 0.9) -> None:
    """A circle around map position (y, x)."""
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), r, fill=False, ec=colour, lw=1.5))


def _fmt(v: float) -> str:
    """A cell's number, two decimals."""
    return f"{v:.2f}"


def _grid(
    ax: Axes,
    values: np.ndarray,
    fills: dict,
    texts: dict | None = None,
    fontsize: float = 9,
    zero_grey: bool = False,
) -> None:
    """Cells with numbers; fills: (r, c) -> list of colours (split into triangles when two)."""
    from matplotlib.patches import Polygon, Rectangle

    n_r, n_c = values.shape
    ax.set_xlim(0, n_c)
    ax.set_ylim(n_r, 0)
    ax.set_aspect("equal")
    ax.axis("off")
    for r in range(n_r):
        for c in range(n_c):
            colours = fills.get((r, c), [])
            if len(colours) == 1:
                ax.add_patch(Rectangle((c, r), 1, 1, fc=colours[0], ec="none"))
            elif len(colours) >= 2:  # shared switch: one triangle per window (first two)
                ax.add_patch(Polygon([(c, r), (c + 1, r), (c, r + 1)], fc=colours[0], ec="none"))
                ax.add_patch(Polygon([(c + 1, r), (c + 1, r + 1), (c, r + 1)], fc=colours[1], ec="none"))
            ax.add_patch(Rectangle((c, r), 1, 1, fill=False, ec="#999999", lw=0.6))
            v = float(values[r, c])
            text = texts.get((r, c)) if texts else None
            label = text if text is not None else _fmt(v)
            faint = zero_grey and v == 0 and text is None
            ax.text(
                c + 0.5,
                r + 0.5,
                "0" if faint else label,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="#aaaaaa" if faint else "black",
                fontweight="normal" if faint or not colours else "bold",
            )


# ------------------------------------------------------------ bottom: unpooling with switches


@dataclass(frozen=True)
class IllustrationGrid:
    """Where the illustration's three grids go, in pixels of the figure."""

    size: int  # L: patch side (cells)
    block: int  # m: pooled block side (windows)
    cell: float  # patch / unpooled cell side
    pooled_cell: float  # pooled cell side (two lines of text each)
    top: float  # top edge of the grids
    x_patch: float
    x_pooled: float
    x_unpooled: float

    @property
    def middle(self) -> float:
        """Vertical centre of the patch grid: where the Pooling / Unpooling arrows go."""
        return self.top - self.size * self.cell / 2


def _illustration_grid(data: dict[str, Any], top: float) -> IllustrationGrid:
    """Cell sizes and left edges of the patch [L, L], pooled [m, m] and unpooled [L, L] grids."""
    L, m = data["patch"].shape[0], data["patch_pooled"].shape[0]
    cell = min(43.0, 215.0 / L)
    cq = 62.0  # pooled cells: two lines each
    grid_top = top - 68
    x_patch = 50
    x_pooled = x_patch + L * cell + 160
    x_unpooled = x_pooled + m * cq + 175
    return IllustrationGrid(L, m, cell, cq, grid_top, x_patch, x_pooled, x_unpooled)


def _axes_at(fig: Figure, grid: IllustrationGrid, x: float, n_rows: int, n_cols: int, size: float) -> Axes:
    """Axes for an n_rows x n_cols grid of `size`-pixel cells, top edge at the grids' top, left edge x."""
    W, H = WIDTH, HEIGHT
    return fig.add_axes((x / W, (grid.top - n_rows * size) / H, n_cols * size / W, n_rows * size / H))


def _window_colour(i: int) -> str:
    """Outline colour of pooling window i."""
    return WINDOW_COLOURS[i % len(WINDOW_COLOURS)]


def _window_light(i: int) -> str:
    """Fill colour of pooling window i's switch."""
    return LIGHT[i % len(LIGHT)]


def _chosen_cells(switches: np.ndarray, L: int) -> dict[tuple[int, int], list[int]]:
    """Patch cell (row, col) -> the windows whose switch [m, m] (flat positions in the L x L patch) it is."""
    chosen: dict[tuple[int, int], list[int]] = {}
    for i, f in enumerate(switches.flatten().tolist()):
        chosen.setdefault(divmod(int(f), L), []).append(i)
    return chosen


def _draw_patch_grid(
    fig: Figure, grid: IllustrationGrid, data: dict[str, Any], ill: dict[str, Any], fills: dict
) -> None:
    """The patch's numbers, switches shaded, the pooling windows outlined."""
    from matplotlib.patches import Rectangle

    L, m = grid.size, grid.block
    k, s = ill["kernel"], ill["stride"]
    ax_p = _axes_at(fig, grid, grid.x_patch, L, L, grid.cell)
    _grid(ax_p, data["patch"], fills, fontsize=8.5 if L > 5 else 9.5)
    for i in range(m * m):  # window outlines, inset so overlapping ones stay visible
        wy, wx = divmod(i, m)
        inset = 0.06 + 0.07 * i if ill["overlapping"] else 0.06
        ax_p.add_patch(
            Rectangle(
                (wx * s + inset, wy * s + inset),
                k - 2 * inset,
                k - 2 * inset,
                fill=False,
                ec=_window_colour(i),
                lw=2.0,
            )
        )


def _draw_pooled_grid(fig: Figure, grid: IllustrationGrid, data: dict[str, Any]) -> None:
    """The pooled values, each with its switch @(row, col) in the patch."""
    from matplotlib.patches import Rectangle

    L, m = grid.size, grid.block
    pooled, switches = data["patch_pooled"], data["patch_switches"]
    ax_q = _axes_at(fig, grid, grid.x_pooled, m, m, grid.pooled_cell)
    q_fills = {divmod(i, m): [_window_light(i)] for i in range(m * m)}
    q_texts = {
        divmod(i, m): f"{_fmt(float(pooled.flatten()[i]))}\n@({int(f) // L},{int(f) % L})"
        for i, f in enumerate(switches.flatten().tolist())
    }
    _grid(ax_q, pooled, q_fills, q_texts, fontsize=9)
    for i in range(m * m):
        wy, wx = divmod(i, m)
        ax_q.add_patch(
            Rectangle((wx + 0.04, wy + 0.04), 0.92, 0.92, fill=False, ec=_window_colour(i), lw=2.0)
        )


def _draw_unpooled_grid(
    fig: Figure,
    grid: IllustrationGrid,
    data: dict[str, Any],
    chosen: dict[tuple[int, int], list[int]],
    fills: dict,
) -> None:
    """The unpooled patch: values at their switches (sums marked where shared), zeros elsewhere."""
    L = grid.size
    unpooled = data["patch_unpooled"]
    ax_u = _axes_at(fig, grid, grid.x_unpooled, L, L, grid.cell)
    u_texts = {}
    for rc, ws in chosen.items():
        if len(ws) > 1:
            u_texts[rc] = f"{_fmt(float(unpooled[rc]))}\n(\u03a3{len(ws)})"
    _grid(ax_u, unpooled, fills, u_texts, fontsize=8.5 if L > 5 else 9.5, zero_grey=True)


def _draw_grid_captions(
    overlay: Axes, grid: IllustrationGrid, ill: dict[str, Any], meta: dict[str, Any]
) -> None:
    """The three grids' titles."""
    L, m, cell, cq = grid.size, grid.block, grid.cell, grid.pooled_cell
    k, s = ill["kernel"], ill["stride"]
    y0, x0 = ill["origin"]
    overlay.text(
        max(grid.x_patch + L * cell / 2, 150),
        grid.top + 8,
        f"Rectified Feature Maps (patch)\nrows {y0}\u2013{y0 + L - 1}, cols "
        f"{x0}\u2013{x0 + L - 1}, channel {meta['channel']}",
        ha="center",
        va="bottom",
        fontsize=10,
    )
    overlay.text(
        grid.x_pooled + m * cq / 2,
        grid.top + 8,
        f"Pooled Maps + switches\n({m}\u00d7{m} windows, {k}\u00d7{k} stride {s})",
        ha="center",
        va="bottom",
        fontsize=10,
    )
    overlay.text(
        grid.x_unpooled + L * cell / 2,
        grid.top + 8,
        "Unpooled Maps\n(values at switches, zeros elsewhere)",
        ha="center",
        va="bottom",
        fontsize=10,
    )


def _step(overlay: Axes, y: float, start: float, end: float, name: str, how: str) -> None:
    """A labelled arrow between two grids at height y: the operation's name above, its code below."""
    overlay.annotate(
        "",
        xy=(end, y),
        xytext=(start, y),
        arrowprops=dict(arrowstyle="-|>", lw=2, color="black", mutation_scale=16),
    )
    overlay.text((start + end) / 2, y + 8, name, ha="center", va="bottom", fontsize=11.5, fontweight="bold")
    overlay.text((start + end) / 2, y - 8, how, ha="center", va="top", fontsize=8.5, color=GREY)


def _illustration_notes(ill: dict[str, Any], L: int, m: int) -> list[str]:
    """The paragraphs right of the grids: what is shown, why this patch, whether switches are shared."""
    k, s = ill["kernel"], ill["stride"]
    notes = [
        f"The {L}\u00d7{L} patch is cut from the real rectified feature map; its {m}\u00d7{m} "
        "pooling windows are outlined in colour. Shaded cells: each window's max location "
        "(its switch). Pooled cells: the max and its switch @(row, col) in the patch. "
        "Unpooling puts every value back at its switch, zeros elsewhere.",
        f"Patch: {ill['why']}.",
    ]
    if ill["overlapping"]:
        if ill["shared_switches"]:
            sh = ill["shared_switches"][0]
            notes.append(
                f"Overlapping windows ({k}\u00d7{k}, stride {s}): cell ({sh['row']},"
                f"{sh['col']}) is the switch of {sh['windows']} windows, so unpooling "
                f"SUMS them: {sh['windows']} \u00d7 {sh['value']:.4f} = "
                f"{sh['sum']:.4f} (half-shaded cell, \u03a3)."
            )
        else:
            notes.append("Overlapping windows, but no two of them share a switch here.")
    else:
        notes.append(f"{k}\u00d7{k} windows with stride {s} tile the map: no switch is shared.")
    return notes


def _draw_illustration(
    fig: Figure, overlay: Axes, data: dict[str, Any], meta: dict[str, Any], top: float
) -> None:
    """Pooling and unpooling with switches on the real patch, below the top part (from y = top down)."""
    ill = meta["illustration"]
    overlay.plot([40, WIDTH - 40], [top + 8, top + 8], color="#cccccc", lw=1)
    overlay.text(
        40,
        top - 6,
        "Max Locations \u201cSwitches\u201d: pooling and unpooling on a real "
        "patch (numbers are the model's values)",
        fontsize=13,
        fontweight="bold",
        va="top",
    )
    if "patch" not in data:
        overlay.text(
            40,
            top - 50,
            f"No illustration: {ill.get('skipped', 'no pooling')} "
            f"(the stage ends in {meta['shown']['relu_name']}). Choose a stage that ends "
            "in max pooling (AlexNet 1, 2, 5; any VGG16 stage).",
            fontsize=11,
            va="top",
        )
        return
    grid = _illustration_grid(data, top)
    L, m, cell, cq = grid.size, grid.block, grid.cell, grid.pooled_cell
    chosen = _chosen_cells(data["patch_switches"], L)  # which windows chose which patch cell
    fills = {rc: [_window_light(i) for i in ws] for rc, ws in chosen.items()}
    _draw_patch_grid(fig, grid, data, ill, fills)
    _draw_pooled_grid(fig, grid, data)
    _draw_unpooled_grid(fig, grid, data, chosen, fills)
    _draw_grid_captions(overlay, grid, ill, meta)
    _step(
        overlay,
        grid.middle,
        grid.x_patch + L * cell + 15,
        grid.x_pooled - 15,
        "Pooling",
        "F.max_pool2d(...,\nreturn_indices=True)",
    )
    _step(
        overlay,
        grid.middle,
        grid.x_pooled + m * cq + 15,
        grid.x_unpooled - 15,
        "Unpooling",
        "deconvnet.unpool\n(the switches)",
    )
    x_notes = grid.x_unpooled + L * cell + 40
    width = max(30, int((WIDTH - 40 - x_notes) / 7.0))
    wrapped = "\n\n".join(textwrap.fill(n, width) for n in _illustration_notes(ill, L, m))
    overlay.text(x_notes, grid.top + 4, wrapped, ha="left", va="top", fontsize=9.5, linespacing=1.35)


# ------------------------------------------------------------------------- text on the overlay


def _text(overlay: Axes, x: float, y: float, s: str, **kw: Any) -> None:
    """Text at (x, y) pixels of the figure, font size 10 unless given."""
    kw.setdefault("fontsize", 10)
    overlay.text(x, y, s, **kw)


def _arrow(
    overlay: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    colour: str = "black",
    lw: float = 1.6,
    style: str = "-|>",
) -> None:
    """An arrow from start to end, pixels of the figure."""
    overlay.annotate(
        "",
        xy=end,
        xytext=start,
        xycoords="data",
        textcoords="data",
        arrowprops=dict(arrowstyle=style, color=colour, lw=lw, shrinkA=0, shrinkB=0, mutation_scale=14),
    )


def _op(overlay: Axes, x: float, y: float, s: str, fc: str = "#fff7d6") -> None:
    """An operation's name in a rounded box centred at (x, y)."""
    overlay.text(
        x,
        y,
        s,
        ha="center",
        va="center",
        fontsize=10.5,
        zorder=5,
        bbox=dict(boxstyle="round,pad=0.35", fc=fc, ec="#7a6a2a", lw=1),
    )


def _label(overlay: Axes, x: float, y: float, title: str, detail: str, align: str) -> None:
    """A panel's label: its bold title above y, the details below."""
    _text(overlay, x, y + 12, title, ha=align, va="bottom", fontsize=11.5, fontweight="bold")
    _text(overlay, x, y + 8, detail, ha=align, va="top", fontsize=9, color=GREY, linespacing=1.25)


def _mid_row(r: int) -> float:
    """Vertical centre of panel row r."""
    return ROW_Y[r] + PANEL / 2


def _zoom_text(z: list[list[int]] | None) -> str:
    """What part of the map a panel shows."""
    if z is None:
        return "whole map"
    return f"zoom: rows {z[0][0]}\u2013{z[0][1] - 1}, cols {z[1][0]}\u2013{z[1][1] - 1}"


def _zoom_of(meta: dict[str, Any], level: str) -> list[list[int]] | None:
    """The zoom window [[y0, y1], [x0, x1]] of one level (pooled, map, below, pixels); None: whole maps."""
    zoom = meta.get("zoom")
    return zoom[level] if zoom else None


# ------------------------------------------------------------------------------- title, headers


def _layer_shown_line(meta: dict[str, Any]) -> str:
    """The title's third line: which modules of the stage are shown."""
    shown = meta["shown"]
    has_pool = shown["pool"] is not None
    chain = " \u2192 ".join(m.split(" ")[1] for m in meta["stage_modules"])
    layer_desc = f"{shown['conv_name']} \u2192 {shown['relu_name']}" + (
        f" \u2192 {shown['pool_name']}" if has_pool else ""
    )
    if shown["whole_stage"]:
        return f"the layer shown is the whole stage: {layer_desc}"
    last = " \u2192 pool" if has_pool else ""
    end = shown["pool"] if has_pool else shown["relu"]
    return (
        f"stage {meta['stage']} = {chain}; shown: its LAST conv \u2192 relu{last} "
        f"({layer_desc}, features[{shown['conv']}..{end}])"
    )


def _draw_title(overlay: Axes, meta: dict[str, Any]) -> None:
    """The title: the figure, the model and its weights, the image, stage and channel, the layer shown."""
    w = meta["weights"]
    model_label = display_name(meta["model"])
    weights_label = weights_label_of(w)
    weights_colour = "#c00000" if w.get("weights") == "random" else "black"
    _text(
        overlay,
        WIDTH / 2,
        HEIGHT - 28,
        "Fig. 1 (Zeiler & Fergus 2014) drawn from real data: a deconvnet layer "
        "(left) attached to a convnet layer (right)",
        ha="center",
        va="center",
        fontsize=15,
        fontweight="bold",
    )
    _text(
        overlay,
        WIDTH / 2,
        HEIGHT - 54,
        f"{model_label}  \u00b7  {weights_label}",
        ha="center",
        va="center",
        fontsize=11.5,
        color=weights_colour,
    )
    line2 = (
        f"image: {meta['image']}  \u00b7  stage {meta['stage']} ({meta['stage_name']})  \u00b7  "
        f"channel {meta['channel']} of {meta['channels']} ({meta['channel_by']})"
    )
    _text(overlay, WIDTH / 2, HEIGHT - 76, line2, ha="center", va="center", fontsize=11)
    line3 = _layer_shown_line(meta)
    _text(overlay, WIDTH / 2, HEIGHT - 97, line3, ha="center", va="center", fontsize=10.5, color=GREY)


def _draw_column_headers(overlay: Axes) -> None:
    """The two columns' names above the panels."""
    _text(
        overlay,
        CX_DECONV - 40,
        ROWS_TOP + 30,
        "Deconvnet layer (top-down)",
        ha="right",
        va="center",
        fontsize=13,
        fontweight="bold",
        color="#08519c",
    )
    _text(
        overlay,
        CX_CONV + 40,
        ROWS_TOP + 30,
        "Convnet layer (bottom-up)",
        ha="left",
        va="center",
        fontsize=13,
        fontweight="bold",
        color="#a50f15",
    )


# ------------------------------------------------------------------------ convnet column (right)


def _draw_convnet_panels(fig: Figure, data: dict[str, Any], meta: dict[str, Any]) -> tuple[Axes, ...]:
    """The convnet maps, top to bottom: pooled, rectified, feature maps, layer below."""
    pooled_ax = _panel(fig, (X_CONV, ROW_Y[0], PANEL, PANEL), data["pooled"])
    rect_ax = _panel(fig, (X_CONV, ROW_Y[1], PANEL, PANEL), data["rectified"])
    feat_ax = _panel(fig, (X_CONV, ROW_Y[2], PANEL, PANEL), data["feature"])
    if meta["below_is_image"]:
        below_ax = _panel(fig, (X_CONV, ROW_Y[3], PANEL, PANEL), data["image"], rgb=True, symmetric=False)
    else:
        below_ax = _panel(fig, (X_CONV, ROW_Y[3], PANEL, PANEL), data["below"])
    return pooled_ax, rect_ax, feat_ax, below_ax


def _below_detail(data: dict[str, Any], meta: dict[str, Any]) -> str:
    """The layer-below panel's details: the image, or which channel of which module."""
    shown = meta["shown"]
    bh, bw = data["below"].shape[-2:]
    if meta["below_is_image"]:
        return f"the input image, {bh}\u00d7{bw} (RGB, de-normalised)"
    below_detail = (
        f"{meta['below_name']} output = input of {shown['conv_name']}, {bh}\u00d7{bw}\n"
        f"channel {meta['below_channel']} of {meta['below_channels']} "
        f"({meta['below_channel_by']})"
    )
    return "\n".join(textwrap.fill(line, 52) for line in below_detail.split("\n"))


def _draw_convnet_labels(overlay: Axes, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """The convnet panels' labels, right of them."""
    shown = meta["shown"]
    has_pool = shown["pool"] is not None
    c_txt = f"channel {meta['channel']}"
    hp, wp = data["pooled"].shape
    h, w = data["feature"].shape
    lx = X_CONV + PANEL + 14
    pooled_title = "Pooled Maps" if has_pool else "Rectified Feature Maps (stage output)"
    _label(
        overlay,
        lx,
        _mid_row(0),
        pooled_title,
        f"{shown['pool_name'] or shown['relu_name']} output, {c_txt}, {hp}\u00d7{wp}\n"
        + (
            f"max pool {shown['pool_kernel']}\u00d7{shown['pool_kernel']}, stride {shown['pool_stride']}"
            if has_pool
            else "no pooling in this layer"
        ),
        "left",
    )
    _label(
        overlay,
        lx,
        _mid_row(1),
        "Rectified Feature Maps",
        f"{shown['relu_name']} output, {c_txt}, {h}\u00d7{w}",
        "left",
    )
    _label(
        overlay,
        lx,
        _mid_row(2),
        "Feature Maps",
        f"{shown['conv_name']} output (bias included), {c_txt}, {h}\u00d7{w}\n{SYMMETRIC_NOTE}",
        "left",
    )
    _label(overlay, lx, _mid_row(3), "Layer Below Pooled Maps", _below_detail(data, meta), "left")


def _draw_convnet_arrows(overlay: Axes, meta: dict[str, Any]) -> None:
    """Bottom-up arrows and the operations between the convnet panels."""
    shown = meta["shown"]
    has_pool = shown["pool"] is not None
    for r in (3, 2, 1):  # bottom-up arrows
        _arrow(overlay, (CX_CONV, ROW_Y[r] + PANEL + 2), (CX_CONV, ROW_Y[r - 1] - 2), colour="#a50f15")
    cs = shown["conv_shape"]
    _op(
        overlay,
        CX_CONV,
        ROW_Y[3] + PANEL + GAP / 2,
        "Convolutional Filtering {F}\n"
        f"{cs[0]}\u00d7{cs[1]}\u00d7{cs[2]}\u00d7{cs[3]}, stride {shown['conv_stride']}",
    )
    _op(overlay, CX_CONV, ROW_Y[2] + PANEL + GAP / 2, "Rectified Linear Function")
    _op(overlay, CX_CONV, ROW_Y[1] + PANEL + GAP / 2, "Max Pooling" if has_pool else "(no pooling)")
    _arrow(overlay, (CX_CONV, ROW_Y[0] + PANEL + 2), (CX_CONV, ROW_Y[0] + PANEL + 40), colour="#a50f15")
    _text(
        overlay, CX_CONV - 8, ROW_Y[0] + PANEL + 22, "to the layer above", fontsize=9, color=GREY, ha="right"
    )
    _arrow(overlay, (CX_CONV, ROW_Y[3] - 30), (CX_CONV, ROW_Y[3] - 2), colour="#a50f15")


# ------------------------------------------------------------------------ deconvnet column (left)


def _draw_deconvnet_panels(fig: Figure, data: dict[str, Any], meta: dict[str, Any]) -> tuple[Axes, ...]:
    """The deconvnet maps, top to bottom (zoomed when keep="max"): seed, unpooled, rectified, reconstruction."""
    zp, zm, zb = _zoom_of(meta, "pooled"), _zoom_of(meta, "map"), _zoom_of(meta, "below")
    seed_ax = _panel(fig, (X_DECONV, ROW_Y[0], PANEL, PANEL), _crop(data["seed"], zp))
    unp_ax = _panel(fig, (X_DECONV, ROW_Y[1], PANEL, PANEL), _crop(data["unpooled"], zm))
    runp_ax = _panel(fig, (X_DECONV, ROW_Y[2], PANEL, PANEL), _crop(data["rectified_unpooled"], zm))
    recon = data["reconstruction"]
    _panel(fig, (X_DECONV, ROW_Y[3], PANEL, PANEL), _crop(recon, zb), rgb=recon.ndim == 3)
    return seed_ax, unp_ax, runp_ax


def _seed_detail(meta: dict[str, Any]) -> str:
    """The seed panel's details: the kept unit (keep="max") or the whole pooled map."""
    kept = meta["kept"]
    c_txt = f"channel {meta['channel']}"
    zp = _zoom_of(meta, "pooled")
    if meta["keep"] == "max":
        return (
            f"SEED: only the strongest activation of {c_txt}\n"
            f"kept ({kept['value']:.2f} at y={kept['y']}, x={kept['x']}), all else 0\n"
            f"{_zoom_text(zp)}"
        )
    return f"SEED: the full pooled map of {c_txt},\nall other channels 0\n{_zoom_text(zp)}"


def _draw_deconvnet_labels(overlay: Axes, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """The deconvnet panels' labels, left of them."""
    has_pool = meta["shown"]["pool"] is not None
    zm, zb = _zoom_of(meta, "map"), _zoom_of(meta, "below")
    rx = X_DECONV - 14
    _label(overlay, rx, _mid_row(0), "Layer Above Reconstruction", _seed_detail(meta), "right")
    same = bool(np.array_equal(data["unpooled"], data["rectified_unpooled"]))
    _label(
        overlay,
        rx,
        _mid_row(1),
        "Unpooled Maps",
        (
            "values placed at the recorded switches,\nzeros elsewhere; "
            if has_pool
            else "no pooling: the seed passes unchanged\n"
        )
        + _zoom_text(zm),
        "right",
    )
    _label(
        overlay,
        rx,
        _mid_row(2),
        "Rectified Unpooled Maps",
        "relu of the signal (deconvnet rule)\n"
        + ("= unpooled maps here: the seed is \u2265 0\n" if same else "")
        + _zoom_text(zm),
        "right",
    )
    if meta["below_is_image"]:
        rec_detail = "in pixel space (RGB), display-normalised\n"
    else:
        rec_detail = f"at the layer below ({meta['below_name']}), channel {meta['below_channel']}\n"
    _label(
        overlay,
        rx,
        _mid_row(3),
        "Reconstruction",
        rec_detail + SYMMETRIC_NOTE + "\n" + _zoom_text(zb),
        "right",
    )


def _draw_deconvnet_arrows(overlay: Axes, meta: dict[str, Any]) -> None:
    """Top-down arrows and the operations between the deconvnet panels."""
    has_pool = meta["shown"]["pool"] is not None
    for r in (0, 1, 2):  # top-down arrows
        _arrow(overlay, (CX_DECONV, ROW_Y[r] - 2), (CX_DECONV, ROW_Y[r + 1] + PANEL + 2), colour="#08519c")
    _op(
        overlay,
        CX_DECONV,
        ROW_Y[1] + PANEL + GAP / 2,
        "Max Unpooling" if has_pool else "(no unpooling)",
        fc="#dbe9f6",
    )
    _op(overlay, CX_DECONV, ROW_Y[2] + PANEL + GAP / 2, "Rectified Linear Function", fc="#dbe9f6")
    _op(
        overlay,
        CX_DECONV,
        ROW_Y[3] + PANEL + GAP / 2,
        "Convolutional Filtering {F$^T$}\ntransposed conv, the same weights",
        fc="#dbe9f6",
    )
    _arrow(overlay, (CX_DECONV, ROW_Y[0] + PANEL + 40), (CX_DECONV, ROW_Y[0] + PANEL + 2), colour="#08519c")
    _text(overlay, CX_DECONV + 8, ROW_Y[0] + PANEL + 22, "from the layer above", fontsize=9, color=GREY)
    _arrow(overlay, (CX_DECONV, ROW_Y[3] - 2), (CX_DECONV, ROW_Y[3] - 30), colour="#08519c")
    _text(
        overlay,
        CX_DECONV + 8,
        ROW_Y[3] - 22,
        "to the layer below" if not meta["below_is_image"] else "(pixel space)",
        fontsize=9,
        color=GREY,
    )


def _draw_zoom_markers(
    overlay: Axes, meta: dict[str, Any], convnet_axes: tuple[Axes, ...], deconvnet_axes: tuple[Axes, ...]
) -> None:
    """keep="max": rings at the kept unit and its switch, the zoomed regions boxed on the full maps."""
    pooled_ax, rect_ax, feat_ax, below_ax = convnet_axes
    seed_ax, unp_ax, runp_ax = deconvnet_axes
    kept = meta["kept"]
    zp, zm, zb = _zoom_of(meta, "pooled"), _zoom_of(meta, "map"), _zoom_of(meta, "below")
    (py0, _), (px0, _) = zp
    (my0, _), (mx0, _) = zm
    _ring(seed_ax, kept["y"] - py0, kept["x"] - px0)
    _ring(unp_ax, kept["switch_y"] - my0, kept["switch_x"] - mx0)
    _ring(runp_ax, kept["switch_y"] - my0, kept["switch_x"] - mx0)
    _box_on(pooled_ax, zp)
    _box_on(rect_ax, zm)
    _box_on(feat_ax, zm)
    _box_on(below_ax, zb)
    _text(
        overlay,
        CX_CONV + 10,
        ROW_Y[3] - 22,
        "orange boxes: the regions zoomed on the left",
        ha="left",
        fontsize=9,
        color="#e6550d",
    )


# ------------------------------------------------------------------ middle: switches, image, pixels


def _draw_switch_panel(fig: Figure, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """How many pooling windows chose each position of the rectified map (pooling layers only)."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    kept, shown = meta["kept"], meta["shown"]
    zm = _zoom_of(meta, "map")
    sw = _crop(data["switch_count"], zm)
    sw_ax_box = (X_MIDDLE - PANEL / 2, ROW_Y[1], PANEL, PANEL)
    W_, H_ = WIDTH, HEIGHT
    sw_ax = fig.add_axes((sw_ax_box[0] / W_, sw_ax_box[1] / H_, PANEL / W_, PANEL / H_))
    cmap = ListedColormap(["white", "black", "#d62728", "#ff7f0e", "#ffd400"])
    norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5, 100], cmap.N)
    sw_ax.imshow(sw, cmap=cmap, norm=norm, interpolation="nearest" if max(sw.shape) <= 64 else "antialiased")
    sw_ax.set_xticks([])
    sw_ax.set_yticks([])
    if zm is not None:
        _ring(sw_ax, kept["switch_y"] - zm[0][0], kept["switch_x"] - zm[1][0])
        k_, s_ = shown["pool_kernel"], shown["pool_stride"]
        if k_ == s_:  # tiling windows: draw their borders
            (y0_, y1_), (x0_, x1_) = zm
            for yy in range(y0_ + 1, y1_):
                if yy % s_ == 0:
                    sw_ax.axhline(yy - y0_ - 0.5, color="#bbbbbb", lw=0.8)
            for xx in range(x0_ + 1, x1_):
                if xx % s_ == 0:
                    sw_ax.axvline(xx - x0_ - 0.5, color="#bbbbbb", lw=0.8)


def _draw_switch_labels(overlay: Axes, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """The switch panel's title, legend and the Max Pooling -> Switches -> Max Unpooling arrows."""
    shown = meta["shown"]
    zm = _zoom_of(meta, "map")
    mx = X_MIDDLE
    _text(overlay, mx, ROW_Y[1] + PANEL + 26, "Switches", ha="center", fontsize=11.5, fontweight="bold")
    _text(
        overlay,
        mx,
        ROW_Y[1] + PANEL + 8,
        f"argmax positions of {shown['pool_name']} on the rectified map",
        ha="center",
        fontsize=9,
        color=GREY,
    )
    legend = "black: chosen by 1 window"
    if zm is not None and shown["pool_kernel"] == shown["pool_stride"]:
        legend += "; grey lines: pooling windows"
    if int(data["switch_count"].max()) > 1:
        legend += "\nred/orange/yellow: shared by 2/3/4 windows\n(unpooling sums their values)"
    legend += "\n" + _zoom_text(zm)
    _text(overlay, mx, ROW_Y[1] - 8, legend, ha="center", va="top", fontsize=9, color=GREY)
    # Max Pooling -> Switches -> Max Unpooling
    y_op = ROW_Y[1] + PANEL + GAP / 2
    _arrow(overlay, (X_CONV - 20, y_op), (mx + PANEL / 2 + 6, ROW_Y[1] + PANEL * 0.75), colour="#555555")
    _arrow(
        overlay,
        (mx - PANEL / 2 - 6, ROW_Y[1] + PANEL * 0.75),
        (X_DECONV + PANEL + 20, y_op),
        colour="#555555",
    )


def _draw_input_image(fig: Figure, overlay: Axes, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """The input image with the kept unit's receptive field boxed."""
    from matplotlib.patches import Rectangle

    img_box = (X_MIDDLE - PANEL - 36, ROW_Y[3], PANEL, PANEL)
    img_ax = _panel(fig, img_box, data["image"], rgb=True, symmetric=False)
    rf = meta["receptive_field"]
    top, left, bottom, right = rf["box"]
    img_ax.add_patch(
        Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, ec="#e6550d", lw=1.4)
    )
    _text(
        overlay,
        img_box[0] + PANEL / 2,
        ROW_Y[3] - 6,
        f"input image\nbox: receptive field of\nthe strongest unit ({rf['size'][0]} px)",
        ha="center",
        va="top",
        fontsize=9,
        color=GREY,
    )


def _draw_pixels(fig: Figure, overlay: Axes, data: dict[str, Any], meta: dict[str, Any]) -> None:
    """The reconstruction taken to the pixels by the whole deconvnet, and the display note."""
    from matplotlib.patches import Rectangle

    top, left, bottom, right = meta["receptive_field"]["box"]
    pix_box = (X_MIDDLE + 36, ROW_Y[3], PANEL, PANEL)
    zx = _zoom_of(meta, "pixels")
    pix_ax = _panel(fig, pix_box, _crop(data["pixels"], zx), rgb=True)
    if zx is not None:
        pix_ax.add_patch(
            Rectangle(
                (left - zx[1][0] - 0.5, top - zx[0][0] - 0.5),
                right - left,
                bottom - top,
                fill=False,
                ec="#e6550d",
                lw=1.2,
            )
        )
    _text(
        overlay,
        pix_box[0] + PANEL / 2,
        ROW_Y[3] - 6,
        "projected to pixels by the\nwhole deconvnet\n" + _zoom_text(zx),
        ha="center",
        va="top",
        fontsize=9,
        color=GREY,
    )
    _text(
        overlay,
        X_MIDDLE,
        ROW_Y[3] + PANEL + 10,
        "every panel is scaled on its own:\nzero = mid-grey, symmetric in sign",
        ha="center",
        va="bottom",
        fontsize=9,
        color=GREY,
    )


# --------------------------------------------------------------------------------- the figure


def draw_fig1(data: dict[str, Any], path: str | Path) -> Path:
    """Draw Fig. 1 from `fig1_data(...)` output (or its saved .npz) into a PNG; returns the path."""
    from matplotlib.figure import Figure

    meta = data["meta"]
    fig = Figure(figsize=FIG_SIZE, dpi=DPI, facecolor="white")
    overlay = fig.add_axes((0, 0, 1, 1))
    overlay.set_xlim(0, WIDTH)
    overlay.set_ylim(0, HEIGHT)
    overlay.axis("off")
    _draw_title(overlay, meta)
    _draw_column_headers(overlay)
    convnet_axes = _draw_convnet_panels(fig, data, meta)
    _draw_convnet_labels(overlay, data, meta)
    _draw_convnet_arrows(overlay, meta)
    deconvnet_axes = _draw_deconvnet_panels(fig, data, meta)
    _draw_deconvnet_labels(overlay, data, meta)
    _draw_deconvnet_arrows(overlay, meta)
    if meta.get("zoom"):
        _draw_zoom_markers(overlay, meta, convnet_axes, deconvnet_axes)
    if meta["shown"]["pool"] is not None and "switch_count" in data:
        _draw_switch_panel(fig, data, meta)
        _draw_switch_labels(overlay, data, meta)
    _draw_input_image(fig, overlay, data, meta)
    _draw_pixels(fig, overlay, data, meta)
    _draw_illustration(fig, overlay, data, meta, top=ROW_Y[3] - 64)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white", metadata={"Software": None})
    return path
