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
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from deconvnet.architecture import STAGES, stage as stage_of, stages as stage_table
from deconvnet.fig2_layout import (
    GREY,
    MARGIN,
    SHEET_TITLE_FONT,
    TEXT_FONT,
    DisplayOptions,
    _check_int,
    _lines_height,
    _sheet_labels,
    _sheet_title,
    _stage_header,
    _to_uint8,
    display_size,
    display_tiles,
    panel_layout,
    render_body,
    render_sheet,
    render_stage,
    sheet_layout,
)
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


# ---------------------------------------------------------------------------------------------
# options and input checks


def _as_list(value: Any, name: str, kind: str, one: str) -> list:
    """`value` as a non-empty list: a single int becomes [int]; strings and non-iterables, or an
    empty sequence, are a ValueError naming `name` and what it takes (`kind`, at least `one`)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{name}: expected a list of {kind}, got {value!r}")
    items = list(value)
    if not items:
        raise ValueError(f"{name}: expected at least one {one}, got none")
    return items


def check_stages(stages: Any) -> list[int]:
    """Sorted distinct stage numbers from an int or a sequence of ints in 1..5."""
    items = _as_list(stages, "stages", "ints in 1..5", "stage in 1..5")
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
            explicit[number] = _as_list(chosen, f"channels[{number}]", "channel ints", "channel")
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

