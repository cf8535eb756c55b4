"""Fig. 2 of Zeiler & Fergus as a job: the top-k activations of feature maps, projected to pixels.

Plain functions; `experiments/fig2.py` is the Hydra entry that calls `run_fig2`. The procedure
(docs/fig2.md):

1. the scan (`deconvnet.analysis.scan.scan_topk`, run resumably by `deconvnet.jobs.scan.scan_dataset`,
   or a saved scan given as `scan`): over the whole dataset, each channel's k highest per-image
   maxima (k distinct images), all stages in one forward pass per batch. `exclude_border=n`
   (default 0, the paper's procedure) leaves positions within n of the map's edge out of the scan.
2. `deconvnet.analysis.top_projections.select_channels`: per stage a seeded random subset of
   feature maps (or an explicit list, used as given). With `live_only` (default) the subset is drawn
   among the maps that fire (image maximum > 0) on at least k images (`map_activity`), so no block
   shows empty tiles; dead maps are counted and reported.
3. `deconvnet.analysis.top_projections.project_tiles`: every selected top-k entry projected alone
   with its own image's switches under each backward rule (`rules`), its recomputed activation
   checked against the scan's value, cropped to its receptive field with the matching image patch.
4. `deconvnet.figures.fig2`: each reconstruction tile normalised on its own
   (`deconvnet.core.display.to_display`), resized to the layer's display size; per feature map one
   group of reconstructions per rule beside the group of matching image patches, rank 1..k
   row-major; blocks in a grid per layer (`deconvnet.figures.fig2_layout`).

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

Every file is written atomically (`deconvnet.data.files.atomic_write`); result.json's status is the
marker of a finished run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import nn

from deconvnet.analysis.scan import LoadedTopK, border_ring_shares, check_exclude_border
from deconvnet.analysis.top_projections import (
    MapActivity,
    StageTiles,
    channels_key_stage,
    check_rules,
    map_activity,
    project_tiles,
    select_channels,
)
from deconvnet.core.architecture import STAGES
from deconvnet.core.validation import check_device, check_int, check_stage_numbers
from deconvnet.data.files import atomic_write, atomic_write_npz
from deconvnet.data.models import display_name, weights_label
from deconvnet.figures.fig2 import (
    SHEET_FILE,
    STAGE_FILE,
    combined_sheet,
    dataset_line,
    render_fig2_sheet,
    render_stage_pages,
    rule_legend,
    selection_line,
    tile_places,
    tile_scaling,
)
from deconvnet.figures.fig2_layout import DisplayOptions, display_size
from deconvnet.jobs.data_config import check_data, make_dataset, require_whole_dataset
from deconvnet.jobs.folder import CONFIG_FILE, RESULT_FILE, JobFolder, write_json
from deconvnet.jobs.provenance import provenance as record_provenance
from deconvnet.jobs.provenance import versions
from deconvnet.jobs.request import model_arguments
from deconvnet.jobs.scan import (
    TOPK_FILE,
    ScanOptions,
    check_folder,
    dataset_image_size,
    figure_job_scan,
    finished_job,
    job_fingerprint,
    saved_scan,
)

__all__ = ["RunOptions", "assemble_sheet", "load_fig2", "render_fig2", "run_fig2", "save_tiles"]

log = logging.getLogger(__name__)

TILES_NPZ = "tiles.npz"
TILES_JSON = "tiles.json"
NPZ_FORMAT = "deconvnet.fig2"  # the file format's name (unchanged since version 1), not a module path
NPZ_VERSION = 2  # 2: reconstructions per rule (recon_<rule>_stage<s>), meta "rules"
TILE_KEYS = ("patch", "channels", "image", "y", "x", "value", "recomputed")


# ---------------------------------------------------------------------------------------------
# options


def _check_bool(value: Any, name: str) -> bool:
    """`value` if it is a bool, else ValueError naming the option `name`."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    return value


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


@dataclass(frozen=True)
class _Fig2Job:
    """One `run_fig2` call: its folder, model, explicit channels, saved scan, job settings and
    checked options."""

    out: Path
    model: str
    weights: str
    seed: int
    device: str
    channels: Mapping[Any, Sequence[int]] | None
    scan: str | os.PathLike | None
    checkpoint_every: int
    progress: bool
    config: Mapping[str, Any] | None
    provenance: Mapping[str, Any] | None
    opts: RunOptions


@dataclass(frozen=True)
class _Inputs:
    """What a run loads before it knows whether it is done already: the model, the dataset (its
    summary, image size (H, W)), the weights' record and the saved scan (if one is given)."""

    net: nn.Module
    dataset: Any
    data_summary: dict[str, Any]
    image_size: list[int]
    info: dict[str, Any]
    saved: LoadedTopK | None


# ---------------------------------------------------------------------------------------------
# saving and loading


def save_png_atomic(image: Image.Image, path: Path) -> Path:
    """`image` as a PNG at `path`, written atomically."""
    return atomic_write(path, lambda temp: image.save(temp, format="PNG"))


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
    return atomic_write_npz(path, arrays)


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


def render_fig2(job_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Redraw a job's figures from its tiles.npz alone (no model): fig2_stage{s}.png per layer and
    the sheet fig2.png, into `out_dir` (default: the job folder). Returns the paths written."""
    meta, stages = load_fig2(job_dir)
    target = Path(out_dir) if out_dir is not None else Path(job_dir)
    written = [
        save_png_atomic(page, target / STAGE_FILE.format(stage=s))
        for s, page in render_stage_pages(meta, stages)
    ]
    written.append(save_png_atomic(render_fig2_sheet(meta, stages), target / SHEET_FILE))
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
    return save_png_atomic(combined_sheet(loaded, max_width, title), Path(out_path))


# ---------------------------------------------------------------------------------------------
# records


def _image_path(dataset: Any, index: int) -> str | None:
    """The resolved file path of image `index`, or None for a dataset without files."""
    paths = getattr(dataset, "paths", None)
    return None if paths is None else str(Path(paths[index]).resolve())


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
    records = [
        _tile_record(tiles[sm["stage"]], mi, r, ids, dataset, meta)
        for sm in meta["stages"]
        for mi, r in np.ndindex(*tiles[sm["stage"]].image.shape)
    ]
    return [{**record, **place} for record, place in zip(records, tile_places(tiles, meta))]


def _initial_result(job: _Fig2Job, inputs: _Inputs, timings: dict[str, float]) -> dict[str, Any]:
    """result.json's content while the run is going ("status": "running"), with its fingerprint."""
    explicit = (
        None
        if job.channels is None
        else {
            str(channels_key_stage(key)): list(v) if isinstance(v, Iterable) else v
            for key, v in job.channels.items()
        }
    )
    opts = job.opts
    result = {
        "experiment": "fig2",
        "status": "running",
        "config": dict(job.config) if job.config is not None else None,
        "arguments": {
            "model": job.model,
            "weights": str(job.weights),
            "seed": job.seed,
            "channels": explicit,
            "device": str(job.device),
            **opts.arguments(),
        },
        "model": job.model,
        "weights": dict(inputs.info),
        "weights_label": weights_label(inputs.info),
        "dataset": dict(inputs.data_summary),
        "rules": list(opts.rules),
        "exclude_border": opts.exclude_border,
        "live_only": opts.live_only,
        "channels": None,  # known after the scan (live_only draws among maps that fire)
        "map_activity": None,
        "border_ring": None,
        "versions": versions(),
        "provenance": dict(job.provenance) if job.provenance is not None else None,
        "timings_s": timings,
    }
    result["scan_source"] = None if job.scan is None else str(Path(job.scan).resolve())
    result["fingerprint"] = job_fingerprint(result["arguments"], inputs.info, result["scan_source"])
    return result


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
    write_json(
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
        files=sorted([p.name for p in pngs] + [TILES_NPZ, TILES_JSON, TOPK_FILE, RESULT_FILE]),
    )
    write_json(out / RESULT_FILE, result)
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

    rules: backward rules whose reconstructions are shown side by side (deconvnet, backprop, guided), all
    from one forward pass per image. live_only: draw the random feature maps among those that fire on at
    least k images (explicit `channels` are used as given). exclude_border: map positions within this
    distance of the edge are not scanned (0 = the paper's procedure). scan: a finished scan of this
    model, weights and dataset (a topk.pt, or the folder of a scan, merge_scans or fig2 job) used instead
    of scanning again. Otherwise the scan decodes with `data.workers` processes, skips (and names) images
    that fail to decode, and saves its running top-k every `checkpoint_every` images: rerun into the same
    folder with the same config and it continues; a finished job is not redone, and a folder holding
    another job is refused. Bad input (unknown stage or rule, channel beyond the layer, k < 1, a border
    that leaves no position, empty dataset, missing data.root, a scan of another model or dataset, ...)
    raises ValueError / FileNotFoundError before the scan. `config` (e.g. the resolved Hydra config) and
    `provenance` (e.g. git commit, command line) are stored verbatim in result.json.
    """
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
    job = _Fig2Job(
        Path(out_dir), model, weights, seed, device, channels, scan, every, progress, config, provenance, opts
    )
    with JobFolder(job.out) as folder:
        return _run_locked(job, folder, clock)


def _run_locked(job: _Fig2Job, folder: JobFolder, clock: float) -> dict[str, Any]:
    """The run with its folder locked: load the inputs; the result.json of the same finished job
    if the folder holds one, else run it (`clock`: when the run began, for the setup time)."""
    inputs = _load_inputs(job)
    timings: dict[str, float] = {}
    result = _initial_result(job, inputs, timings)
    done = finished_job(job.out, "fig2", result["fingerprint"])
    if done is not None:
        log.info("fig2: %s already holds this finished job; nothing to do", job.out)
        return done
    check_folder(job.out, "fig2", result["fingerprint"])
    if job.config is not None:
        folder.write_yaml(CONFIG_FILE, job.config)
    timings["setup_s"] = time.perf_counter() - clock
    folder.write_result({**result, "pid": os.getpid()})
    with folder.failing(result):
        return _run_after_setup(job, inputs, result, timings)


def _load_inputs(job: _Fig2Job) -> _Inputs:
    """Load the model and the dataset and check what needs them (channels, border, saved scan)."""
    from deconvnet.data.models import load_model

    opts = job.opts
    net = load_model(job.model, weights=job.weights, seed=job.seed, device=job.device)
    select_channels(net, opts.stages, job.channels, opts.channels_per_stage, opts.channel_seed)
    dataset, data_summary = make_dataset(opts.data, net, progress=job.progress)
    image_size = list(dataset_image_size(dataset, opts.data))
    check_exclude_border(net, opts.stages, opts.exclude_border, *image_size)
    info = net.weights_info.as_dict()
    saved = (
        None
        if job.scan is None
        else saved_scan(job.scan, job.model, info, dataset, opts.stages, opts.k, opts.exclude_border)
    )
    return _Inputs(net, dataset, data_summary, image_size, info, saved)


def _fig2_scan(job: _Fig2Job, inputs: _Inputs) -> tuple[dict[int, Any], list[dict[str, Any]]]:
    """The scan (saved, or run resumably here) and its decode failures; writes topk.pt."""
    opts = job.opts
    scan_opts = ScanOptions(
        opts.stages, opts.k, opts.batch_size, job.checkpoint_every, opts.exclude_border, opts.data
    )
    return figure_job_scan(
        inputs.net,
        inputs.dataset,
        scan_opts,
        job.out,
        job.model,
        inputs.info,
        job.device,
        inputs.saved,
        job.progress,
    )


def _run_after_setup(
    job: _Fig2Job, inputs: _Inputs, result: dict[str, Any], timings: dict[str, float]
) -> dict[str, Any]:
    """Scan (or take the saved scan), choose the maps, project, write every file."""
    opts = job.opts
    clock = time.perf_counter()
    scan, failures = _fig2_scan(job, inputs)
    timings["scan_s"] = time.perf_counter() - clock
    result["decode_failures"] = {"count": len(failures), "images": failures}
    k_used = scan[opts.stages[0]].k
    if k_used < opts.k:
        log.warning(
            "k: only %d images in the dataset, showing the top %d per feature map",
            len(inputs.dataset),
            k_used,
        )
    chosen, activity = _choose_after_scan(inputs.net, scan, opts, job.channels)
    result["channels"] = {str(s): c for s, c in chosen.items()}
    result["map_activity"] = {str(s): a.as_dict() for s, a in activity.items()}
    result["border_ring"] = border_ring_shares(inputs.net, scan, inputs.image_size)
    write_json(job.out / RESULT_FILE, result)

    clock = time.perf_counter()
    tiles = project_tiles(
        inputs.net,
        inputs.dataset,
        scan,
        chosen,
        batch_size=opts.batch_size,
        chunk_size=opts.chunk_size,
        progress=job.progress,
        rules=opts.rules,
    )
    timings["project_s"] = time.perf_counter() - clock
    explicit = {channels_key_stage(key) for key in (job.channels or {})}
    meta = _figure_meta(
        job.model,
        inputs.info,
        inputs.data_summary,
        tiles,
        k_used,
        opts,
        inputs.image_size,
        explicit,
        activity,
    )
    result = _finish(job.out, result, tiles, meta, inputs.dataset, inputs.data_summary, timings)
    log.info(
        "fig2: %d tiles from %d images in %.1f s; figures in %s",
        result["tiles"],
        result["images_projected"],
        timings["total_s"],
        job.out,
    )
    return result


def _stage_meta(
    s: int, t: StageTiles, activity: MapActivity, explicit: bool, opts: RunOptions
) -> dict[str, Any]:
    """One layer's entry of the figure meta: sizes, channels, map activity and its caption lines."""
    tile = display_size(t.rf_size, opts.display)
    selection = selection_line(len(t.channels), activity, explicit, opts.live_only, opts.channel_seed)
    return {
        "stage": s,
        "name": t.name,
        "rf_size": list(t.rf_size),
        "rf_jump": list(t.rf_jump),
        "rf_start": list(t.rf_start),
        "tile_px": list(tile),
        "channels": [int(c) for c in t.channels],
        "explicit": explicit,
        "map_activity": activity.as_dict(),
        "selection": selection,
        "detail": (
            f"{selection}; receptive field {t.rf_size[0]} px, stride {t.rf_jump[0]} "
            f"px; tiles shown at {tile[0]} px ({tile_scaling(t.rf_size[0], tile[0])})"
        ),
    }


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
    return {
        "model": model,
        "model_label": display_name(model),
        "weights": dict(info),
        "weights_label": weights_label(info),
        "dataset_label": dataset_line(data_summary, k, opts.exclude_border),
        "legend": rule_legend(opts.rules, k),
        "k": k,
        "rules": list(opts.rules),
        "exclude_border": opts.exclude_border,
        "live_only": opts.live_only,
        "image_size": image_size,
        "display": opts.display.__dict__.copy(),
        "stages": [_stage_meta(s, t, activity[s], s in explicit, opts) for s, t in sorted(tiles.items())],
    }


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.fig2`: the device checked, then `run_fig2` with the config (`stage`,
    when given, stands for `stages=[stage]`) and the provenance in result.json."""
    check_device(config["device"])
    stages = config["stages"] if config.get("stage") is None else [config["stage"]]
    return run_fig2(
        out,
        **model_arguments(config),
        data=config["data"],
        stages=stages,
        channels=config.get("channels"),
        channels_per_stage=config["channels_per_stage"],
        channel_seed=config["channel_seed"],
        k=config["k"],
        rules=config["rules"],
        live_only=config["live_only"],
        exclude_border=config["exclude_border"],
        batch_size=config["batch_size"],
        chunk_size=config["chunk_size"],
        device=config["device"],
        display=config.get("display"),
        progress=bool(config.get("progress", True)),
        scan=config.get("scan"),
        checkpoint_every=config.get("checkpoint_every", 1000),
        config=dict(config),
        provenance=record_provenance(),
    )
