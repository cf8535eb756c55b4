"""Benchmark: the graph mirror on ResNet-50 (or another torchvision model) against lean autograd.

Timed side by side in one run (interleaved repeats, medians), every output compared:
- reconstruct: `deconvnet.reconstruct(model, x, stage, keep=[16 channels])` (one forward record,
  the 16 seeds sent down together) vs the lean per-channel loop: per channel a forward pass to the
  stage through a copy of the model whose ReLUs apply the deconvnet rule as a custom
  `autograd.Function` (no hooks), then `torch.autograd.grad` from the channel's strongest unit.
- attribute: `deconvnet.attribute(model, x, [16 classes])` (one forward pass) vs the lean
  per-target loop: per class a plain forward pass and `torch.autograd.grad` of its logit.
- scan: `scan_topk` over the 5 stages vs a plain forward pass of the model (torchvision's own
  forward, inference mode), the same batches.

    python scripts/bench_any_cnn.py                          # ResNet-50, 224 px, stages 3 and 5
    python scripts/bench_any_cnn.py --model resnet18 --repeats 1
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import deconvnet
from deconvnet.analysis.scan import scan_topk

sys.path.insert(0, str(Path(__file__).parent))
from bench_reconstruct import DeconvReLU  # noqa: E402  (the same rule as the VGG benchmark)


class RuleReLU(nn.Module):
    """A ReLU module whose backward is the deconvnet rule (no hooks: an autograd.Function)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DeconvReLU.apply(x)


def rule_copy(model: nn.Module) -> nn.Module:
    """A copy of the model with every nn.ReLU replaced by RuleReLU."""
    twin = copy.deepcopy(model)
    for module in list(twin.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, RuleReLU())
    return twin


def forward_to(model: nn.Module, path: str):
    """x -> the output of module `path`: torchvision's feature extractor, a traced copy that runs
    only the nodes up to it (no hooks)."""
    extractor = create_feature_extractor(model, {path: "out"}, tracer_kwargs={"leaf_modules": [RuleReLU]})
    return lambda x: extractor(x)["out"]


def lean_reconstruct(run, x: torch.Tensor, channels: list[int]) -> torch.Tensor:
    """Per channel: forward to the stage, autograd.grad from its strongest unit (its own value)."""
    out = []
    for c in channels:
        xi = x.clone().requires_grad_(True)
        maps = run(xi)
        flat = maps[0, c].flatten()
        top = int(flat.argmax())
        (g,) = torch.autograd.grad(flat[top], xi, grad_outputs=flat[top].detach())
        out.append(g)
    return torch.cat(out)


def lean_attribute(model: nn.Module, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Per class: a plain forward pass and torch.autograd.grad of its logit."""
    out = []
    for c in classes:
        xi = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xi)[0, c], xi)
        out.append(g)
    return torch.cat(out)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def side_by_side(name: str, ours, reference, repeats: int) -> None:
    """Interleaved repeats of both; prints medians, the ratio and the largest relative difference."""
    times_ours, times_ref = [], []
    for _ in range(repeats):
        t_ref, want = timed(reference)
        t_ours, got = timed(ours)
        times_ref.append(t_ref)
        times_ours.append(t_ours)
    diff = float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))
    ref, us = statistics.median(times_ref), statistics.median(times_ours)
    print(f"| {name} | {ref:.3f} | {us:.3f} | **{us / ref:.2f}** | {diff:.1e} |", flush=True)


def bench_scan(model: nn.Module, batches: list[torch.Tensor], repeats: int) -> None:
    """scan_topk over 5 stages vs the model's plain forward, paired repeats."""
    ratios, plain_times, scan_times = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                model(batch)
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        scan_topk(model, batches, k=9, progress=False)
        scan = time.perf_counter() - t0
        ratios.append(scan / plain)
        plain_times.append(plain)
        scan_times.append(scan)
    print(
        f"| scan_topk, 5 stages, {sum(len(b) for b in batches)} images | {statistics.median(plain_times):.3f} "
        f"| {statistics.median(scan_times):.3f} | **{statistics.median(ratios):.2f}** | (top-k vs forward) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--stages", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = deconvnet.load_model(args.model, weights="random", seed=0)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    twin = rule_copy(model)
    print(f"{args.model}, random weights, {args.size} px, {args.threads} threads, median of {args.repeats}")
    print("| what | lean loop (s) | ours (s) | ours / lean | max rel. difference |")
    print("|---|---|---|---|---|")
    channels = list(range(args.channels))
    for stage in args.stages:
        path = deconvnet.stages(model)[stage - 1].path
        side_by_side(
            f"reconstruct stage {stage} ({path}), {len(channels)} channels",
            lambda s=stage: deconvnet.reconstruct(model, x, s, keep=channels),
            lambda run=forward_to(twin, path): lean_reconstruct(run, x, channels),
            args.repeats,
        )
    classes = list(range(0, 1000, 1000 // args.channels))[: args.channels]
    side_by_side(
        f"attribute, {len(classes)} classes (backprop)",
        lambda: deconvnet.attribute(model, x, classes),
        lambda: lean_attribute(model, x, classes),
        args.repeats,
    )
    batches = [
        torch.randn(8, 3, args.size, args.size, generator=torch.Generator().manual_seed(i)) for i in (1, 2)
    ]
    bench_scan(model, batches, args.repeats)


if __name__ == "__main__":
    main()
