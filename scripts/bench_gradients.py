"""Benchmark: deconvnet.attribute (K class targets) and deconvnet.smoothgrad vs autograd / Captum.

Both parts run in ONE process, side by side, on torchvision VGG16 with random weights (seeded,
eval mode, float32) and one random image; every method is warmed up once (on a smaller problem of
the same shapes) and then timed `--repeats` times, the order of the methods reversed on every
other repeat (ABC, CBA, ABC, ...). Medians are reported, and ratios of medians.

1. K class targets (default 16) of one image:
   - ours:      `deconvnet.attribute(model, x, target=[c1, ..., cK])` (one forward, rows batched)
   - loop:      the issue's reference: per target a fresh forward and
                `torch.autograd.grad(model(x)[0, c], x)` (no hooks)               target <= 0.6
   - retain:    a leaner autograd variant: one forward, K `autograd.grad(..., retain_graph=True)`
   - loop_cl, retain_cl: the same two given a channels-last input on the CPU (ours' memory
                format: oneDNN is faster in NHWC), the leanest autograd references
   Outputs are compared (max |ours - ref| / max |ref|), and, untimed, against `retain` on the
   memory format of ours' forward pass (channels last on the CPU: the same float32 rounding).
2. SmoothGrad of one class, `--samples` noisy copies (default 50) in batches of `--batch-size`
   (default 10), noise 0.15 x (max - min) of the image:
   - ours:      `deconvnet.smoothgrad(model, x, target=c, samples=50, noise=0.15, batch_size=10)`
   - captum:    `NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=50,
                nt_samples_batch_size=10, stdevs=sigma, target=c, abs=False)`, sigma absolute
                                                                                  target <= 0.9
   - autograd:  a plain loop over the same 50 noisy copies (ours' noise stream) in batches of 10,
                d sum(score) / d batch, averaged: it must agree with ours up to float32
                rounding (untimed, the first batch is also checked in ours' memory format).
   - autograd_cl: the same loop given a channels-last input on the CPU (the leanest reference).
   Captum draws its own noise, so only a similarity (cosine) to ours is printed for it (low on
   random weights: two seeds of ours gave cosine 0.088 at the defaults, Captum 0.089).

Float32 rounding: the references run on contiguous inputs, ours channels last; a ReLU whose input
lies within rounding of zero (~1e-7 of the layer's scale) can flip its mask between the two, which
on random weights moves a map by a few % in max-norm. The same-format checks (untimed: autograd on
the memory format of ours' forward, channels last on the CPU) show the agreement.

Peak memory: on CUDA torch.cuda.max_memory_allocated above the model's own (per method, max over
repeats); not measured on the CPU (ru_maxrss is process-wide and never decreases, so per-method
deltas inside one process are not meaningful).

Timings on a machine shared with other work are disturbed: take final figures on a quiet machine.

    python scripts/bench_gradients.py                     # VGG16 224px, 16 targets, 50 samples, CPU
    python scripts/bench_gradients.py --quick             # smoke test: 64px, 4 targets, 6 samples
    python scripts/bench_gradients.py --device cuda --repeats 5
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models import vgg16

import deconvnet

ROUNDING_NOTE = (
    "note: a difference far above 1e-5 against the contiguous-input references is float32 "
    "rounding, not a method error: ours' forward runs channels last (oneDNN), and a ReLU whose "
    "input is ~1e-7 of the layer's scale can flip its mask, which moves the map by a few % in "
    "max-norm on random weights; the same-format check above (same rounding) shows the "
    "agreement"
)


def same_format(x: Tensor) -> tuple[torch.memory_format, str]:
    """The memory format of ours' forward pass (deconvnet.gradient.passes: channels last on the
    CPU, as given elsewhere), so that an autograd check rounds its forward pass the same way."""
    if x.device.type == "cpu":
        return torch.channels_last, "channels_last"
    return torch.contiguous_format, "contiguous"


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
        "--repeats", type=positive_int, default=3, help="timed runs of each method, alternating order"
    )
    parser.add_argument("--size", type=positive_int, default=224, help="input side in pixels")
    parser.add_argument("--targets", type=positive_int, default=16, help="class targets of part 1")
    parser.add_argument("--samples", type=positive_int, default=50, help="SmoothGrad noisy copies")
    parser.add_argument("--batch-size", type=positive_int, default=10, help="SmoothGrad copies per forward")
    parser.add_argument("--noise", type=float, default=0.15, help="SmoothGrad sigma / (max - min)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: size 64, 4 targets, 6 samples in batches of 3, 1 repeat",
    )
    args = parser.parse_args()
    if args.quick:
        args.size, args.targets, args.samples, args.batch_size, args.repeats = 64, 4, 6, 3, 1
    return args


class Timer:
    """Wall-clock and process CPU time of calls, synchronised on CUDA; peak CUDA memory."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.peak: dict[str, int] = {}
        self.base = torch.cuda.memory_allocated(device) if self.cuda else 0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def __call__(self, name: str, fn: Callable[[], Tensor]) -> Tensor:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        self.sync()
        self.wall.setdefault(name, []).append(time.perf_counter() - start)
        self.cpu.setdefault(name, []).append(time.process_time() - start_cpu)
        if self.cuda:
            used = torch.cuda.max_memory_allocated(self.device) - self.base
            self.peak[name] = max(self.peak.get(name, 0), used)
        return out

    def median(self, name: str) -> float:
        return statistics.median(self.wall[name])


def run_interleaved(
    timer: Timer, methods: list[tuple[str, Callable[[], Tensor]]], repeats: int
) -> dict[str, Tensor]:
    """Each method `repeats` times, the order reversed on every other repeat; last outputs."""
    outputs = {}
    for repeat in range(repeats):
        for name, fn in methods if repeat % 2 == 0 else methods[::-1]:
            outputs[name] = timer(name, fn)
    return outputs


def rel_diff(got: Tensor, want: Tensor) -> float:
    """max |got - want| / max |want|."""
    got, want = got.double().cpu(), want.double().cpu()
    return float((got - want).abs().max() / want.abs().max().clamp(min=1e-300))


def cosine(a: Tensor, b: Tensor) -> float:
    a, b = a.double().cpu().flatten(), b.double().cpu().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-300))


def report(
    title: str,
    timer: Timer,
    names: list[str],
    reference_of: dict[str, tuple[str, float | None]],
    checks: dict[str, str],
) -> None:
    """Table: per method the median / min wall time, CPU-time median, peak memory, check; then
    the ratio of each method in `reference_of` to its reference (with its target, if any)."""
    print(f"\n{title}")
    memory = "peak MiB" if timer.cuda else "peak mem"
    print(f"{'method':<10} {'median s':>9} {'min s':>9} {'cpu s':>9} {memory:>9}  runs (s)  | check")
    for name in names:
        wall = timer.wall[name]
        peak = f"{timer.peak[name] / 2**20:9.0f}" if timer.cuda else f"{'n/a':>9}"
        runs = " ".join(f"{t:.3f}" for t in wall)
        print(
            f"{name:<10} {statistics.median(wall):>9.3f} {min(wall):>9.3f} "
            f"{statistics.median(timer.cpu[name]):>9.3f} {peak}  {runs}  | {checks.get(name, '')}"
        )
    for name, (ref, target) in reference_of.items():
        ratio = timer.median(name) / timer.median(ref)
        ratio_min = min(timer.wall[name]) / min(timer.wall[ref])
        paired = statistics.median(a / b for a, b in zip(timer.wall[name], timer.wall[ref]))
        verdict = (
            "" if target is None else f"  (target <= {target}: {'met' if ratio <= target else 'NOT met'})"
        )
        print(
            f"ratio {name} / {ref}: {ratio:.3f} (medians){verdict}; minima {ratio_min:.3f}, "
            f"paired runs {paired:.3f}"
        )


def part_targets(
    model: nn.Module, x: Tensor, classes: list[int], args: argparse.Namespace, timer: Timer
) -> None:
    def ours(cs: list[int] = classes) -> Tensor:
        return deconvnet.attribute(model, x, target=cs)

    def loop(cs: list[int] = classes, fmt: torch.memory_format = torch.contiguous_format) -> Tensor:
        out = []
        for c in cs:
            inp = x.detach().contiguous(memory_format=fmt).requires_grad_(True)
            (g,) = torch.autograd.grad(model(inp)[0, c], inp)
            out.append(g)
        return torch.cat(out)

    def retain(cs: list[int] = classes, fmt: torch.memory_format = torch.contiguous_format) -> Tensor:
        inp = x.detach().contiguous(memory_format=fmt).requires_grad_(True)
        logits = model(inp)
        out = []
        for i, c in enumerate(cs):
            (g,) = torch.autograd.grad(logits[0, c], inp, retain_graph=i < len(cs) - 1)
            out.append(g)
        return torch.cat(out)

    fmt, label = same_format(x)
    methods = [("ours", ours), ("loop", loop), ("retain", retain)]
    if label == "channels_last":  # the same references given ours' memory format: leaner still
        methods += [
            ("loop_cl", lambda cs=classes: loop(cs, fmt)),
            ("retain_cl", lambda cs=classes: retain(cs, fmt)),
        ]
    for _, fn in methods:  # warm-up: two targets (same shapes, kernels selected)
        fn(classes[:2])
    timer.sync()
    outputs = run_interleaved(timer, methods, args.repeats)
    names = [name for name, _ in methods]
    checks = {
        name: f"max |ours - {name}| / max |{name}| = {rel_diff(outputs['ours'], outputs[name]):.1e}"
        for name in names[1:]
    }
    # untimed: autograd on the memory format of ours' forward pass (the same float32 rounding)
    same_rounding = rel_diff(outputs["ours"], retain(classes, fmt))
    checks["ours"] = f"max |ours - retain({label})| / max |.| = {same_rounding:.1e} (untimed)"
    report(
        f"1. attribute: {len(classes)} class targets of one image, rule=backprop "
        f"(classes {classes[0]}..{classes[-1]})",
        timer,
        names,
        {"ours": ("loop", 0.6)},
        checks,
    )
    for ref in names[2:]:
        ratio = timer.median("ours") / timer.median(ref)
        print(
            f"ratio ours / {ref}: {ratio:.3f} (medians; a leaner autograd variant, no target), "
            f"minima {min(timer.wall['ours']) / min(timer.wall[ref]):.3f}"
        )
    print(ROUNDING_NOTE)


def part_smoothgrad(model: nn.Module, x: Tensor, c: int, args: argparse.Namespace, timer: Timer) -> None:
    from captum.attr import NoiseTunnel, Saliency

    sigma = args.noise * float(x.max() - x.min())
    tunnel = NoiseTunnel(Saliency(model))

    def ours(samples: int = args.samples) -> Tensor:
        return deconvnet.smoothgrad(
            model, x, target=c, samples=samples, noise=args.noise, seed=args.seed, batch_size=args.batch_size
        )

    def captum(samples: int = args.samples) -> Tensor:
        return tunnel.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=samples,
            nt_samples_batch_size=args.batch_size,
            stdevs=sigma,
            target=c,
            abs=False,
        )

    def autograd(samples: int = args.samples, fmt: torch.memory_format = torch.contiguous_format) -> Tensor:
        # ours' noise stream: a CPU generator, one randn(3, H, W) per copy
        generator = torch.Generator().manual_seed(args.seed)
        total = torch.zeros_like(x, dtype=torch.float64)
        for start in range(0, samples, args.batch_size):
            n = min(args.batch_size, samples - start)
            eps = torch.stack([torch.randn(x.shape[1:], generator=generator) for _ in range(n)])
            noisy = (x + sigma * eps.to(x.device)).contiguous(memory_format=fmt).requires_grad_(True)
            (g,) = torch.autograd.grad(model(noisy)[:, c].sum(), noisy)
            total += g.sum(0, keepdim=True, dtype=torch.float64)
        return (total / samples).to(x.dtype)

    fmt, label = same_format(x)
    methods = [("ours", ours), ("captum", captum), ("autograd", autograd)]
    if label == "channels_last":  # the plain loop given ours' memory format: leaner still
        methods.append(("autograd_cl", lambda samples=args.samples: autograd(samples, fmt)))
    for _, fn in methods:  # warm-up: one batch of copies
        fn(args.batch_size)
    timer.sync()
    outputs = run_interleaved(timer, methods, args.repeats)
    checks = {
        "autograd": f"max |ours - autograd| / max |autograd| = {rel_diff(outputs['ours'], outputs['autograd']):.1e} (same noise)",
        "captum": f"cosine(ours, captum) = {cosine(outputs['ours'], outputs['captum']):.3f} (own noise draws)",
    }
    # untimed, on the first batch of copies only: autograd on ours' memory format (same rounding)
    first = rel_diff(ours(args.batch_size), autograd(args.batch_size, fmt))
    checks["ours"] = (
        f"first {args.batch_size} copies: max |ours - autograd({label})| / max |.| = {first:.1e} (untimed)"
    )
    report(
        f"2. smoothgrad: class {c}, {args.samples} samples in batches of {args.batch_size}, "
        f"noise {args.noise} (sigma {sigma:.4f} absolute)",
        timer,
        [name for name, _ in methods],
        {"ours": ("captum", 0.9)},
        checks,
    )
    for ref in [name for name, _ in methods][2:]:
        ratio = timer.median("ours") / timer.median(ref)
        print(
            f"ratio ours / {ref}: {ratio:.3f} (medians; plain autograd loop, no target), "
            f"minima {min(timer.wall['ours']) / min(timer.wall[ref]):.3f}"
        )
    print(ROUNDING_NOTE)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":  # ours runs in full float32 (deconvnet.core.precision); so do the references
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(args.seed)
    model = vgg16().eval().to(device)
    x = torch.randn(1, 3, args.size, args.size).to(device)
    classes = [i * 1000 // args.targets for i in range(args.targets)]
    with torch.no_grad():
        c = int(model(x).argmax(1))  # SmoothGrad target: the clean image's predicted class

    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"torch {torch.__version__}, device {device}{gpu}, {torch.get_num_threads()} threads, "
        f"vgg16 random weights (seed {args.seed}), eval, float32, one {args.size}x{args.size} "
        f"image, median of {args.repeats} repeats (order alternating), after one warm-up each"
    )
    print("timings on a shared machine are disturbed by other load: take final figures on a quiet one")
    if device.type != "cuda":
        print("peak memory: not measured on the CPU (process-wide ru_maxrss never decreases)")

    part_targets(model, x, classes, args, Timer(device))
    part_smoothgrad(model, x, c, args, Timer(device))


if __name__ == "__main__":
    main()
