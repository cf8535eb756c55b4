"""Random, differentiable transforms applied to the image before every forward pass (lucid's
"transformation robustness"): jitter, random scale, padding.

Each transform is `t(x, generator) -> x` for x [B, 3, H, W]. Random draws come from the loop's
seeded CPU generator and are shared by the whole batch, so optimising K objectives together
gives each image exactly the transforms it would get alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.core.validation import check_count, check_real

Transform = Callable[[Tensor, torch.Generator], Tensor]


def _draw_int(generator: torch.Generator, low: int, high: int) -> int:
    """A uniform int in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


@dataclass(frozen=True)
class Jitter:
    """Roll the image by (dy, dx), each uniform in [-pixels, pixels] (Deep Dream's jitter: what
    leaves one side comes back on the other)."""

    pixels: int

    def __post_init__(self) -> None:
        check_count("jitter", self.pixels, low=0)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.pixels == 0:
            return x
        dy = _draw_int(generator, -self.pixels, self.pixels)
        dx = _draw_int(generator, -self.pixels, self.pixels)
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


@dataclass(frozen=True)
class RandomScale:
    """Resize by a factor drawn uniformly from `scales` (bilinear, no antialias, as lucid)."""

    scales: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.scales, (list, tuple)) or not self.scales:
            raise ValueError(f"scales: expected a non-empty list of factors > 0, got {self.scales!r}")
        for s in self.scales:
            if check_real("scales", s) <= 0:
                raise ValueError(f"scales: expected factors > 0, got {s!r}")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        scale = self.scales[_draw_int(generator, 0, len(self.scales) - 1)]
        if scale == 1:
            return x
        size = [max(1, round(x.shape[2] * scale)), max(1, round(x.shape[3] * scale))]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class Pad:
    """Pad every side by `pixels` with `value` (0 = the dataset mean colour in the normalised
    space) or by reflection, so that jitter does not wrap the content into view."""

    pixels: int
    mode: str = "constant"
    value: float = 0.0

    def __post_init__(self) -> None:
        check_count("pad", self.pixels, low=0)
        if self.mode not in ("constant", "reflect", "replicate"):
            raise ValueError(f"pad mode: expected 'constant', 'reflect' or 'replicate', got {self.mode!r}")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if self.pixels == 0:
            return x
        p = (self.pixels,) * 4
        if self.mode == "constant":
            return F.pad(x, p, mode="constant", value=self.value)
        return F.pad(x, p, mode=self.mode)


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply `transforms` in order."""
    transforms = tuple(transforms)
    for t in transforms:
        if not callable(t):
            raise ValueError(f"transforms: expected callables t(x, generator), got {t!r}")

    def apply(x: Tensor, generator: torch.Generator) -> Tensor:
        for t in transforms:
            x = t(x, generator)
        return x

    return apply


def standard_transforms(jitter: int = 8) -> list[Transform]:
    """lucid's default robustness set, in input pixels: pad, jitter, small random scale."""
    return [
        Pad(jitter * 2),
        Jitter(jitter),
        RandomScale((0.95, 0.975, 1.0, 1.025, 1.05)),
        Jitter(jitter // 2),
    ]
