"""Fig. 2 of Zeiler & Fergus: the top-k activations of feature maps, projected to pixels.

Plain functions; `experiments/fig2.py` is the Hydra entry that calls `run_fig2`.

Procedure (DESIGN.md section 4):

1. `deconvnet.analysis.scan.scan_topk`: over the whole dataset, each channel's k highest per-image maxima
   (k distinct images), all stages in one forward pass per batch. `exclude_border=n` (default 0,
   the paper's procedure) leaves positions within n of the map's edge out of the scan.
2. `select_channels`: per stage a seeded random subset of feature maps (or an explicit list, used
   as given). With `live_only` (default) the subset is drawn among the maps that fire (image
   maximum > 0) on at least k images, i.e. whose k-th scan value is > 0 (`map_activity`), so no
   block shows empty tiles; dead maps are counted and reported.
3. `project_tiles`: every image that appears in any selected top-k gets ONE forward pass (a record of
   the deepest stage, which serves the mirrors of all lower stages and of every rule; images are
   batched); per stage and backward rule (`rules`: deconvnet, backprop, guided) all tiles of those
   images are projected together, each seed alone, computed only inside its receptive field
   (`Mirror.project(..., frame="receptive_field")`). The recomputed activation is checked against
   the scan's value (`TileMismatchError` names the tile otherwise).
4. crops: the reconstruction's receptive-field window (zero where it crosses the border) and the
   same box of the image, denormalised to [0, 1], grey (0.5) where it crosses the border; all tiles
   of a layer share the layer's receptive-field size.
5. `render_*` (`deconvnet.figures.fig2_layout`): each reconstruction tile normalised on its own
   (`deconvnet.core.display.to_display`: jointly over RGB, zero -> mid-grey, symmetric by max|x|), then
   resized to the layer's display size; per feature map one group of reconstructions per rule
   beside the group of matching image patches, rank 1..k row-major; blocks in a grid per layer.

Files of a job folder (written by `run_fig2`):

    result.json        config, weights, dataset summary (incl. skipped files), rules, border,
                       per-stage map activity (dead maps), versions, timings; "status" is
                       "running" until the end, then "complete" (or "interrupted"/"failed")
    topk.pt            the scan (all channels of the requested stages), `deconvnet.analysis.scan.save_topk`
    tiles.npz          raw reconstruction tiles per rule (float32) + image patches (uint8) +
                       everything the figures need (JSON under "meta"): `render_fig2` redraws
                       without the model
    tiles.json         provenance of every tile, incl. where it sits in each PNG under each rule
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from deconvnet.core.architecture import STAGES
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.architecture import stages as stage_table
from deconvnet.core.geometry import level_sizes, receptive_field
from deconvnet.core.mirror import RULES, Mirror, Seeds
from deconvnet.core.precision import full_float32
from deconvnet.core.validation import check_int, check_stage_numbers, nonempty_list
from deconvnet.data.images import denormalize
from deconvnet.data.models import display_name, weights_label
from deconvnet.figures.fig2_layout import (
    GREY,
    SHEET_TITLE_FONT,
    TEXT_FONT,
    DisplayOptions,
    PanelData,
    _sheet_labels,
    _sheet_title,
    _stage_header,
    _to_uint8,
    display_size,
    display_tiles,
    panel_layout,
    render_sheet,
    render_stage,
    sheet_layout,
    stage_page_layout,
)
from deconvnet.jobs.data_config import check_data, make_dataset, require_whole_dataset
from deconvnet.jobs.files import JobLock, failure_status, write_yaml
from deconvnet.jobs.scan import (
    check_folder,
    dataset_image_size,
    finished_job,
    job_fingerprint,
    saved_scan,
    warn_failures,
)
from deconvnet.jobs.versions import versions

__all__ = [
    "DisplayOptions",
    "MapActivity",
    "StageTiles",
    "TileMismatchError",
    "assemble_sheet",
    "check_rules",
    "check_stage_numbers",
    "crop_with_fill",
    "display_size",
    "display_tiles",
    "load_fig2",
    "make_dataset",
    "map_activity",
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
NPZ_FORMAT = "deconvnet.jobs.fig2"
NPZ_VERSION = 2  # 2: reconstructions per rule (recon_<rule>_stage<s>), meta "rules"
TILE_KEYS = ("patch", "channels", "image", "y", "x", "value", "recomputed")

# Tolerance of the check "recomputed activation == value recorded by the scan".
VALUE_RTOL = 1e-4
VALUE_ATOL = 1e-6

RULE_NAMES = {
    "deconvnet": "deconvnet = relu(R), Zeiler & Fergus",
    "guided": "guided = relu(R)·[f>0], guided backpropagation",
    "backprop": "backprop = R·[f>0], the plain gradient",
}


# ---------------------------------------------------------------------------------------------
# options and input checks


def check_rules(rules: Any) -> list[str]:
    """Backward rules to show, in the order given, duplicates dropped: a non-empty list of names
    among deconvnet, backprop, guided (a single name is accepted too)."""
    if isinstance(rules, str):
        rules = [rules]
    accepted = ", ".join(RULES)
    if not isinstance(rules, Iterable):
        raise ValueError(f"rules: expected a list of rule names among {accepted}, got {rules!r}")
    items = list(rules)
    if not items:
        raise ValueError(f"rules: expected at least one rule among {accepted}, got none")
    out: list[str] = []
    for rule in items:
        if not isinstance(rule, str) or rule not in RULES:
            raise ValueError(f"rules: unknown rule {rule!r}; expected names among {accepted}")
        if rule not in out:
            out.append(rule)
    return out


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    return value


def _stage_key(key: Any) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, numbers.Integral) or int(key) not in STAGES:
        raise ValueError(f"channels: unknown stage {key!r}; keys must be stage numbers 1..5")
    return int(key)


def _explicit_channels(channels: Mapping[Any, Sequence[int]] | None, stages: list[int]) -> dict[int, list]:
    """{stage: raw list} from the `channels` option, keys checked against `stages`."""
    explicit: dict[int, list] = {}
    if channels is None:
        return explicit
    if not isinstance(channels, Mapping):
        raise ValueError(f"channels: expected a mapping {{stage: [channel, ...]}} or null, got {channels!r}")
    for key, chosen in channels.items():
        number = _stage_key(key)
        if number not in stages:
            raise ValueError(f"channels: stage {number} is not among the requested stages {stages}")
        explicit[number] = nonempty_list(chosen, f"channels[{number}]", "channel ints", "channel")
    return explicit


def _checked_channel_list(items: list, number: int, name: str, total: int) -> list[int]:
    """An explicit channel list of stage `number`: ints in 0..total-1, order kept, no duplicates."""
    picked: list[int] = []
    for c in items:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise ValueError(f"channels[{number}]: expected channel ints, got {c!r}")
        if not 0 <= int(c) < total:
            raise ValueError(
                f"channels[{number}]: channel {c} is outside layer {number} "
                f"({name}) which has channels 0..{total - 1}"
            )
        if int(c) not in picked:
            picked.append(int(c))
    return picked


def _draw_channels(
    number: int, total: int, per_stage: int, seed: int, eligible: Sequence[int] | None
) -> list[int]:
    """Sorted seeded draw of `per_stage` channels of stage `number` (rng([seed, stage])): among
    all `total` channels, or among `eligible` (all of them, with a warning, if fewer)."""
    rng = np.random.default_rng([seed, number])
    if eligible is None:
        return sorted(int(c) for c in rng.choice(total, per_stage, replace=False))
    pool = sorted(int(c) for c in eligible)
    if not pool:
        raise ValueError(
            f"live_only: no feature map of layer {number} fires on the required "
            "number of images (k); lower k, add images, or set live_only=false"
        )
    if len(pool) <= per_stage:
        if len(pool) < per_stage:
            log.warning(
                "channels_per_stage: layer %d has only %d feature maps that fire on k "
                "images; showing all of them instead of %d",
                number,
                len(pool),
                per_stage,
            )
        return pool
    return sorted(pool[int(i)] for i in rng.choice(len(pool), per_stage, replace=False))


def select_channels(
    model: nn.Module,
    stages: Sequence[int],
    channels: Mapping[Any, Sequence[int]] | None = None,
    channels_per_stage: int = 16,
    channel_seed: int = 0,
    eligible: Mapping[int, Sequence[int]] | None = None,
) -> dict[int, list[int]]:
    """Feature maps to show per stage: {stage: [channel, ...]}.

    Stages listed in `channels` use that explicit list as given (order kept, duplicates dropped);
    every other requested stage gets `channels_per_stage` channels drawn without replacement by
    `numpy.random.default_rng([channel_seed, stage])` and sorted (so a stage's draw does not depend
    on which other stages are requested). `eligible` {stage: [channel, ...]} (e.g. the maps that
    fire on k images, `map_activity`) restricts the draw of the stages it lists; if fewer are
    eligible than `channels_per_stage`, all eligible are taken (warning), none is a ValueError.
    A key of `channels` that is not among `stages` is an error.
    """
    stages = check_stage_numbers(stages)
    per_stage = check_int(channels_per_stage, "channels_per_stage", 1)
    seed = check_int(channel_seed, "channel_seed", 0)
    explicit = _explicit_channels(channels, stages)
    table = {s.number: s for s in stage_table(model)}
    out: dict[int, list[int]] = {}
    for number in stages:
        info = table[number]
        if number in explicit:
            out[number] = _checked_channel_list(explicit[number], number, info.name, info.channels)
            continue
        if per_stage > info.channels:
            raise ValueError(
                f"channels_per_stage: {per_stage} exceeds layer {number} "
                f"({info.name}) which has {info.channels} channels"
            )
        pool = None if eligible is None or number not in eligible else eligible[number]
        out[number] = _draw_channels(number, info.channels, per_stage, seed, pool)
    return out


@dataclass(frozen=True)
class MapActivity:
    """How many images each feature map of one stage fires on (image maximum > 0), from its scan.

    With the scan's top-k values [C, k] (descending): dead = top-1 <= 0 (fires on no image);
    sparse = fires on 1..k-1 images (top-1 > 0 >= k-th); eligible = k-th > 0 (fires on >= k).
    """

    channels: int
    k: int
    dead: list[int]
    sparse: list[int]
    eligible: list[int]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored in result.json / tiles.json / tiles.npz meta."""
        return {
            "channels": self.channels,
            "k": self.k,
            "dead": len(self.dead),
            "firing_on_fewer_than_k": len(self.sparse),
            "eligible": len(self.eligible),
            "dead_channels": list(self.dead),
            "fewer_than_k_channels": list(self.sparse),
        }


def _border_ring(model: nn.Module, scan: Mapping[int, Any], image_size: Sequence[int]) -> dict[str, Any]:
    """Per stage, the share of live top-k entries on the map's border ring (`border_ring_share`),
    for images of `image_size` (H, W)."""
    from deconvnet.analysis.scan import border_ring_share

    sizes = level_sizes(list(model.features), *image_size)
    return {
        str(s): border_ring_share(t, *sizes[stage_of(model, s).index + 1]) for s, t in sorted(scan.items())
    }


def map_activity(topk: Any) -> MapActivity:
    """MapActivity of one stage from its `TopK` (values [C, k], k = images kept per channel)."""
    values = topk.values
    first, last = values[:, 0] > 0, values[:, -1] > 0
    return MapActivity(
        channels=int(values.shape[0]),
        k=int(values.shape[1]),
        dead=[int(c) for c in torch.nonzero(~first).flatten()],
        sparse=[int(c) for c in torch.nonzero(first & ~last).flatten()],
        eligible=[int(c) for c in torch.nonzero(last).flatten()],
    )


# ---------------------------------------------------------------------------------------------
# data


def _image_path(dataset: Any, index: int) -> str | None:
    paths = getattr(dataset, "paths", None)
    return None if paths is None else str(Path(paths[index]).resolve())


# ---------------------------------------------------------------------------------------------
# crops and projection


class TileMismatchError(RuntimeError):
    """The activation recomputed for a tile differs from the value the scan recorded."""


def crop_with_fill(
    image: torch.Tensor, top: int, left: int, size: tuple[int, int], fill: float
) -> torch.Tensor:
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
    recon {rule: [M, k, 3, rf_h, rf_w] float32} raw reconstructions in the receptive-field window,
    one array per backward rule (in display order), all from the same forward record;
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
    recon: dict[str, np.ndarray]
    patch: np.ndarray
    channels_total: int = 0

    @property
    def rules(self) -> list[str]:
        return list(self.recon)

    def box(self, m: int, r: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of tile [m, r]'s receptive field in input pixels."""
        top = int(self.y[m, r]) * self.rf_jump[0] + self.rf_start[0]
        left = int(self.x[m, r]) * self.rf_jump[1] + self.rf_start[1]
        return top, left, top + self.rf_size[0], left + self.rf_size[1]


def _empty_tiles(
    model: nn.Module, s: int, top: Any, channels: Sequence[int], rules: Sequence[str]
) -> StageTiles:
    """StageTiles of stage s for `channels`, positions from the scan `top`, arrays to be filled."""
    info = stage_of(model, s)
    rf = receptive_field(model, s)
    ch = torch.as_tensor(list(channels), dtype=torch.long)
    image, y, x = top.image[ch].numpy(), top.y[ch].numpy(), top.x[ch].numpy()
    m, k = image.shape
    return StageTiles(
        stage=s,
        name=info.name,
        rf_size=tuple(rf.size),
        rf_jump=tuple(rf.jump),
        rf_start=tuple(rf.start),
        channels=ch.numpy().copy(),
        image=image.copy(),
        y=y.copy(),
        x=x.copy(),
        value=top.values[ch].float().numpy().copy(),
        recomputed=np.full((m, k), np.nan, np.float32),
        recon={rule: np.zeros((m, k, 3, *rf.size), np.float32) for rule in rules},
        patch=np.full((m, k, 3, *rf.size), GREY, np.uint8),
        channels_total=info.channels,
    )


def _check_recomputed(
    t: StageTiles,
    recomputed: np.ndarray,
    mi: np.ndarray,
    ri: np.ndarray,
    images: list[int],
    ids: Sequence[str] | None,
    rtol: float,
    atol: float,
) -> None:
    """TileMismatchError naming the first tile [mi[j], ri[j]] (image images[j]) whose recomputed
    activation differs from the scan's value by more than rtol * |value| + atol."""
    recorded = t.value[mi, ri]
    bad = np.abs(recomputed - recorded) > rtol * np.abs(recorded) + atol
    if not bad.any():
        return
    j = int(np.flatnonzero(bad)[0])
    img = images[j]
    name = ids[img] if ids is not None else f"#{img}"
    raise TileMismatchError(
        f"tile stage {t.stage} ({t.name}) channel {int(t.channels[mi[j]])} rank {ri[j] + 1}: "
        f"image {img} ({name}) at (y={int(t.y[mi[j], ri[j]])}, x={int(t.x[mi[j], ri[j]])}): the "
        f"scan recorded {recorded[j]:.7g} but the projection's forward pass gives "
        f"{recomputed[j]:.7g} (tolerance {rtol:g} relative + {atol:g}); "
        f"{int(bad.sum())} of {len(mi)} tile(s) of this batch differ"
    )


def _project_stage(
    t: StageTiles,
    mirrors: Mapping[str, Mirror],
    record: Any,
    entries: list[tuple[int, int, int]],
    chunk: list[int],
    shown: torch.Tensor,
    ids: Sequence[str] | None,
    chunk_size: int,
    rtol: float,
    atol: float,
) -> None:
    """Fill stage t's tiles `entries` [(local image, map, rank)] of one batch from its `record`:
    recomputed value, one reconstruction per rule (`mirrors`), image patch (`shown` [B, 3, H, W])."""
    stage_out = record.stage_output(t.stage)
    device = stage_out.device
    local = torch.tensor([e[0] for e in entries], dtype=torch.long)
    mi = np.array([e[1] for e in entries])
    ri = np.array([e[2] for e in entries])
    c = torch.as_tensor(t.channels[mi], dtype=torch.long)
    yy = torch.as_tensor(t.y[mi, ri], dtype=torch.long)
    xx = torch.as_tensor(t.x[mi, ri], dtype=torch.long)
    value = stage_out[local.to(device), c.to(device), yy.to(device), xx.to(device)]
    recomputed = value.float().cpu().numpy()
    _check_recomputed(t, recomputed, mi, ri, [chunk[int(i)] for i in local], ids, rtol, atol)
    t.recomputed[mi, ri] = recomputed
    seeds = Seeds(local, c, yy, xx, value)
    for rule, mirror in mirrors.items():
        tiles = mirror.project(record, seeds, frame="receptive_field", chunk_size=chunk_size)
        t.recon[rule][mi, ri] = tiles.float().cpu().numpy()
    for j in range(len(entries)):
        top_px, left_px, _, _ = t.box(mi[j], ri[j])
        patch = crop_with_fill(shown[int(local[j])], top_px, left_px, t.rf_size, 0.5)
        t.patch[mi[j], ri[j]] = _to_uint8(patch)


@full_float32()
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
    rules: Sequence[str] = ("deconvnet",),
) -> dict[int, StageTiles]:
    """Project every selected top-k entry with its own image's switches, under each rule, and crop.

    topk: {stage: TopK} from `scan_topk` over `dataset` (same image numbering); channels:
    {stage: [c, ...]}; rules: backward rules (deconvnet, backprop, guided). Each image that appears
    in a selected top-k gets ONE forward pass (images batched `batch_size` at a time through the
    mirror of the deepest stage; it records the ReLU masks when a rule needs them), and that one
    record serves every stage and every rule: per stage and rule all of that batch's tiles are
    projected together (`chunk_size` seeds at a time), each alone, computed only inside its
    receptive field. Raises TileMismatchError when a recomputed activation differs from the scan's
    value by more than rtol * |value| + atol.
    """
    rules = check_rules(rules)
    stages = sorted(channels)
    for s in stages:
        if s not in topk:
            raise ValueError(f"topk: no scan result for stage {s}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    mirrors = {s: {rule: Mirror(model, s, rule) for rule in rules} for s in stages}
    needs_masks = any(rule != "deconvnet" for rule in rules)
    recorder = Mirror(model, stages[-1], "guided" if needs_masks else "deconvnet")
    out = {s: _empty_tiles(model, s, topk[s], channels[s], rules) for s in stages}
    by_image: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for s, t in out.items():
        for mi, r in np.ndindex(*t.image.shape):
            by_image[int(t.image[mi, r])].append((s, mi, r))
    images = sorted(by_image)
    ids = getattr(dataset, "ids", None)
    with tqdm(total=len(images), disable=not progress, unit="image", desc="project tiles") as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x_batch = torch.stack([dataset[i][0] for i in chunk]).to(device=device, dtype=dtype)
            shown = denormalize(x_batch.detach().float().cpu(), model)
            with torch.inference_mode():
                record = recorder.record(x_batch)
                for s in stages:
                    entries = [
                        (local, mi, r)
                        for local, i in enumerate(chunk)
                        for (st, mi, r) in by_image[i]
                        if st == s
                    ]
                    if entries:
                        _project_stage(
                            out[s], mirrors[s], record, entries, chunk, shown, ids, chunk_size, rtol, atol
                        )
            bar.update(len(chunk))
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
    """tiles.npz (format version 2): per stage `recon_<rule>_stage<s>` for each rule of
    meta["rules"], and patch/channels/image/y/x/value/recomputed `_stage<s>`, plus meta (JSON)."""
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps({"format": NPZ_FORMAT, "version": NPZ_VERSION, **meta}))
    }
    for s, t in tiles.items():
        for rule, recon in t.recon.items():
            arrays[f"recon_{rule}_stage{s}"] = recon
        for key in TILE_KEYS:
            arrays[f"{key}_stage{s}"] = getattr(t, key)
    return _atomic_write(Path(path), lambda f: np.savez_compressed(f, **arrays))


def load_fig2(job_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """(meta, {stage: {"recon": {rule: [M, k, 3, h, w]}, "patch", "channels", "image", "y", "x",
    "value", "recomputed"}}) from a job folder's tiles.npz."""
    path = Path(job_dir) / TILES_NPZ
    if not path.is_file():
        raise FileNotFoundError(
            f"job_dir: no {TILES_NPZ} in {Path(job_dir)} (not a finished fig2 "
            "job, or written by an interrupted run)"
        )
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        if meta.get("format") != NPZ_FORMAT:
            raise ValueError(f"job_dir: {path} is not a fig2 tiles file")
        if meta.get("version") != NPZ_VERSION:
            raise ValueError(
                f"job_dir: {path} has version {meta.get('version')!r}; this code "
                f"reads {NPZ_VERSION} (rerun the fig2 job to rewrite it)"
            )
        stages: dict[int, dict[str, Any]] = {}
        for sm in meta["stages"]:
            s = sm["stage"]
            stages[s] = {key: npz[f"{key}_stage{s}"] for key in TILE_KEYS}
            stages[s]["recon"] = {rule: npz[f"recon_{rule}_stage{s}"] for rule in meta["rules"]}
    return meta, stages


def _panel(arrays: Mapping[str, Any], stage_meta: Mapping[str, Any]) -> PanelData:
    return PanelData(
        arrays["recon"], arrays["patch"], [int(c) for c in arrays["channels"]], tuple(stage_meta["tile_px"])
    )


def render_fig2(job_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Redraw a job's figures from its tiles.npz alone (no model): fig2_stage{s}.png per layer and
    the sheet fig2.png, into `out_dir` (default: the job folder). Returns the paths written."""
    meta, stages = load_fig2(job_dir)
    target = Path(out_dir) if out_dir is not None else Path(job_dir)
    written = []
    panels = []
    for sm in meta["stages"]:
        panels.append(_panel(stages[sm["stage"]], sm))
        page = render_stage(panels[-1], meta, sm)
        written.append(save_png_atomic(page, target / STAGE_FILE.format(stage=sm["stage"])))
    sheet = render_sheet(_sheet_title(meta), _sheet_labels(meta), panels, meta["display"]["sheet_max_width"])
    written.append(save_png_atomic(sheet, target / SHEET_FILE))
    return written


def assemble_sheet(
    job_dirs: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    max_width: int | None = None,
    title: str | None = None,
) -> Path:
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
    panels, labels = [], []
    for meta, stages in loaded:
        for sm, label in zip(meta["stages"], _sheet_labels(meta, with_model=mixed)):
            panels.append(_panel(stages[sm["stage"]], sm))
            labels.append(label)
    if title is None:
        title = "Fig. 2 reproduction — " + (
            "several models / weights (see labels)"
            if mixed
            else f"{first['model_label']}, {first['weights_label']}"
        )
    lines = [(title, SHEET_TITLE_FONT)]
    lines += [(d, TEXT_FONT) for d in sorted(datasets)]
    lines += [(legend, TEXT_FONT) for legend in dict.fromkeys(m["legend"] for m, _ in loaded)]
    width = max_width or max(m["display"]["sheet_max_width"] for m, _ in loaded)
    sheet = render_sheet(lines, labels, panels, width)
    return save_png_atomic(sheet, Path(out_path))


# ---------------------------------------------------------------------------------------------
# the whole experiment


@dataclass(frozen=True)
class RunOptions:
    """The validated options of one Fig. 2 run (see `run_fig2`)."""

    stages: list[int]
    k: int
    batch_size: int
    chunk_size: int
    channels_per_stage: int
    channel_seed: int
    rules: list[str]
    live_only: bool
    exclude_border: int
    display: DisplayOptions
    data: dict[str, Any]

    @classmethod
    def check(
        cls,
        stages: Any,
        k: Any,
        batch_size: Any,
        chunk_size: Any,
        channels_per_stage: Any,
        channel_seed: Any,
        rules: Any,
        live_only: Any,
        exclude_border: Any,
        display: Any,
        data: Any,
    ) -> RunOptions:
        """Every check that needs nothing loaded; ValueError naming the option otherwise."""
        return cls(
            stages=check_stage_numbers(stages),
            k=check_int(k, "k", 1),
            batch_size=check_int(batch_size, "batch_size", 1),
            chunk_size=check_int(chunk_size, "chunk_size", 1),
            channels_per_stage=check_int(channels_per_stage, "channels_per_stage", 1),
            channel_seed=check_int(channel_seed, "channel_seed", 0),
            rules=check_rules(rules),
            live_only=_check_bool(live_only, "live_only"),
            exclude_border=check_int(exclude_border, "exclude_border", 0),
            display=DisplayOptions.from_any(display),
            data=check_data(data),
        )

    def arguments(self) -> dict[str, Any]:
        """JSON form for result.json."""
        plain = dict(self.__dict__)
        plain["display"] = self.display.__dict__.copy()
        return plain


def _boxes(layout: Any, mi: int, r: int, top: int, left: int, rules: Sequence[str]) -> dict[str, Any]:
    """Tile [mi, r]'s boxes [top, left, bottom, right] in a PNG whose body sits at (top, left)."""
    recon_boxes, patch_box = layout.tile_boxes(mi, r)

    def shift(b: list[int]) -> list[int]:
        return [b[0] + top, b[1] + left, b[2] + top, b[3] + left]

    return {
        "reconstruction_boxes": {rule: shift(b) for rule, b in zip(rules, recon_boxes)},
        "patch_box": shift(patch_box),
    }


def _tile_record(
    t: StageTiles, mi: int, r: int, ids: Sequence[str], dataset: Any, meta: Mapping[str, Any]
) -> dict[str, Any]:
    """Provenance of tile [mi, r] of stage t, without its figure boxes."""
    img = int(t.image[mi, r])
    top, left, bottom, right = t.box(mi, r)
    height, width = meta["image_size"]
    return {
        "model": meta["model"],
        "weights": meta["weights"].get("weights"),
        "stage": t.stage,
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
        "rules": list(t.rules),
        "exclude_border": meta["exclude_border"],
        "rf_box": {"top": top, "left": left, "bottom": bottom, "right": right},
        "rf_crosses_border": bool(top < 0 or left < 0 or bottom > height or right > width),
    }


def _tile_records(
    tiles: Mapping[int, StageTiles], meta: Mapping[str, Any], dataset: Any
) -> list[dict[str, Any]]:
    """Provenance of every tile, including its boxes (per rule) in the stage PNG and the sheet."""
    ids = list(dataset.ids)
    panels = [
        PanelData(
            tiles[sm["stage"]].recon,
            tiles[sm["stage"]].patch,
            tiles[sm["stage"]].channels,
            tuple(sm["tile_px"]),
        )
        for sm in meta["stages"]
    ]
    sheet = sheet_layout(_sheet_title(meta), _sheet_labels(meta), panels, meta["display"]["sheet_max_width"])
    records = []
    for sm, panel, place in zip(meta["stages"], panels, sheet.placements):
        t, layout = tiles[sm["stage"]], panel.layout()
        _, _, (top, left) = stage_page_layout(_stage_header(meta, sm), (layout.height, layout.width))
        for mi, r in np.ndindex(*t.image.shape):
            grow, gcol = divmod(mi, layout.grid[1])
            crow, ccol = divmod(r, layout.cells[1])
            record = _tile_record(t, mi, r, ids, dataset, meta)
            record["figure"] = {
                "file": STAGE_FILE.format(stage=t.stage),
                "map_index": mi,
                "block_row": grow,
                "block_col": gcol,
                "cell_row": crow,
                "cell_col": ccol,
                **_boxes(layout, mi, r, top, left, t.rules),
            }
            record["sheet"] = {
                "file": SHEET_FILE,
                **_boxes(place.layout, mi, r, place.body_top, place.left, t.rules),
            }
            records.append(record)
    return records


def _initial_result(
    model: str,
    weights: str,
    seed: int,
    opts: RunOptions,
    channels: Mapping[Any, Any] | None,
    device: str,
    info: Mapping[str, Any],
    data_summary: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    provenance: Mapping[str, Any] | None,
    timings: dict[str, float],
) -> dict[str, Any]:
    """result.json's content while the run is going ("status": "running")."""
    explicit = (
        None
        if channels is None
        else {str(_stage_key(key)): list(v) if isinstance(v, Iterable) else v for key, v in channels.items()}
    )
    return {
        "experiment": "fig2",
        "status": "running",
        "config": dict(config) if config is not None else None,
        "arguments": {
            "model": model,
            "weights": str(weights),
            "seed": seed,
            "channels": explicit,
            "device": str(device),
            **opts.arguments(),
        },
        "model": model,
        "weights": dict(info),
        "weights_label": weights_label(info),
        "dataset": dict(data_summary),
        "rules": list(opts.rules),
        "exclude_border": opts.exclude_border,
        "live_only": opts.live_only,
        "channels": None,  # known after the scan (live_only draws among maps that fire)
        "map_activity": None,
        "border_ring": None,
        "versions": versions(),
        "provenance": dict(provenance) if provenance is not None else None,
        "timings_s": timings,
    }


def _choose_after_scan(
    net: nn.Module, scan: Mapping[int, Any], opts: RunOptions, channels: Mapping[Any, Sequence[int]] | None
) -> tuple[dict[int, list[int]], dict[int, MapActivity]]:
    """(channels per stage, map activity per stage) once the scan is known."""
    activity = {s: map_activity(scan[s]) for s in opts.stages}
    eligible = {s: a.eligible for s, a in activity.items()} if opts.live_only else None
    chosen = select_channels(net, opts.stages, channels, opts.channels_per_stage, opts.channel_seed, eligible)
    for s, a in activity.items():
        log.info(
            "layer %d: %d of %d feature maps dead, %d fire on fewer than %d images, %d eligible",
            s,
            len(a.dead),
            a.channels,
            len(a.sparse),
            a.k,
            len(a.eligible),
        )
    return chosen, activity


def _finish(
    out: Path,
    result: dict[str, Any],
    tiles: Mapping[int, StageTiles],
    meta: Mapping[str, Any],
    dataset: Any,
    data_summary: Mapping[str, Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    """Write tiles.npz, tiles.json, the PNGs and the complete result.json."""
    clock = time.perf_counter()
    save_tiles(out / TILES_NPZ, tiles, meta)
    write_json_atomic(
        out / TILES_JSON,
        {
            "model": meta["model"],
            "weights": meta["weights"],
            "dataset": {key: v for key, v in data_summary.items() if key != "skipped"},
            "k": meta["k"],
            "rules": meta["rules"],
            "exclude_border": meta["exclude_border"],
            "live_only": meta["live_only"],
            "stages": meta["stages"],
            "tiles": _tile_records(tiles, meta, dataset),
        },
    )
    timings["save_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    pngs = render_fig2(out)
    timings["render_s"] = time.perf_counter() - clock
    timings["total_s"] = sum(v for key, v in timings.items() if key != "total_s")
    result.update(
        status="complete",
        k=meta["k"],
        tiles=sum(t.image.size for t in tiles.values()),
        images_projected=len({int(i) for t in tiles.values() for i in t.image.ravel()}),
        max_relative_value_difference=max(
            float(np.max(np.abs(t.recomputed - t.value) / np.maximum(np.abs(t.value), 1e-30)))
            for t in tiles.values()
        ),
        files=sorted([p.name for p in pngs] + [TILES_NPZ, TILES_JSON, TOPK_FILE, RESULT_JSON]),
    )
    write_json_atomic(out / RESULT_JSON, result)
    return result


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
    rules: Sequence[str] = ("deconvnet",),
    live_only: bool = True,
    exclude_border: int = 0,
    scan: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
) -> dict[str, Any]:
    """Run Fig. 2 end to end into `out_dir`; returns the content of result.json.

    rules: backward rules whose reconstructions are shown side by side (deconvnet, backprop,
    guided), all from one forward pass per image. live_only: draw the random feature maps among
    those that fire on at least k images (explicit `channels` are used as given). exclude_border:
    map positions within this distance of the edge are not scanned (0 = the paper's procedure).
    scan: a finished scan of this model, weights and dataset (a topk.pt, or the folder of a scan,
    merge_scans or fig2 job) used instead of scanning again. Otherwise the scan decodes with
    `data.workers` processes, skips (and names) images that fail to decode, and saves its running
    top-k every `checkpoint_every` images: rerun into the same folder with the same config and it
    continues; a finished job is not redone, and a folder holding another job is refused.
    Bad input (unknown stage or rule, channel beyond the layer, k < 1, a border that leaves no
    position, empty dataset, missing data.root, a scan of another model or dataset, ...) raises
    ValueError / FileNotFoundError before the scan. `config` (e.g. the resolved Hydra config) and
    `provenance` (e.g. git commit, command line) are stored verbatim in result.json.
    """
    from deconvnet.analysis.scan import check_exclude_border
    from deconvnet.data.models import load_model

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    opts = RunOptions.check(
        stages,
        k,
        batch_size,
        chunk_size,
        channels_per_stage,
        channel_seed,
        rules,
        live_only,
        exclude_border,
        display,
        data,
    )
    every = check_int(checkpoint_every, "checkpoint_every", 1)
    require_whole_dataset(opts.data, "fig2")
    out = Path(out_dir)
    with JobLock(out):
        net = load_model(model, weights=weights, seed=seed, device=device)
        select_channels(net, opts.stages, channels, opts.channels_per_stage, opts.channel_seed)
        dataset, data_summary = make_dataset(opts.data, net, progress=progress)
        image_size = list(dataset_image_size(dataset, opts.data))
        check_exclude_border(net, opts.stages, opts.exclude_border, *image_size)
        info = net.weights_info.as_dict()
        saved = (
            None
            if scan is None
            else saved_scan(scan, model, info, dataset, opts.stages, opts.k, opts.exclude_border)
        )
        result = _initial_result(
            model, weights, seed, opts, channels, device, info, data_summary, config, provenance, timings
        )
        result["scan_source"] = None if scan is None else str(Path(scan).resolve())
        result["fingerprint"] = job_fingerprint(result["arguments"], info, result["scan_source"])
        done = finished_job(out, "fig2", result["fingerprint"])
        if done is not None:
            log.info("fig2: %s already holds this finished job; nothing to do", out)
            return done
        check_folder(out, "fig2", result["fingerprint"])
        if config is not None:
            write_yaml(out / "config.yaml", config)
        timings["setup_s"] = time.perf_counter() - clock
        write_json_atomic(out / RESULT_JSON, {**result, "pid": os.getpid()})
        with failure_status(out / RESULT_JSON, result, write_json_atomic):
            return _run_after_setup(
                out,
                net,
                dataset,
                data_summary,
                opts,
                channels,
                model,
                info,
                device,
                image_size,
                saved,
                every,
                progress,
                result,
                timings,
            )


def _fig2_scan(
    out: Path,
    net: nn.Module,
    dataset: Any,
    opts: RunOptions,
    model: str,
    info: Mapping[str, Any],
    device: str,
    saved: Any,
    every: int,
    progress: bool,
) -> tuple[dict[int, Any], list[dict[str, Any]]]:
    """The scan (saved, or run resumably here) and its decode failures; writes topk.pt."""
    from deconvnet.analysis.scan import save_topk
    from deconvnet.jobs.scan import CHECKPOINT_FILE, ScanOptions, scan_dataset, scan_fingerprint

    if saved is not None:
        topk, failures = saved.result, list(saved.meta.get("decode_failures", []))
    else:
        scan_opts = ScanOptions(opts.stages, opts.k, opts.batch_size, every, opts.exclude_border, opts.data)
        outcome = scan_dataset(
            net,
            dataset,
            scan_opts,
            0,
            len(dataset),
            int(opts.data.get("workers", 0)),
            out / CHECKPOINT_FILE,
            scan_fingerprint(model, info, opts.data, dataset.ids, scan_opts, device),
            progress,
        )
        topk, failures = outcome.result, [f.as_dict() for f in outcome.failures]
    save_topk(
        topk,
        out / TOPK_FILE,
        meta={
            "model": model,
            "weights": dict(info),
            "dataset_ids": list(dataset.ids),
            "exclude_border": opts.exclude_border,
            "decode_failures": failures,
        },
    )
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # this job's own checkpoint
    warn_failures(failures)
    return topk, failures


def _run_after_setup(
    out: Path,
    net: nn.Module,
    dataset: Any,
    data_summary: Mapping[str, Any],
    opts: RunOptions,
    channels: Mapping[Any, Sequence[int]] | None,
    model: str,
    info: Mapping[str, Any],
    device: str,
    image_size: list[int],
    saved: Any,
    every: int,
    progress: bool,
    result: dict[str, Any],
    timings: dict[str, float],
) -> dict[str, Any]:
    """Scan (or take the saved scan), choose the maps, project, write every file."""
    clock = time.perf_counter()
    scan, failures = _fig2_scan(out, net, dataset, opts, model, info, device, saved, every, progress)
    timings["scan_s"] = time.perf_counter() - clock
    result["decode_failures"] = {"count": len(failures), "images": failures}
    k_used = scan[opts.stages[0]].k
    if k_used < opts.k:
        log.warning(
            "k: only %d images in the dataset, showing the top %d per feature map", len(dataset), k_used
        )
    chosen, activity = _choose_after_scan(net, scan, opts, channels)
    result["channels"] = {str(s): c for s, c in chosen.items()}
    result["map_activity"] = {str(s): a.as_dict() for s, a in activity.items()}
    result["border_ring"] = _border_ring(net, scan, image_size)
    write_json_atomic(out / RESULT_JSON, result)

    clock = time.perf_counter()
    tiles = project_tiles(
        net,
        dataset,
        scan,
        chosen,
        batch_size=opts.batch_size,
        chunk_size=opts.chunk_size,
        progress=progress,
        rules=opts.rules,
    )
    timings["project_s"] = time.perf_counter() - clock
    explicit = {_stage_key(key) for key in (channels or {})}
    meta = _figure_meta(model, info, data_summary, tiles, k_used, opts, image_size, explicit, activity)
    result = _finish(out, result, tiles, meta, dataset, data_summary, timings)
    log.info(
        "fig2: %d tiles from %d images in %.1f s; figures in %s",
        result["tiles"],
        result["images_projected"],
        timings["total_s"],
        out,
    )
    return result


def _legend(rules: Sequence[str], k: int) -> str:
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


def _selection_text(s: int, shown: int, a: MapActivity, explicit: bool, opts: RunOptions) -> str:
    """One line: how a layer's feature maps were chosen, and how many are dead."""
    if explicit:
        how = "chosen explicitly"
    elif opts.live_only:
        how = f"drawn (seed {opts.channel_seed}) among the {len(a.eligible)} that fire on >= {a.k} images"
    else:
        how = f"drawn (seed {opts.channel_seed}) among all, dead ones included (live_only off)"
    text = f"{shown} of {a.channels} feature maps, {how}; {len(a.dead)} dead (fire on no image)"
    if a.k > 1:
        fewer = f"1-{a.k - 1} images" if a.k > 2 else "1 image"
        text += f", {len(a.sparse)} fire on only {fewer}"
    return text


def _display_how(rf: int, tile: int) -> str:
    if tile > rf:
        return f"enlarged ×{tile // rf}, nearest neighbour"
    return "reduced, Lanczos" if tile < rf else "actual size"


def _dataset_label(data_summary: Mapping[str, Any], k: int, border: int) -> str:
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


def _figure_meta(
    model: str,
    info: Mapping[str, Any],
    data_summary: Mapping[str, Any],
    tiles: Mapping[int, StageTiles],
    k: int,
    opts: RunOptions,
    image_size: list[int],
    explicit: Iterable[int],
    activity: Mapping[int, MapActivity],
) -> dict[str, Any]:
    """Everything the figures need besides the arrays (titles, sizes, channel lists, activity)."""
    explicit = set(explicit)
    stages_meta = []
    for s, t in sorted(tiles.items()):
        tile = display_size(t.rf_size, opts.display)
        selection = _selection_text(s, len(t.channels), activity[s], s in explicit, opts)
        stages_meta.append(
            {
                "stage": s,
                "name": t.name,
                "rf_size": list(t.rf_size),
                "rf_jump": list(t.rf_jump),
                "rf_start": list(t.rf_start),
                "tile_px": list(tile),
                "channels": [int(c) for c in t.channels],
                "explicit": s in explicit,
                "map_activity": activity[s].as_dict(),
                "selection": selection,
                "detail": (
                    f"{selection}; receptive field {t.rf_size[0]} px, stride {t.rf_jump[0]} "
                    f"px; tiles shown at {tile[0]} px ({_display_how(t.rf_size[0], tile[0])})"
                ),
            }
        )
    return {
        "model": model,
        "model_label": display_name(model),
        "weights": dict(info),
        "weights_label": weights_label(info),
        "dataset_label": _dataset_label(data_summary, k, opts.exclude_border),
        "legend": _legend(opts.rules, k),
        "k": k,
        "rules": list(opts.rules),
        "exclude_border": opts.exclude_border,
        "live_only": opts.live_only,
        "image_size": image_size,
        "display": opts.display.__dict__.copy(),
        "stages": stages_meta,
    }
