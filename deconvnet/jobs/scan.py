"""A dataset scan as a job: one shard of a dataset, resumable, and the merge of a sweep's shards.

`run_scan(out_dir, ...)` scans the image numbers of one shard (`data.shard` of `data.num_shards`,
contiguous blocks: `deconvnet.jobs.data_config.shard_range`) with the decoding overlapped in DataLoader
workers (`deconvnet.data.loader`). Every `checkpoint_every` images its running top-k is saved
atomically to `checkpoint.pt`; a job killed at any moment (SIGKILL too) and run again into the same
folder with the same config continues from there and ends with exactly the uninterrupted result (the
batches after a checkpoint are the same batches). A finished job run again is not redone.

`merge_scan_jobs(job_dirs, out_dir)` checks that the shards belong to one scan (same config but
the shard) and are all there and finished, and writes `deconvnet.analysis.scan.merge_scans` of them: the
result of one scan over the whole dataset. `load_scan(path)` reads the `topk.pt` of any of these
jobs (or of a fig2 job) for `experiments.fig2 scan=<path>`.

Files of a job folder: `result.json` (status "running" while the job runs, "stale" to
`deconvnet.jobs.folder.job_status` if it was killed, "complete" at the end; shard, image range,
decode failures named), `topk.pt` (the result), `checkpoint.pt` while unfinished, `config.yaml`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deconvnet.analysis import scan as scan_module
from deconvnet.analysis.scan import (
    LoadedTopK,
    TopK,
    check_exclude_border,
    check_stages,
    load_topk,
    merge_scans,
    save_topk,
)
from deconvnet.core.architecture import STAGES
from deconvnet.core.validation import check_device, check_int, check_stage_numbers
from deconvnet.data.loader import DecodeFailure, ScanLoader
from deconvnet.data.models import weights_label
from deconvnet.jobs.data_config import check_data, make_dataset, shard_range
from deconvnet.jobs.folder import CONFIG_FILE, RESULT_FILE, JobFolder, job_status, write_json
from deconvnet.jobs.provenance import provenance as record_provenance
from deconvnet.jobs.provenance import versions
from deconvnet.jobs.request import model_arguments

__all__ = [
    "ScanOptions",
    "ScanOutcome",
    "scan_dataset",
    "run_scan",
    "merge_scan_jobs",
    "load_scan",
    "saved_scan",
    "ids_digest",
    "scan_fingerprint",
    "job_fingerprint",
    "finished_job",
    "check_folder",
    "dataset_image_size",
    "warn_failures",
]

log = logging.getLogger(__name__)

TOPK_FILE = "topk.pt"
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class ScanOptions:
    """The validated options of a scan job (see `run_scan`)."""

    stages: list[int]
    k: int
    batch_size: int
    checkpoint_every: int
    exclude_border: int
    data: dict[str, Any]
    threads: int | None = None

    @classmethod
    def check(
        cls,
        stages: Any,
        k: Any,
        batch_size: Any,
        checkpoint_every: Any,
        exclude_border: Any,
        data: Any,
        threads: Any = None,
    ) -> ScanOptions:
        """Every check that needs nothing loaded; ValueError naming the option otherwise."""
        return cls(
            stages=check_stage_numbers(stages),
            k=check_int(k, "k", 1),
            batch_size=check_int(batch_size, "batch_size", 1),
            checkpoint_every=check_int(checkpoint_every, "checkpoint_every", 1),
            exclude_border=check_int(exclude_border, "exclude_border", 0),
            data=check_data(data),
            threads=None if threads is None else check_int(threads, "threads", 1),
        )


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` inside (None: left as it is), restored after.
    On some CPUs (AVX2 kernels, measured) a convolution's float rounding depends on the count, so
    shards and a one-job scan equal bit for bit only when computed with the same `threads`."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ScanOutcome:
    """What `scan_dataset` returns: the result, the images left out, where it resumed (or None)."""

    result: dict[int, TopK]
    failures: list[DecodeFailure]
    resumed_from: int | None


def warn_failures(failures: Sequence[Mapping[str, Any]]) -> None:
    """One warning naming the images a scan skipped (the first 5; result.json has them all)."""
    if failures:
        more = f"; ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        log.warning(
            "scan: %d image(s) could not be decoded and were skipped (all named in result.json): %s%s",
            len(failures),
            "; ".join(f"{f['id']}: {f['reason']}" for f in failures[:5]),
            more,
        )


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the dataset's image ids in order: which images the numbers refer to."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _plain(value: Any) -> Any:
    """JSON round trip: tuples become lists, so fingerprints compare equal after loading."""
    return json.loads(json.dumps(value))


def _resume_point(
    checkpoint: Path | None, fingerprint: dict[str, Any]
) -> tuple[dict[int, TopK] | None, list[DecodeFailure]]:
    """The checkpoint's running top-k and failures when it belongs to this scan, else (None, [])."""
    if checkpoint is None or not checkpoint.is_file():
        return None, []
    try:
        saved = load_topk(checkpoint, allow_incomplete=True)
    except ValueError as error:
        log.warning("scan: ignoring unreadable checkpoint %s (%s)", checkpoint, error)
        return None, []
    if saved.meta.get("fingerprint") != fingerprint:
        log.warning("scan: %s belongs to another scan (different config); starting afresh", checkpoint)
        return None, []
    failures = [DecodeFailure(f["image"], f["id"], f["reason"]) for f in saved.meta["failures"]]
    return saved.result, failures


def scan_dataset(
    net: nn.Module,
    dataset: Any,
    opts: ScanOptions,
    start: int,
    stop: int,
    workers: int = 0,
    checkpoint: Path | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> ScanOutcome:
    """`scan_topk` over image numbers [start, stop) of `dataset`, decoded by `workers` processes.

    With `checkpoint`, the running top-k is saved there (atomically, with `fingerprint`) whenever
    another `opts.checkpoint_every` images are done, and a checkpoint with the same fingerprint is
    continued from instead of starting at `start`.
    """
    fingerprint = _plain(dict(fingerprint or {}))
    initial, failures = _resume_point(checkpoint, fingerprint)
    first = start if initial is None else next(iter(initial.values())).end
    if initial is not None:
        log.info("scan: resuming from %s at image %d of [%d, %d)", checkpoint, first, start, stop)
    device = next(net.parameters()).device
    loader = ScanLoader(dataset, opts.batch_size, first, stop, workers, pin_memory=device.type == "cuda")
    saved_at = first

    def save(result: dict[int, TopK], _: int) -> None:
        nonlocal saved_at
        end = next(iter(result.values())).end
        if checkpoint is not None and end - saved_at >= opts.checkpoint_every:
            save_topk(
                result,
                checkpoint,
                complete=False,
                meta={
                    "fingerprint": fingerprint,
                    "failures": [f.as_dict() for f in failures + loader.failures],
                },
            )
            saved_at = end

    if first == stop and initial is not None:
        return ScanOutcome(initial, failures, first)
    result = scan_module.scan_topk(
        net,
        loader,
        k=opts.k,
        stages=opts.stages,
        first_image=first,
        progress=progress,
        on_batch=save,
        exclude_border=opts.exclude_border,
        initial=initial,
    )
    return ScanOutcome(result, failures + loader.failures, None if initial is None else first)


def _without_workers(data: Mapping[str, Any]) -> dict[str, Any]:
    """A data config without `workers`: how many processes decode changes no result."""
    return {key: v for key, v in data.items() if key != "workers"}


def scan_fingerprint(
    model: str,
    info: Mapping[str, Any],
    data: Mapping[str, Any],
    ids: Sequence[str],
    opts: ScanOptions,
    device: str,
) -> dict[str, Any]:
    """What determines a scan's result, bit for bit: a checkpoint or result is reused only when
    this is equal (decoding workers and checkpoint spacing change nothing and are left out)."""
    return _plain(
        {
            "model": model,
            "weights": dict(info),
            "data": _without_workers(data),
            "images": len(ids),
            "ids_sha256": ids_digest(ids),
            "stages": opts.stages,
            "k": opts.k,
            "batch_size": opts.batch_size,
            "exclude_border": opts.exclude_border,
            "device": device,
        }
    )


def finished_job(out: Path, experiment: str, fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    """result.json of a finished `experiment` job with this fingerprint in `out` whose files are
    all there, or None."""
    if job_status(out) != "complete":
        return None
    result = json.loads((out / RESULT_FILE).read_text())
    same = result.get("experiment") == experiment and result.get("fingerprint") == _plain(dict(fingerprint))
    return result if same and all((out / f).is_file() for f in result.get("files", [])) else None


def job_fingerprint(
    arguments: Mapping[str, Any], info: Mapping[str, Any], scan_source: str | None
) -> dict[str, Any]:
    """A figure job's identity: its arguments (data.workers left out: it changes nothing), the
    weights used and the saved scan it read."""
    plain = dict(arguments)
    if isinstance(plain.get("data"), Mapping):
        plain["data"] = _without_workers(plain["data"])
    return _plain({"arguments": plain, "weights": dict(info), "scan": scan_source})


def check_folder(out: Path, experiment: str, fingerprint: Mapping[str, Any]) -> None:
    """ValueError if `out` holds another job's files (never overwrite or delete what we did not write)."""
    if not (out / RESULT_FILE).is_file():
        return
    try:
        earlier = json.loads((out / RESULT_FILE).read_text())
    except ValueError:
        earlier = {}
    if earlier.get("experiment") != experiment or earlier.get("fingerprint") != _plain(dict(fingerprint)):
        raise ValueError(
            f"out: {out} holds the files of another job ({earlier.get('experiment', 'unknown')}, "
            "different config); nothing was changed there: give this job its own folder "
            "(hydra.run.dir=<new folder>)"
        )


def run_scan(
    out_dir: str | os.PathLike,
    model: str = "vgg16",
    weights: str = "auto",
    seed: int = 0,
    data: Mapping[str, Any] | None = None,
    stages: Sequence[int] | int = STAGES,
    k: int = 9,
    batch_size: int = 8,
    checkpoint_every: int = 1000,
    exclude_border: int = 0,
    device: str = "cpu",
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Scan one shard of a dataset into `out_dir` (result.json, topk.pt); returns result.json.

    data: a data config (`deconvnet.jobs.data_config.check_data`) with `shard`, `num_shards` and
    `workers`; threads: torch's intra-op threads while scanning (None: as set; see
    `intra_op_threads`). Bad values raise ValueError / FileNotFoundError before the model is loaded.
    """
    from deconvnet.data.models import load_model

    clock = time.perf_counter()
    opts = ScanOptions.check(stages, k, batch_size, checkpoint_every, exclude_border, data, threads)
    out = Path(out_dir)
    with JobFolder(out) as folder:
        net = load_model(model, weights=weights, seed=seed, device=device)
        check_stages(net, opts.stages)
        dataset, summary = make_dataset(opts.data, net, progress=progress)
        check_exclude_border(net, opts.stages, opts.exclude_border, *dataset_image_size(dataset, opts.data))
        info = net.weights_info.as_dict()
        fingerprint = scan_fingerprint(model, info, opts.data, dataset.ids, opts, device)
        done = finished_job(out, "scan", fingerprint)
        if done is not None:
            log.info("scan: %s already holds this finished scan; nothing to do", out)
            return done
        check_folder(out, "scan", fingerprint)
        if config is not None:
            folder.write_yaml(CONFIG_FILE, config)
        shard, shards = int(opts.data.get("shard", 0)), int(opts.data.get("num_shards", 1))
        start, stop = shard_range(len(dataset), shard, shards, opts.batch_size)
        arguments = {"model": model, "weights": str(weights), "seed": seed, "device": device, **opts.__dict__}
        shard_record = {"index": shard, "num_shards": shards, "first_image": start, "end_image": stop}
        shard_record["threads"] = opts.threads or torch.get_num_threads()
        result = _running_result(arguments, fingerprint, info, summary, shard_record, config, provenance)
        folder.write_result(result)
        with folder.failing(result), intra_op_threads(opts.threads):
            workers = int(opts.data.get("workers", 0))
            outcome = scan_dataset(
                net, dataset, opts, start, stop, workers, out / CHECKPOINT_FILE, fingerprint, progress
            )
        return _write_scan(out, result, outcome, model, info, dataset.ids, clock)


def _running_result(
    arguments: Mapping[str, Any],
    fingerprint: Mapping[str, Any],
    info: Mapping[str, Any],
    summary: Mapping[str, Any],
    shard: Mapping[str, int],
    config: Mapping[str, Any] | None,
    provenance: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A scan job's result.json while it runs ("status": "running", this process's pid)."""
    return {
        "experiment": "scan",
        "status": "running",
        "pid": os.getpid(),
        "config": dict(config) if config is not None else None,
        "arguments": arguments,
        "fingerprint": fingerprint,
        "weights": info,
        "weights_label": weights_label(info),
        "dataset": summary,
        "shard": shard,
        "versions": versions(),
        "provenance": dict(provenance) if provenance is not None else None,
    }


def dataset_image_size(dataset: Any, data: Mapping[str, Any]) -> tuple[int, int]:
    """The (H, W) of the dataset's images: its fixed size, else the first image that decodes."""
    if data.get("kind") == "samples":
        side = int(dataset[0][0].shape[-1])
        return side, side
    for number in range(len(dataset)):
        try:
            return tuple(int(v) for v in dataset[number][0].shape[-2:])  # type: ignore[return-value]
        except Exception:  # a broken file: the scan names it; its size is not needed
            continue
    raise ValueError("data: no image of the dataset can be decoded")


def _write_scan(
    out: Path,
    result: dict[str, Any],
    outcome: ScanOutcome,
    model: str,
    info: Mapping[str, Any],
    ids: Sequence[str],
    clock: float,
) -> dict[str, Any]:
    """topk.pt, then the complete result.json; the checkpoint (this job's own file) goes."""
    failures = [f.as_dict() for f in outcome.failures]
    warn_failures(failures)
    some = next(iter(outcome.result.values()))
    save_topk(
        outcome.result,
        out / TOPK_FILE,
        meta={
            "model": model,
            "weights": dict(info),
            "fingerprint": result["fingerprint"],
            "dataset_images": len(ids),
            "ids_sha256": ids_digest(ids),
            "exclude_border": result["arguments"]["exclude_border"],
            "decode_failures": failures,
        },
    )
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    result = {
        **result,
        "status": "complete",
        "images_scanned": some.images_scanned,
        "decode_failures": {"count": len(failures), "images": failures},
        "resumed_from": outcome.resumed_from,
        "seconds": round(time.perf_counter() - clock, 3),
        "files": [TOPK_FILE, RESULT_FILE],
    }
    write_json(out / RESULT_FILE, result)
    log.info("scan: %d images scanned (%d skipped) in %s", some.images_scanned, len(failures), out)
    return result


def _shard_jobs(job_dirs: Sequence[str | os.PathLike]) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, result.json) of every scan job among `job_dirs` (a sweep's folder is opened: its
    numbered job folders); ValueError naming unfinished jobs or a missing shard."""
    folders: list[Path] = []
    for given in job_dirs:
        path = Path(given)
        if (path / RESULT_FILE).is_file():
            folders.append(path)
        elif path.is_dir():
            folders += sorted(p for p in path.iterdir() if (p / RESULT_FILE).is_file())
    if not folders:
        raise ValueError(f"inputs: no scan job folder (with {RESULT_FILE}) among {list(map(str, job_dirs))}")
    jobs = []
    for folder in folders:
        result = json.loads((folder / RESULT_FILE).read_text())
        if result.get("experiment") != "scan":
            continue
        status = job_status(folder)
        if status != "complete":
            raise ValueError(
                f"inputs: the scan job in {folder} is {status}, not complete; "
                "run it again (same config, same folder) to finish it"
            )
        jobs.append((folder, result))
    if not jobs:
        raise ValueError(f"inputs: none of {[str(f) for f in folders]} is a scan job")
    return jobs


def _merged_fingerprint(result: Mapping[str, Any]) -> dict[str, Any]:
    """A shard's fingerprint without its shard number: the same for every shard of one scan."""
    data = {key: v for key, v in result["fingerprint"]["data"].items() if key != "shard"}
    return {**result["fingerprint"], "data": data}


def _check_one_scan(jobs: list[tuple[Path, dict[str, Any]]]) -> int:
    """The shard count; ValueError unless the jobs are the shards of one scan, each once, all there."""
    reference = _merged_fingerprint(jobs[0][1])
    for folder, result in jobs[1:]:
        if _merged_fingerprint(result) != reference:
            raise ValueError(
                f"inputs: {folder} is a scan with another config than {jobs[0][0]} "
                "(model, weights, data, stages, k, batch size, border or device differ)"
            )
    shards = reference["data"].get("num_shards", 1)
    seen: dict[int, Path] = {}
    for folder, result in jobs:
        index = result["shard"]["index"]
        if index in seen:
            raise ValueError(f"inputs: shard {index} is given twice ({seen[index]}, {folder})")
        seen[index] = folder
    missing = sorted(set(range(shards)) - set(seen))
    if missing:
        raise ValueError(f"inputs: shard(s) {missing} of {shards} missing; scan them first")
    return shards


def _warn_mixed_threads(jobs: list[tuple[Path, dict[str, Any]]]) -> None:
    """A warning when the shards ran with different intra-op thread counts (see `intra_op_threads`)."""
    counts = {result["shard"]["index"]: result["shard"].get("threads") for _, result in jobs}
    if len(set(counts.values())) > 1:
        log.warning(
            "merge_scans: the shards ran with different thread counts {shard: threads} %s: on "
            "some CPUs the merged values then differ from one scan by float rounding (set "
            "threads=<n> for every shard)",
            counts,
        )


def merge_scan_jobs(
    job_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge the finished shards of one scan (job folders, or a sweep folder holding them) into
    `out_dir`: topk.pt equal to one scan over the whole dataset, and result.json."""
    jobs = _shard_jobs(job_dirs)
    shards = _check_one_scan(jobs)
    _warn_mixed_threads(jobs)
    out = Path(out_dir)
    with JobFolder(out) as folder:
        check_folder(out, "merge_scans", _merged_fingerprint(jobs[0][1]))
        if config is not None:
            folder.write_yaml(CONFIG_FILE, config)
        loaded = [load_topk(folder / TOPK_FILE) for folder, _ in jobs]
        merged = merge_scans([one.result for one in loaded])
        first = jobs[0][1]
        failures = sorted(
            (f for one in loaded for f in one.meta["decode_failures"]), key=lambda f: f["image"]
        )
        fingerprint = _merged_fingerprint(first)
        meta = {
            key: loaded[0].meta[key]
            for key in ("model", "weights", "dataset_images", "ids_sha256", "exclude_border")
        }
        save_topk(
            merged, out / TOPK_FILE, meta={**meta, "fingerprint": fingerprint, "decode_failures": failures}
        )
        some = next(iter(merged.values()))
        result = {
            "experiment": "merge_scans",
            "status": "complete",
            "config": dict(config) if config is not None else None,
            "shards": [
                {
                    "index": r["shard"]["index"],
                    "folder": str(f.resolve()),
                    "images_scanned": r["images_scanned"],
                    "threads": r["shard"].get("threads"),
                }
                for f, r in sorted(jobs, key=lambda j: j[1]["shard"]["index"])
            ],
            "num_shards": shards,
            "fingerprint": fingerprint,
            "weights": first["weights"],
            "weights_label": first["weights_label"],
            "images_scanned": some.images_scanned,
            "decode_failures": {"count": len(failures), "images": failures},
            "versions": versions(),
            "provenance": dict(provenance) if provenance is not None else None,
            "files": [TOPK_FILE, RESULT_FILE],
        }
        folder.write_result(result)
    log.info("merge_scans: %d shards, %d images, into %s", shards, some.images_scanned, out)
    return result


def load_scan(path: str | os.PathLike) -> LoadedTopK:
    """The finished scan at `path`: a topk.pt file, or a job folder holding one (scan, merge_scans
    or fig2). FileNotFoundError / ValueError name the path otherwise."""
    path = Path(path)
    if path.is_dir():
        status = job_status(path)
        if status not in ("complete", "missing"):
            raise ValueError(f"scan: the job in {path} is {status}, not complete")
        path = path / TOPK_FILE
    if not path.exists():
        raise FileNotFoundError(f"scan: no {TOPK_FILE} at {path}")
    return load_topk(path)


def saved_scan(
    path: str | os.PathLike,
    model: str,
    info: Mapping[str, Any],
    dataset: Any,
    stages: Sequence[int],
    k: int,
    exclude_border: int,
) -> LoadedTopK:
    """The finished scan at `path`, checked to fit a job over `dataset` with this model, weights,
    stages, k and border, cut to its k; ValueError naming `scan` and what differs otherwise."""
    loaded = load_scan(path)
    meta, where = loaded.meta, f"scan: {path}"
    if meta.get("model") != model or meta.get("weights") != dict(info):
        raise ValueError(
            f"{where} was made with {meta.get('model')} "
            f"({weights_label(meta['weights']) if meta.get('weights') else 'unknown weights'}), "
            f"this job uses {model} ({weights_label(info)})"
        )
    digest = meta.get("ids_sha256") or ids_digest(meta.get("dataset_ids") or [])
    if digest != ids_digest(dataset.ids):
        raise ValueError(
            f"{where} was made over another dataset ({meta.get('dataset_images', '?')} "
            f"images) than this job's ({len(dataset)} images): same data config needed"
        )
    if meta.get("exclude_border", 0) != exclude_border:
        raise ValueError(
            f"{where} was made with exclude_border={meta.get('exclude_border')}, "
            f"this job asks for {exclude_border}"
        )
    missing = sorted(set(stages) - set(loaded.result))
    if missing:
        raise ValueError(f"{where} holds stages {sorted(loaded.result)}, not {missing}")
    small = [s for s in stages if loaded.result[s].kept < k]
    if small:
        raise ValueError(
            f"{where} kept the top {loaded.result[small[0]].kept} per feature map; "
            f"this job asks for k={k}: use k <= {loaded.result[small[0]].kept}"
        )
    return LoadedTopK({s: _first_k(loaded.result[s], k) for s in stages}, meta)


def figure_job_scan(
    net: nn.Module,
    dataset: Any,
    opts: ScanOptions,
    out: Path,
    model: str,
    info: Mapping[str, Any],
    device: str,
    saved: LoadedTopK | None = None,
    progress: bool = True,
) -> tuple[dict[int, TopK], list[dict[str, Any]]]:
    """The scan of a job that draws from one (fig2, atlas): `saved`, or run here over the whole
    dataset, resumably from `out`/checkpoint.pt; written to `out`/topk.pt with the model, weights,
    image ids, border and decode failures, the job's own checkpoint removed, the failures warned
    about. Returns ({stage: TopK}, decode failures)."""
    if saved is not None:
        topk, failures = saved.result, list(saved.meta.get("decode_failures", []))
    else:
        outcome = scan_dataset(
            net,
            dataset,
            opts,
            0,
            len(dataset),
            int(opts.data.get("workers", 0)),
            out / CHECKPOINT_FILE,
            scan_fingerprint(model, info, opts.data, dataset.ids, opts, device),
            progress,
        )
        topk, failures = outcome.result, [f.as_dict() for f in outcome.failures]
    meta = {"model": model, "weights": dict(info), "dataset_ids": list(dataset.ids)}
    save_topk(
        topk,
        out / TOPK_FILE,
        meta={**meta, "exclude_border": opts.exclude_border, "decode_failures": failures},
    )
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)  # this job's own checkpoint
    warn_failures(failures)
    return topk, failures


def _first_k(topk: TopK, k: int) -> TopK:
    """The top k of a top-K (K >= k): its first k entries (the order is total: value, then image)."""
    keep = min(k, topk.k)
    return TopK(
        *(topk[f][:, :keep].clone() for f in ("values", "image", "y", "x")),
        topk.images_scanned,
        k,
        topk.first_image,
        topk.end_image,
    )


def run_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.scan`: the device checked, then `run_scan` with the config and the
    provenance in result.json."""
    check_device(config["device"])
    return run_scan(
        out,
        **model_arguments(config),
        data=config["data"],
        stages=config["stages"],
        k=config["k"],
        batch_size=config["batch_size"],
        checkpoint_every=config["checkpoint_every"],
        exclude_border=config["exclude_border"],
        device=config["device"],
        progress=bool(config["progress"]),
        config=dict(config),
        provenance=record_provenance(),
        threads=config.get("threads"),
    )


def merge_from_config(out: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """`python -m experiments.merge_scans`: `inputs` (required: a sweep folder or its shards' job
    folders) merged into `out` by `merge_scan_jobs`."""
    inputs = config.get("inputs", "???")
    if inputs == "???":
        raise ValueError(
            "inputs: required: the sweep folder of a sharded scan, or its shards' "
            'job folders, e.g. "inputs=[multirun/<date>/<time>]"'
        )
    inputs = [inputs] if isinstance(inputs, str) else inputs
    return merge_scan_jobs(inputs, out, config=dict(config), provenance=record_provenance())
