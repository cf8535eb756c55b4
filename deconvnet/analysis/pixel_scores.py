"""One score per pixel from any method's map, the order in which deletion and insertion remove or
reveal pixels (docs/faithfulness.md#one-score-per-pixel), and the maps that are not gradient-family
methods: occlusion as an attribution, a random map and a centre baseline.

- CAM maps [B, H, W] are their own scores.
- Gradient maps (gradient, guided backprop, deconvnet, their SmoothGrad, guided Grad-CAM): the
  largest |value| over the colours, as Simonyan et al.'s saliency: their sign says which way a
  pixel would move the score, not whether it supports it.
- Contributions (integrated gradients, gradient x image, LRP): the sum over the colours, signed:
  positive evidence first, negative evidence last.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deconvnet.analysis.occlusion import Occlusion
from deconvnet.gradient.methods import CAM_METHODS, METHODS

SIGNED_SUM = ("integrated_gradients", "gradient_x_image")  # and every "lrp*" method
BASELINE_MAPS = ("occlusion", "random", "centre")  # maps that are not gradient-family methods


def score_rule(method: str) -> str:
    """How `method`'s map becomes one score per pixel, in words."""
    if method in BASELINE_MAPS or (method in CAM_METHODS and method != "guided_gradcam"):
        return "the map itself"
    if method in SIGNED_SUM or method.startswith("lrp"):
        return "sum over colours (signed)"
    return "max abs over colours" if method in METHODS else "the map itself"


def pixel_scores(method: str, maps: Tensor) -> Tensor:
    """[B, 3, H, W] or [B, H, W] map of `method` -> [B, H, W] scores (module doc)."""
    if maps.dim() == 3:
        return maps
    if score_rule(method).startswith("sum"):  # [B, 3, H, W] pixel maps from here
        return maps.sum(1)
    return maps.abs().amax(1)


def occlusion_scores(result: Occlusion, size: tuple[int, int], patch: int) -> Tensor:
    """[B, H, W]: each pixel's mean drop of the target's probability over the occluder positions
    that cover it (Captum's Occlusion attribution; 0 where no position covers the pixel)."""
    drop = result.unoccluded_probability[:, None, None] - result.probability  # [B, ny, nx]
    total = drop.new_zeros(drop.shape[0], *size)
    count = drop.new_zeros(size)
    for i, top in enumerate(result.top.tolist()):
        for j, left in enumerate(result.left.tolist()):
            total[:, top : top + patch, left : left + patch] += drop[:, i, j, None, None]
            count[top : top + patch, left : left + patch] += 1
    return total / count.clamp(min=1)


def random_scores(batch: int, size: tuple[int, int], seed: int) -> Tensor:
    """[B, H, W] uniform random scores from their own generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, *size, generator=generator, dtype=torch.float64)


def centre_scores(batch: int, size: tuple[int, int]) -> Tensor:
    """[B, H, W] minus the distance to the image's centre: the centre first (the baseline of the
    pointing game, TorchRay)."""
    height, width = size
    y = torch.arange(height, dtype=torch.float64) - (height - 1) / 2
    x = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
    distance = (y[:, None] ** 2 + x[None, :] ** 2).sqrt()
    return (-distance).expand(batch, height, width).clone()
