"""An atlas of every unit as a job: a static site of what each channel of a model responds to.

`experiments/atlas.py` is the Hydra entry that calls `run_atlas`. The procedure (docs/atlas.md):

1. the scan: one pass over the dataset for every stage (`deconvnet.jobs.scan.scan_dataset`,
   resumable), or a saved / merged scan given as `scan` (same model, weights and dataset);
2. the firing pass (`deconvnet.analysis.atlas.firing_histograms`): per channel how many images it
   fires on and a histogram of its per-image maxima;
3. per stage, its channels in groups of `group_size`: the top-k of every channel of the group
   projected under each rule from ONE forward record per image (`project_tiles`), and the
   group's optimised images made together (the filters recipe, `visualize_filters`, plain and
   regularized); each channel's files are written as soon as its group is done;
4. the stage pages and the index (`deconvnet.figures.atlas`).

A channel is finished when its record `stage<s>/channel<cccc>.json` exists (written after its
images and page); a rerun into the same folder with the same config skips finished channels, so a
killed build resumes where it stopped. Nothing holds a timestamp: the same inputs and seed give
the same bytes (result.json alone records timings).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from deconvnet.analysis.atlas import FiringHistogram, atlas_channels, channel_groups, firing_histograms
from deconvnet.analysis.scan import TopK, load_topk
from deconvnet.analysis.top_projections import (
    MapActivity,
    StageTiles,
    check_rules,
    map_activity,
    project_tiles,
)
from deconvnet.core.architecture import STAGES
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.geometry import receptive_field
from deconvnet.core.validation import check_device, check_int, check_seed, check_stage_numbers
from deconvnet.data.files import atomic_write, atomic_write_npz
from deconvnet.data.loader import ScanLoader
from deconvnet.data.models import display_name, preprocessing, weights_label
from deconvnet.figures.atlas import (
    INDEX_PAGE,
    channel_name,
    channel_page,
    channel_sprite,
    index_page,
    stage_page,
    stage_page_name,
)
from deconvnet.figures.fig2 import dataset_line
from deconvnet.figures.fig2_layout import DisplayOptions, display_size
from deconvnet.figures.sheet import keras_deprocess
from deconvnet.jobs.data_config import check_data, make_dataset, require_whole_dataset
from deconvnet.jobs.fig2 import save_png_atomic
from deconvnet.jobs.filters import VARIANTS, describe_variant, variant_options
from deconvnet.jobs.folder import CONFIG_FILE, RESULT_FILE, JobFolder, write_json
from deconvnet.jobs.provenance import provenance as record_provenance
from deconvnet.jobs.provenance import versions
from deconvnet.jobs.request import model_arguments
from deconvnet.jobs.scan import (
    TOPK_FILE,
    ScanOptions,
    check_folder,
    figure_job_scan,
    finished_job,
    job_fingerprint,
    saved_scan,
)
from deconvnet.optim import visualize_filters

__all__ = [
    "AtlasJob",
    "AtlasOptions",
    "load_firing",
    "optimized_images",
    "record_path",
    "render_atlas",
    "run_atlas",
    "run_from_config",
    "write_channel",
]

log = logging.getLogger(__name__)

FIRING_FILE = "firing.npz"
PAGES_FILE = "atlas.json"  # what the pages show besides the channel records (`render_atlas`)
HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class AtlasOptions:
    """The validated options of one atlas (see `run_atlas`)."""

    stages: list[int]
    rules: list[str]
    tile_px: int
    optimize_size: int
    optimize_steps: int
    seed: int
    k: int
    batch_size: int
    group_size: int
    data: dict[str, Any]

    @classmethod
    def check(
        cls,
        stages: Any,
        rules: Any,
        tile_px: Any,
        optimize: Any,
        seed: Any,
        k: Any,
        batch_size: Any,
        group_size: Any,
        data: Any,
    ) -> AtlasOptions:
        """Every check that needs nothing loaded; ValueError naming the option otherwise."""
        size, steps = _check_optimize(optimize)
        return cls(
            stages=check_stage_numbers(stages),
            rules=check_rules(rules),
            tile_px=check_int(tile_px, "tile_px", 8),
            optimize_size=size,
            optimize_steps=steps,
            seed=check_seed(seed),
            k=check_int(k, "k", 1),
            batch_size=check_int(batch_size, "batch_size", 1),
            group_size=check_int(group_size, "group_size", 1),
            data=check_data(data),
        )


def _check_optimize(optimize: Any) -> tuple[int, int]:
    """(size, steps) of the `optimize` mapping; steps 0 = no optimised images."""
    if optimize is None:
        optimize = {}
    if not isinstance(optimize, Mapping):
        raise ValueError(f"optimize: expected a mapping with size and steps, got {optimize!r}")
    unknown = sorted(set(optimize) - {"size", "steps"})
    if unknown:
        raise ValueError(f"optimize: unknown key(s) {unknown}; accepted: size, steps")
    size = check_int(optimize.get("size", 64), "optimize.size", 16)
    steps = check_int(optimize.get("steps", 32), "optimize.steps", 0)
    return size, steps


@dataclass
class AtlasJob:
    """One `run_atlas` call under way: its folder, model, dataset, channels, scan and records."""

    out: Path
    model: str
    opts: AtlasOptions
    net: nn.Module
    dataset: Any
    data_summary: dict[str, Any]
    info: dict[str, Any]
    channels: dict[int, list[int]]
    progress: bool
    scan: dict[int, TopK] = field(default_factory=dict)
    firing: dict[int, FiringHistogram] = field(default_factory=dict)
    activity: dict[int, MapActivity] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)  # how a worker loads the model: weights, seed, device
    workers: int = 1


# ---------------------------------------------------------------------------------------------
# files


def _stage_dir(out: Path, stage: int) -> Path:
    return out / f"stage{stage}"


def record_path(out: Path, stage: int, channel: int) -> Path:
    """A channel's record, written last: its presence marks the channel finished."""
    return _stage_dir(out, stage) / f"{channel_name(channel)}.json"


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def _save_firing(path: Path, firing: Mapping[int, FiringHistogram]) -> Path:
    arrays = {"stages": np.array(sorted(firing))}
    for s, h in firing.items():
        arrays.update({f"images_{s}": np.array(h.images), f"fires_{s}": h.fires, f"top_{s}": h.top})
        arrays[f"counts_{s}"] = h.counts
    return atomic_write_npz(path, arrays)


def load_firing(path: Path) -> dict[int, FiringHistogram]:
    """firing.npz back as {stage: FiringHistogram}."""
    with np.load(path, allow_pickle=False) as npz:
        return {
            int(s): FiringHistogram(
                int(npz[f"images_{s}"]), npz[f"fires_{s}"], npz[f"top_{s}"], npz[f"counts_{s}"]
            )
            for s in npz["stages"]
        }


# ---------------------------------------------------------------------------------------------
# the scan and the firing pass


def _scan(job: AtlasJob, saved: Any, checkpoint_every: int, device: str) -> list[dict[str, Any]]:
    """The scan into job.scan (this folder's topk.pt when an interrupted run finished it, else
    `figure_job_scan`: saved, or run here resumably); returns the decode failures."""
    path = job.out / TOPK_FILE
    if saved is None and path.is_file():
        loaded = load_topk(path)
        job.scan = loaded.result
        return list(loaded.meta.get("decode_failures", []))
    opts = ScanOptions(job.opts.stages, job.opts.k, job.opts.batch_size, checkpoint_every, 0, job.opts.data)
    job.scan, failures = figure_job_scan(
        job.net, job.dataset, opts, job.out, job.model, job.info, device, saved, job.progress
    )
    return failures


def _firing(job: AtlasJob) -> None:
    """The firing pass into job.firing (read back from firing.npz when an earlier run made it)."""
    path = job.out / FIRING_FILE
    if path.is_file():
        job.firing = load_firing(path)
        return
    loader = ScanLoader(job.dataset, job.opts.batch_size, workers=int(job.opts.data.get("workers", 0)))
    job.firing = firing_histograms(job.net, loader, job.scan, HISTOGRAM_BINS, job.progress, len(loader))
    _save_firing(path, job.firing)


# ---------------------------------------------------------------------------------------------
# pages' meta


def _stage_meta(job: AtlasJob, s: int) -> dict[str, Any]:
    """Stage s for the pages: module name, receptive field, tile size, channels, activity."""
    rf = receptive_field(job.net, s)
    options = DisplayOptions(min_tile_px=job.opts.tile_px, max_tile_px=job.opts.tile_px)
    activity = job.activity[s]
    return {
        "stage": s,
        "name": stage_of(job.net, s).name,
        "rf_size": list(rf.size),
        "rf_jump": list(rf.jump),
        "tile": list(display_size(rf.size, options)),
        "channels_total": activity.channels,
        "channels": job.channels[s],
        "dead": len(activity.dead),
        "sparse": len(activity.sparse),
        "k": activity.k,
    }


def _optimize_meta(opts: AtlasOptions) -> dict[str, Any]:
    size = opts.optimize_size
    return {
        "size": size,
        "steps": opts.optimize_steps,
        "variants": {v: describe_variant(v, size, "pixels", short=True) for v in VARIANTS},
        "recipe": (
            f"the filters recipe: {opts.optimize_steps} steps of L2-normalised ascent on the channel's mean "
            f"from seeded grey noise (seed {opts.seed}) at {size} px; plain: "
            f"{describe_variant('plain', size, 'pixels')}; regularized: "
            f"{describe_variant('regularized', size, 'pixels')}; shown with the Keras example's deprocess"
        ),
    }


def _pages_meta(job: AtlasJob) -> dict[str, Any]:
    """Everything the pages need besides the channel records."""
    opts = job.opts
    return {
        "model": job.model,
        "model_label": display_name(job.model),
        "weights_label": weights_label(job.info),
        "dataset_label": dataset_line(job.data_summary, opts.k, 0),
        "rules": list(opts.rules),
        "k": opts.k,
        "optimize": _optimize_meta(opts),
        "tiles_note": (
            "each column: one of the channel's top images (rank, image number and id, position of its "
            "maximum in the stage's map, value); the image patch is the unit's receptive field (grey "
            "outside the image); each projection (rules: "
            + ", ".join(opts.rules)
            + ") is that single activation projected to pixels and normalised on its own"
        ),
        "made_with": (
            f"made by python -m experiments.atlas model={job.model}; deconvnet {versions().get('deconvnet', '')}"
        ),
        "stages": [_stage_meta(job, s) for s in opts.stages],
    }


# ---------------------------------------------------------------------------------------------
# channels


def optimized_images(job: AtlasJob, s: int, group: list[int]) -> dict[str, np.ndarray]:
    """{variant: uint8 [K, S, S, 3]}: the group's optimised images (none with optimize.steps=0)."""
    opts = job.opts
    if opts.optimize_steps == 0:
        return {}
    made = {}
    for variant in VARIANTS:
        images = visualize_filters(
            job.net,
            s,
            group,
            size=opts.optimize_size,
            steps=opts.optimize_steps,
            seed=opts.seed,
            batch_size=len(group),
            **variant_options(variant, opts.optimize_size, "pixels"),
        )
        shown = keras_deprocess(images.detach().float().cpu(), preprocessing(job.net))
        made[variant] = (shown * 255).round().byte().permute(0, 2, 3, 1).numpy()
    return made


def _top_entries(t: StageTiles, mi: int, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The top-k of map mi of `t`, rank 1 first, each traceable to its image, position and value."""
    entries = []
    for r in range(t.image.shape[1]):
        image = int(t.image[mi, r])
        entries.append(
            {
                "rank": r + 1,
                "image_index": image,
                "image_id": ids[image],
                "y": int(t.y[mi, r]),
                "x": int(t.x[mi, r]),
                "value": float(t.value[mi, r]),
                "recomputed_value": float(t.recomputed[mi, r]),
                "rf_box": list(t.box(mi, r)),
            }
        )
    return entries


def _neighbours(channels: Sequence[int], c: int) -> tuple[str | None, str | None]:
    """The pages of the channels before and after c in its stage's list (None at the ends)."""
    i = channels.index(c)
    before = f"{channel_name(channels[i - 1])}.html" if i > 0 else None
    after = f"{channel_name(channels[i + 1])}.html" if i + 1 < len(channels) else None
    return before, after


def write_channel(
    job: AtlasJob, meta: Mapping[str, Any], t: StageTiles, mi: int, optimized: Mapping[str, np.ndarray]
) -> None:
    """One channel's sprite, optimised images, page, and last its record."""
    s, c = t.stage, int(t.channels[mi])
    name, folder = channel_name(c), _stage_dir(job.out, s)
    stage = next(st for st in meta["stages"] if st["stage"] == s)
    sprite = channel_sprite({r: t.recon[r][mi] for r in t.rules}, t.patch[mi], tuple(stage["tile"]))
    save_png_atomic(sprite, folder / f"{name}.png")
    files: dict[str, Any] = {"sprite": f"{name}.png"}
    if optimized:
        files["optimized"] = {v: f"{name}_{v}.png" for v in optimized}
        for v, images in optimized.items():
            save_png_atomic(Image.fromarray(images[mi]), folder / files["optimized"][v])
    record = {
        "stage": s,
        "stage_name": t.name,
        "channel": c,
        "rules": list(t.rules),
        "tile": stage["tile"],
        "dead": c in job.activity[s].dead,
        "top": _top_entries(t, mi, list(job.dataset.ids)),
        "firing": job.firing[s].channel(c),
        "files": files,
    }
    _write_text(folder / f"{name}.html", channel_page(meta, record, *_neighbours(job.channels[s], c)))
    write_json(record_path(job.out, s, c), record)


def _build_group(job: AtlasJob, meta: Mapping[str, Any], s: int, group: list[int]) -> int:
    """Project the group's top-k (one forward record per image) and optimise its images together;
    write its channels that are not finished yet. The whole group is always computed, so a resumed
    build computes every channel in the same batch as an uninterrupted one. Returns the number written."""
    opts = job.opts
    tiles = project_tiles(
        job.net,
        job.dataset,
        {s: job.scan[s]},
        {s: group},
        batch_size=opts.batch_size,
        progress=False,
        rules=opts.rules,
    )[s]
    optimized = optimized_images(job, s, group)
    missing = [mi for mi, c in enumerate(group) if not record_path(job.out, s, c).is_file()]
    for mi in missing:
        write_channel(job, meta, tiles, mi, optimized)
    return len(missing)


def _build_channels(job: AtlasJob, meta: Mapping[str, Any]) -> int:
    """Every group of `group_size` channels (cut from each stage's whole list, so the groups never
    change) that holds a channel not finished yet, in `job.workers` processes when > 1, with a
    progress bar; the number of channels built."""
    unfinished = {
        s: {c for c in job.channels[s] if not record_path(job.out, s, c).is_file()} for s in job.opts.stages
    }
    total = sum(len(v) for v in unfinished.values())
    done = sum(len(v) for v in job.channels.values()) - total
    if done:
        log.info("atlas: %d channels already finished in %s; building the other %d", done, job.out, total)
    for s in unfinished:
        _stage_dir(job.out, s).mkdir(parents=True, exist_ok=True)
    tasks = [
        (s, g)
        for s in job.opts.stages
        for g in channel_groups(job.channels[s], job.opts.group_size)
        if unfinished[s].intersection(g)
    ]
    with tqdm(total=total, disable=not job.progress, unit="channel", desc="atlas channels") as bar:
        if job.workers == 1 or len(tasks) < 2:
            for s, group in tasks:
                bar.update(_build_group(job, meta, s, group))
        else:
            _build_in_pool(job, meta, tasks, bar)
    return total


# ---------------------------------------------------------------------------------------------
# a bounded pool of worker processes


_WORKER: dict[str, Any] = {}


def _start_worker(job: AtlasJob, meta: Mapping[str, Any], threads: int) -> None:
    """A worker process: its share of the threads, the model and dataset loaded once, the scan and
    the firing pass read from the job's folder."""
    from deconvnet.data.models import load_model

    torch.set_num_threads(threads)
    net = load_model(job.model, **job.load)
    dataset, _ = make_dataset(job.opts.data, net, progress=False)
    worker = AtlasJob(
        job.out, job.model, job.opts, net, dataset, job.data_summary, job.info, job.channels, False
    )
    worker.scan = load_topk(job.out / TOPK_FILE).result
    worker.firing = load_firing(job.out / FIRING_FILE)
    worker.activity = job.activity
    _WORKER.update(job=worker, meta=meta)


def _worker_group(s: int, group: list[int]) -> int:
    return _build_group(_WORKER["job"], _WORKER["meta"], s, group)


def _build_in_pool(
    job: AtlasJob, meta: Mapping[str, Any], tasks: list[tuple[int, list[int]]], bar: Any
) -> None:
    """The groups in `job.workers` spawned processes, each with 1/workers of torch's threads; at
    most `workers` groups in memory at once. An interrupt cancels the groups not started."""
    threads = max(1, torch.get_num_threads() // job.workers)
    spec = AtlasJob(job.out, job.model, job.opts, None, None, job.data_summary, job.info, job.channels, False)
    spec.activity, spec.load = job.activity, job.load
    pool = ProcessPoolExecutor(
        job.workers,
        multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(spec, meta, threads),
    )
    try:
        for finished in as_completed([pool.submit(_worker_group, s, g) for s, g in tasks]):
            bar.update(finished.result())
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _write_pages(out: Path, meta: Mapping[str, Any], channel_pages: bool = False) -> list[Path]:
    """The stage pages (by channel, by firing) and the index from the channel records (with
    `channel_pages`, every channel's page too); the paths written."""
    written = []
    for stage in meta["stages"]:
        s, channels = stage["stage"], stage["channels"]
        records = [json.loads(record_path(out, s, c).read_text()) for c in channels]
        for record in records if channel_pages else []:
            page = _stage_dir(out, s) / f"{channel_name(record['channel'])}.html"
            written.append(
                _write_text(page, channel_page(meta, record, *_neighbours(channels, record["channel"])))
            )
        for by_firing in (False, True):
            written.append(
                _write_text(out / stage_page_name(s, by_firing), stage_page(meta, stage, records, by_firing))
            )
    written.append(_write_text(out / INDEX_PAGE, index_page(meta)))
    return written


def render_atlas(job_dir: str | os.PathLike) -> list[Path]:
    """Redraw every page of a finished atlas from its files alone (no model): atlas.json and the
    channel records. Returns the paths written."""
    out = Path(job_dir)
    source = out / PAGES_FILE
    if not source.is_file():
        raise FileNotFoundError(f"job_dir: no {PAGES_FILE} in {out} (not an atlas job folder)")
    return _write_pages(out, json.loads(source.read_text()), channel_pages=True)


# ---------------------------------------------------------------------------------------------
# the job


def _arguments(model: str, weights: str, seed: int, channels: Any, opts: AtlasOptions, device: str) -> dict:
    """The atlas's identity in result.json (the fingerprint leaves data.workers out)."""
    plain = dict(opts.__dict__)
    return {
        "model": model,
        "weights": str(weights),
        "seed": seed,
        "channels": channels,
        "device": device,
        **plain,
    }


def _load(
    out: Path,
    model: str,
    weights: str,
    seed: int,
    channels: Any,
    opts: AtlasOptions,
    device: str,
    progress: bool,
) -> AtlasJob:
    """Model, dataset and channels, checked before anything is written."""
    from deconvnet.data.models import load_model

    net = load_model(model, weights=weights, seed=seed, device=device)
    chosen = atlas_channels(net, opts.stages, channels, opts.seed)
    dataset, summary = make_dataset(opts.data, net, progress=progress)
    info = net.weights_info.as_dict()
    return AtlasJob(out, model, opts, net, dataset, summary, info, chosen, progress)


def run_atlas(
    out_dir: str | os.PathLike,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    data: Mapping[str, Any] | None = None,
    stages: Sequence[int] | int = STAGES,
    channels: Any = None,
    scan: str | os.PathLike | None = None,
    rules: Sequence[str] = ("deconvnet", "guided"),
    tile_px: int = 64,
    optimize: Mapping[str, Any] | None = None,
    opt_seed: int = 0,
    k: int = 9,
    batch_size: int = 8,
    group_size: int = 32,
    workers: int = 1,
    checkpoint_every: int = 1000,
    device: str = "cpu",
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the atlas of `model` over `data` into `out_dir` (module doc); returns result.json.

    channels: None (all), a count drawn per stage with `opt_seed`, a list for every stage, or
    {stage: list}. scan: a finished scan of this model, weights and dataset (a topk.pt, or the
    folder of a scan, merge_scans, fig2 or atlas job). optimize: {size, steps} of the optimised
    images (steps 0: none). workers: groups built in this many spawned processes at once, each with
    its share of torch's threads (1: in this process). Bad input (unknown stage, rule or channel, a scan of another model,
    weights or dataset, a folder holding another job) raises ValueError before anything is
    written; a rerun with the same config continues an interrupted build.
    """
    clock = time.perf_counter()
    opts = AtlasOptions.check(stages, rules, tile_px, optimize, opt_seed, k, batch_size, group_size, data)
    every = check_int(checkpoint_every, "checkpoint_every", 1)
    pool = check_int(workers, "workers", 1)
    require_whole_dataset(opts.data, "atlas")
    out = Path(out_dir)
    with JobFolder(out) as folder:
        job = _load(out, model, weights, seed, channels, opts, device, progress)
        job.load, job.workers = {"weights": weights, "seed": seed, "device": device}, pool
        saved = (
            None if scan is None else saved_scan(scan, model, job.info, job.dataset, opts.stages, opts.k, 0)
        )
        arguments = _arguments(model, weights, seed, channels, opts, device)
        source = None if scan is None else str(Path(scan).resolve())
        result = {
            "experiment": "atlas",
            "status": "running",
            "arguments": arguments,
            "fingerprint": job_fingerprint(arguments, job.info, source),
        }
        done = finished_job(out, "atlas", result["fingerprint"])
        if done is not None:
            log.info("atlas: %s already holds this finished atlas; nothing to do", out)
            return done
        _start(job, folder, result, _header(job, source, config, provenance))
        with folder.failing(result):
            return _build(job, result, saved, every, device, clock)


def _start(job: AtlasJob, folder: JobFolder, result: dict[str, Any], header: dict[str, Any]) -> None:
    """Refuse a folder holding another job, then write config.yaml and the running result.json."""
    check_folder(job.out, "atlas", result["fingerprint"])
    if header["config"] is not None:
        folder.write_yaml(CONFIG_FILE, header["config"])
    result.update(header)
    folder.write_result({**result, "pid": os.getpid()})


def _header(job: AtlasJob, source: str | None, config: Any, provenance: Any) -> dict[str, Any]:
    """result.json's description of the job: config, model, weights, dataset, channels."""
    return {
        "config": dict(config) if config is not None else None,
        "model": job.model,
        "weights": dict(job.info),
        "weights_label": weights_label(job.info),
        "dataset": dict(job.data_summary),
        "scan_source": source,
        "channels": {str(s): c for s, c in job.channels.items()},
        "versions": versions(),
        "provenance": dict(provenance) if provenance is not None else None,
    }


def _build(
    job: AtlasJob, result: dict[str, Any], saved: Any, every: int, device: str, clock: float
) -> dict[str, Any]:
    """Scan, firing pass, channels, pages; result.json "complete" with the timings."""
    timings = {"setup_s": time.perf_counter() - clock}
    step = time.perf_counter()
    failures = _scan(job, saved, every, device)
    job.activity = {s: map_activity(job.scan[s]) for s in job.opts.stages}
    timings["scan_s"] = time.perf_counter() - step
    step = time.perf_counter()
    _firing(job)
    timings["firing_s"] = time.perf_counter() - step
    step = time.perf_counter()
    meta = _pages_meta(job)
    write_json(job.out / PAGES_FILE, meta)
    built = _build_channels(job, meta)
    timings["channels_s"] = time.perf_counter() - step
    step = time.perf_counter()
    pages = [p.name for p in _write_pages(job.out, meta)]
    timings["pages_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - clock
    result.update(
        status="complete",
        decode_failures={"count": len(failures), "images": failures},
        map_activity={str(s): a.as_dict() for s, a in job.activity.items()},
        channels_total=sum(len(c) for c in job.channels.values()),
        channels_built_in_this_run=built,
        timings_s=timings,
        files=sorted([*pages, TOPK_FILE, FIRING_FILE, PAGES_FILE, RESULT_FILE]),
    )
    write_json(job.out / RESULT_FILE, result)
    log.info(
        "atlas: %d channels in %.1f s; open %s",
        result["channels_total"],
        timings["total_s"],
        job.out / INDEX_PAGE,
    )
    return result


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.atlas`: the device checked, then `run_atlas` with the config and the
    provenance in result.json."""
    check_device(config["device"])
    return run_atlas(
        out,
        **model_arguments(config),
        data=config["data"],
        stages=config["stages"],
        channels=config.get("channels"),
        scan=config.get("scan"),
        rules=config["rules"],
        tile_px=config["tile_px"],
        optimize=config.get("optimize"),
        opt_seed=config["seed"],
        k=config["k"],
        batch_size=config["batch_size"],
        group_size=config["group_size"],
        workers=config.get("workers", 1),
        checkpoint_every=config.get("checkpoint_every", 1000),
        device=config["device"],
        progress=bool(config.get("progress", True)),
        config=dict(config),
        provenance=record_provenance(),
    )
