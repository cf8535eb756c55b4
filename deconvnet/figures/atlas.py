"""The atlas's pages, model-free: records (plain JSON-able dicts) in, static HTML and PNGs out.

Every page is a static file: no JavaScript framework, no file fetched from the network, no
timestamp (the same records give the same bytes). Names never change between runs:

    index.html                         the model, its weights, the dataset, one row per stage
    stage<s>.html                      every channel of stage s, by channel number
    stage<s>_by_firing.html            the same grid sorted by how many images each channel fires on
    stage<s>/channel<cccc>.html        one channel: top-k patches and projections, optimised images,
                                       histogram, previous / next / stage links
    stage<s>/channel<cccc>.png         its tiles: row 0 the image patches, then one row per rule
    stage<s>/channel<cccc>_<variant>.png   its optimised images (plain, regularized)

A tile of the sprite is shown by an <img> of the sprite cut by `object-fit: none` and
`object-position`, so one file per channel holds all of its tiles. The one script is the
search-by-channel box (a few lines inline).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from deconvnet.figures.fig2_layout import display_tiles

__all__ = [
    "INDEX_PAGE",
    "channel_name",
    "channel_page",
    "channel_sprite",
    "histogram_svg",
    "index_page",
    "stage_page",
    "stage_page_name",
]

INDEX_PAGE = "index.html"
VARIANTS = ("plain", "regularized")
STYLE = """
body { font-family: DejaVu Sans, Arial, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 20px; }
table.stages td, table.stages th { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: left; }
nav a { margin-right: 14px; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ccc; padding: 4px; font-size: 12px; text-align: center; }
.card.dead { background: #fde8e8; border-color: #d33; }
.card img { display: block; margin: 2px auto; image-rendering: auto; }
.tiles { border-collapse: collapse; } .tiles td { padding: 2px; font-size: 11px; text-align: center; }
.tiles th { font-size: 12px; text-align: right; padding-right: 6px; }
.tiles td.caption { vertical-align: top; word-break: break-all; }
.note { color: #555; font-size: 13px; }
.dead-mark { color: #b00; font-weight: bold; }
""".strip()
SEARCH_SCRIPT = """
function goChannel(form, shown) {
  var c = parseInt(form.channel.value, 10);
  if (shown.indexOf(c) < 0) {
    form.querySelector('.miss').textContent = 'channel ' + form.channel.value + ' is not in this atlas';
    return false;
  }
  window.location.href = form.getAttribute('data-prefix') + String(c).padStart(4, '0') + '.html';
  return false;
}
""".strip()


def channel_name(channel: int) -> str:
    """The file stem of a channel's page and images: channel0042."""
    return f"channel{int(channel):04d}"


def stage_page_name(stage: int, by_firing: bool = False) -> str:
    """stage3.html, or stage3_by_firing.html for the grid sorted by firing count."""
    return f"stage{stage}_by_firing.html" if by_firing else f"stage{stage}.html"


def channel_sprite(recon: Mapping[str, np.ndarray], patch: np.ndarray, tile: tuple[int, int]) -> Image.Image:
    """One channel's tiles as one image: row 0 its k image patches (uint8 [k, 3, h, w]), then per
    rule its k reconstructions (raw float [k, 3, h, w], each normalised on its own), each tile
    resized to `tile` (h, w) -> [(1 + rules) * th, k * tw] RGB."""
    rows = []
    for rule_recon in recon.values():
        shown, patches = display_tiles(rule_recon, patch, tile)
        rows.append(np.concatenate(list(shown), axis=1))
    rows.insert(0, np.concatenate(list(patches), axis=1))
    return Image.fromarray(np.concatenate(rows, axis=0))


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str, script: str = "") -> str:
    """A whole HTML document with the atlas's inline style."""
    tail = f"<script>\n{script}\n</script>\n" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n{body}\n{tail}</body>\n</html>\n"
    )


def histogram_svg(edges: Sequence[float], counts: Sequence[int], width: int = 360, height: int = 120) -> str:
    """Inline SVG bar chart of a channel's per-image maxima: `counts` in bins between `edges`."""
    peak = max(max(counts), 1) if counts else 1
    bar = width / max(len(counts), 1)
    plot = height - 18
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{plot - plot * n / peak:.1f}" width="{max(bar - 1, 1):.1f}" '
        f'height="{plot * n / peak:.1f}" fill="#4a7ab5"><title>{edges[i]:.4g} to {edges[i + 1]:.4g}: '
        f"{n} images</title></rect>"
        for i, n in enumerate(counts)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="histogram of per-image maxima">{bars}'
        f'<text x="0" y="{height - 4}" font-size="11">0</text>'
        f'<text x="{width}" y="{height - 4}" font-size="11" text-anchor="end">{edges[-1]:.4g}</text>'
        f'<text x="{width}" y="11" font-size="11" text-anchor="end">{peak} images</text></svg>'
    )


def _tile_img(sprite: str, row: int, col: int, tile: Sequence[int], title: str) -> str:
    """An <img> showing tile (row, col) of a channel's sprite."""
    th, tw = tile
    return (
        f'<img src="{_e(sprite)}" width="{tw}" height="{th}" alt="{_e(title)}" title="{_e(title)}" '
        f'style="object-fit: none; object-position: -{col * tw}px -{row * th}px">'
    )


def _nav(links: Sequence[tuple[str, str | None]]) -> str:
    """A <nav> of (label, href) links; a None href is shown as plain text."""
    parts = [
        f'<a href="{_e(href)}">{_e(label)}</a>' if href else f"<span>{_e(label)}</span>"
        for label, href in links
    ]
    return "<nav>" + " ".join(parts) + "</nav>"


def _fires_text(firing: Mapping[str, Any]) -> str:
    return f"fires on {firing['fires']} of {firing['images']} images"


def _tile_caption(entry: Mapping[str, Any]) -> str:
    """Where a tile comes from: rank, image, position in the stage's map, value."""
    return (
        f"rank {entry['rank']}: image {entry['image_index']} ({entry['image_id']}) at map position "
        f"(y={entry['y']}, x={entry['x']}), value {entry['value']:.4g}"
    )


def _tiles_table(record: Mapping[str, Any]) -> str:
    """The channel's tiles: one row of image patches, one row per rule, one caption row."""
    sprite, tile, top = record["files"]["sprite"], record["tile"], record["top"]
    names = ["image patch"] + [f"{rule} projection" for rule in record["rules"]]
    rows = []
    for row, name in enumerate(names):
        cells = "".join(
            f"<td>{_tile_img(sprite, row, col, tile, f'{name}, {_tile_caption(e)}')}</td>"
            for col, e in enumerate(top)
        )
        rows.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
    captions = "".join(
        f'<td class="caption" style="max-width: {tile[1]}px" data-image="{e["image_index"]}" data-y="{e["y"]}" data-x="{e["x"]}" '
        f'data-value="{e["value"]!r}">#{e["rank"]}<br>{_e(e["image_id"])}<br>({e["y"]}, {e["x"]})<br>'
        f"{e['value']:.4g}</td>"
        for e in top
    )
    rows.append(f"<tr><th>image (y, x) value</th>{captions}</tr>")
    return '<table class="tiles">' + "".join(rows) + "</table>"


def _optimized_block(record: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """The channel's optimised images with their recipe, or a note that none were made."""
    files = record["files"].get("optimized")
    if not files:
        return '<p class="note">no optimised images in this atlas (optimize.steps=0)</p>'
    figures = "".join(
        f'<figure><img src="{_e(files[v])}" alt="{_e(v)} optimised image" width="{2 * meta["optimize"]["size"]}">'
        f"<figcaption>{_e(meta['optimize']['variants'][v])}</figcaption></figure>"
        for v in VARIANTS
        if v in files
    )
    return (
        f'<div class="grid">{figures}</div><p class="note">{_e(meta["optimize"]["recipe"])}; shown at twice '
        "their size</p>"
    )


def channel_page(
    meta: Mapping[str, Any], record: Mapping[str, Any], previous: str | None, following: str | None
) -> str:
    """One channel's page (links relative to stage<s>/): its top-k tiles, optimised images,
    firing histogram, and links to the previous / next channel (None: none) and its stage."""
    s, c = record["stage"], record["channel"]
    title = f"{meta['model_label']}: stage {s} ({record['stage_name']}), channel {c}"
    nav = _nav(
        [
            ("atlas", f"../{INDEX_PAGE}"),
            (f"stage {s}", f"../{stage_page_name(s)}"),
            ("previous channel", previous),
            ("next channel", following),
        ]
    )
    dead = ' <span class="dead-mark">dead: fires on no image</span>' if record["dead"] else ""
    firing = record["firing"]
    body = (
        f"{nav}\n<h1>{_e(title)}</h1>\n"
        f'<p class="note">weights: {_e(meta["weights_label"])}<br>data: {_e(meta["dataset_label"])}<br>'
        f"{_e(_fires_text(firing))}{dead}</p>\n"
        f"<h2>Top {len(record['top'])} images: patches in the receptive field and their projections</h2>\n"
        f'{_tiles_table(record)}\n<p class="note">{_e(meta["tiles_note"])}</p>\n'
        f"<h2>Optimised images</h2>\n{_optimized_block(record, meta)}\n"
        f"<h2>Per-image maximum over the dataset</h2>\n{histogram_svg(firing['edges'], firing['counts'])}\n"
        f'<p class="note">{_e(_fires_text(firing))}; bins of equal width up to the channel\'s highest '
        "value in the scan; images where it never fires (maximum 0) are not in the bars</p>"
    )
    return _page(title, body)


def _card(record: Mapping[str, Any]) -> str:
    """A channel's card on its stage page: its strongest projection and optimised image."""
    name = channel_name(record["channel"])
    stage_dir = f"stage{record['stage']}"
    strongest = _tile_img(
        f"{stage_dir}/{record['files']['sprite']}", 1, 0, record["tile"], "strongest activation, projected"
    )
    optimized = record["files"].get("optimized") or {}
    image = (
        f'<img src="{stage_dir}/{_e(optimized["regularized"])}" width="{record["tile"][1]}" '
        f'alt="optimised image (regularized)">'
        if "regularized" in optimized
        else ""
    )
    dead = ' dead" title="dead: fires on no image' if record["dead"] else ""
    return (
        f'<a class="card{dead}" id="{name}" href="{stage_dir}/{name}.html">{strongest}{image}'
        f"channel {record['channel']}<br>{record['firing']['fires']}/{record['firing']['images']}"
        f"{' <span class=dead-mark>dead</span>' if record['dead'] else ''}</a>"
    )


def _search_box(stage: int, shown: Sequence[int], prefix: str) -> str:
    """The search-by-channel form of a stage (channels not in the atlas are named, not followed)."""
    return (
        f'<form data-prefix="{_e(prefix)}" onsubmit="return goChannel(this, {json.dumps(list(shown))})">'
        f'<label>stage {stage} channel <input name="channel" type="number" min="0" size="5"></label> '
        '<button type="submit">go</button> <span class="miss"></span></form>'
    )


def stage_page(
    meta: Mapping[str, Any], stage: Mapping[str, Any], records: Sequence[Mapping[str, Any]], by_firing: bool
) -> str:
    """A stage's grid of every channel in the atlas, by channel number or by firing count (most first)."""
    s = stage["stage"]
    order = sorted(records, key=lambda r: (-r["firing"]["fires"], r["channel"])) if by_firing else records
    title = f"{meta['model_label']}: stage {s} ({stage['name']})"
    other = (
        ("by channel number", stage_page_name(s))
        if by_firing
        else ("by firing count", stage_page_name(s, True))
    )
    body = (
        f"{_nav([('atlas', INDEX_PAGE), (f'sorted {other[0]}', other[1])])}\n<h1>{_e(title)}</h1>\n"
        f'<p class="note">{_e(stage_summary(stage))}; sorted {"by firing count" if by_firing else "by channel number"}'
        f"; each card: the strongest activation projected ({_e(meta['rules'][0])}), the optimised image, "
        "the images it fires on</p>\n"
        f"{_search_box(s, [r['channel'] for r in records], f'stage{s}/channel')}\n"
        f'<div class="grid">{"".join(_card(r) for r in order)}</div>'
    )
    return _page(title, body, SEARCH_SCRIPT)


def stage_summary(stage: Mapping[str, Any]) -> str:
    """One line: receptive field, channels, how many are shown, dead and rarely firing."""
    return (
        f"receptive field {stage['rf_size'][0]} px, stride {stage['rf_jump'][0]} px; "
        f"{stage['channels_total']} channels, {len(stage['channels'])} in this atlas; "
        f"{stage['dead']} dead, {stage['sparse']} fire on fewer than {stage['k']} images"
    )


def index_page(meta: Mapping[str, Any]) -> str:
    """The atlas's front page: model, weights, dataset, and a row per stage with its links."""
    rows = "".join(
        f"<tr><td>{st['stage']}</td><td>{_e(st['name'])}</td><td>{st['rf_size'][0]} px / {st['rf_jump'][0]} px</td>"
        f"<td>{st['channels_total']}</td><td>{len(st['channels'])}</td><td>{st['dead']}</td><td>{st['sparse']}</td>"
        f'<td><a href="{stage_page_name(st["stage"])}">by channel</a> · '
        f'<a href="{stage_page_name(st["stage"], True)}">by firing</a></td></tr>'
        for st in meta["stages"]
    )
    title = f"Atlas of {meta['model_label']}"
    body = (
        f"<h1>{_e(title)}</h1>\n"
        f"<p>weights: <b>{_e(meta['weights_label'])}</b><br>data: {_e(meta['dataset_label'])}<br>"
        f"top {meta['k']} images per channel, projected with: {_e(', '.join(meta['rules']))}</p>\n"
        '<table class="stages"><tr><th>stage</th><th>module</th><th>receptive field / stride</th>'
        "<th>channels</th><th>in atlas</th><th>dead</th><th>fire on &lt; k images</th><th>pages</th></tr>"
        f'{rows}</table>\n<p class="note">{_e(meta["made_with"])}</p>'
    )
    return _page(title, body)
