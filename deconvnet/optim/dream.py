"""Deep Dream (Mordvintsev, Olah & Tyka 2015): amplify whatever a layer already sees, by
gradient ascent on 0.5 ||a||^2 with steps step_size / mean |g|, a random roll (jitter) each step,
and octaves: the image is shrunk `octaves - 1` times by `scale`, dreamt from the smallest up, the
detail each octave added carried up to the next.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.geometry import min_input_size
from deconvnet.core.precision import full_float32
from deconvnet.core.validation import check_count, check_images, check_positive, check_real
from deconvnet.data.models import preprocessing
from deconvnet.optim import objectives as obj
from deconvnet.optim.checks import check_channels, check_run, model_device
from deconvnet.optim.engine import Optimized, optimize
from deconvnet.optim.params import PixelImage, valid_range
from deconvnet.optim.points import map_point
from deconvnet.optim.regularizers import Clamp
from deconvnet.optim.transforms import Jitter

MAX_OCTAVES = 100  # each octave is a run of `steps` steps; more is never meant


def octave_sizes(height: int, width: int, octaves: int, scale: float) -> list[tuple[int, int]]:
    """Image sizes from the smallest octave up to (height, width)."""
    sizes = [(height, width)]
    for _ in range(octaves - 1):
        h, w = sizes[-1]
        sizes.append((max(1, round(h / scale)), max(1, round(w / scale))))
    return sizes[::-1]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _check_dream(
    model: nn.Module,
    image: object,
    stage: object,
    channel: object,
    octaves: object,
    scale: object,
    jitter: object,
) -> tuple[int | str, Tensor, int | None, int, list[tuple[int, int]]]:
    """`deep_dream`'s arguments checked, in its order (ValueError naming the argument) -> (the
    probe's key of the feature map, image [1, 3, H, W], channel, octaves, the octaves' sizes from
    the smallest up)."""
    point, named = map_point(model, stage)
    image = check_images(image, model, "image", point.key)
    if image.shape[0] != 1:
        raise ValueError(f"image: expected one image [1, 3, H, W], got a batch of {image.shape[0]}")
    channel = named if channel is None else channel
    if channel is not None:
        channel = check_channels(model, point, channel, "channel")[0]
    octaves = check_count("octaves", octaves, high=MAX_OCTAVES)
    if check_real("scale", scale) <= 1:
        raise ValueError(f"scale: expected an octave scale > 1, got {scale!r}")
    check_count("jitter", jitter, low=0)
    sizes = octave_sizes(image.shape[2], image.shape[3], octaves, scale)
    smallest = min_input_size(model, point.key)
    if min(sizes[0]) < smallest:
        raise ValueError(
            f"octaves: {octaves} octaves of scale {scale} shrink the "
            f"{image.shape[2]}x{image.shape[3]} image to {sizes[0][0]}x{sizes[0][1]}, "
            f"below the {smallest} px {point.label} needs; use fewer octaves"
        )
    return point.key, image, channel, octaves, sizes


def _dream_octaves(
    model: nn.Module,
    objective: obj.Objective,
    base: Tensor,
    sizes: list[tuple[int, int]],
    low: Tensor,
    high: Tensor,
    steps: int,
    lr: float,
    jitter: int,
    seed: int,
    progress: bool,
) -> tuple[Optimized, list[Tensor]]:
    """Dream `base` [1, 3, H, W] octave by octave from the smallest of `sizes` up, the detail each
    octave added carried up to the next, pixels kept within [low, high] -> (the last octave's
    Optimized, each octave's history [steps, 1])."""
    detail = torch.zeros(1, 3, *sizes[0], dtype=base.dtype, device=base.device)
    histories = []
    for k, size in enumerate(sizes):
        octave_base = _resize(base, size) if size != tuple(base.shape[2:]) else base
        detail = _resize(detail, size) if detail.shape[2:] != octave_base.shape[2:] else detail
        param = PixelImage((octave_base + detail).clamp(low, high))
        run = optimize(
            model,
            objective,
            param,
            steps=steps,
            lr=lr,
            step_rule="mean_abs",
            transforms=[Jitter(jitter)],
            regularizers=[Clamp(low, high)],
            seed=seed + k,
            progress=progress,
            description=f"dream octave {k + 1}",
        )
        histories.append(run.history)
        detail = run.images - octave_base
    return run, histories


@full_float32()
def deep_dream(
    model: nn.Module,
    image: Tensor,
    stage: int | str,
    channel: int | None = None,
    octaves: int = 4,
    scale: float = 1.4,
    jitter: int = 32,
    steps: int = 20,
    step_size: float = 1.5,
    seed: int = 0,
    negate: bool = False,
    progress: bool = False,
    details: bool = False,
) -> Tensor | Optimized:
    """Dream `image` [1, 3, H, W] (normalised) at `stage` (all channels' energy, or one
    `channel`'s) -> [1, 3, H, W], pixels kept to valid colours. `stage`: a stage 1..5, a stage
    name, a module path, or "blocks.4:42" (one channel).

    Mordvintsev's recipe: 4 octaves of scale 1.4, jitter 32 px, step 1.5 (grey levels of 255,
    turned into the normalised space with the mean of the model's std), with 20 steps per octave
    instead of his 10: 10 raised a random MobileNetV2's stage-4 energy only 1.2x, 20 raises it
    3.4x (docs/methods.md#deep-dream).
    `negate` lowers the energy instead. details=True returns the Optimized, history
    [octaves * steps, 1].
    """
    key, image, channel, octaves, sizes = _check_dream(model, image, stage, channel, octaves, scale, jitter)
    seed = check_run(steps, seed=seed, negate=negate, progress=progress, details=details)
    check_positive("step_size", step_size)
    prep = preprocessing(model)
    device, dtype = model_device(model)
    base = image.detach().to(device=device, dtype=dtype)
    low, high = valid_range(prep, dtype, device)
    lr = check_real("step_size", step_size) / 255.0 / (sum(prep.std) / 3)
    objective = obj.energy(key, channel)
    objective = -objective if negate else objective
    run, histories = _dream_octaves(
        model, objective, base, sizes, low, high, steps, lr, jitter, seed, progress
    )
    result = Optimized(run.images, torch.cat(histories), run.settings)
    result.settings.update(
        seed=seed,
        steps=steps * octaves,
        steps_run=len(result.history),
        note="octave k's jitter draws from seed + k",
    )
    result.settings.update(
        method="deep_dream",
        stage=stage,
        channel=channel,
        octaves=octaves,
        scale=scale,
        jitter=jitter,
        steps_per_octave=steps,
        step_size=step_size,
        negate=negate,
        octave_sizes=[list(s) for s in sizes],
    )
    return result if details else result.images
