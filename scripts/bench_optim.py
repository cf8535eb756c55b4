"""Benchmark: the optimisation family's batching and receptive-field crop, side by side.

Both parts run in ONE process on VGG16 with random weights (`deconvnet.load_model("vgg16",
weights="random", seed=0)`, eval, float32, CPU), with fixed threads. Each variant is warmed up
once (a 1-step run on the same shapes, which also gives the 1-step agreement check) and then timed
`--repeats` times, the order of the two variants reversed on every other repeat (AB, BA, AB, ...).
Medians are reported, and ratios of medians (with minima and paired per-repeat ratios).

1. Filters optimised together vs one at a time, per stage, image size and regulariser preset
   ('none' and 'yosinski' by default), `--steps` steps of the default step rule:
   - together:    `visualize_filters(model, stage, list(range(16)), size=S, steps=N, seed=0)`
                  (one batch of 16 images, each its own objective)
   - one per filter: 16 calls `visualize_filters(model, stage, [c], size=S, steps=N, seed=0)`,
                  same steps, size and regularisers. This is the leanest honest reference: the
                  same code path (same start images, steps, regularisers, memory format), a batch
                  of one; only the batching differs.
   Channel c's image depends on (seed, c) only, so both must give the same images: the max
   |together - one per filter| is printed after N steps and after 1 step (must be ~1e-6; float32
   rounding differs between a batch of 16 and of 1, and after many steps of normalised ascent on
   random weights it can drift chaotically, so the N-step figure may be larger: a ReLU input
   within rounding of zero flips its mask and the next normalised step changes direction; with the
   model in float64 the two agree exactly, checked at stage 5, 64 px, 1, 2 and 4 steps).
2. One unit per channel (channels 0..3, the centre of the map) on a `--unit-size` (224) image:
   - crop:        `visualize_units(model, stage, [0, 1, 2, 3], size=224, steps=N, crop=True)`
                  (only the unit's receptive field, on the stage's stride grid, is optimised)
   - full:        the same with `crop=False` (the whole 224 x 224 image is optimised)
   Both return the receptive-field box (clipped to the image), which must agree: max |crop - full|
   after N steps and after 1 step is printed, with the box and the optimised crop's size.

Timings on a machine shared with other work are disturbed: take final figures on a quiet machine.

    python scripts/bench_optim.py                          # stages 1..5, sizes 64 128, 16 steps
    python scripts/bench_optim.py --quick                  # smoke test: stages 1 5, 64 px, 2 steps
    python scripts/bench_optim.py --stages 3 --sizes 128 --steps 32 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import deconvnet
from deconvnet.optim import visualize_filters, visualize_units
from deconvnet.optim.checks import check_size

MODEL = "vgg16"
SEED = 0
FILTERS = 16  # part 1: channels 0..15 of the stage
UNIT_CHANNELS = [0, 1, 2, 3]  # part 2
PRESETS = ("none", "yosinski")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def stage_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError(f"expected a VGG16 stage 1..5, got {text}")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=positive_int, default=16, help="optimisation steps per run")
    parser.add_argument(
        "--sizes", type=positive_int, nargs="+", default=[64, 128], help="part 1 image sides in pixels"
    )
    parser.add_argument(
        "--stages", type=stage_number, nargs="+", default=[1, 2, 3, 4, 5], help="VGG16 stages (both parts)"
    )
    parser.add_argument("--unit-size", type=positive_int, default=224, help="part 2 image side")
    parser.add_argument(
        "--regularizers", nargs="+", choices=PRESETS, default=list(PRESETS), help="part 1 regulariser presets"
    )
    parser.add_argument(
        "--parts", type=int, nargs="+", choices=(1, 2), default=[1, 2], help="which parts to run"
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="timed runs of each variant, alternating order; median reported",
    )
    parser.add_argument("--threads", type=positive_int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: stages 1 and 5, size 64, 2 steps, 1 repeat"
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="write the measurements to this JSON file"
    )
    args = parser.parse_args()
    if args.quick:
        args.stages, args.sizes, args.steps, args.repeats = [1, 5], [64], 2, 1
    args.stages = sorted(set(args.stages))
    args.sizes = sorted(set(args.sizes))
    return args


class Timer:
    """Wall-clock and process CPU time of calls, per variant."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def __call__(self, name: str, fn: Callable[[], Tensor]) -> Tensor:
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.wall.setdefault(name, []).append(time.perf_counter() - start)
        self.cpu.setdefault(name, []).append(time.process_time() - start_cpu)
        return out

    def median(self, name: str) -> float:
        return statistics.median(self.wall[name])

    def ratios(self, name: str, ref: str) -> dict[str, float]:
        """median / median, min / min, and the median of the per-repeat ratios."""
        return {
            "median": self.median(name) / self.median(ref),
            "min": min(self.wall[name]) / min(self.wall[ref]),
            "paired": statistics.median(a / b for a, b in zip(self.wall[name], self.wall[ref])),
        }

    def record(self, names: list[str]) -> dict[str, dict[str, object]]:
        return {
            name: {"wall_s": self.wall[name], "cpu_s": self.cpu[name], "median_s": self.median(name)}
            for name in names
        }


def run_interleaved(
    timer: Timer, methods: list[tuple[str, Callable[[], Tensor]]], repeats: int
) -> dict[str, Tensor]:
    """Each method `repeats` times, the order reversed on every other repeat; last outputs."""
    outputs = {}
    for repeat in range(repeats):
        for name, fn in methods if repeat % 2 == 0 else methods[::-1]:
            outputs[name] = timer(name, fn)
    return outputs


def max_abs(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def images_within(a: Tensor, b: Tensor, tolerance: float = 1e-5) -> int:
    """How many images of the batch agree within `tolerance` (max abs difference)."""
    return int(((a.double() - b.double()).abs().flatten(1).max(1).values <= tolerance).sum())


def part_filters(model, args: argparse.Namespace) -> list[dict[str, object]]:
    channels = list(range(FILTERS))
    records = []
    for preset in args.regularizers:
        print(
            f"\n1. visualize_filters: {FILTERS} filters (channels 0..{FILTERS - 1}) optimised "
            f"together vs one call per filter, {args.steps} steps, regularizers={preset!r}, "
            f"seed {SEED}"
        )
        print(
            f"{'stage':>5} {'size':>5} {'together s':>11} {'one/filter s':>13} {'ratio':>7} "
            f"{'min ratio':>9} {'paired':>7} {'max|d| N steps':>15} {'max|d| 1 step':>14} "
            f"{'<=1e-5':>7} {'max|img|':>9}"
        )
        for stage in args.stages:
            for size in args.sizes:

                def together(steps: int = args.steps, stage: int = stage, size: int = size) -> Tensor:
                    return visualize_filters(
                        model, stage, channels, size=size, steps=steps, seed=SEED, regularizers=preset
                    )

                def one_per_filter(steps: int = args.steps, stage: int = stage, size: int = size) -> Tensor:
                    return torch.cat(
                        [
                            visualize_filters(
                                model, stage, [c], size=size, steps=steps, seed=SEED, regularizers=preset
                            )
                            for c in channels
                        ]
                    )

                # warm-up on the same shapes, 1 step: also the 1-step agreement check
                one_step = max_abs(together(1), one_per_filter(1))
                timer = Timer()
                methods = [("together", together), ("one_per_filter", one_per_filter)]
                outputs = run_interleaved(timer, methods, args.repeats)
                n_steps = max_abs(outputs["together"], outputs["one_per_filter"])
                agree = images_within(outputs["together"], outputs["one_per_filter"])
                scale = float(outputs["one_per_filter"].abs().max())
                ratios = timer.ratios("together", "one_per_filter")
                print(
                    f"{stage:>5} {size:>5} {timer.median('together'):>11.3f} "
                    f"{timer.median('one_per_filter'):>13.3f} {ratios['median']:>7.3f} "
                    f"{ratios['min']:>9.3f} {ratios['paired']:>7.3f} {n_steps:>15.1e} "
                    f"{one_step:>14.1e} {f'{agree}/{FILTERS}':>7} {scale:>9.3f}",
                    flush=True,
                )
                records.append(
                    {
                        "part": "filters",
                        "regularizers": preset,
                        "stage": stage,
                        "size": size,
                        "channels": channels,
                        "steps": args.steps,
                        "times": timer.record(["together", "one_per_filter"]),
                        "ratio_together_over_one_per_filter": ratios,
                        "max_abs_diff_steps": n_steps,
                        "max_abs_diff_1_step": one_step,
                        "images_within_1e-5_steps": agree,
                        "max_abs_image": scale,
                    }
                )
        print(
            "ratio = together / one per filter (medians); min ratio = minima; paired = median of "
            "per-repeat ratios. max|d| = max |together - one per filter| over all images "
            "(1 step: must be ~1e-6; N steps: float32 rounding of a batch of 16 vs 1 can drift "
            "chaotically on random weights, a ReLU input within rounding of zero flipping its "
            "mask); <=1e-5 = images that still agree within 1e-5 after N steps"
        )
    return records


def part_units(model, args: argparse.Namespace) -> list[dict[str, object]]:
    size = args.unit_size
    print(
        f"\n2. visualize_units: channels {UNIT_CHANNELS}, the centre unit, on a {size}x{size} "
        f"image, crop=True (receptive field only) vs crop=False (full image), {args.steps} "
        f"steps, seed {SEED}"
    )
    print(
        f"{'stage':>5} {'crop s':>9} {'full s':>9} {'ratio':>7} {'min ratio':>9} {'paired':>7} "
        f"{'box (h x w)':>12} {'crop (h x w)':>13} {'max|d| N steps':>15} {'max|d| 1 step':>14}"
    )
    records = []
    for stage in args.stages:

        def run(crop: bool, steps: int = args.steps, stage: int = stage):
            return visualize_units(
                model, stage, UNIT_CHANNELS, size=size, steps=steps, seed=SEED, crop=crop, details=True
            )

        warm_crop, warm_full = run(True, 1), run(False, 1)  # warm-up, and the 1-step check
        one_step = max_abs(warm_crop.images, warm_full.images)
        timer = Timer()
        methods = [("crop", lambda: run(True)), ("full", lambda: run(False))]
        outputs = run_interleaved(timer, methods, args.repeats)
        n_steps = max_abs(outputs["crop"].images, outputs["full"].images)
        top, left, bottom, right = outputs["crop"].settings["box"]
        ctop, cleft, cbottom, cright = outputs["crop"].settings["crop_box"]
        box = f"{bottom - top}x{right - left}"
        crop = f"{cbottom - ctop}x{cright - cleft}"
        ratios = timer.ratios("crop", "full")
        print(
            f"{stage:>5} {timer.median('crop'):>9.3f} {timer.median('full'):>9.3f} "
            f"{ratios['median']:>7.3f} {ratios['min']:>9.3f} {ratios['paired']:>7.3f} "
            f"{box:>12} {crop:>13} {n_steps:>15.1e} {one_step:>14.1e}",
            flush=True,
        )
        records.append(
            {
                "part": "units",
                "stage": stage,
                "size": size,
                "channels": UNIT_CHANNELS,
                "position": outputs["crop"].settings["position"],
                "steps": args.steps,
                "box": [top, left, bottom, right],
                "crop_box": [ctop, cleft, cbottom, cright],
                "times": timer.record(["crop", "full"]),
                "ratio_crop_over_full": ratios,
                "max_abs_diff_steps": n_steps,
                "max_abs_diff_1_step": one_step,
                "max_abs_image": float(outputs["full"].images.abs().max()),
            }
        )
    print(
        "ratio = crop / full (medians); box = the unit's receptive field clipped to the image "
        "(what both return), crop = the region optimised with crop=True (the box extended to "
        "the stride grid); max|d| = max |crop - full| over the returned boxes"
    )
    return records


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model = deconvnet.load_model(MODEL, weights="random", seed=SEED)
    for stage in args.stages:  # fail before any timing on a size a stage cannot take
        for size in (args.sizes if 1 in args.parts else []) + ([args.unit_size] if 2 in args.parts else []):
            try:
                check_size(model, size, stage)
            except ValueError as error:
                sys.exit(f"stage {stage}: {error}")

    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print("command: " + command)
    print(
        f"torch {torch.__version__}, device cpu, {torch.get_num_threads()} threads, {MODEL} random "
        f"weights (seed {SEED}), eval, float32; stages {args.stages}, part 1 sizes {args.sizes}, "
        f"part 2 size {args.unit_size}, {args.steps} steps, median of {args.repeats} repeats "
        f"(order alternating), after one 1-step warm-up of each"
    )
    print("timings on a shared machine are disturbed by other load: take final figures on a quiet one")

    start = time.perf_counter()
    records = []
    if 1 in args.parts:
        records += part_filters(model, args)
    if 2 in args.parts:
        records += part_units(model, args)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.1f} s")

    if args.json is not None:
        payload = {
            "command": command,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "model": MODEL,
            "weights": "random",
            "seed": SEED,
            "steps": args.steps,
            "repeats": args.repeats,
            "stages": args.stages,
            "sizes": args.sizes,
            "unit_size": args.unit_size,
            "regularizers": args.regularizers,
            "total_s": total,
            "results": records,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
