"""Benchmark: incremental occlusion (Fig. 7) against a batched brute force, side by side.

One process, a model with random weights (`deconvnet.load_model(model, weights="random",
seed=0)`, eval, float32, CPU or --device), fixed threads, one image of --size pixels (seeded
noise), a --patch occluder at --stride. Two variants, each warmed up once and then timed
--repeats times in alternating order (AB, BA, ...); medians and ratios of medians are printed:

- incremental: `deconvnet.occlusion(model, x, patch=P, stride=S, batch_size=B)` (every layer
  recomputed only in the occluder's projective field; probability, stage-5 feature and label maps)
- brute force: the leanest honest reference, a plain loop with no hooks: every occluded image
  built, 16 per batch, then `model.features` and `model.classifier` (torchvision's own forward,
  under torch.inference_mode), softmax, the probability of the same class, the total of the same
  stage-5 channel and the argmax label. Nothing is shared between the two but the model.

The maps must agree: the largest relative difference of probability and feature and the number of
label disagreements are printed.

    python scripts/bench_occlusion.py                      # VGG16 at 224, patch 48, stride 16
    python scripts/bench_occlusion.py --model alexnet --repeats 5 --json out.json
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

SEED = 0
BRUTE_BATCH = 16


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("vgg16", "alexnet"), default="vgg16")
    parser.add_argument("--size", type=positive_int, default=224, help="image side in pixels")
    parser.add_argument("--patch", type=positive_int, default=48, help="occluder side in pixels")
    parser.add_argument("--stride", type=positive_int, default=16, help="pixels between positions")
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="positions per batch of the incremental method"
    )
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def brute_force(
    model: nn.Module, x: Tensor, patch: int, stride: int, cls: int, channel: int
) -> dict[str, Tensor]:
    """One full forward pass per occluded image, 16 per batch -> flat maps over the positions."""
    h, w = x.shape[-2:]
    corners = [(y, x0) for y in range(0, h - patch + 1, stride) for x0 in range(0, w - patch + 1, stride)]
    prob, feat, label = [], [], []
    with torch.inference_mode():
        for start in range(0, len(corners), BRUTE_BATCH):
            batch = x.repeat(len(corners[start : start + BRUTE_BATCH]), 1, 1, 1)
            for n, (y, x0) in enumerate(corners[start : start + BRUTE_BATCH]):
                batch[n, :, y : y + patch, x0 : x0 + patch] = 0.0
            f = model.features(batch)
            p = model.classifier(torch.flatten(model.avgpool(f), 1)).softmax(dim=1)
            prob.append(p[:, cls])
            feat.append(f[:, channel].sum(dim=(1, 2)))
            label.append(p.argmax(dim=1))
    return {"probability": torch.cat(prob), "feature": torch.cat(feat), "label": torch.cat(label)}


def relative(a: Tensor, b: Tensor) -> float:
    a, b = a.double().flatten().cpu(), b.double().flatten().cpu()
    return float(((a - b).abs() / b.abs().clamp_min(1e-30)).max())


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = deconvnet.load_model(args.model, weights="random", seed=SEED).to(device).eval()
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(SEED))
    x = x.to(device)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print("command: " + command)
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
        f"{args.model} random weights (seed {SEED}), eval, float32; {args.size} px image, "
        f"patch {args.patch}, stride {args.stride}; median of {args.repeats} repeats (order "
        "alternating), after one warm-up of each"
    )

    def incremental() -> deconvnet.analysis.occlusion.Occlusion:
        return deconvnet.occlusion(model, x, patch=args.patch, stride=args.stride, batch_size=args.batch_size)

    first = incremental()
    cls, channel = int(first.target[0]), int(first.channel[0])

    def brute() -> dict[str, Tensor]:
        return brute_force(model, x, args.patch, args.stride, cls, channel)

    brute()  # warm-up
    timer = Timer()
    start = time.perf_counter()
    out = run_interleaved(timer, [("incremental", incremental), ("brute force", brute)], args.repeats)
    inc, ref = out["incremental"], out["brute force"]
    agreement = {
        "probability_rel": relative(inc.probability, ref["probability"]),
        "feature_rel": relative(inc.feature, ref["feature"]),
        "label_disagreements": int((inc.label.flatten() != ref["label"].cpu()).sum()),
    }
    ratios = timer.ratios("incremental", "brute force")
    positions = inc.probability[0].numel()
    print(f"\n{positions} positions ({inc.probability.shape[-2]} x {inc.probability.shape[-1]})")
    for name in ("incremental", "brute force"):
        print(
            f"  {name:12s} median {timer.median(name):7.3f} s  (runs: "
            + ", ".join(f"{t:.3f}" for t in timer.wall[name])
            + ")"
        )
    print(
        f"  ratio incremental / brute force: {ratios['median']:.3f} (median), "
        f"{ratios['min']:.3f} (min / min), {ratios['paired']:.3f} (paired)"
    )
    print(
        f"  agreement: max relative difference probability {agreement['probability_rel']:.2e}, "
        f"feature {agreement['feature_rel']:.2e}; labels differing: "
        f"{agreement['label_disagreements']} of {positions}"
    )
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    if args.json is not None:
        payload = {
            "command": command,
            "torch": torch.__version__,
            "device": str(device),
            "threads": torch.get_num_threads(),
            **{k: getattr(args, k) for k in ("model", "size", "patch", "stride", "batch_size", "repeats")},
            "positions": positions,
            "timings": timer.record(["incremental", "brute force"]),
            "ratios": ratios,
            "agreement": agreement,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
