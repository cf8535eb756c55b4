"""Benchmark: deconvnet.scorecam vs pytorch-grad-cam's ScoreCAM, VGG16 stage 5 (pool5).

Both in ONE process, side by side, on torchvision VGG16 with random weights (seeded, eval mode,
float32) and one random image (default 224 px): the image's predicted class, the 7x7 pool5 maps
(512 channels, so up to 512 masked images), masked images sent through the model `--batch-size`
(default 32) at a time.

   - ours:   `deconvnet.scorecam(model, x, None, stage=5, batch_size=32)`            target <= 0.7
   - theirs: `ScoreCAM(twin, target_layers=[twin.features[30]])` with `batch_size = 32`,
             `cam(x, targets=None)`. features[30] is pool5, the same 7x7 maps as our stage 5
             (features[29], relu5_3, would give 14x14 maps: other masks). `twin` is a deep copy of
             the model: pytorch-grad-cam hooks its target layer, and ours must not run through
             those hooks.

Each is warmed up once (one masked batch: ours with top=batch_size, theirs one forward of a batch
of the same shape), then timed `--repeats` times, the order reversed on every other repeat.
Medians are reported, and the ratio of medians ours / theirs.

The maps differ by design (docs/methods.md#score-cam): ours weighs by the softmax probability of
the class and skips channels whose map is constant, pytorch-grad-cam weighs by a softmax over the
channels of the logits, upsamples with align_corners=True and normalises the map to [0, 1]. The
cosine similarity of the two maps is printed for information only.

Where the time goes (printed after the timings, untimed): both spend nearly all of it in the
masked forwards of VGG16 (on the CPU ~94% of a forward is oneDNN convolution). Ours runs fewer
of them (a channel whose pool5 map is constant gives no mask, and channels with equal normalised
maps share one: on random weights a few % together) and feeds them channels last on the CPU
(oneDNN's native layout; theirs are contiguous NCHW): one batch is timed in each layout.

Timings on a machine shared with other work are disturbed: take final figures on a quiet machine.

    python scripts/bench_scorecam.py                       # VGG16 224px, 1 thread, 3 repeats, CPU
    python scripts/bench_scorecam.py --quick               # smoke test: 64 px, batch 8, 1 repeat
    python scripts/bench_scorecam.py --device cuda --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's progress bar, read at tqdm's import

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torchvision.models import vgg16  # noqa: E402

import deconvnet  # noqa: E402
from deconvnet.gradient.scorecam import distinct_masks  # noqa: E402

POOL5 = 30  # vgg16.features[30]: pool5, our stage 5


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
        "--repeats", type=positive_int, default=3, help="timed runs of each, alternating order"
    )
    parser.add_argument("--size", type=positive_int, default=224, help="input side in pixels")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="masked images per forward")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: size 64, batch size 8, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.size, args.batch_size, args.repeats = 64, 8, 1
    return args


class Timer:
    """Wall-clock and process CPU time of calls, synchronised on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def __call__(self, name: str, fn: Callable[[], Tensor]) -> Tensor:
        self.sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.sync()
        self.wall.setdefault(name, []).append(time.perf_counter() - start)
        self.cpu.setdefault(name, []).append(time.process_time() - start_cpu)
        return out

    def median(self, name: str) -> float:
        return statistics.median(self.wall[name])


def cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.double().cpu().flatten(), b.double().cpu().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-300))


def scored_channels(model: nn.Module, x: Tensor) -> tuple[int, int, int]:
    """(masked images ours sends: distinct normalised maps, channels whose pool5 map is not
    constant, all channels) for image x."""
    with torch.no_grad():
        maps = model.features(x)[0]
    channels, distinct, _ = distinct_masks(maps, None)
    return len(distinct), len(channels), maps.shape[0]


def batch_layouts(model: nn.Module, x: Tensor, batch_size: int, timer: Timer) -> dict[str, float]:
    """Seconds of one forward of `batch_size` copies of x, contiguous and channels last."""
    batch = x.expand(batch_size, -1, -1, -1)
    seconds = {}
    with torch.no_grad():
        for name, layout in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
            inp = batch.contiguous(memory_format=layout)
            model(inp)  # warm-up
            timer(name, lambda inp=inp: model(inp))
            seconds[name] = timer.wall[name][-1]
    return seconds


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":  # ours runs in full float32 (deconvnet.core.precision); so do theirs
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    from pytorch_grad_cam import ScoreCAM

    torch.manual_seed(args.seed)
    model = vgg16().eval().to(device)
    twin = copy.deepcopy(model)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed)).to(device)
    theirs_cam = ScoreCAM(model=twin, target_layers=[twin.features[POOL5]])
    theirs_cam.batch_size = args.batch_size

    def ours(top: int | None = None) -> Tensor:
        return deconvnet.scorecam(model, x, None, 5, batch_size=args.batch_size, top=top)

    def theirs() -> Tensor:
        return torch.from_numpy(theirs_cam(input_tensor=x, targets=None))

    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"torch {torch.__version__}, device {device}{gpu}, {torch.get_num_threads()} threads, vgg16 random "
        f"weights (seed {args.seed}), eval, float32, one {args.size}x{args.size} image, stage 5 = pool5 = "
        f"features[{POOL5}], batch size {args.batch_size}, median of {args.repeats} repeats (order "
        "alternating), after one warm-up each"
    )
    print("timings on a shared machine are disturbed by other load: take final figures on a quiet one")

    timer = Timer(device)
    ours(args.batch_size)  # warm-up: one masked batch each
    with torch.no_grad():
        twin(x.expand(args.batch_size, -1, -1, -1).contiguous())
    outputs = {}
    for repeat in range(args.repeats):
        for name, fn in ((("ours", ours), ("theirs", theirs)))[:: 1 if repeat % 2 == 0 else -1]:
            outputs[name] = timer(name, fn)
    report(args, model, x, timer, outputs)


def report(args: argparse.Namespace, model: nn.Module, x: Tensor, timer: Timer, outputs: dict) -> None:
    distinct, scored, channels = scored_channels(model, x)
    print(f"\n{'method':<8} {'median s':>9} {'min s':>9} {'cpu s':>9}  runs (s)")
    for name in ("ours", "theirs"):
        wall = timer.wall[name]
        print(
            f"{name:<8} {timer.median(name):>9.3f} {min(wall):>9.3f} "
            f"{statistics.median(timer.cpu[name]):>9.3f}  {' '.join(f'{t:.3f}' for t in wall)}"
        )
    ratio = timer.median("ours") / timer.median("theirs")
    paired = statistics.median(a / b for a, b in zip(timer.wall["ours"], timer.wall["theirs"]))
    print(
        f"ratio ours / theirs: {ratio:.3f} (medians; target <= 0.7: {'met' if ratio <= 0.7 else 'NOT met'}); "
        f"minima {min(timer.wall['ours']) / min(timer.wall['theirs']):.3f}, paired runs {paired:.3f}"
    )
    ours_map = outputs["ours"][0].cpu()
    print(
        f"maps: cosine(ours, theirs) = {cosine(ours_map, outputs['theirs'][0]):.3f} (different weightings "
        f"and normalisations by design: information only); ours max {float(ours_map.max()):.4g}"
    )
    print(
        f"masked images: ours {distinct} ({scored} pool5 channels whose map is not constant, {distinct} "
        f"distinct normalised maps among them), theirs {channels} (every channel): {distinct / channels:.3f} "
        "of the forwards"
    )
    layouts = batch_layouts(model, x, args.batch_size, Timer(x.device))
    print(
        f"one forward of {args.batch_size} images (untimed above): contiguous {layouts['contiguous']:.3f} s "
        f"(theirs), channels_last {layouts['channels_last']:.3f} s (ours on the CPU): "
        f"{layouts['channels_last'] / layouts['contiguous']:.3f}"
    )


if __name__ == "__main__":
    main()
