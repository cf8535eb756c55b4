"""Benchmark: cost of `scan_topk` over all five stages vs a plain forward pass of the same layers.

Target (issue): scan / forward <= 1.1. Both are timed in the same run on the same batches, under
`torch.inference_mode()`, with interleaved repeats (forward, scan, scan, forward, ...) after one
warm-up of each. The headline is the median over repeats of scan/forward for the two runs of a
repeat (robust to other load on the machine); medians, minima and CPU times are printed too.

    python scripts/bench_scan.py                      # VGG16, 16 images of 224x224 in batches of 8
    python scripts/bench_scan.py --model alexnet --images 64 --batch-size 16 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from deconvnet.analysis.scan import scan_topk
from deconvnet.core.architecture import stages


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", choices=("vgg16", "alexnet"), default="vgg16", help="random-init torchvision model"
    )
    parser.add_argument("--images", type=positive_int, default=16, help="images per timed run")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    parser.add_argument("--size", type=positive_int, default=224, help="input side in pixels")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs of each, interleaved")
    parser.add_argument("--k", type=positive_int, default=9, help="top-k kept per channel")
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = getattr(torchvision.models, args.model)().eval()
    deepest = max(s.index for s in stages(model))
    forward_layers = model.features[: deepest + 1]
    sizes = [args.batch_size] * (args.images // args.batch_size)
    if args.images % args.batch_size:
        sizes.append(args.images % args.batch_size)
    batches = [torch.randn(b, 3, args.size, args.size) for b in sizes]

    def forward() -> None:
        with torch.inference_mode():
            for batch in batches:
                forward_layers(batch)

    def scan() -> None:
        scan_topk(model, batches, k=args.k, stages=(1, 2, 3, 4, 5), progress=False)

    forward(), scan()  # warm-up (allocator, oneDNN kernel selection)
    times: dict[str, list[float]] = {"forward": [], "scan": []}
    cpu_times: dict[str, list[float]] = {"forward": [], "scan": []}
    pair = [("forward", forward), ("scan", scan)]
    for repeat in range(args.repeats):
        # ABBA order, so neither side always runs first after the other
        for name, run in pair if repeat % 2 == 0 else pair[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - start_cpu)

    forward_s = statistics.median(times["forward"])
    scan_s = statistics.median(times["scan"])
    print(
        f"model={args.model} images={args.images} batch_size={args.batch_size} size={args.size} "
        f"k={args.k} repeats={args.repeats} threads={torch.get_num_threads()} "
        f"layers=features[0:{deepest + 1}]"
    )
    print("forward runs (s): " + " ".join(f"{t:.3f}" for t in times["forward"]))
    print("scan runs    (s): " + " ".join(f"{t:.3f}" for t in times["scan"]))
    print(
        f"forward median: {forward_s:.3f} s ({forward_s / args.images * 1000:.1f} ms/image), min {min(times['forward']):.3f} s"
    )
    print(
        f"scan median:    {scan_s:.3f} s ({scan_s / args.images * 1000:.1f} ms/image), min {min(times['scan']):.3f} s"
    )
    print(f"ratio of minima: {min(times['scan']) / min(times['forward']):.3f}")
    forward_cpu = statistics.median(cpu_times["forward"])
    scan_cpu = statistics.median(cpu_times["scan"])
    print(
        f"process CPU time medians (all threads; less sensitive to other load on the machine): "
        f"forward {forward_cpu:.3f} s, scan {scan_cpu:.3f} s, ratio {scan_cpu / forward_cpu:.3f}"
    )
    print(f"ratio of wall-clock medians: {scan_s / forward_s:.3f}")
    # each scan run is paired with the forward run next to it: robust to load that drifts over time
    paired = statistics.median(s / f for s, f in zip(times["scan"], times["forward"]))
    verdict = "met" if paired <= 1.10 else "NOT met"
    print(f"ratio scan/forward (median of paired runs): {paired:.3f} (target <= 1.10: {verdict})")


if __name__ == "__main__":
    main()
