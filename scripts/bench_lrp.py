"""Benchmark: deconvnet.lrp for K class targets of one image vs a loop of zennit attributions.

Both run in ONE process, side by side, on torchvision VGG16 with random weights (seeded, eval
mode, float32) and one random image, with the same composite (EpsilonGammaBox, zennit's defaults:
epsilon 1e-6, gamma 0.25, the box of ImageNet-normalised colours):
   - ours:    `deconvnet.lrp(model, x, target=[c1, ..., cK])` (one forward pass, K rows)
   - zennit:  per target one `zennit.attribution.Gradient` call with the output seeded by the
              logit at that target (zennit's own way: a forward and a modified backward each);
              the composite registered once around the loop (not timed per target)
                                                                        target ours / zennit <= 0.6
Each is warmed up once, then timed `--repeats` times in alternating order; medians and their ratio
are printed, and the largest difference between the two maps relative to zennit's largest value.

    python scripts/bench_lrp.py                      # VGG16 224px, 16 targets, CPU, 1 thread
    python scripts/bench_lrp.py --quick              # smoke test: 64px, 2 targets
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.models import vgg16

import deconvnet


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--targets", type=int, default=16, help="class targets K of the one image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="64 px, 2 targets, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.targets, args.repeats = 64, 2, 1
    return args


def zennit_loop(model: torch.nn.Module, x: Tensor, classes: list[int]) -> Callable[[], Tensor]:
    """A function running one zennit attribution per class: -> [K, 3, H, W]."""
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonGammaBox
    from zennit.torchvision import VGGCanonizer

    p = deconvnet.preprocessing("vgg16")
    mean, std = torch.tensor(p.mean).view(1, 3, 1, 1), torch.tensor(p.std).view(1, 3, 1, 1)
    low, high = ((0 - mean) / std).to(x), ((1 - mean) / std).to(x)

    def run() -> Tensor:
        composite = EpsilonGammaBox(low=low, high=high, canonizers=[VGGCanonizer()])
        maps = []
        with Gradient(model, composite) as attributor:
            for c in classes:
                seed = torch.zeros(1, 1000, dtype=x.dtype, device=x.device)
                seed[0, c] = 1.0
                _, relevance = attributor(x, lambda out, seed=seed: seed * out)
                maps.append(relevance)
        return torch.cat(maps)

    return run


def timed(function: Callable[[], Tensor], device: str) -> tuple[float, Tensor]:
    if device != "cpu":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = function()
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main(argv: list[str]) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vgg16().eval().to(args.device)
    x = torch.randn(1, 3, args.size, args.size, device=args.device)
    classes = list(range(0, 1000, 1000 // args.targets))[: args.targets]
    methods = {
        "ours": lambda: deconvnet.lrp(model, x, classes, "epsilon_gamma_box"),
        "zennit": zennit_loop(model, x, classes),
    }
    print("command:", shlex.join(["python", "scripts/bench_lrp.py", *argv]))
    print(f"VGG16 random weights, float32, {args.size} px, {len(classes)} class targets of one image, "
          f"{args.device}, {args.threads} thread(s), {args.repeats} repeats")  # fmt: skip
    outputs = {name: function() for name, function in methods.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        order = list(methods) if repeat % 2 == 0 else list(reversed(methods))
        for name in order:
            seconds, outputs[name] = timed(methods[name], args.device)
            times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in methods:
        print(f"{name:8s} median {median[name]:.3f} s  ({', '.join(f'{t:.3f}' for t in times[name])})")
    difference = (outputs["ours"] - outputs["zennit"]).abs().max() / outputs["zennit"].abs().max()
    print(f"max |ours - zennit| / max |zennit| = {difference.item():.2e}")
    print(f"ratio ours / zennit loop = {median['ours'] / median['zennit']:.3f} (target <= 0.6)")


if __name__ == "__main__":
    main(sys.argv[1:])
