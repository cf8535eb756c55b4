"""Regularisers applied to the pixels after each step (Yosinski et al. 2015, "Understanding Neural
Networks Through Deep Visualization"), and the proximal steps of Simonyan et al.'s penalties.

Each is `r(x, grad, step)` and changes the normalised pixels `x` [B, 3, H, W] in place (0 is the
dataset mean colour); `grad` is the step's gradient of the objective. They act per image, so a
batch of independent objectives is regularised exactly as each alone. Differentiable penalties
(Lp, alpha norm, total variation) are objectives instead (`objectives.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from deconvnet.core.validation import check_count, check_real


@dataclass(frozen=True)
class Decay:
    """L2 decay, x <- (1 - rate) x: Yosinski's r = (1 - theta_decay) x, and the proximal step of
    the penalty ||x||^2 with weight rate / (2 lr) (Simonyan's class-model regulariser)."""

    rate: float

    def __post_init__(self) -> None:
        if not 0 <= check_real("decay", self.rate) < 1:
            raise ValueError(f"decay: expected a rate in [0, 1), got {self.rate!r}")

    def __call__(self, x: Tensor, grad: Tensor, step: int) -> None:
        x.mul_(1 - self.rate)


@dataclass(frozen=True)
class Shrink:
    """Soft threshold, x <- sign(x) max(|x| - amount, 0): the proximal step of an L1 penalty."""

    amount: float

    def __post_init__(self) -> None:
        check_real("shrink", self.amount)

    def __call__(self, x: Tensor, grad: Tensor, step: int) -> None:
        x.copy_(torch.sign(x) * (x.abs() - self.amount).clamp_min(0))


def gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """1-D normalised Gaussian [2r + 1], r = ceil(3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def mirrored(n: int, radius: int, device: torch.device) -> Tensor:
    """Indices -radius .. n + radius - 1 reflected into 0..n-1 without repeating the edge
    (scipy's "mirror"), as often as a short side needs."""
    index = torch.arange(-radius, n + radius, device=device)
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    index = index.remainder(period)
    return torch.where(index >= n, period - index, index)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of [B, C, H, W] per channel, mirrored borders (any image size)."""
    k = gaussian_kernel(sigma, x.dtype, x.device)
    r = k.numel() // 2
    y = x.index_select(2, mirrored(x.shape[2], r, x.device))
    y = (y.unfold(2, k.numel(), 1) * k).sum(-1)
    y = y.index_select(3, mirrored(x.shape[3], r, x.device))
    return (y.unfold(3, k.numel(), 1) * k).sum(-1)


@dataclass(frozen=True)
class Blur:
    """Gaussian blur of width `sigma` pixels every `every` steps (Yosinski: 1.0 every 4)."""

    sigma: float
    every: int = 1

    def __post_init__(self) -> None:
        if check_real("blur sigma", self.sigma) <= 0:
            raise ValueError(f"blur sigma: expected a width > 0 pixels, got {self.sigma!r}")
        check_count("blur every", self.every)

    def __call__(self, x: Tensor, grad: Tensor, step: int) -> None:
        if (step + 1) % self.every == 0:
            x.copy_(gaussian_blur(x, self.sigma))


def _below_percentile(score: Tensor, percentile: float) -> Tensor:
    """[B, H, W] bool: pixels whose score is below the image's own `percentile`."""
    flat = score.flatten(1)
    flat = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    cut = torch.quantile(flat, percentile / 100.0, dim=1, keepdim=True)
    return (flat < cut).view_as(score)


@dataclass(frozen=True)
class ClipNorm:
    """Zero the pixels whose colour-vector norm is below the image's `percentile` (Yosinski)."""

    percentile: float

    def __post_init__(self) -> None:
        if not 0 <= check_real("clip norm percentile", self.percentile) <= 100:
            raise ValueError(f"clip norm percentile: expected 0..100, got {self.percentile!r}")

    def __call__(self, x: Tensor, grad: Tensor, step: int) -> None:
        x.masked_fill_(_below_percentile(x.norm(dim=1), self.percentile)[:, None], 0.0)


@dataclass(frozen=True)
class ClipContribution:
    """Zero the pixels whose contribution |sum over colour of x * grad| (the first-order change
    of the objective if the pixel were set to 0) is below the image's `percentile` (Yosinski)."""

    percentile: float

    def __post_init__(self) -> None:
        if not 0 <= check_real("clip contribution percentile", self.percentile) <= 100:
            raise ValueError(f"clip contribution percentile: expected 0..100, got {self.percentile!r}")

    def __call__(self, x: Tensor, grad: Tensor, step: int) -> None:
        contribution = (x * grad).sum(dim=1).abs()
        x.masked_fill_(_below_percentile(contribution, self.percentile)[:, None], 0.0)


@dataclass(frozen=True)
class Clamp:
    """Keep each channel within [low, high] (e.g. the normalised values of colours in [0, 1])."""

    low: Tensor
    high: Tensor

    def __call__(self, x: Tensor, grad: Tensor, step: int) -> None:
        torch.maximum(torch.minimum(x, self.high), self.low, out=x)
