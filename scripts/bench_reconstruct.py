"""Benchmark: deconvnet.reconstruct for K channels vs per-channel autograd loops.

Three references, timed side by side with `reconstruct` in one run (interleaved repeats, medians):
- lean loop (the ratio that counts): per channel, one forward pass to the stage through a custom
  autograd ReLU whose backward is the deconvnet rule relu(R), then `torch.autograd.grad` from the
  seed; no hooks, inplace off. The leanest honest per-channel autograd implementation.
- hook loop: what a Captum-style tool runs, the same with the rule put in by backward hooks on
  copies of the model's ReLU modules.
- shared-forward loop (for reference): the lean loop's modules, ONE forward pass, then K calls of
  `torch.autograd.grad(..., retain_graph=True)`, one per channel.
`reconstruct` runs one forward pass for all K seeds and sends each seed down only inside its
receptive field. All outputs are compared.

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
import torchvision.models as tvm
from torch import nn

import deconvnet
from deconvnet.core.architecture import stage as stage_of


class DeconvReLU(torch.autograd.Function):
    """relu forwards, relu of the incoming gradient backwards (the deconvnet rule)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return torch.relu(grad)


def lean_features(model: nn.Module, stage: int):
    """features[: stage + 1] as a plain function: the model's own convs and pools, DeconvReLU."""
    index = stage_of(model, stage).index
    modules = list(model.features[: index + 1])

    def run(x: torch.Tensor) -> torch.Tensor:
        for m in modules:
            x = DeconvReLU.apply(x) if isinstance(m, nn.ReLU) else m(x)
        return x

    return run


def hooked_features(model: nn.Module, stage: int) -> nn.Sequential:
    """A copy of features[: stage + 1] whose ReLUs pass relu(grad) backwards (the deconvnet rule)."""
    index = stage_of(model, stage).index
    features = copy.deepcopy(model.features[: index + 1])
    for m in features:
        if isinstance(m, nn.ReLU):
            m.inplace = False
            m.register_full_backward_hook(lambda mod, gin, gout: (torch.relu(gout[0]),))
    return features


def per_channel_loop(features, image: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """One forward + one modified backward per channel (its strongest unit): [K, 3, H, W]."""
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


def shared_forward_loop(features, image: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """One forward, then one modified backward per channel from the kept graph: [K, 3, H, W]."""
    x = image.clone().requires_grad_(True)
    a = features(x)
    out = []
    for c in channels:
        seed = torch.zeros_like(a)
        flat = int(a[0, c].detach().flatten().argmax())
        seed[0, c].view(-1)[flat] = a[0, c].detach().flatten()[flat]
        (grad,) = torch.autograd.grad(a, x, seed, retain_graph=True)
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
    print(
        f"peak RSS of one process reconstructing K channels ({args.model}, {args.size}px); "
        "the returned [K, 3, H, W] float32 tensor itself is listed beside it"
    )
    for stage in args.stages:
        channels = stage_of(getattr(tvm, args.model)(), stage).channels
        for k in sorted({16, 64, channels}):
            result = k * 3 * args.size * args.size * 4 / 2**20
            print(
                f"stage {stage}  K={k:>4}  {peak_rss_mib(args.model, args.size, stage, k):8.0f} MiB"
                f"  (result tensor {result:6.0f} MiB)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["vgg16", "alexnet", "vgg11", "vgg13", "vgg19"], default="vgg16")
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
    model = getattr(tvm, args.model)().eval()
    image = torch.randn(1, 3, args.size, args.size)
    print(
        f"{args.model}, random weights, one {args.size}x{args.size} image, rule=deconvnet, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved repeats"
    )
    print(
        f"{'stage':>5} {'K':>4} {'lean s':>8} {'hook s':>8} {'shared s':>8} {'ours s':>8} "
        f"{'ours/lean':>9} {'ours/hook':>9} {'ours/shared':>11}  max |diff| / max |lean|"
    )
    for stage in args.stages:
        lean, hooked = lean_features(model, stage), hooked_features(model, stage)
        for k in args.channels:
            channels = list(range(k))
            deconvnet.reconstruct(model, image, stage, keep=channels[:1])  # warm-up
            per_channel_loop(lean, image, channels[:1])
            runs = {
                "lean": lambda: per_channel_loop(lean, image, channels),
                "hook": lambda: per_channel_loop(hooked, image, channels),
                "shared": lambda: shared_forward_loop(lean, image, channels),
                "ours": lambda: deconvnet.reconstruct(model, image, stage, keep=channels),
            }
            times: dict[str, list[float]] = {name: [] for name in runs}
            outputs: dict[str, torch.Tensor] = {}
            for _ in range(args.repeats):
                for name, run in runs.items():
                    t, outputs[name] = timed(run)
                    times[name].append(t)
            want = outputs["lean"]
            scale = want.abs().max().clamp(min=1e-30)
            rel = max(float((got - want).abs().max() / scale) for got in outputs.values())
            med = {name: statistics.median(t) for name, t in times.items()}
            print(
                f"{stage:>5} {k:>4} {med['lean']:>8.3f} {med['hook']:>8.3f} {med['shared']:>8.3f} "
                f"{med['ours']:>8.3f} {med['ours'] / med['lean']:>9.3f} "
                f"{med['ours'] / med['hook']:>9.3f} {med['ours'] / med['shared']:>11.3f}  {rel:.1e}"
            )


if __name__ == "__main__":
    main()
