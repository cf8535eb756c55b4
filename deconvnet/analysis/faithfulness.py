"""Deletion and insertion (Petsiuk, Das & Saenko, BMVC 2018, "RISE"): how faithful a map is.

A map ranks the pixels of its image; the pixels are changed in that order, most important first,
in `steps` equal parts, and the softmax probability of the target class is recorded after each
part (docs/faithfulness.md):

- deletion: start from the image and replace its pixels (all three channels) by the baseline's;
  a faithful map makes the probability fall fast (low area under the curve),
- insertion: start from the baseline and put the image's pixels back; a faithful map makes the
  probability rise fast (high area under the curve).

Deletion is Samek et al.'s (2017) "most relevant first" region perturbation, one pixel a region.
Step i (0..steps) has changed round(i * H * W / steps) pixels (halves rounded up). The order is a
stable sort of the map's values, decreasing (ties: the earlier pixel in row-major order first); a
map with channels [C, H, W] is summed over them first. Baselines: "blur" (the image blurred by
RISE's 11 x 11 Gaussian of sigma 5, replicate padding), "zero" (the mean colour) or a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.layout import channels_last_on_cpu
from deconvnet.core.modes import eval_function
from deconvnet.core.precision import full_float32
from deconvnet.core.targets import Channel, Unit, resolve_target
from deconvnet.core.validation import check_count, check_images, is_int

BASELINES = ("blur", "zero")
BLUR_SIZE = 11
"""Side of the blur kernel in pixels (RISE's `klen`)."""
BLUR_SIGMA = 5.0
"""Standard deviation of the blur kernel's Gaussian in pixels (RISE's `ksig`)."""
_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default, which RISE's kernel is made with


@dataclass(frozen=True)
class Faithfulness:
    """Deletion or insertion curves of M maps (M = B images, or K targets of one image).

    curve: [M, steps + 1] the target's softmax probability after each step (the model's dtype);
    auc: [M] the area under each curve over the fraction of pixels changed (trapezoid rule on
    [0, 1]); fractions: [steps + 1] the fraction of pixels changed at each step, 0 to 1;
    target: [M] long, the class of each curve. All on the CPU.

    Lower deletion AUC is better (the probability falls as soon as the map's top pixels go);
    higher insertion AUC is better (it rises as soon as they come back).
    """

    curve: Tensor
    auc: Tensor
    fractions: Tensor
    target: Tensor


def blur_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """[size] float64: one factor of RISE's `gkern(size, sigma)` (outer(k, k) is the 2-D kernel).

    RISE smooths a centred unit impulse on a size x size grid with scipy's `gaussian_filter`
    (truncated at 4 sigma, 'reflect' boundary): the Gaussian's tails beyond the grid fold back onto
    it, so the kernel sums to 1 exactly. The same sums are done here without scipy.
    """
    radius = int(_TRUNCATE * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = weights / weights.sum()
    source = torch.arange(size)[:, None] + torch.arange(-radius, radius + 1)[None, :]
    folded = source % (2 * size)
    folded = torch.where(folded >= size, 2 * size - 1 - folded, folded)  # scipy's 'reflect'
    return (weights[None, :] * (folded == size // 2)).sum(dim=1)


def blurred(images: Tensor, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """[B, C, H, W] -> [B, C, H, W]: each channel convolved with RISE's Gaussian kernel
    (`blur_kernel`, applied along rows then columns), the border replicated outwards."""
    k = blur_kernel(size, sigma).to(device=images.device, dtype=images.dtype)
    c, pad = images.shape[1], size // 2
    x = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)


def step_counts(pixels: int, steps: int) -> Tensor:
    """[steps + 1] long: pixels changed after step i = round(i * pixels / steps), halves up
    (integer arithmetic: no float rounding), from 0 to `pixels`."""
    i = torch.arange(steps + 1, dtype=torch.long)
    return (2 * i * pixels + steps) // (2 * steps)


def pixel_ranks(maps: Tensor) -> Tensor:
    """[M, H, W] -> [M, H * W] long: each pixel's place in the order (0 = changed first): values
    decreasing, ties in row-major order (a stable sort)."""
    flat = maps.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    places = torch.arange(flat.shape[1]).expand_as(order)
    return ranks.scatter_(1, order, places)


def check_maps(maps: object, images: Tensor) -> Tensor:
    """`maps` [M, H, W] or [M, C, H, W] at the images' size, finite -> [M, H, W] float64 on the
    CPU (channels summed); ValueError naming `maps` otherwise."""
    h, w = images.shape[-2:]
    accepted = f"[M, {h}, {w}] or [M, C, {h}, {w}] (the images' size)"
    if not isinstance(maps, Tensor) or maps.is_complex() or maps.dtype == torch.bool or maps.is_meta:
        raise ValueError(f"maps: expected a real tensor {accepted}, got {maps!r:.60}")
    if maps.dim() not in (3, 4) or tuple(maps.shape[-2:]) != (h, w) or 0 in maps.shape:
        raise ValueError(f"maps: expected shape {accepted}, got {list(maps.shape)}")
    values = maps.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"maps: contains {bad} NaN or infinite value(s); all values must be finite")
    return values.sum(dim=1) if values.dim() == 4 else values


def check_steps(steps: object, pixels: int) -> int:
    """`steps` as an int in 1..pixels; ValueError naming `steps` otherwise."""
    if not is_int(steps) or not 1 <= int(steps) <= pixels:
        raise ValueError(
            f"steps: expected an int in 1..{pixels} (at least one pixel per step), got {steps!r}"
        )
    return int(steps)


def check_baseline(baseline: object, images: Tensor) -> str | Tensor:
    """'blur', 'zero' or a finite float tensor broadcastable to the images' [B, 3, H, W] (then
    returned expanded to it); ValueError naming `baseline` otherwise."""
    accepted = f"'blur', 'zero' or a float tensor broadcastable to {list(images.shape)}"
    if isinstance(baseline, str) and baseline in BASELINES:
        return baseline
    if not isinstance(baseline, Tensor) or not baseline.is_floating_point() or baseline.is_meta:
        raise ValueError(f"baseline: expected {accepted}, got {baseline!r:.60}")
    try:
        shape = torch.broadcast_shapes(baseline.shape, images.shape)
    except RuntimeError:
        shape = None
    if shape != images.shape:
        raise ValueError(f"baseline: expected {accepted}, got shape {list(baseline.shape)}")
    if not bool(torch.isfinite(baseline).all()):
        raise ValueError("baseline: contains NaN or infinite values; all values must be finite")
    return baseline.expand(images.shape)


def check_class_target(model: nn.Module, target: object, batch: int) -> tuple[Tensor, Tensor | None]:
    """None, a class int, a [B] tensor of classes or a list of K classes (one image) -> (image
    [M] long: the image of each map, classes [M] long or None for the predicted class)."""
    units = isinstance(target, (Unit, Channel)) or (
        isinstance(target, (list, tuple)) and not all(is_int(c) for c in target)
    )
    if units:
        raise ValueError(
            "target: expected None (each image's predicted class), a class int, a [B] integer "
            f"tensor of classes or a list of class ints (one image), got {target!r:.80}"
        )
    rows = resolve_target(model, target, batch, {})
    return rows.image, rows.classes


def laid_out(pair: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """On the CPU, the images channels-last ([B, 3, H, W], strides of [B, H, W, 3]): the masked
    inputs built from them keep that layout, with which oneDNN's convolutions and max pooling
    run faster on a batch; on other devices the images as they are. Only rounding changes."""
    return tuple(channels_last_on_cpu(t) for t in pair)


def _curves(
    model: nn.Module,
    start: Tensor,
    finish: Tensor,
    inputs: tuple[Tensor, Tensor, Tensor, Tensor],
    batch_size: int,
) -> Tensor:
    """[M, steps + 1] probabilities. start / finish [B, 3, H, W]: the images at step 0 and at the
    last step; inputs: (image [M], classes [M], ranks [M, H * W], counts [steps + 1]). Every
    (map, step) input is built only when its batch of `batch_size` goes through the model."""
    image, classes, ranks, counts = inputs
    m, points = ranks.shape[0], counts.shape[0]
    height, width = start.shape[-2:]
    out = torch.empty(m * points, dtype=start.dtype, device=start.device)
    for first in range(0, m * points, batch_size):
        pair = torch.arange(first, min(first + batch_size, m * points), device=start.device)
        row, step = pair // points, pair % points
        changed = (ranks[row] < counts[step][:, None]).view(-1, 1, height, width)
        x = torch.where(changed, finish[image[row]], start[image[row]])
        out[pair] = model(x).softmax(dim=1).gather(1, classes[row][:, None])[:, 0]
    return out.view(m, points)


def _faithfulness(
    mode: str,
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: object,
    steps: int,
    baseline: object,
    batch_size: int,
) -> Faithfulness:
    """`deletion` (mode "deletion") or `insertion` (mode "insertion"): validation, then curves."""
    check_images(images, model)
    values = check_maps(maps, images)
    height, width = images.shape[-2:]
    steps = check_steps(steps, height * width)
    batch_size = check_count("batch_size", batch_size)
    image, classes = check_class_target(model, target, images.shape[0])
    if values.shape[0] != image.shape[0]:
        what = "one per target of the list" if image.shape[0] != images.shape[0] else "one per image"
        raise ValueError(
            f"maps: expected {image.shape[0]} maps ({what}), got {values.shape[0]} (shape {list(maps.shape)})"
        )
    baseline = check_baseline(baseline, images)
    weight = next(model.parameters())
    x = images.detach().to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad(), eval_function(model):
        if classes is None:
            classes = model(x).argmax(dim=1).cpu()[image]
        if isinstance(baseline, Tensor):
            base = baseline.detach().to(device=x.device, dtype=x.dtype)
        else:
            base = blurred(x) if baseline == "blur" else torch.zeros_like(x)
        counts = step_counts(height * width, steps)
        inputs = (image, classes, pixel_ranks(values), counts)
        inputs = tuple(t.to(x.device) for t in inputs)
        start, finish = laid_out((x, base) if mode == "deletion" else (base, x))
        curve = _curves(model, start, finish, inputs, batch_size).cpu()
    fractions = counts.to(curve.dtype) / (height * width)
    auc = torch.trapezoid(curve, fractions, dim=1)
    return Faithfulness(curve=curve, auc=auc, fractions=fractions, target=classes.cpu())


@full_float32()
def deletion(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: object = None,
    steps: int = 100,
    baseline: object = "blur",
    *,
    batch_size: int = 64,
) -> Faithfulness:
    """Deletion curves: images [B, 3, H, W] (normalised), maps [B, H, W] or [B, C, H, W] (channels
    summed) -> `Faithfulness` ([B, steps + 1] curves, [B] AUCs; lower is better).

    The map's top pixels are replaced by the baseline's, round(i * H * W / steps) of them after
    step i, until the whole image is the baseline. target: None (each image's predicted class on
    the unchanged image), a class int, a [B] tensor of classes, or a list of K classes with one
    image and K maps [K, ...]. baseline: "blur" (RISE's Gaussian blur of the image), "zero" (the
    mean colour) or a tensor broadcastable to [B, 3, H, W]. `batch_size` (map, step) inputs go
    through the model together, under no_grad and in eval mode; every module's training flag is
    restored afterwards (docs/faithfulness.md).
    """
    return _faithfulness("deletion", model, images, maps, target, steps, baseline, batch_size)


@full_float32()
def insertion(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: object = None,
    steps: int = 100,
    baseline: object = "blur",
    *,
    batch_size: int = 64,
) -> Faithfulness:
    """Insertion curves: as `deletion`, but from the baseline, the image's pixels put back in the
    map's order -> `Faithfulness` ([B, steps + 1] curves, [B] AUCs; higher is better)."""
    return _faithfulness("insertion", model, images, maps, target, steps, baseline, batch_size)
