"""Filter visualisation by activation maximisation: images that excite one channel of a stage
(the Keras example "visualizing what convnets learn", keras-vis, Yosinski et al. 2015, lucid),
and a single unit optimised only within its receptive field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.geometry import receptive_field, stage_sizes
from deconvnet.core.validation import check_count, check_images, is_int
from deconvnet.data.models import preprocessing
from deconvnet.optim import objectives as obj
from deconvnet.optim.checks import (
    batches,
    check_channels,
    check_param,
    check_size,
    model_device,
    regularizer_preset,
)
from deconvnet.optim.engine import Optimized, optimize
from deconvnet.optim.params import FourierImage, PixelImage, fourier_noise, grey_noise
from deconvnet.optim.starts import SPREADS, live_starts, wake, warn_dead


def channel_generator(seed: int, channel: int) -> torch.Generator:
    """The start of channel c's image depends on (seed, c) only, not on the other channels asked."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(channel)) % (2**63))


def start_images(
    model: nn.Module,
    channels: Sequence[int],
    height: int,
    width: int,
    seed: int,
    param: str,
    spread: float = 1.0,
) -> Tensor:
    """Per-channel seeded starts: grey noise [K, 3, H, W] (pixels; the Keras example's spread
    0.25 times `spread`) or spectra (fourier; lucid's sd 0.01 times `spread`)."""
    prep = preprocessing(model)
    if param == "pixels":
        return torch.cat(
            [
                grey_noise((1, 3, height, width), prep, channel_generator(seed, c), spread=0.25 * spread)
                for c in channels
            ]
        )
    return torch.cat(
        [fourier_noise(1, height, width, channel_generator(seed, c), sd=0.01 * spread) for c in channels]
    )


def noise_starts(
    model: nn.Module,
    objective: obj.Objective,
    channels: Sequence[int],
    size: int,
    seed: int,
    param: str,
    lr: float,
    crop: tuple[int, int, int, int] | None = None,
    unit: tuple[int, int, int] | None = None,
) -> tuple[Tensor, list[float], list[int]]:
    """Each channel's seeded noise at the first spread of `starts.SPREADS` where its objective
    has a gradient (`starts.live_starts`), cropped to (top, left, bottom, right) if given; where
    none has, woken on the stage's pre-ReLU map (`starts.wake`; of unit = (stage, y, x) only the
    positions that reach the unit). -> (starts, spread per channel, wake steps per channel, -1
    where still without a gradient)."""
    candidates = [start_images(model, channels, size, size, seed, param, spread) for spread in SPREADS]
    h = w = size
    if crop is not None:
        top, left, bottom, right = crop
        candidates = [c[:, :, top:bottom, left:right] for c in candidates]
        h, w = bottom - top, right - left
    start, chosen = live_starts(
        model, objective, candidates, lambda s: make_param(model, s, h, w, param).image().detach()
    )
    stage = unit[0] if unit else next(p for p in objective.points if isinstance(p, int))
    window = pool_window(model, *unit) if unit else None
    start, woken = wake(
        model,
        chosen,
        start,
        lambda b: obj.preactivation(stage, channels[b], window),
        lambda s: make_param(model, s, h, w, param),
        lr,
        seed,
        step_values=3 * size * size if crop is not None else None,
    )
    return start, [SPREADS[max(k, 0)] for k in chosen], woken


def pool_window(model: nn.Module, stage: int, y: int, x: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) in the stage's pre-ReLU map of the positions that reach unit
    (y, x) of its output: the max pool's window, or the unit itself where the stage ends in a ReLU."""
    layer = model.features[stage_of(model, stage).index]
    if not isinstance(layer, nn.MaxPool2d):
        return y, x, y + 1, x + 1
    k, s, p = (layer.kernel_size, layer.stride, layer.padding)
    k, s, p = (v if isinstance(v, int) else v[0] for v in (k, s, p))
    return max(y * s - p, 0), max(x * s - p, 0), y * s - p + k, x * s - p + k


def check_start(start: object, model: nn.Module, count: int, size: int, param: str) -> Tensor | None:
    """A given start image (keras-vis's seed_input): [1 or K, 3, size, size], normalised."""
    if start is None:
        return None
    if param != "pixels":
        raise ValueError(
            "start: a start image needs param='pixels' (the Fourier "
            "parameterisation starts from a random spectrum)"
        )
    start = check_images(start, model, "start")
    if start.shape[0] not in (1, count) or tuple(start.shape[2:]) != (size, size):
        raise ValueError(
            f"start: expected [1 or {count}, 3, {size}, {size}] (one image for all, "
            f"or one per channel), got {list(start.shape)}"
        )
    return start.detach().cpu().expand(count, -1, -1, -1)


def make_param(model: nn.Module, start: Tensor, height: int, width: int, param: str):
    device, dtype = model_device(model)
    start = start.to(device=device, dtype=dtype)
    if param == "pixels":
        return PixelImage(start)
    return FourierImage(start, height, width, preprocessing(model))


def _check_border(border: object, map_size: tuple[int, int], stage: int) -> int:
    border = check_count("border", border, low=0)
    if 2 * border >= min(map_size):
        raise ValueError(
            f"border: {border} leaves nothing of stage {stage}'s "
            f"{map_size[0]}x{map_size[1]} map at this size; expected 0.."
            f"{(min(map_size) - 1) // 2}"
        )
    return border


def merge(parts: list[Optimized]) -> Optimized:
    """Batches run one after another -> one Optimized over all images."""
    first = parts[0]
    return Optimized(
        torch.cat([p.images for p in parts]),
        torch.cat([p.history for p in parts], 1),
        first.settings,
        first.stopped,
        first.report,
    )


@dataclass(frozen=True)
class _FilterPlan:
    """`visualize_filters`' checked request: the stage's number, the channels, the image size, the
    border left out of the objective, the parameterisation, the regularisers and the given start
    [K, 3, size, size] (None: seeded noise)."""

    number: int
    channels: list[int]
    size: int
    border: int
    param: str
    regularizers: list
    given: Tensor | None


def _plan_filters(
    model: nn.Module,
    stage: int,
    channels: object,
    size: object,
    border: object,
    param: object,
    regularizers: object,
    start: object,
) -> _FilterPlan:
    """`visualize_filters`' arguments checked, in its order (ValueError naming the argument)."""
    info = stage_of(model, stage)
    channels = check_channels(model, stage, channels)
    size = check_size(model, size, stage)
    border = _check_border(border, stage_sizes(model, size, size)[stage], stage)
    param = check_param(param)
    regs = regularizer_preset(regularizers)
    given = check_start(start, model, len(channels), size, param)
    return _FilterPlan(info.number, channels, size, border, param, regs, given)


def _filter_batches(
    model: nn.Module,
    stage: int,
    plan: _FilterPlan,
    batch_size: int,
    negate: bool,
    seed: int,
    lr: float,
    **options: Any,
) -> tuple[list[Optimized], list[float], list[int]]:
    """The channels optimised `batch_size` at a time, each batch from its part of the given start
    or from seeded noise that has a gradient (`noise_starts`) -> (each batch's Optimized, start
    spread per channel, wake steps per channel; both empty for a given start). options: the rest
    of `optimize`'s keyword arguments."""
    channels, size, param, given = plan.channels, plan.size, plan.param, plan.given
    parts, spreads, wakes = [], [], []
    for offset, group in zip(range(0, len(channels), batch_size), batches(channels, batch_size)):
        objective = obj.channel(plan.number, list(group), border=plan.border)
        if given is None:
            first, spread, woken = noise_starts(model, objective, group, size, seed, param, lr)
            warn_dead(woken, group, f"stage {stage} channels")
            spreads += spread
            wakes += woken
        else:
            first = given[offset : offset + len(group)]
        parts.append(
            optimize(
                model,
                -objective if negate else objective,
                make_param(model, first, size, size, param),
                lr=lr,
                regularizers=plan.regularizers,
                seed=seed,
                description=f"stage {stage} filters",
                **options,
            )
        )
    return parts, spreads, wakes


def visualize_filters(
    model: nn.Module,
    stage: int,
    channels: int | Sequence[int],
    size: int = 128,
    steps: int = 64,
    seed: int = 0,
    *,
    lr: float = 0.05,
    step_rule: str = "normalized",
    border: int = 0,
    regularizers: str | Sequence = "none",
    transforms: Sequence = (),
    param: str = "pixels",
    start: Tensor | None = None,
    negate: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    details: bool = False,
) -> Tensor | Optimized:
    """Images that maximise (or, with `negate`, minimise) the mean of each channel's map at
    `stage` -> [K, 3, size, size] in the model's normalised input space.

    The Keras example's recipe by default: start from grey noise (U - 0.5) * 0.25, L2-normalised
    gradient ascent (each step moves every image by lr * sqrt(3 size^2) in L2). `border` leaves
    that many map units out on each side (the example: 2); `regularizers` 'none', 'yosinski' or a
    list (`Decay`, `Blur`, `ClipNorm`, `ClipContribution`); `transforms` (`Jitter`, `RandomScale`,
    `Pad`); `param` 'pixels' or 'fourier' (lucid's decorrelated one); `start` an image to start
    from instead of noise (keras-vis's seed_input), [1 or K, 3, size, size]. Channels are optimised
    `batch_size` at a time, each image its own objective; channel c's image depends only on
    (seed, c), so any batching gives the same images. `details=True` returns the `Optimized`.
    """
    plan = _plan_filters(model, stage, channels, size, border, param, regularizers, start)
    parts, spreads, wakes = _filter_batches(
        model,
        stage,
        plan,
        batch_size,
        negate,
        seed,
        lr,
        steps=steps,
        step_rule=step_rule,
        transforms=transforms,
        progress=progress,
    )
    result = merge(parts)
    result.settings.update(
        method="visualize_filters",
        stage=stage,
        channels=plan.channels,
        size=plan.size,
        border=plan.border,
        negate=negate,
        objective=f"channel mean (stage {stage})",
        start="given image" if plan.given is not None else f"{plan.param} noise, seed {seed}",
        start_spread=spreads or None,
        wake_steps=wakes or None,
    )
    return result if details else result.images


@dataclass(frozen=True)
class UnitCrop:
    """Where a unit's receptive field lies: `box` (top, left, bottom, right) of the field clipped
    to the image, the `crop` (top, left, bottom, right) that is optimised (the box, extended up and
    left to the stage's stride grid so the crop's maps line up with the full image's), and the
    unit's (y, x) in the crop's map."""

    box: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]
    position: tuple[int, int]


def unit_crop(model: nn.Module, stage: int, size: int, y: int, x: int) -> UnitCrop:
    """The exact crop for unit (y, x) of `stage` on a size x size image."""
    rf = receptive_field(model, stage)
    top, left, bottom, right = rf.box(y, x)
    box = (max(top, 0), max(left, 0), min(bottom, size), min(right, size))
    jy, jx = rf.jump
    crop = ((box[0] // jy) * jy, (box[1] // jx) * jx, box[2], box[3])
    return UnitCrop(box, crop, (y - crop[0] // jy, x - crop[1] // jx))


def _check_position(position: object, map_size: tuple[int, int], stage: int) -> tuple[int, int]:
    h, w = map_size
    if position is None:
        return h // 2, w // 2
    if (
        not isinstance(position, (list, tuple))
        or len(position) != 2
        or not all(is_int(v) for v in position)
        or not (0 <= position[0] < h and 0 <= position[1] < w)
    ):
        raise ValueError(
            f"position: expected (y, x) with y in 0..{h - 1} and x in 0..{w - 1} "
            f"(stage {stage}'s {h}x{w} map), got {position!r}"
        )
    return int(position[0]), int(position[1])


@dataclass(frozen=True)
class _UnitPlan:
    """`visualize_units`' checked request: the stage's number, the channels, the image size, the
    unit (y, x) in the stage's map, the part of the image optimised (top, left, bottom, right) and
    the unit's (y, x) in its map, the receptive field's box, the regularisers."""

    number: int
    channels: list[int]
    size: int
    unit: tuple[int, int]
    crop: tuple[int, int, int, int]
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    regularizers: list


def _plan_units(
    model: nn.Module,
    stage: int,
    channels: object,
    size: object,
    position: object,
    crop: bool,
    regularizers: object,
) -> _UnitPlan:
    """`visualize_units`' arguments checked, in its order (ValueError naming the argument), and
    where the unit's receptive field lies (the whole image optimised unless `crop`)."""
    info = stage_of(model, stage)
    channels = check_channels(model, stage, channels)
    size = check_size(model, size, stage)
    y, x = _check_position(position, stage_sizes(model, size, size)[stage], stage)
    where = unit_crop(model, stage, size, y, x)
    top, left, bottom, right = where.crop if crop else (0, 0, size, size)
    uy, ux = where.position if crop else (y, x)
    regs = regularizer_preset(regularizers)
    return _UnitPlan(
        info.number, channels, size, (y, x), (top, left, bottom, right), (uy, ux), where.box, regs
    )


def _unit_batches(
    model: nn.Module,
    stage: int,
    plan: _UnitPlan,
    batch_size: int,
    negate: bool,
    seed: int,
    lr: float,
    **options: Any,
) -> tuple[list[Optimized], list[float], list[int]]:
    """The units optimised `batch_size` channels at a time, each from the full image's seeded
    noise cropped (`noise_starts`), each step the full image's L2 length -> (each batch's
    Optimized, start spread per channel, wake steps per channel). options: the rest of
    `optimize`'s keyword arguments."""
    (y, x), (uy, ux), size = plan.unit, plan.position, plan.size
    top, left, bottom, right = plan.crop
    parts, spreads, wakes = [], [], []
    for group in batches(plan.channels, batch_size):
        objective = obj.unit(plan.number, list(group), uy, ux)
        start, spread, woken = noise_starts(
            model, objective, group, size, seed, "pixels", lr, plan.crop, (plan.number, uy, ux)
        )
        # (crop=False passes the whole image as its crop: the same step length either way)
        warn_dead(woken, group, f"stage {stage} units ({y}, {x}) of channels")
        spreads += spread
        wakes += woken
        parts.append(
            optimize(
                model,
                -objective if negate else objective,
                make_param(model, start, bottom - top, right - left, "pixels"),
                lr=lr,
                step_values=3 * size * size,
                regularizers=plan.regularizers,
                seed=seed,
                description=f"stage {stage} units",
                **options,
            )
        )
    return parts, spreads, wakes


def visualize_units(
    model: nn.Module,
    stage: int,
    channels: int | Sequence[int],
    size: int = 224,
    steps: int = 64,
    seed: int = 0,
    *,
    position: tuple[int, int] | None = None,
    crop: bool = True,
    lr: float = 0.05,
    step_rule: str = "normalized",
    regularizers: str | Sequence = "none",
    transforms: Sequence = (),
    negate: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    details: bool = False,
) -> Tensor | Optimized:
    """Images that maximise one unit (default: the centre of the map) of each channel at `stage`
    on a size x size input -> [K, 3, h, w], the unit's receptive field clipped to the image.

    A unit's gradient is zero outside its receptive field, so with `crop` only that field (on the
    stage's stride grid) is optimised: e.g. 44 px instead of 224 at VGG16 stage 3. The start is
    the full image's grey noise cropped and each step has the full image's L2 length, so with no
    transforms and pointwise regularisers (Decay, Shrink, Clamp) the crop gives exactly the
    full-image run's field (`crop=False` runs that); transforms and blur or percentile clipping
    see only the crop.
    """
    plan = _plan_units(model, stage, channels, size, position, crop, regularizers)
    parts, spreads, wakes = _unit_batches(
        model,
        stage,
        plan,
        batch_size,
        negate,
        seed,
        lr,
        steps=steps,
        step_rule=step_rule,
        transforms=transforms,
        progress=progress,
    )
    result = merge(parts)
    b, (top, left, bottom, right) = plan.box, plan.crop
    result.images = result.images[:, :, b[0] - top : b[2] - top, b[1] - left : b[3] - left].contiguous()
    result.settings.update(
        method="visualize_units",
        stage=stage,
        channels=plan.channels,
        size=plan.size,
        position=list(plan.unit),
        crop=crop,
        box=list(b),
        crop_box=[top, left, bottom, right],
        negate=negate,
        start_spread=spreads,
        wake_steps=wakes,
    )
    return result if details else result.images
