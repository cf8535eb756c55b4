"""Benchmark: the Fig. 2 projection phase vs a per-tile loop of forward + hooked backward.

Both project the SAME tile list (one scan: random-init model, the offline sample gallery,
`--channels-per-stage` feature maps x top `--k` x stages 1-5) and their outputs are compared.

- ours: `deconvnet.analysis.top_projections.project_tiles`: one forward pass per image (batched,
  the record of the deepest stage serves all stages), per image batch and stage all tiles
  projected together, each computed only inside its receptive field; includes the value check
  and the image-patch crops.
- loop: per tile, a forward pass through features[: stage] with autograd on the full image and a
  backward pass whose ReLU backward hooks apply relu(grad_out) (the deconvnet rule; the hook
  set-up of scripts/bench_reconstruct.py), then the receptive-field crop of the input gradient.

Only the projection phase is timed (images preloaded, scan done once, untimed). Ours runs before
and after the loop (the mean of the two is used for the ratio: load on a shared machine drifts).

    python scripts/bench_fig2.py                         # full set: 16 x 9 x 5 = 720 tiles (VGG16)
    python scripts/bench_fig2.py --tiles-per-stage 8     # loop on 8 tiles per stage, EXTRAPOLATED
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import deconvnet
from deconvnet.analysis.scan import scan_topk
from deconvnet.analysis.top_projections import crop_with_fill, project_tiles, select_channels
from deconvnet.jobs.data_config import make_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reconstruct import hooked_features  # noqa: E402  (the same hook-based loop)


class Preloaded:
    """The dataset's images in memory (so neither side pays for image decoding)."""

    def __init__(self, dataset) -> None:
        self.items = [dataset[i] for i in range(len(dataset))]
        self.ids = [item[1] for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def loop_tile(
    features: nn.Sequential, image: torch.Tensor, c: int, y: int, x: int, rf: deconvnet.ReceptiveField
) -> torch.Tensor:
    """One tile by forward + hooked backward on the full image, cropped to the RF: [3, rf, rf]."""
    inp = image[None].clone().requires_grad_(True)
    a = features(inp)
    seed = torch.zeros_like(a)
    seed[0, c, y, x] = a[0, c, y, x].detach()
    (grad,) = torch.autograd.grad(a, inp, seed)
    top, left, _, _ = rf.box(y, x)
    return crop_with_fill(grad[0], top, left, rf.size, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["vgg16", "alexnet"], default="vgg16")
    parser.add_argument("--channels-per-stage", type=int, default=16)
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument(
        "--tiles-per-stage",
        type=int,
        default=None,
        help="time the loop on this many tiles per stage (evenly spaced) and "
        "EXTRAPOLATE its time to all tiles (labelled as such)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = deconvnet.load_model(args.model, weights="random", seed=args.seed)
    dataset, _ = make_dataset({"kind": "samples"}, model, progress=False)
    data = Preloaded(dataset)
    chosen = select_channels(model, args.stages, None, args.channels_per_stage, 0)
    scan = scan_topk(
        model,
        (torch.stack([d[0] for d in data.items[i : i + 8]]) for i in range(0, len(data), 8)),
        k=args.k,
        stages=args.stages,
        progress=False,
    )
    n_tiles = {s: len(chosen[s]) * scan[s].k for s in args.stages}
    total_tiles = sum(n_tiles.values())
    print(
        f"{args.model}, random weights (seed {args.seed}), sample gallery {len(data)} images "
        f"224x224, {args.channels_per_stage} feature maps x top {args.k} x stages {args.stages} "
        f"= {total_tiles} tiles; {torch.get_num_threads()} threads"
    )

    def ours() -> tuple[float, dict]:
        start = time.perf_counter()
        tiles = project_tiles(
            model, data, scan, chosen, batch_size=args.batch_size, chunk_size=args.chunk_size, progress=False
        )
        return time.perf_counter() - start, tiles

    # warm-up both paths on one tile each
    project_tiles(model, data, {1: scan[1]}, {1: chosen[1][:1]}, progress=False)
    loop_tile(hooked_features(model, 1), data[0][0], 0, 0, 0, deconvnet.receptive_field(model, 1))

    t_ours_1, tiles = ours()
    print(f"ours (before loop): {t_ours_1:8.2f} s")

    loop_times: dict[int, float] = {}
    loop_measured: dict[int, int] = {}
    worst = 0.0
    for s in args.stages:
        features = hooked_features(model, s)
        rf = deconvnet.receptive_field(model, s)
        t = tiles[s]
        pairs = [(m, r) for m in range(t.image.shape[0]) for r in range(t.image.shape[1])]
        if args.tiles_per_stage is not None and args.tiles_per_stage < len(pairs):
            picks = np.linspace(0, len(pairs) - 1, args.tiles_per_stage).round().astype(int)
            pairs = [pairs[i] for i in picks]
        start = time.perf_counter()
        outputs = []
        for m, r in pairs:
            image = data[int(t.image[m, r])][0]
            outputs.append(loop_tile(features, image, int(t.channels[m]), int(t.y[m, r]), int(t.x[m, r]), rf))
        loop_times[s] = time.perf_counter() - start
        loop_measured[s] = len(pairs)
        for (m, r), want in zip(pairs, outputs):
            peak = float(want.abs().max())
            if peak > 0:
                worst = max(worst, float(np.abs(t.recon["deconvnet"][m, r] - want.numpy()).max()) / peak)
        print(
            f"loop stage {s}: {loop_times[s]:8.2f} s for {len(pairs)} of {n_tiles[s]} tiles "
            f"({loop_times[s] / len(pairs) * 1000:.0f} ms/tile)"
        )

    t_ours_2, _ = ours()
    print(f"ours (after loop):  {t_ours_2:8.2f} s")
    t_ours = (t_ours_1 + t_ours_2) / 2
    extrapolated = any(loop_measured[s] < n_tiles[s] for s in args.stages)
    loop_total = sum(loop_times[s] * n_tiles[s] / loop_measured[s] for s in args.stages)
    label = (
        f"EXTRAPOLATED from {sum(loop_measured.values())} measured tiles (per-stage ms/tile x tiles)"
        if extrapolated
        else "measured, all tiles"
    )
    print(f"loop total: {loop_total:8.2f} s  [{label}]")
    print(f"ours total: {t_ours:8.2f} s  (mean of {t_ours_1:.2f} and {t_ours_2:.2f})")
    print(
        f"speed-up loop / ours: {loop_total / t_ours:.2f}x"
        + ("  [uses the EXTRAPOLATED loop time]" if extrapolated else "")
    )
    print(f"max |ours - loop| / max |loop| over compared tiles: {worst:.1e}")


if __name__ == "__main__":
    main()
