"""Benchmark: the atlas's pages for n channels of each stage vs a naive loop that scans and projects
each channel on its own.

Both make the same pages of the same channels (VGG16, `--weights`, the offline sample gallery,
`--channels` drawn per stage with seed 0), with the same tiles, optimised images and page code:

- atlas: `deconvnet.jobs.atlas.run_atlas`, the whole job: one scan for all stages, the firing pass,
  then per stage groups of 32 channels, each group's top-9 images recorded once and its optimised
  images made together; pages and index.
- naive: per channel, a scan of its stage over the whole dataset (`scan_topk`, that stage only),
  the projection of its top-9 (`project_tiles`, that channel only), its optimised images alone
  (`visualize_filters`, plain and regularized) and its files written with the same figure code.
  The naive loop is spared the firing pass: it reads the histogram from the atlas's firing.npz.

The atlas runs before and after the loop (the mean is used for the ratio: load on a shared machine
drifts). Afterwards every channel's sprite (its tiles) is compared byte for byte and its optimised
images pixel by pixel.

    python scripts/bench_atlas.py                         # 16 channels x 5 stages, 64 images
    python scripts/bench_atlas.py --images 210            # the whole gallery (the naive loop is slow)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deconvnet.analysis.scan import load_topk, scan_topk
from deconvnet.analysis.top_projections import map_activity, project_tiles
from deconvnet.data.models import load_model
from deconvnet.jobs import atlas
from deconvnet.jobs.atlas import record_path, run_atlas
from deconvnet.jobs.data_config import make_dataset
from deconvnet.jobs.scan import TOPK_FILE


def atlas_run(folder: Path, args: argparse.Namespace) -> float:
    """The whole atlas job into `folder` (emptied first): seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    run_atlas(
        folder,
        model="vgg16",
        weights=args.weights,
        data={"kind": "samples", "limit": args.images},
        channels=args.channels,
        optimize={"size": args.size, "steps": args.steps},
        progress=False,
    )
    return time.perf_counter() - start


def naive_channel(job: atlas.AtlasJob, meta: dict, s: int, c: int) -> None:
    """One channel alone: scan its stage, project its top-9, optimise its images, write its files."""
    batches = (
        torch.stack([job.dataset[i][0] for i in range(j, min(j + 8, len(job.dataset)))])
        for j in range(0, len(job.dataset), 8)
    )
    scan = scan_topk(job.net, batches, k=9, stages=[s], progress=False)
    tiles = project_tiles(job.net, job.dataset, scan, {s: [c]}, progress=False, rules=job.opts.rules)[s]
    optimized = atlas.optimized_images(job, s, [c])
    atlas.write_channel(job, meta, tiles, 0, optimized)


def naive_run(folder: Path, reference: Path, args: argparse.Namespace) -> float:
    """The naive loop into `folder`: seconds (model and dataset loading not timed)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    meta = json.loads((reference / atlas.PAGES_FILE).read_text())
    net = load_model("vgg16", weights=args.weights, seed=0)
    opts = atlas.AtlasOptions.check(
        [1, 2, 3, 4, 5],
        ["deconvnet", "guided"],
        64,
        {"size": args.size, "steps": args.steps},
        0,
        9,
        8,
        16,
        {"kind": "samples", "limit": args.images},
    )
    dataset, summary = make_dataset(opts.data, net, progress=False)
    channels = {st["stage"]: st["channels"] for st in meta["stages"]}
    job = atlas.AtlasJob(folder, "vgg16", opts, net, dataset, summary, {}, channels, False)
    job.firing = atlas.load_firing(reference / atlas.FIRING_FILE)
    scan = load_topk(reference / TOPK_FILE).result
    job.activity = {s: map_activity(scan[s]) for s in channels}
    start = time.perf_counter()
    for s, chosen in channels.items():
        (folder / f"stage{s}").mkdir()
        for c in chosen:
            naive_channel(job, meta, s, c)
    return time.perf_counter() - start


def compare(ours: Path, naive: Path) -> tuple[int, int, float]:
    """(channels, sprites byte-identical, largest optimised-image pixel difference in 0..255)."""
    meta = json.loads((ours / atlas.PAGES_FILE).read_text())
    same, worst, count = 0, 0.0, 0
    for stage in meta["stages"]:
        for c in stage["channels"]:
            record = json.loads(record_path(ours, stage["stage"], c).read_text())
            folder_a, folder_b = ours / f"stage{stage['stage']}", naive / f"stage{stage['stage']}"
            count += 1
            same += (folder_a / record["files"]["sprite"]).read_bytes() == (
                folder_b / record["files"]["sprite"]
            ).read_bytes()
            for name in record["files"]["optimized"].values():
                a = np.asarray(Image.open(folder_a / name), dtype=np.int16)
                b = np.asarray(Image.open(folder_b / name), dtype=np.int16)
                worst = max(worst, float(np.abs(a - b).max()))
    return count, same, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="hed")
    parser.add_argument("--channels", type=int, default=16, help="channels per stage")
    parser.add_argument("--images", type=int, default=64, help="the first N images of the gallery")
    parser.add_argument("--size", type=int, default=64, help="optimised images' side")
    parser.add_argument("--steps", type=int, default=32, help="optimisation steps")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    root = Path(tempfile.mkdtemp(prefix="bench_atlas_"))
    print(
        f"VGG16 ({args.weights}), sample gallery: first {args.images} images at 224 px, {args.channels} "
        f"channels x 5 stages, top 9, rules deconvnet + guided, optimised images {args.size} px x "
        f"{args.steps} steps; {torch.get_num_threads()} threads"
    )
    first = atlas_run(root / "atlas", args)
    print(f"atlas (before loop): {first:8.1f} s")
    loop = naive_run(root / "naive", root / "atlas", args)
    print(f"naive loop:          {loop:8.1f} s  (measured, every channel)")
    second = atlas_run(root / "atlas", args)
    print(f"atlas (after loop):  {second:8.1f} s")
    ours = (first + second) / 2
    count, same, worst = compare(root / "atlas", root / "naive")
    print(f"atlas / naive: {ours / loop:.3f}  (atlas mean {ours:.1f} s, naive {loop:.1f} s)")
    print(
        f"sprites byte-identical: {same} of {count}; optimised images: largest pixel difference {worst:.0f}/255"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
