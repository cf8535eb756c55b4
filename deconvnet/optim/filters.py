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

from deconvnet.core.precision import full_float32
from deconvnet.core.validation import check_bool, check_count, check_images, is_int
from deconvnet.data.models import preprocessing
from deconvnet.optim import objectives as obj
from deconvnet.optim.checks import (
    batches,
    check_channels,
    check_param,
    check_run,
    check_size,
    model_device,
    regularizer_preset,
)
from deconvnet.optim.engine import Optimized, optimize
from deconvnet.optim.params import FourierImage, PixelImage, fourier_noise, grey_noise
from deconvnet.optim.points import MapPoint, map_point, map_size, pre_window, unit_crop
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
    point: MapPoint,
    channels: Sequence[int],
    size: int,
    seed: int,
    param: str,
    lr: float,
    crop: tuple[int, int, int, int] | None = None,
    unit: tuple[int, int] | None = None,
) -> tuple[Tensor, list[float], list[int]]:
    """Each channel's seeded noise at the first spread of `starts.SPREADS` where its objective
    has a gradient (`starts.live_starts`), cropped to (top, left, bottom, right) if given; where
    none has, woken on the point's pre-activation map (`starts.wake`; of unit = (y, x) only the
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
    window = pre_window(model, point, *unit) if unit else None
    start, woken = wake(
        model,
        chosen,
        start,
        lambda b: obj.preactivation(point.key, channels[b], window),
        lambda s: make_param(model, s, h, w, param),
        lr,
        seed,
        step_values=3 * size * size if crop is not None else None,
    )
    return start, [SPREADS[max(k, 0)] for k in chosen], woken


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


def _check_border(border: object, map_size: tuple[int, int], label: str) -> int:
    border = check_count("border", border, low=0)
    if 2 * border >= min(map_size):
        raise ValueError(
            f"border: {border} leaves nothing of {label}'s "
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
    """`visualize_filters`' checked request: the feature map, the channels, the image size, the
    border left out of the objective, the parameterisation, the regularisers and the given start
    [K, 3, size, size] (None: seeded noise)."""

    point: MapPoint
    channels: list[int]
    size: int
    border: int
    param: str
    regularizers: list
    given: Tensor | None


def _plan_filters(
    model: nn.Module,
    stage: object,
    channels: object,
    size: object,
    border: object,
    param: object,
    regularizers: object,
    start: object,
    details: object,
) -> _FilterPlan:
    """`visualize_filters`' arguments checked, in its order (ValueError naming the argument); the
    optimisation's own options are checked by `_filter_batches`."""
    check_bool("details", details)
    point, named = map_point(model, stage)
    channels = check_channels(model, point, named if channels is None and named is not None else channels)
    size = check_size(model, size, point.key)
    border = _check_border(border, map_size(model, point, size, size), point.label)
    param = check_param(param)
    regs = regularizer_preset(regularizers)
    given = check_start(start, model, len(channels), size, param)
    return _FilterPlan(point, channels, size, border, param, regs, given)


def _filter_batches(
    model: nn.Module, plan: _FilterPlan, batch_size: int, negate: bool, seed: int, lr: float, **options: Any
) -> tuple[list[Optimized], list[float], list[int]]:
    """The channels optimised `batch_size` at a time, each batch from its part of the given start
    or from seeded noise that has a gradient (`noise_starts`) -> (each batch's Optimized, start
    spread per channel, wake steps per channel; both empty for a given start). options: the rest
    of `optimize`'s keyword arguments, checked here before any work (`check_run`)."""
    check_run(
        options["steps"], lr, seed, batch_size, options["transforms"], options["step_rule"], negate=negate
    )
    check_bool("progress", options["progress"])
    channels, size, param, given = plan.channels, plan.size, plan.param, plan.given
    parts, spreads, wakes = [], [], []
    for offset, group in zip(range(0, len(channels), batch_size), batches(channels, batch_size)):
        objective = obj.channel(plan.point.key, list(group), border=plan.border)
        if given is None:
            first, spread, woken = noise_starts(model, objective, plan.point, group, size, seed, param, lr)
            warn_dead(woken, group, f"{plan.point.label} channels")
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
                description=f"{plan.point.label} filters",
                **options,
            )
        )
    return parts, spreads, wakes


@full_float32()
def visualize_filters(
    model: nn.Module,
    stage: int | str,
    channels: int | Sequence[int] | None = None,
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
    `stage` (any feature map: docs/graph.md#points; "blocks.4:42" names the channel) -> [K, 3,
    size, size] in the model's normalised input space.

    The Keras example's recipe by default: start from grey noise (U - 0.5) * 0.25, L2-normalised
    gradient ascent (each step moves every image by lr * sqrt(3 size^2) in L2). `border` leaves
    that many map units out on each side (the example: 2); `regularizers` 'none', 'yosinski' or a
    list (`Decay`, `Blur`, `ClipNorm`, `ClipContribution`); `transforms` (`Jitter`, `RandomScale`,
    `Pad`); `param` 'pixels' or 'fourier' (lucid's decorrelated one); `start` an image to start
    from instead of noise (keras-vis's seed_input), [1 or K, 3, size, size]. Channels are optimised
    `batch_size` at a time, each image its own objective; channel c's image depends only on
    (seed, c), so any batching gives the same images. `details=True` returns the `Optimized`.
    """
    plan = _plan_filters(model, stage, channels, size, border, param, regularizers, start, details)
    parts, spreads, wakes = _filter_batches(
        model,
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
        objective=f"channel mean ({plan.point.label})",
        start="given image" if plan.given is not None else f"{plan.param} noise, seed {seed}",
        start_spread=spreads or None,
        wake_steps=wakes or None,
    )
    return result if details else result.images


def _check_position(position: object, map_size: tuple[int, int], label: str) -> tuple[int, int]:
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
            f"({label}'s {h}x{w} map), got {position!r}"
        )
    return int(position[0]), int(position[1])


@dataclass(frozen=True)
class _UnitPlan:
    """`visualize_units`' checked request: the feature map, the channels, the image size, the
    unit (y, x) in its map, the part of the image optimised (top, left, bottom, right) and
    the unit's (y, x) in its map, the receptive field's box, the regularisers."""

    point: MapPoint
    channels: list[int]
    size: int
    unit: tuple[int, int]
    crop: tuple[int, int, int, int]
    position: tuple[int, int]
    box: tuple[int, int, int, int]
    regularizers: list


def _plan_units(
    model: nn.Module,
    stage: object,
    channels: object,
    size: object,
    position: object,
    crop: bool,
    regularizers: object,
    details: object,
) -> _UnitPlan:
    """`visualize_units`' arguments checked, in its order (ValueError naming the argument), and
    where the unit's receptive field lies (the whole image optimised unless `crop`); the
    optimisation's own options are checked by `_unit_batches`."""
    check_bool("crop", crop)
    check_bool("details", details)
    point, named = map_point(model, stage)
    channels = check_channels(model, point, named if channels is None and named is not None else channels)
    size = check_size(model, size, point.key)
    y, x = _check_position(position, map_size(model, point, size, size), point.label)
    where = unit_crop(model, point, size, y, x)
    top, left, bottom, right = where.crop if crop else (0, 0, size, size)
    uy, ux = where.position if crop else (y, x)
    regs = regularizer_preset(regularizers)
    return _UnitPlan(point, channels, size, (y, x), (top, left, bottom, right), (uy, ux), where.box, regs)


def _unit_batches(
    model: nn.Module, plan: _UnitPlan, batch_size: int, negate: bool, seed: int, lr: float, **options: Any
) -> tuple[list[Optimized], list[float], list[int]]:
    """The units optimised `batch_size` channels at a time, each from the full image's seeded
    noise cropped (`noise_starts`), each step the full image's L2 length -> (each batch's
    Optimized, start spread per channel, wake steps per channel). options: the rest of
    `optimize`'s keyword arguments, checked here before any work (`check_run`)."""
    check_run(
        options["steps"], lr, seed, batch_size, options["transforms"], options["step_rule"], negate=negate
    )
    check_bool("progress", options["progress"])
    (y, x), (uy, ux), size = plan.unit, plan.position, plan.size
    top, left, bottom, right = plan.crop
    parts, spreads, wakes = [], [], []
    for group in batches(plan.channels, batch_size):
        objective = obj.unit(plan.point.key, list(group), uy, ux)
        start, spread, woken = noise_starts(
            model, objective, plan.point, group, size, seed, "pixels", lr, plan.crop, (uy, ux)
        )
        # (crop=False passes the whole image as its crop: the same step length either way)
        warn_dead(woken, group, f"{plan.point.label} units ({y}, {x}) of channels")
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
                description=f"{plan.point.label} units",
                **options,
            )
        )
    return parts, spreads, wakes


@full_float32()
def visualize_units(
    model: nn.Module,
    stage: int | str,
    channels: int | Sequence[int] | None = None,
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
    plan = _plan_units(model, stage, channels, size, position, crop, regularizers, details)
    parts, spreads, wakes = _unit_batches(
        model,
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
