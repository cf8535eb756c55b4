"""Benchmark: incremental occlusion on graph models (ResNet-50, EfficientNet-Lite0) against the
leanest brute force, side by side in one run, with the FLOP floor of both.

One process, fixed threads, float32, CPU (or --device), each model with random weights
(`deconvnet.load_model(name, weights="random", seed=0)`, eval), one image of --size pixels (seeded
noise), a --patch occluder at --stride (every position: 144 at 224 / 48 / 16). Three variants per
model, each warmed up once and then timed --repeats times in alternating order (AB, BA, ...);
medians and ratios of medians are printed:

- incremental: `deconvnet.occlusion(model, x, patch=P, stride=S, batch_size=B)`: the traced graph
  recomputed only in the occluder's projective field up to stage 5, the head on the full stage-5
  maps; probability, stage-5 feature and label maps.
- brute force: every occluded image built, --brute-batch per batch, then the model's own forward
  `model(batch)` (torchvision's / timm's code) under torch.inference_mode, softmax, the probability
  of the same class and the argmax label; the stage-5 map is read by a forward hook on the stage-5
  module (registered for this variant only), its channel total is the feature map.
- brute force, channels last: the same with each batch in channels-last memory (the model's code
  keeps the layout; oneDNN's convolutions are faster in it on the CPU, and the incremental method
  computes in it): the leanest brute force we know of, so the ratio to it is printed too.

FLOP floor: multiply-adds of the windows the incremental method computes (convolutions, at the
windows' shared sizes per batch; the head's linear layer on full maps) over the multiply-adds of
one full forward pass per position (`deconvnet.analysis.occlusion.occlusion_macs`). The wall-time
ratio cannot go below it unless windows run faster per multiply-add than whole images.

    python scripts/bench_occlusion_any_cnn.py                 # ResNet-50 and EfficientNet-Lite0
    python scripts/bench_occlusion_any_cnn.py --models resnet50 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from bench_optim import Timer, positive_int, run_interleaved
from torch import Tensor, nn

import deconvnet
from deconvnet.analysis.occlusion import occlusion_macs
from deconvnet.core.architecture import stage

SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["resnet50", "efficientnet_lite0"])
    parser.add_argument("--size", type=positive_int, default=224, help="image side in pixels")
    parser.add_argument("--patch", type=positive_int, default=48, help="occluder side in pixels")
    parser.add_argument("--stride", type=positive_int, default=16, help="pixels between positions")
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="positions per batch of the incremental method"
    )
    parser.add_argument("--brute-batch", type=positive_int, default=16, help="images per brute-force batch")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def brute_force(
    model: nn.Module, x: Tensor, args: argparse.Namespace, cls: int, channel: int, layout: torch.memory_format
) -> dict[str, Tensor]:
    """One forward pass of the model's own code per occluded image (batches in `layout`) -> flat
    maps over the positions."""
    h, w = x.shape[-2:]
    p = args.patch
    corners = [(y, x0) for y in range(0, h - p + 1, args.stride) for x0 in range(0, w - p + 1, args.stride)]
    kept: list[Tensor] = []
    hook = model.get_submodule(stage(model, 5).path).register_forward_hook(
        lambda m, i, o: kept.append(o.clone())
    )
    prob, feat, label = [], [], []
    try:
        with torch.inference_mode():
            for start in range(0, len(corners), args.brute_batch):
                chunk = corners[start : start + args.brute_batch]
                batch = x.repeat(len(chunk), 1, 1, 1)
                for n, (y, x0) in enumerate(chunk):
                    batch[n, :, y : y + p, x0 : x0 + p] = 0.0
                probability = model(batch.contiguous(memory_format=layout)).softmax(dim=1)
                prob.append(probability[:, cls])
                label.append(probability.argmax(dim=1))
                feat.append(kept.pop()[:, channel].sum(dim=(1, 2)))
    finally:
        hook.remove()
    return {"probability": torch.cat(prob), "feature": torch.cat(feat), "label": torch.cat(label)}


def relative(a: Tensor, b: Tensor) -> float:
    """Largest difference relative to the largest reference value."""
    a, b = a.double().flatten().cpu(), b.double().flatten().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """The three variants on one model: timings, ratios, agreement and the FLOP floor (printed)."""
    model = deconvnet.load_model(name, weights="random", seed=SEED).to(device).eval()
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(SEED)).to(device)

    def incremental() -> deconvnet.analysis.occlusion.Occlusion:
        return deconvnet.occlusion(model, x, patch=args.patch, stride=args.stride, batch_size=args.batch_size)

    first = incremental()  # warm-up (traces the graph once)
    cls, channel = int(first.target[0]), int(first.channel[0])
    variants = [
        ("incremental", incremental),
        ("brute force", lambda: brute_force(model, x, args, cls, channel, torch.contiguous_format)),
        ("brute, c-last", lambda: brute_force(model, x, args, cls, channel, torch.channels_last)),
    ]
    for _, run in variants[1:]:
        run()  # warm-up
    timer = Timer()
    out = run_interleaved(timer, variants, args.repeats)
    inc, ref = out["incremental"], out["brute force"]
    macs = occlusion_macs(model, args.size, args.size, args.patch, args.stride, args.batch_size)
    found = {
        "model": name,
        "positions": macs["positions"],
        "timings": timer.record([v for v, _ in variants]),
        "ratios": {v: timer.ratios("incremental", v) for v, _ in variants[1:]},
        "macs": macs,
        "flop_floor": macs["incremental"] / macs["full"],
        "agreement": {
            "probability_rel": relative(inc.probability, ref["probability"]),
            "feature_rel": relative(inc.feature, ref["feature"]),
            "label_disagreements": int((inc.label.flatten() != ref["label"].cpu()).sum()),
        },
    }
    print_model(found, timer)
    return found


def print_model(found: dict, timer: Timer) -> None:
    """One model's lines: medians, ratios, FLOP floor, agreement."""
    macs, agreement = found["macs"], found["agreement"]
    print(f"\n{found['model']}: {found['positions']} positions")
    for variant in timer.wall:
        runs = ", ".join(f"{t:.3f}" for t in timer.wall[variant])
        print(f"  {variant:13s} median {timer.median(variant):7.3f} s  (runs: {runs})")
    for variant, r in found["ratios"].items():
        print(
            f"  ratio incremental / {variant}: {r['median']:.3f} (median), {r['min']:.3f} (min / min), "
            f"{r['paired']:.3f} (paired)"
        )
    print(
        f"  FLOP floor: {macs['incremental'] / 1e9:.1f} / {macs['full'] / 1e9:.1f} GMAC = "
        f"{found['flop_floor']:.3f}"
    )
    print(
        f"  agreement: largest difference / largest value: probability {agreement['probability_rel']:.2e}, "
        f"feature {agreement['feature_rel']:.2e}; labels differing: {agreement['label_disagreements']} "
        f"of {found['positions']}"
    )


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print("command: " + command)
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, random weights "
        f"(seed {SEED}), eval, float32; {args.size} px image, patch {args.patch}, stride {args.stride}, "
        f"incremental batch {args.batch_size}, brute-force batch {args.brute_batch}; median of "
        f"{args.repeats} repeats (order alternating), after one warm-up of each"
    )
    start = time.perf_counter()
    results = [bench_model(name, args, device) for name in args.models]
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    if args.json is not None:
        payload = {
            "command": command,
            "torch": torch.__version__,
            "device": str(device),
            "threads": torch.get_num_threads(),
            **{
                k: getattr(args, k)
                for k in ("size", "patch", "stride", "batch_size", "brute_batch", "repeats")
            },
            "models": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
