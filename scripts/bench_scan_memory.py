"""Benchmark: peak memory of a dataset scan does not grow with the dataset.

Writes a folder of JPEGs (views of the bundled sample photos, 256 px, so each goes through the real
decode, resize 256 / centre crop 224 and normalisation), then runs `deconvnet.jobs.scan.run_scan`
over the first N of them in a fresh process per N (the folder data path with DataLoader workers,
checkpoints every 1000 images, all 5 stages, k = 9) and prints each process's peak resident memory
(`ru_maxrss`) and that of its largest decoding worker.

    python scripts/bench_scan_memory.py                       # AlexNet, N = 100, 1000, 10000
    python scripts/bench_scan_memory.py --sizes 100 1000 --model vgg16 --workers 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def write_folder(root: Path, count: int) -> Path:
    """`count` JPEGs (256x256 views of the sample photos, numbered), written once."""
    from deconvnet.data.datasets import SampleGallery

    root.mkdir(parents=True, exist_ok=True)
    have = len(list(root.glob("*.jpg")))
    if have >= count:
        return root
    gallery = SampleGallery(size=256)
    for i in range(have, count):
        gallery.pil_image(i % len(gallery)).rotate(i // len(gallery)).save(root / f"{i:06d}.jpg", quality=85)
    return root


def child(root: str, images: int, model: str, workers: int, batch_size: int) -> None:
    """Scan the first `images` files in this process; print one JSON line with peak RSS."""
    from deconvnet.jobs.scan import run_scan

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = run_scan(
            out,
            model=model,
            weights="random",
            batch_size=batch_size,
            data={"kind": "folder", "root": root, "limit": images, "workers": workers},
            progress=False,
        )
    print(
        json.dumps(
            {
                "images": result["images_scanned"],
                "seconds": round(time.perf_counter() - start, 1),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "largest_worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--model", default="alexnet", choices=["alexnet", "vgg16"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "deconvnet_bench_jpegs")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.model, args.workers, args.batch_size)
        return
    root = write_folder(args.folder, max(args.sizes))
    print(
        f"{args.model}, random weights, stages 1-5, k=9, batches of {args.batch_size}, "
        f"{args.workers} decoding workers, 224x224 from 256x256 JPEGs in {root}"
    )
    print(f"{'images':>8} {'seconds':>8} {'peak RSS (MiB)':>15} {'largest worker (MiB)':>21}")
    for size in args.sizes:
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(root),
                str(size),
                "--model",
                args.model,
                "--workers",
                str(args.workers),
                "--batch-size",
                str(args.batch_size),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{row['images']:>8} {row['seconds']:>8} {row['peak_rss_mib']:>15.0f} "
            f"{row['largest_worker_rss_mib']:>21.0f}"
        )


if __name__ == "__main__":
    main()
