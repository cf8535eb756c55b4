"""Benchmark: deconvnet.reconstruct for K channels vs the per-channel loop of a hook-based tool.

The loop is what a Captum-style tool runs: per channel, one forward pass with autograd and one
backward pass whose ReLU gradients are replaced by a backward hook (the deconvnet rule relu(R)).
`reconstruct` runs one forward pass for all K seeds and sends each seed down only inside its
receptive field. Both are timed side by side in one run, interleaved, and their outputs compared.

    python scripts/bench_reconstruct.py                     # VGG16, 224x224, K=16,64, stages 3,5
    python scripts/bench_reconstruct.py --model alexnet --channels 16 --stages 1 2 3 4 5
    python scripts/bench_reconstruct.py --memory             # peak RSS for growing K, one process each
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from torchvision.models import alexnet, vgg16

import deconvnet
from deconvnet.architecture import stage as stage_of


def hooked_features(model: nn.Module, stage: int) -> nn.Sequential:
    """A copy of features[: stage + 1] whose ReLUs pass relu(grad) backwards (the deconvnet rule)."""
    index = stage_of(model, stage).index
    features = copy.deepcopy(model.features[: index + 1])
    for m in features:
        if isinstance(m, nn.ReLU):
            m.inplace = False
            m.register_full_backward_hook(lambda mod, gin, gout: (torch.relu(gout[0]),))
    return features


def per_channel_loop(features: nn.Sequential, image: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """One forward + one hook-modified backward per channel: [K, 3, H, W]."""
    out = []
    for c in channels:
        x = image.clone().requires_grad_(True)
        a = features(x)
        seed = torch.zeros_like(a)
        flat = int(a[0, c].detach().flatten().argmax())
        seed[0, c].view(-1)[flat] = a[0, c].detach().flatten()[flat]
        (grad,) = torch.autograd.grad(a, x, seed)
        out.append(grad)
    return torch.cat(out)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_rss_mib(model_name: str, size: int, stage: int, k: int) -> float:
    """Peak resident memory of a fresh process that reconstructs K channels of one image."""
    code = (
        "import resource, torch, deconvnet;"
        f"from torchvision.models import {model_name} as build;"
        "torch.manual_seed(0); m = build().eval();"
        f"x = torch.randn(1, 3, {size}, {size});"
        f"deconvnet.reconstruct(m, x, {stage}, keep=list(range({k})));"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) / 1024  # Linux reports KiB


def memory_report(args: argparse.Namespace) -> None:
    print(f"peak RSS of one process reconstructing K channels ({args.model}, {args.size}px); "
          "the returned [K, 3, H, W] float32 tensor itself is listed beside it")
    for stage in args.stages:
        channels = stage_of((vgg16 if args.model == "vgg16" else alexnet)(), stage).channels
        for k in sorted({16, 64, channels}):
            result = k * 3 * args.size * args.size * 4 / 2**20
            print(f"stage {stage}  K={k:>4}  {peak_rss_mib(args.model, args.size, stage, k):8.0f} MiB"
                  f"  (result tensor {result:6.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["vgg16", "alexnet"], default="vgg16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--stages", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory", action="store_true", help="report peak memory instead of time")
    args = parser.parse_args()
    if args.memory:
        memory_report(args)
        return

    torch.manual_seed(args.seed)
    model = (vgg16 if args.model == "vgg16" else alexnet)().eval()
    image = torch.randn(1, 3, args.size, args.size)
    print(f"{args.model}, random weights, one {args.size}x{args.size} image, rule=deconvnet, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats")
    print(f"{'stage':>5} {'K':>4} {'loop s':>9} {'ours s':>9} {'ratio':>7}  max |diff| / max |loop|")
    for stage in args.stages:
        features = hooked_features(model, stage)
        for k in args.channels:
            channels = list(range(k))
            deconvnet.reconstruct(model, image, stage, keep=channels[:1])  # warm-up
            loop_times, our_times = [], []
            for _ in range(args.repeats):
                t_loop, want = timed(lambda: per_channel_loop(features, image, channels))
                t_ours, got = timed(lambda: deconvnet.reconstruct(model, image, stage, keep=channels))
                loop_times.append(t_loop)
                our_times.append(t_ours)
            rel = float((got - want).abs().max() / want.abs().max().clamp(min=1e-30))
            loop, ours = statistics.median(loop_times), statistics.median(our_times)
            print(f"{stage:>5} {k:>4} {loop:>9.3f} {ours:>9.3f} {ours / loop:>7.3f}  {rel:.1e}")


if __name__ == "__main__":
    main()
