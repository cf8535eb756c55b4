"""Benchmark: batched deletion curves (Petsiuk et al. 2018) against one forward pass per step.

One process, a model with random weights (`deconvnet.load_model(model, weights="random",
seed=0)`, eval, float32, CPU or --device), fixed threads, --maps images of --size pixels (seeded
noise) with one map each (seeded noise, so no two pixels tie), the "blur" baseline, --steps steps.
Two variants, each warmed up once and then timed --repeats times in alternating order (AB, BA,
...); medians and ratios of medians are printed:

- ours: `deconvnet.analysis.faithfulness.deletion(model, x, maps, steps=S, batch_size=B)` (every
  (map, step) input built on the fly, --batch-size of them per forward pass)
- loop: the plain reference, no batching: for each image and each step the masked image built by
  hand (pixels ordered by numpy's stable argsort of -map, the first round(i * H * W / steps)
  replaced by the blurred image's), `model(x[None])` under torch.inference_mode, softmax, the
  probability of the predicted class. The blurred images come from the library's `blurred` (the
  same for both, timed in both). Nothing else is shared but the model.

The curves must agree: the largest absolute difference of curve and AUC is printed.

    python scripts/bench_deletion.py                        # AlexNet, 16 maps at 224, 100 steps
    python scripts/bench_deletion.py --model resnet18 --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_optim import Timer, positive_int, run_interleaved
from torch import Tensor, nn

import deconvnet
from deconvnet.analysis.faithfulness import Faithfulness, blurred, deletion

SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("alexnet", "vgg16", "resnet18"), default="alexnet")
    parser.add_argument("--maps", type=positive_int, default=16, help="images, one map each")
    parser.add_argument("--size", type=positive_int, default=224, help="image side in pixels")
    parser.add_argument("--steps", type=positive_int, default=100)
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="(map, step) inputs per forward pass (ours)"
    )
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args()


def loop(model: nn.Module, x: Tensor, maps: Tensor, classes: list[int], steps: int) -> dict[str, Tensor]:
    """One image, one step, one forward pass at a time -> curves [M, steps + 1] and AUCs [M]."""
    height, width = x.shape[-2:]
    hw = height * width
    counts = [(2 * i * hw + steps) // (2 * steps) for i in range(steps + 1)]
    fractions = torch.tensor(counts, dtype=torch.float64) / hw
    curves = []
    with torch.inference_mode():
        base = blurred(x)
        for b in range(x.shape[0]):
            order = torch.from_numpy(np.argsort(-maps[b].flatten().numpy(), kind="stable")).to(x.device)
            row = []
            for n in counts:
                y = x[b].clone().view(3, hw)
                y[:, order[:n]] = base[b].view(3, hw)[:, order[:n]]
                row.append(model(y.view(1, 3, height, width)).softmax(dim=1)[0, classes[b]])
            curves.append(torch.stack(row))
    curve = torch.stack(curves).cpu()
    return {"curve": curve, "auc": torch.trapezoid(curve.double(), fractions, dim=1)}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = deconvnet.load_model(args.model, weights="random", seed=SEED).to(device).eval()
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(args.maps, 3, args.size, args.size, generator=generator).to(device)
    maps = torch.randn(args.maps, args.size, args.size, generator=generator)
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print("command: " + command)
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
        f"{args.model} random weights (seed {SEED}), eval, float32; {args.maps} images of "
        f"{args.size} px, one map each, baseline 'blur', {args.steps} steps "
        f"({args.maps * (args.steps + 1)} forward passes of one image in the loop; ours "
        f"{args.batch_size} per batch); median of {args.repeats} repeats (order alternating), "
        "after one warm-up of each"
    )

    def ours() -> Faithfulness:
        return deletion(model, x, maps, steps=args.steps, batch_size=args.batch_size)

    classes = ours().target.tolist()

    def reference() -> dict[str, Tensor]:
        return loop(model, x, maps, classes, args.steps)

    reference()  # warm-up
    timer = Timer()
    start = time.perf_counter()
    out = run_interleaved(timer, [("ours", ours), ("loop", reference)], args.repeats)
    report(args, timer, out, command, device)
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


def report(args: argparse.Namespace, timer: Timer, out: dict, command: str, device: torch.device) -> None:
    """Print (and with --json write) the timings, their ratios and the agreement of the curves."""
    agreement = {
        "curve_abs": float((out["ours"].curve.double() - out["loop"]["curve"].double()).abs().max()),
        "auc_abs": float((out["ours"].auc.double() - out["loop"]["auc"]).abs().max()),
    }
    ratios = timer.ratios("ours", "loop")
    for name in ("ours", "loop"):
        print(
            f"  {name:5s} median {timer.median(name):8.3f} s  (runs: "
            + ", ".join(f"{t:.3f}" for t in timer.wall[name])
            + ")"
        )
    print(
        f"  ratio ours / loop: {ratios['median']:.3f} (median), {ratios['min']:.3f} (min / min), "
        f"{ratios['paired']:.3f} (paired)"
    )
    print(
        f"  agreement: max abs difference of curves {agreement['curve_abs']:.2e}, of AUCs "
        f"{agreement['auc_abs']:.2e}; mean AUC {float(out['ours'].auc.mean()):.4f}"
    )
    if args.json is not None:
        payload = {
            "command": command,
            "torch": torch.__version__,
            "device": str(device),
            "threads": torch.get_num_threads(),
            **{k: getattr(args, k) for k in ("model", "maps", "size", "steps", "batch_size", "repeats")},
            "timings": timer.record(["ours", "loop"]),
            "ratios": ratios,
            "agreement": agreement,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
