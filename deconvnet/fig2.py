"""Fig. 2 of Zeiler & Fergus: the top-k activations of feature maps, projected to pixels.

Plain functions; `experiments/fig2.py` is the Hydra entry that calls `run_fig2`.

Procedure (DESIGN.md section 4):

1. `select_channels`: per stage a seeded random subset of feature maps (or an explicit list).
2. `deconvnet.scan.scan_topk`: over the whole dataset, each channel's k highest per-image maxima
   (k distinct images), all stages in one forward pass per batch.
3. `project_tiles`: every image that appears in any selected top-k gets ONE forward pass (a record of
   the deepest stage, which serves the mirrors of all lower stages; images are batched); per stage
   all tiles of those images are projected together, each seed alone, computed only inside its
   receptive field (`Mirror.project(..., frame="receptive_field")`). The recomputed activation is
   checked against the scan's value (`TileMismatchError` names the tile otherwise).
4. crops: the reconstruction's receptive-field window (zero where it crosses the border) and the
   same box of the image, denormalised to [0, 1], grey (0.5) where it crosses the border; all tiles
   of a layer share the layer's receptive-field size.
5. `render_*`: each reconstruction tile normalised on its own (`deconvnet.display.to_display`:
   jointly over RGB, zero -> mid-grey, symmetric by max|x|), then resized to the layer's display
   size (nearest-neighbour upscaling by an integer factor for small receptive fields, Lanczos
   downscaling for large ones); per feature map a block of reconstructions beside the block of the
   matching image patches, rank 1..k row-major; blocks in a grid per layer.

Files of a job folder (written by `run_fig2`):

    result.json        config, weights, dataset summary (incl. skipped files), versions, timings;
                       "status" is "running" until the end, then "complete" (or "interrupted"/"failed")
    topk.pt            the scan (all channels of the requested stages), `deconvnet.scan.save_topk`
    tiles.npz          raw reconstruction tiles (float32) + image patches (uint8) + everything the
                       figures need (JSON under "meta"): `render_fig2` redraws without the model
    tiles.json         provenance of every tile, incl. where it sits in each PNG
    fig2_stage{s}.png  one figure per layer
    fig2.png           the sheet: layers stacked, labelled "Layer 1".."Layer 5"

Every file is written atomically (temp file + os.replace); result.json's status is the marker of a
finished run.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from tqdm.auto import tqdm

from deconvnet.architecture import STAGES, stage as stage_of, stages as stage_table
from deconvnet.display import to_display
from deconvnet.geometry import receptive_field
from deconvnet.images import denormalize
from deconvnet.mirror import Mirror, Seeds
from deconvnet.versions import versions

__all__ = [
    "DisplayOptions",
    "StageTiles",
    "TileMismatchError",
    "assemble_sheet",
    "check_stages",
    "crop_with_fill",
    "display_size",
    "display_tiles",
    "load_fig2",
    "make_dataset",
    "panel_layout",
    "project_tiles",
    "render_fig2",
    "render_stage",
    "render_sheet",
    "run_fig2",
    "select_channels",
    "sheet_layout",
]

log = logging.getLogger(__name__)

STAGE_FILE = "fig2_stage{stage}.png"
SHEET_FILE = "fig2.png"
TILES_NPZ = "tiles.npz"
TILES_JSON = "tiles.json"
RESULT_JSON = "result.json"
TOPK_FILE = "topk.pt"
NPZ_FORMAT = "deconvnet.fig2"
NPZ_VERSION = 1

# Tolerance of the check "recomputed activation == value recorded by the scan".
VALUE_RTOL = 1e-4
VALUE_ATOL = 1e-6

# Layout constants (pixels).
TILE_PAD = 2       # between the tiles of one block
HALF_GAP = 8       # between the reconstruction block and the image-patch block
BLOCK_GAP_X = 18   # between feature-map blocks
BLOCK_GAP_Y = 8
LABEL_H = 15       # channel label above each block
MARGIN = 12
LINE_GAP = 4
GREY = 128         # 0.5 in 8 bits: zero of a reconstruction, and the fill outside the image
BACKGROUND = (255, 255, 255)


# ---------------------------------------------------------------------------------------------
# options and input checks


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


def _check_int(value: Any, name: str, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected an int, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return int(value)


def check_stages(stages: Any) -> list[int]:
    """Sorted distinct stage numbers from an int or a sequence of ints in 1..5."""
    if isinstance(stages, numbers.Integral) and not isinstance(stages, bool):
        stages = [stages]
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Iterable):
        raise ValueError(f"stages: expected a list of ints in 1..5, got {stages!r}")
    items = list(stages)
    if not items:
        raise ValueError("stages: expected at least one stage in 1..5, got none")
    for s in items:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or int(s) not in STAGES:
            raise ValueError(f"stages: unknown stage {s!r}; the paper's layers are 1..5")
    return sorted({int(s) for s in items})


def _stage_key(key: Any) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, numbers.Integral) or int(key) not in STAGES:
        raise ValueError(f"channels: unknown stage {key!r}; keys must be stage numbers 1..5")
    return int(key)


def select_channels(
    model: nn.Module,
    stages: Sequence[int],
    channels: Mapping[Any, Sequence[int]] | None = None,
    channels_per_stage: int = 16,
    channel_seed: int = 0,
) -> dict[int, list[int]]:
    """Feature maps to show per stage: {stage: [channel, ...]}.

    Stages listed in `channels` use that explicit list (order kept, duplicates dropped); every other
    requested stage gets `channels_per_stage` channels drawn without replacement by
    `numpy.random.default_rng([channel_seed, stage])` and sorted (so a stage's draw does not depend on
    which other stages are requested). A key of `channels` that is not among `stages` is an error.
    """
    stages = check_stages(stages)
    per_stage = _check_int(channels_per_stage, "channels_per_stage", 1)
    seed = _check_int(channel_seed, "channel_seed", 0)
    explicit: dict[int, list[int]] = {}
    if channels is not None:
        if not isinstance(channels, Mapping):
            raise ValueError("channels: expected a mapping {stage: [channel, ...]} or null, got "
                             f"{channels!r}")
        for key, chosen in channels.items():
            number = _stage_key(key)
            if number not in stages:
                raise ValueError(f"channels: stage {number} is not among the requested stages "
                                 f"{stages}")
            if isinstance(chosen, numbers.Integral) and not isinstance(chosen, bool):
                chosen = [chosen]
            if isinstance(chosen, (str, bytes)) or not isinstance(chosen, Iterable):
                raise ValueError(f"channels[{number}]: expected a list of channel ints, got {chosen!r}")
            items = list(chosen)
            if not items:
                raise ValueError(f"channels[{number}]: expected at least one channel, got none")
            explicit[number] = items
    table = {s.number: s for s in stage_table(model)}
    out: dict[int, list[int]] = {}
    for number in stages:
        info = table[number]
        if number in explicit:
            picked: list[int] = []
            for c in explicit[number]:
                if isinstance(c, bool) or not isinstance(c, numbers.Integral):
                    raise ValueError(f"channels[{number}]: expected channel ints, got {c!r}")
                if not 0 <= int(c) < info.channels:
                    raise ValueError(f"channels[{number}]: channel {c} is outside layer {number} "
                                     f"({info.name}) which has channels 0..{info.channels - 1}")
                if int(c) not in picked:
                    picked.append(int(c))
            out[number] = picked
        else:
            if per_stage > info.channels:
                raise ValueError(f"channels_per_stage: {per_stage} exceeds layer {number} "
                                 f"({info.name}) which has {info.channels} channels")
            rng = np.random.default_rng([seed, number])
            out[number] = sorted(int(c) for c in rng.choice(info.channels, per_stage, replace=False))
    return out


# ---------------------------------------------------------------------------------------------
# data


class FirstImages:
    """The first `limit` images of a dataset (same items, ids and order)."""

    def __init__(self, dataset: Any, limit: int) -> None:
        self.dataset = dataset
        self.limit = min(limit, len(dataset))
        self.ids = list(dataset.ids[: self.limit])
        self.skipped = list(getattr(dataset, "skipped", []))
        if hasattr(dataset, "paths"):
            self.paths = list(dataset.paths[: self.limit])

    def __len__(self) -> int:
        return self.limit

    def __getitem__(self, index: int):
        if not 0 <= index < self.limit:
            raise IndexError(f"index: {index} out of range for {self.limit} images")
        return self.dataset[index]


DATA_KEYS = {
    "samples": {"kind", "size", "photos", "flips", "limit"},
    "folder": {"kind", "root", "full_decode", "limit"},
}


def check_data(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a data config ({"kind": "samples" | "folder", ...}) without touching any file."""
    data = dict(data or {"kind": "samples"})
    kind = data.get("kind", "samples")
    if kind not in DATA_KEYS:
        raise ValueError(f"data.kind: expected 'samples' or 'folder', got {kind!r}")
    data["kind"] = kind
    unknown = sorted(set(data) - DATA_KEYS[kind])
    if unknown:
        raise ValueError(f"data: unknown key(s) {unknown} for data={kind}; accepted: "
                         f"{sorted(DATA_KEYS[kind])}")
    if data.get("limit") is not None:
        _check_int(data["limit"], "data.limit", 1)
    if kind == "folder":
        root = data.get("root")
        if root is None or str(root).strip() in ("", "???"):
            raise ValueError("data.root: required with data=folder (a folder of images, e.g. the "
                             "ImageNet validation set): add data.root=<dir>")
    else:
        if data.get("size") is not None:
            _check_int(data["size"], "data.size", 1)
        photos = data.get("photos")
        if photos is not None and (isinstance(photos, str) or not list(photos)):
            raise ValueError(f"data.photos: expected a non-empty list of names or null, got {photos!r}")
    return data


def make_dataset(data: Mapping[str, Any] | None, model: nn.Module, progress: bool = True):
    """(dataset, summary) for a data config, read with the model's weights' own preprocessing.

    samples: `deconvnet.datasets.SampleGallery` (size null = the weights' crop size; photos null =
    all bundled photos); folder: `ImageFolderDataset(root)` (unreadable files skipped and named).
    `limit`: keep only the first N images. Raises ValueError / FileNotFoundError.
    """
    from deconvnet import datasets
    from deconvnet.models import preprocessing

    data = check_data(data)
    prep = preprocessing(model)
    if data["kind"] == "samples":
        kwargs: dict[str, Any] = {
            "size": data.get("size") or prep.crop_size,
            "transform": datasets.normalize_transform(prep.mean, prep.std),
            "flips": bool(data.get("flips", True)),
        }
        if data.get("photos") is not None:
            kwargs["photos"] = [str(p) for p in data["photos"]]
        dataset = datasets.SampleGallery(**kwargs)
        label = "sample gallery (scikit-image photos)"
        root = None
    else:
        root = Path(str(data["root"])).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data.root: {root} is not an existing folder")
        dataset = datasets.ImageFolderDataset(root, preprocessing=prep,
                                              full_decode=bool(data.get("full_decode", False)),
                                              progress=progress)
        label = f"image folder {root.name or root}"
    available = len(dataset)
    if data.get("limit") is not None:
        dataset = FirstImages(dataset, int(data["limit"]))
    if len(dataset) == 0:
        raise ValueError(f"data: the dataset is empty ({label})")
    skipped = [{"path": s.path, "reason": s.reason} for s in getattr(dataset, "skipped", [])]
    if skipped:
        log.warning("data: skipped %d unreadable / non-image file(s) (listed in result.json)",
                    len(skipped))
    summary = {
        "kind": data["kind"],
        "label": label,
        "root": None if root is None else str(root.resolve()),
        "images": len(dataset),
        "images_available": available,
        "limit": data.get("limit"),
        "skipped_count": len(skipped),
        "skipped": skipped,
        "preprocessing": {"resize_size": prep.resize_size, "crop_size": prep.crop_size,
                          "mean": list(prep.mean), "std": list(prep.std)}
        if data["kind"] == "folder" else
        {"note": "gallery views cut square and resized to size x size (no resize/center-crop), "
                 "normalised with the weights' mean/std",
         "size": kwargs["size"], "mean": list(prep.mean), "std": list(prep.std)},
        "config": {k: v for k, v in data.items()},
    }
    return dataset, summary


def _image_path(dataset: Any, index: int) -> str | None:
    paths = getattr(dataset, "paths", None)
    return None if paths is None else str(Path(paths[index]).resolve())


# ---------------------------------------------------------------------------------------------
# crops and projection


class TileMismatchError(RuntimeError):
    """The activation recomputed for a tile differs from the value the scan recorded."""


def crop_with_fill(image: torch.Tensor, top: int, left: int, size: tuple[int, int],
                   fill: float) -> torch.Tensor:
    """The box [top, top+h) x [left, left+w) of `image` [C, H, W]; `fill` where it leaves the image."""
    c, height, width = image.shape
    h, w = size
    out = image.new_full((c, h, w), fill)
    y0, y1 = max(top, 0), min(top + h, height)
    x0, x1 = max(left, 0), min(left + w, width)
    if y0 < y1 and x0 < x1:
        out[:, y0 - top : y1 - top, x0 - left : x1 - left] = image[:, y0:y1, x0:x1]
    return out


@dataclass
class StageTiles:
    """The tiles of one stage, indexed [map, rank] (rank 0 = strongest).

    channels [M]; image, y, x [M, k] int64; value [M, k] (scan), recomputed [M, k] (projection pass);
    recon [M, k, 3, rf_h, rf_w] float32 raw reconstructions in the receptive-field window;
    patch [M, k, 3, rf_h, rf_w] uint8 image patches (denormalised, round(255 x), grey 128 outside).
    """

    stage: int
    name: str
    rf_size: tuple[int, int]
    rf_jump: tuple[int, int]
    rf_start: tuple[int, int]
    channels: np.ndarray
    image: np.ndarray
    y: np.ndarray
    x: np.ndarray
    value: np.ndarray
    recomputed: np.ndarray
    recon: np.ndarray
    patch: np.ndarray
    channels_total: int = 0

    def box(self, m: int, r: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of tile [m, r]'s receptive field in input pixels."""
        top = int(self.y[m, r]) * self.rf_jump[0] + self.rf_start[0]
        left = int(self.x[m, r]) * self.rf_jump[1] + self.rf_start[1]
        return top, left, top + self.rf_size[0], left + self.rf_size[1]


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def project_tiles(
    model: nn.Module,
    dataset: Any,
    topk: Mapping[int, Any],
    channels: Mapping[int, Sequence[int]],
    batch_size: int = 8,
    chunk_size: int = 16,
    progress: bool = True,
    rtol: float = VALUE_RTOL,
    atol: float = VALUE_ATOL,
) -> dict[int, StageTiles]:
    """Project every selected top-k entry with its own image's switches and crop it.

    topk: {stage: TopK} from `scan_topk` over `dataset` (same image numbering); channels:
    {stage: [c, ...]}. Each image that appears in a selected top-k gets ONE forward pass (images
    batched `batch_size` at a time through the mirror of the deepest stage), then per stage all of
    that batch's tiles are projected together (`chunk_size` seeds at a time), each alone, computed
    only inside its receptive field. Raises TileMismatchError when a recomputed activation differs
    from the scan's value by more than rtol * |value| + atol.
    """
    stages = sorted(channels)
    for s in stages:
        if s not in topk:
            raise ValueError(f"topk: no scan result for stage {s}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    mirrors = {s: Mirror(model, s) for s in stages}
    recorder = mirrors[stages[-1]]
    out: dict[int, StageTiles] = {}
    by_image: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for s in stages:
        info = stage_of(model, s)
        rf = receptive_field(model, s)
        top = topk[s]
        ch = torch.as_tensor(list(channels[s]), dtype=torch.long)
        image, y, x = top.image[ch].numpy(), top.y[ch].numpy(), top.x[ch].numpy()
        m, k = image.shape
        out[s] = StageTiles(
            stage=s, name=info.name, rf_size=tuple(rf.size), rf_jump=tuple(rf.jump),
            rf_start=tuple(rf.start), channels=ch.numpy().copy(), image=image.copy(), y=y.copy(),
            x=x.copy(), value=top.values[ch].float().numpy().copy(),
            recomputed=np.full((m, k), np.nan, np.float32),
            recon=np.zeros((m, k, 3, *rf.size), np.float32),
            patch=np.full((m, k, 3, *rf.size), GREY, np.uint8),
            channels_total=info.channels,
        )
        for mi in range(m):
            for r in range(k):
                by_image[int(image[mi, r])].append((s, mi, r))
    images = sorted(by_image)
    ids = getattr(dataset, "ids", None)
    bar = tqdm(total=len(images), disable=not progress, unit="image", desc="project tiles")
    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x_batch = torch.stack([dataset[i][0] for i in chunk]).to(device=device, dtype=dtype)
            shown = denormalize(x_batch.detach().float().cpu(), model)
            with torch.inference_mode():
                record = recorder.record(x_batch)
                for s in stages:
                    entries = [(local, mi, r) for local, i in enumerate(chunk)
                               for (st, mi, r) in by_image[i] if st == s]
                    if not entries:
                        continue
                    t = out[s]
                    local = torch.tensor([e[0] for e in entries], dtype=torch.long)
                    mi = np.array([e[1] for e in entries])
                    ri = np.array([e[2] for e in entries])
                    c = torch.as_tensor(t.channels[mi], dtype=torch.long)
                    yy = torch.as_tensor(t.y[mi, ri], dtype=torch.long)
                    xx = torch.as_tensor(t.x[mi, ri], dtype=torch.long)
                    stage_out = record.stage_output(s)
                    value = stage_out[local.to(device), c.to(device), yy.to(device), xx.to(device)]
                    recomputed = value.float().cpu().numpy()
                    recorded = t.value[mi, ri]
                    bad = np.abs(recomputed - recorded) > rtol * np.abs(recorded) + atol
                    if bad.any():
                        j = int(np.flatnonzero(bad)[0])
                        img = chunk[int(local[j])]
                        name = ids[img] if ids is not None else f"#{img}"
                        raise TileMismatchError(
                            f"tile stage {s} ({t.name}) channel {int(c[j])} rank {ri[j] + 1}: "
                            f"image {img} ({name}) at (y={int(yy[j])}, x={int(xx[j])}): the scan "
                            f"recorded {recorded[j]:.7g} but the projection's forward pass gives "
                            f"{recomputed[j]:.7g} (tolerance {rtol:g} relative + {atol:g}); "
                            f"{int(bad.sum())} of {len(entries)} tile(s) of this batch differ")
                    t.recomputed[mi, ri] = recomputed
                    seeds = Seeds(local, c, yy, xx, value)
                    tiles = mirrors[s].project(record, seeds, frame="receptive_field",
                                               chunk_size=chunk_size)
                    t.recon[mi, ri] = tiles.float().cpu().numpy()
                    for j in range(len(entries)):
                        top_px, left_px, _, _ = t.box(mi[j], ri[j])
                        patch = crop_with_fill(shown[int(local[j])], top_px, left_px, t.rf_size, 0.5)
                        t.patch[mi[j], ri[j]] = _to_uint8(patch)
            bar.update(len(chunk))
    finally:
        bar.close()
    return out


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


# ---------------------------------------------------------------------------------------------
# saving and loading


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as file:
            write(file)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, data: Any) -> Path:
    return _atomic_write(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"), "w")


def save_png_atomic(image: Image.Image, path: Path) -> Path:
    return _atomic_write(path, lambda f: image.save(f, format="PNG"))


def save_tiles(path: Path, tiles: Mapping[int, StageTiles], meta: Mapping[str, Any]) -> Path:
    """tiles.npz: per stage recon/patch/channels/image/y/x/value/recomputed, plus meta (JSON)."""
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps({"format": NPZ_FORMAT, "version": NPZ_VERSION, **meta}))}
    for s, t in tiles.items():
        for key in ("recon", "patch", "channels", "image", "y", "x", "value", "recomputed"):
            arrays[f"{key}_stage{s}"] = getattr(t, key)
    return _atomic_write(Path(path), lambda f: np.savez_compressed(f, **arrays))


def load_fig2(job_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[int, dict[str, np.ndarray]]]:
    """(meta, {stage: {"recon", "patch", "channels", "image", "y", "x", "value", "recomputed"}})
    from a job folder's tiles.npz."""
    path = Path(job_dir) / TILES_NPZ
    if not path.is_file():
        raise FileNotFoundError(f"job_dir: no {TILES_NPZ} in {Path(job_dir)} (not a finished fig2 "
                                "job, or written by an interrupted run)")
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        if meta.get("format") != NPZ_FORMAT:
            raise ValueError(f"job_dir: {path} is not a fig2 tiles file")
        if meta.get("version") != NPZ_VERSION:
            raise ValueError(f"job_dir: {path} has version {meta.get('version')!r}; this code "
                             f"reads {NPZ_VERSION}")
        stages = {}
        for sm in meta["stages"]:
            s = sm["stage"]
            stages[s] = {key: npz[f"{key}_stage{s}"] for key in
                         ("recon", "patch", "channels", "image", "y", "x", "value", "recomputed")}
    return meta, stages


def render_fig2(job_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Redraw a job's figures from its tiles.npz alone (no model): fig2_stage{s}.png per layer and
    the sheet fig2.png, into `out_dir` (default: the job folder). Returns the paths written."""
    meta, stages = load_fig2(job_dir)
    target = Path(out_dir) if out_dir is not None else Path(job_dir)
    written = []
    bodies = []
    for sm in meta["stages"]:
        arrays = stages[sm["stage"]]
        tile = tuple(sm["tile_px"])
        bodies.append(render_body(arrays["recon"], arrays["patch"], arrays["channels"], tile))
        page = render_stage(arrays, meta, sm, bodies[-1])
        written.append(save_png_atomic(page, target / STAGE_FILE.format(stage=sm["stage"])))
    sheet = render_sheet(_sheet_title(meta), _sheet_labels(meta), bodies,
                         meta["display"]["sheet_max_width"])
    written.append(save_png_atomic(sheet, target / SHEET_FILE))
    return written


def assemble_sheet(job_dirs: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                   max_width: int | None = None, title: str | None = None) -> Path:
    """One sheet from several fig2 jobs (e.g. a sweep with one job per stage, or per model).

    Every layer of every job becomes one labelled panel, in the order given; labels name the model
    and weights when the jobs differ in them. Returns the PNG path.
    """
    if not job_dirs:
        raise ValueError("job_dirs: expected at least one fig2 job folder")
    loaded = [load_fig2(d) for d in job_dirs]
    keys = {(m["model_label"], m["weights_label"]) for m, _ in loaded}
    datasets = {m["dataset_label"] for m, _ in loaded}
    mixed = len(keys) > 1
    first = loaded[0][0]
    bodies, labels = [], []
    for meta, stages in loaded:
        for sm, label in zip(meta["stages"], _sheet_labels(meta, with_model=mixed)):
            arrays = stages[sm["stage"]]
            bodies.append(render_body(arrays["recon"], arrays["patch"], arrays["channels"],
                                      tuple(sm["tile_px"])))
            labels.append(label)
    if title is None:
        title = ("Fig. 2 reproduction — " + ("several models / weights (see labels)" if mixed
                 else f"{first['model_label']}, {first['weights_label']}"))
    lines = [(title, SHEET_TITLE_FONT)]
    lines += [(d, TEXT_FONT) for d in sorted(datasets)]
    lines.append((first["legend"], TEXT_FONT))
    width = max_width or max(m["display"]["sheet_max_width"] for m, _ in loaded)
    sheet = render_sheet(lines, labels, bodies, width)
    return save_png_atomic(sheet, Path(out_path))


# ---------------------------------------------------------------------------------------------
# the whole experiment


def _weights_label(info: Mapping[str, Any]) -> str:
    if info.get("pretrained") is True:
        return "ImageNet-pretrained weights (torchvision IMAGENET1K_V1)"
    if info.get("weights") == "random":
        return f"random weights — NOT pretrained ({info.get('source')})"
    if info.get("weights") == "checkpoint":
        return f"weights from checkpoint {Path(str(info.get('source'))).name} (pretraining unknown)"
    return f"weights: {info.get('description')}"


def _tile_records(tiles: Mapping[int, StageTiles], meta: Mapping[str, Any], dataset: Any,
                  model_name: str, weights: str) -> list[dict[str, Any]]:
    """Provenance of every tile, including its boxes in the stage PNG and in the sheet."""
    ids = list(dataset.ids)
    records = []
    header_h = {sm["stage"]: _lines_height(_stage_header(meta, sm)) for sm in meta["stages"]}
    layouts = {sm["stage"]: panel_layout(len(sm["channels"]), meta["k"], tuple(sm["tile_px"]))
               for sm in meta["stages"]}
    (_, _), placements = sheet_layout(_sheet_title(meta), _sheet_labels(meta),
                                      [(layouts[sm["stage"]].height, layouts[sm["stage"]].width)
                                       for sm in meta["stages"]],
                                      meta["display"]["sheet_max_width"])
    place = {sm["stage"]: p for sm, p in zip(meta["stages"], placements)}
    for s, t in tiles.items():
        layout, p = layouts[s], place[s]
        for mi in range(t.image.shape[0]):
            for r in range(t.image.shape[1]):
                img = int(t.image[mi, r])
                top, left, bottom, right = t.box(mi, r)
                box_r, box_p = layout.tile_boxes(mi, r)
                off_y, off_x = MARGIN + header_h[s], MARGIN

                def shift(b, dy, dx, scale=1.0):
                    return [dy + round(b[0] * scale), dx + round(b[1] * scale),
                            dy + round(b[2] * scale), dx + round(b[3] * scale)]

                grow, gcol = divmod(mi, layout.grid[1])
                crow, ccol = divmod(r, layout.cells[1])
                records.append({
                    "model": model_name,
                    "weights": weights,
                    "stage": s,
                    "stage_name": t.name,
                    "channel": int(t.channels[mi]),
                    "rank": r + 1,
                    "image_index": img,
                    "image_id": ids[img],
                    "image_path": _image_path(dataset, img),
                    "y": int(t.y[mi, r]),
                    "x": int(t.x[mi, r]),
                    "value": float(t.value[mi, r]),
                    "recomputed_value": float(t.recomputed[mi, r]),
                    "rf_box": {"top": top, "left": left, "bottom": bottom, "right": right},
                    "rf_crosses_border": bool(top < 0 or left < 0 or bottom > meta["image_size"][0]
                                              or right > meta["image_size"][1]),
                    "figure": {
                        "file": STAGE_FILE.format(stage=s),
                        "map_index": mi,
                        "block_row": grow, "block_col": gcol,
                        "cell_row": crow, "cell_col": ccol,
                        "reconstruction_box": shift(box_r, off_y, off_x),
                        "patch_box": shift(box_p, off_y, off_x),
                    },
                    "sheet": {
                        "file": SHEET_FILE,
                        "reconstruction_box": shift(box_r, p.body_top, p.left, p.scale),
                        "patch_box": shift(box_p, p.body_top, p.left, p.scale),
                    },
                })
    return records


def run_fig2(
    out_dir: str | os.PathLike,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    data: Mapping[str, Any] | None = None,
    stages: Sequence[int] | int = STAGES,
    channels: Mapping[Any, Sequence[int]] | None = None,
    channels_per_stage: int = 16,
    channel_seed: int = 0,
    k: int = 9,
    batch_size: int = 8,
    chunk_size: int = 16,
    device: str = "cpu",
    display: DisplayOptions | Mapping[str, Any] | None = None,
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run Fig. 2 end to end into `out_dir`; returns the content of result.json.

    Bad input (unknown stage, channel beyond the layer, k < 1, empty dataset, missing data.root,
    ...) raises ValueError / FileNotFoundError before the scan. `config` (e.g. the resolved Hydra
    config) and `provenance` (e.g. git commit, command line) are stored verbatim in result.json.
    """
    from deconvnet.models import load_model
    from deconvnet.scan import save_topk, scan_topk

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    # --- checks that need nothing loaded
    stages = check_stages(stages)
    k = _check_int(k, "k", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    chunk_size = _check_int(chunk_size, "chunk_size", 1)
    _check_int(channels_per_stage, "channels_per_stage", 1)
    _check_int(channel_seed, "channel_seed", 0)
    options = DisplayOptions.from_any(display)
    data = check_data(data)
    out = Path(out_dir)

    # --- model, channels, dataset (cheap), then the heavy work
    net = load_model(model, weights=weights, seed=seed, device=device)
    chosen = select_channels(net, stages, channels, channels_per_stage, channel_seed)
    dataset, data_summary = make_dataset(data, net, progress=progress)
    info = net.weights_info.as_dict()
    timings["setup_s"] = time.perf_counter() - clock

    # all inputs are valid: clear this folder's files of an earlier run, so they cannot mix
    out.mkdir(parents=True, exist_ok=True)
    stale = [out / name for name in (SHEET_FILE, TILES_NPZ, TILES_JSON, TOPK_FILE, RESULT_JSON)]
    stale += [out / STAGE_FILE.format(stage=s) for s in STAGES]
    for path in stale:  # a re-run into the same folder must not mix with an older run's files
        if path.is_file():
            log.info("removing %s from an earlier run", path)
            path.unlink()

    result: dict[str, Any] = {
        "experiment": "fig2",
        "status": "running",
        "config": dict(config) if config is not None else None,
        "arguments": {
            "model": model, "weights": str(weights), "seed": seed, "data": data,
            "stages": stages, "channels": None if channels is None else
            {str(_stage_key(key)): list(v) if isinstance(v, Iterable) else v
             for key, v in channels.items()},
            "channels_per_stage": channels_per_stage, "channel_seed": channel_seed, "k": k,
            "batch_size": batch_size, "chunk_size": chunk_size, "device": str(device),
            "display": options.__dict__.copy(),
        },
        "model": model,
        "weights": info,
        "dataset": data_summary,
        "channels": {str(s): c for s, c in chosen.items()},
        "versions": versions(),
        "provenance": dict(provenance) if provenance is not None else None,
        "timings_s": timings,
    }
    write_json_atomic(out / RESULT_JSON, result)
    try:
        from deconvnet.datasets import batches

        clock = time.perf_counter()
        scan = scan_topk(net, batches(dataset, batch_size), k=k, stages=stages, progress=progress)
        timings["scan_s"] = time.perf_counter() - clock
        save_topk(scan, out / TOPK_FILE, meta={
            "model": model, "weights": {k_: v for k_, v in info.items()},
            "dataset_ids": list(dataset.ids)})
        k_used = scan[stages[0]].k
        if k_used < k:
            log.warning("k: only %d images in the dataset, showing the top %d per feature map",
                        len(dataset), k_used)

        clock = time.perf_counter()
        tiles = project_tiles(net, dataset, scan, chosen, batch_size=batch_size,
                              chunk_size=chunk_size, progress=progress)
        timings["project_s"] = time.perf_counter() - clock

        clock = time.perf_counter()
        image_size = [int(v) for v in dataset[0][0].shape[-2:]]
        explicit = {_stage_key(key) for key in (channels or {})}
        meta = _figure_meta(model, info, data_summary, tiles, k_used, options, image_size,
                            explicit, channel_seed)
        save_tiles(out / TILES_NPZ, tiles, meta)
        records = _tile_records(tiles, meta, dataset, model, str(info.get("weights")))
        write_json_atomic(out / TILES_JSON, {
            "model": model, "weights": info, "dataset": {k_: v for k_, v in data_summary.items()
                                                         if k_ != "skipped"},
            "k": k_used, "stages": meta["stages"], "tiles": records})
        timings["save_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        pngs = render_fig2(out)
        timings["render_s"] = time.perf_counter() - clock
        timings["total_s"] = sum(v for key, v in timings.items() if key != "total_s")
        result.update(
            status="complete",
            k=k_used,
            tiles=sum(t.image.size for t in tiles.values()),
            images_projected=len({int(i) for t in tiles.values() for i in t.image.ravel()}),
            max_relative_value_difference=max(
                float(np.max(np.abs(t.recomputed - t.value)
                             / np.maximum(np.abs(t.value), 1e-30))) for t in tiles.values()),
            files=sorted([p.name for p in pngs] + [TILES_NPZ, TILES_JSON, TOPK_FILE, RESULT_JSON]),
        )
        write_json_atomic(out / RESULT_JSON, result)
        log.info("fig2: %d tiles from %d images in %.1f s; figures in %s", result["tiles"],
                 result["images_projected"], timings["total_s"], out)
        return result
    except KeyboardInterrupt:
        result["status"] = "interrupted"
        write_json_atomic(out / RESULT_JSON, result)
        raise
    except BaseException as error:
        result["status"] = "failed"
        result["error"] = f"{type(error).__name__}: {error}"
        write_json_atomic(out / RESULT_JSON, result)
        raise


MODEL_LABELS = {"vgg16": "VGG16", "alexnet": "AlexNet"}


def _stage_channels(tiles: Mapping[int, StageTiles], s: int) -> int:
    return int(tiles[s].channels_total)


def _figure_meta(model: str, info: Mapping[str, Any], data_summary: Mapping[str, Any],
                 tiles: Mapping[int, StageTiles], k: int, options: DisplayOptions,
                 image_size: list[int], explicit: Iterable[int] = (),
                 channel_seed: int = 0) -> dict[str, Any]:
    """Everything the figures need besides the arrays (titles, sizes, channel lists)."""
    skipped = data_summary.get("skipped_count", 0)
    dataset_label = (f"Dataset: {data_summary['label']}, {data_summary['images']} images"
                     + (f" ({skipped} unreadable file(s) skipped)" if skipped else "")
                     + f"; per feature map the top {k} images (each image's strongest position)")
    legend = (f"Per feature map: left, the deconvnet reconstructions of its top {k} activations "
              "(each tile scaled on its own, zero = grey); right, the matching image patches "
              f"(receptive field, grey outside the image); rank 1..{k} row-major.")
    stages_meta = []
    for s, t in sorted(tiles.items()):
        tile = display_size(t.rf_size, options)
        if tile[0] > t.rf_size[0]:
            how = f"enlarged ×{tile[0] // t.rf_size[0]}, nearest neighbour"
        elif tile[0] < t.rf_size[0]:
            how = "reduced, Lanczos"
        else:
            how = "actual size"
        stages_meta.append({
            "stage": s, "name": t.name, "rf_size": list(t.rf_size), "rf_jump": list(t.rf_jump),
            "rf_start": list(t.rf_start), "tile_px": list(tile),
            "channels": [int(c) for c in t.channels],
            "detail": (f"{len(t.channels)} of {_stage_channels(tiles, s)} feature maps "
                       + ("(chosen)" if s in explicit else f"(random, seed {channel_seed})")
                       + f"; receptive field "
                       f"{t.rf_size[0]} px, stride {t.rf_jump[0]} px; tiles shown at {tile[0]} px "
                       f"({how})"),
        })
    return {
        "model": model,
        "model_label": MODEL_LABELS.get(model, model),
        "weights": dict(info),
        "weights_label": _weights_label(info),
        "dataset_label": dataset_label,
        "legend": legend,
        "k": k,
        "image_size": image_size,
        "display": options.__dict__.copy(),
        "stages": stages_meta,
    }

