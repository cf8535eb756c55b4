"""Turning signed reconstructions into pictures, saving them, laying them out in grids.

Display scaling follows docs/methods.md#displaying-maps: each image on its own, jointly over its channels and space,
zero at mid-grey, symmetric in sign: `0.5 + 0.5 * r / max|r|`. Never a global min-max, which would
shift zero and make tiles incomparable in sign.

Gradient-family attributions (saliency maps, SmoothGrad, integrated gradients) have their own
displays: `saliency_map` (Simonyan et al. 2014, max over colour channels of |r|), and the PAIR
(Smilkov et al. 2017) percentile-clipped `to_grayscale` and `to_diverging` / `diverging_values`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from deconvnet.core.validation import check_image_tensor

Fill = Union[float, Sequence[float]]


def _checked_images(r: torch.Tensor, name: str = "r") -> torch.Tensor:
    """Validate an image batch `[B, C, H, W]` or one image `[C, H, W]` of real, finite values.

    Returns it detached, as a floating tensor (integer and bool inputs become float32), on its
    own device. Raises ValueError naming `name` for anything else.
    """
    if not isinstance(r, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor [B, C, H, W] or [C, H, W], got {type(r).__name__}")
    if r.dim() not in (3, 4):
        raise ValueError(f"{name}: expected shape [B, C, H, W] or [C, H, W], got {list(r.shape)}")
    if r.numel() == 0:
        raise ValueError(f"{name}: empty tensor of shape {list(r.shape)}")
    if r.is_complex():
        raise ValueError(f"{name}: expected real values, got dtype {r.dtype}")
    r = r.detach()
    if not r.is_floating_point():
        r = r.float()
    if not torch.isfinite(r).all():
        raise ValueError(f"{name}: contains NaN or inf; cannot scale for display")
    return r


def to_display(r: torch.Tensor) -> torch.Tensor:
    """Per-image symmetric scaling into [0, 1] with zero at 0.5.

    r: `[B, C, H, W]` (a batch) or `[C, H, W]` (one image), any real values.
    Returns the same shape, float: `0.5 + 0.5 * r / max|r|` with max over (C, H, W) of each image;
    an all-zero image becomes uniform 0.5.
    """
    r = _checked_images(r)
    batch = r.unsqueeze(0) if r.dim() == 3 else r
    peak = batch.abs().amax(dim=(1, 2, 3), keepdim=True)
    scale = torch.where(peak > 0, 0.5 / peak, torch.zeros_like(peak))
    shown = (0.5 + batch * scale).clamp(0.0, 1.0)
    return shown[0] if r.dim() == 3 else shown


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a `[3, H, W]` or `[1, 3, H, W]` tensor with values in [0, 1] as an 8-bit PNG.

    Parent directories are created. Returns the path written.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(
            f"path: expected a file name ending in .png (str or path), got {type(path).__name__}"
        )
    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise ValueError(f"path: expected a file name ending in .png, got {str(path)!r}")
    picture = _pil(image, "image")
    target.parent.mkdir(parents=True, exist_ok=True)
    picture.save(target, format="PNG")
    return target


MAX_GRID = 10_000  # the most rows, columns or pixels of padding a grid has


def _checked_tiles(tiles: object) -> tuple[int, int, int, int]:
    """A non-empty tensor [N, C, h, w] of finite values -> its shape; ValueError naming `tiles`."""
    if not isinstance(tiles, torch.Tensor) or tiles.dim() != 4:
        shape = list(tiles.shape) if isinstance(tiles, torch.Tensor) else type(tiles).__name__
        raise ValueError(f"tiles: expected a tensor [N, C, h, w], got {shape}")
    if tiles.numel() == 0:
        raise ValueError(f"tiles: expected at least one non-empty tile, got shape {list(tiles.shape)}")
    if tiles.is_floating_point() and not bool(torch.isfinite(tiles).all()):
        raise ValueError("tiles: contains NaN or inf; expected finite values")
    return tuple(tiles.shape)


def _checked_fill(fill: object, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """One finite number or one per channel -> a tensor [] or [channels]; ValueError naming `fill`."""
    accepted = f"one value or {channels} (one per channel), finite numbers"
    items = fill.tolist() if isinstance(fill, torch.Tensor) else fill
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in items):
        raise ValueError(f"fill: expected {accepted}, got {fill!r:.60}")
    values = torch.as_tensor(fill, dtype=dtype)
    if values.dim() > 1 or (values.dim() == 1 and values.numel() not in (1, channels)):
        raise ValueError(f"fill: expected {accepted}, got {fill!r:.60}")
    return values


def tile_grid(tiles: torch.Tensor, rows: int, cols: int, pad: int = 2, fill: Fill = 1.0) -> torch.Tensor:
    """Lay `tiles` `[N, C, h, w]` out row by row in a `rows x cols` grid -> `[C, H, W]`.

    H = rows * h + (rows - 1) * pad, W = cols * w + (cols - 1) * pad: `pad` pixels of `fill`
    between tiles, none around the border. Cells beyond N are left as `fill`. `fill` is one value or
    one per channel.
    """
    n, channels, height, width = _checked_tiles(tiles)
    for name, value in (("rows", rows), ("cols", cols), ("pad", pad)):
        low = 0 if name == "pad" else 1
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r:.60}")
        if value > MAX_GRID:
            raise ValueError(f"{name}: expected an int in [{low}, {MAX_GRID}], got {value!r}")
    if n > rows * cols:
        raise ValueError(f"tiles: {n} tiles do not fit a {rows} x {cols} grid (at most {rows * cols})")
    fill_values = _checked_fill(fill, channels, tiles.dtype if tiles.is_floating_point() else torch.float32)
    grid = torch.empty(
        channels,
        rows * height + (rows - 1) * pad,
        cols * width + (cols - 1) * pad,
        dtype=fill_values.dtype,
        device=tiles.device,
    )
    grid[:] = fill_values.to(tiles.device).reshape(-1, 1, 1)
    for index in range(n):
        top = (index // cols) * (height + pad)
        left = (index % cols) * (width + pad)
        grid[:, top : top + height, left : left + width] = tiles[index]
    return grid


# --- gradient-family attribution maps ---------------------------------------------------------


def _attribution(r: torch.Tensor) -> torch.Tensor:
    """`_checked_images`, then computed in float32 at least (float64 stays float64), as `[B, C, H, W]`."""
    r = _checked_images(r)
    if r.dtype != torch.float64:
        r = r.float()
    return r.unsqueeze(0) if r.dim() == 3 else r


def _checked_percentile(percentile: float) -> float:
    """`percentile` as a float if it is a real number in (0, 100]; ValueError otherwise."""
    if (
        isinstance(percentile, bool)
        or not isinstance(percentile, numbers.Real)
        or not math.isfinite(float(percentile))
        or not 0.0 < float(percentile) <= 100.0
    ):
        raise ValueError(f"percentile: expected a real number in (0, 100], got {percentile!r}")
    return float(percentile)


def _percentile_per_image(values: torch.Tensor, percentile: float) -> torch.Tensor:
    """The `percentile`-th percentile of each row of `values` `[B, N]` -> `[B]`.

    Definition: linear interpolation between order statistics, numpy's default
    (`numpy.percentile(..., method="linear")`): with the row sorted ascending as v_0 <= ... <= v_{N-1}
    and position p = percentile / 100 * (N - 1), k = floor(p), the result is
    v_k + (p - k) * (v_{k+1} - v_k) (just v_k when p is a whole number).
    Computed from at most two `torch.kthvalue` order statistics rather than `torch.quantile`, which
    in many torch releases this project supports refuses inputs over 2**24 elements (pytorch#64947;
    a batch of a few hundred 224 x 224 maps is that large), and is slower besides.
    """
    n = values.shape[1]
    position = percentile / 100.0 * (n - 1)
    lower = min(math.floor(position), n - 1)
    fraction = position - lower
    low = values.kthvalue(lower + 1, dim=1).values
    if fraction == 0.0 or lower == n - 1:
        return low
    high = values.kthvalue(lower + 2, dim=1).values
    return low + fraction * (high - low)


def _scale_by_percentile(maps: torch.Tensor, percentile: float, limit: float) -> torch.Tensor:
    """Divide each map of `maps` `[B, H, W]` by the `percentile`-th percentile of its |values|,
    clip to [-limit, limit]. Where that percentile is 0 (all zero, or a mostly-zero map) the limit
    of the division is used: zero stays zero, anything else saturates to +-limit."""
    batch = maps.shape[0]
    peak = _percentile_per_image(maps.abs().reshape(batch, -1), percentile).view(batch, 1, 1)
    positive = peak > 0
    scaled = maps / torch.where(positive, peak, torch.ones_like(peak))
    return torch.where(positive, scaled, maps.sign() * limit).clamp(-limit, limit)


def saliency_map(r: torch.Tensor) -> torch.Tensor:
    """Simonyan et al. (2014) image-specific saliency: max over colour channels of |r|.

    r: `[B, C, H, W]` (a batch) or `[C, H, W]` (one image), e.g. an input gradient, SmoothGrad or
    integrated-gradients map. Returns `[B, H, W]` (or `[H, W]`), float, >= 0, not normalised.
    """
    batch = _attribution(r)
    saliency = batch.abs().amax(dim=1)
    return saliency[0] if r.dim() == 3 else saliency


def to_grayscale(r: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """PAIR-style grayscale display (Smilkov et al. 2017, `VisualizeImageGrayscale`).

    r: `[B, C, H, W]` or `[C, H, W]`, any real values. Per image: m = sum over C of |r|, then
    `clip(m / P, 0, 1)` with P the `percentile`-th percentile of that image's m over (H, W)
    (linear interpolation, numpy's default; see `_percentile_per_image`). Returns `[B, 1, H, W]`
    (or `[1, H, W]`), float in [0, 1]. An all-zero image gives all zeros; if P is 0 but the image
    is not, its non-zero pixels saturate to 1.

    Unlike PAIR's code, the image's minimum is not subtracted first: zero attribution stays black,
    so brightness means the same thing in every image. percentile: real, in (0, 100].
    """
    percentile = _checked_percentile(percentile)
    batch = _attribution(r)
    magnitude = batch.abs().sum(dim=1)
    shown = _scale_by_percentile(magnitude, percentile, 1.0).unsqueeze(1)
    return shown[0] if r.dim() == 3 else shown


def diverging_values(r: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Signed attribution values for a diverging display, in [-1, 1] (before colouring).

    r: `[B, C, H, W]` or `[C, H, W]`, any real values. Per image: s = sum over C of r (signed),
    then `clip(s / P, -1, 1)` with P the `percentile`-th percentile of that image's |s| over
    (H, W) (linear interpolation, numpy's default). Returns `[B, H, W]` (or `[H, W]`), float;
    sign is kept, zero stays zero; if P is 0 but the image is not, non-zero pixels become +-1.

    This is PAIR's `VisualizeImageDiverging` made symmetric: PAIR takes the percentile of the signed
    sum and maps it through `(s + P) / 2P`; here positive and negative share the scale P of |s|.
    percentile: real, in (0, 100].
    """
    percentile = _checked_percentile(percentile)
    batch = _attribution(r)
    values = _scale_by_percentile(batch.sum(dim=1), percentile, 1.0)
    return values[0] if r.dim() == 3 else values


def to_diverging(r: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Diverging RGB display of signed attributions: negative blue, zero near-white, positive red.

    r: `[B, C, H, W]` or `[C, H, W]`, any real values. The values v = `diverging_values(r,
    percentile)` in [-1, 1] are coloured with matplotlib's "RdBu_r" colour map at (v + 1) / 2, so
    -1 -> cmap(0.0), 0 -> cmap(0.5), +1 -> cmap(1.0), with matplotlib's own lookup (entry
    floor(t * N) of its N-entry table, the top end included in the last entry).
    Returns `[B, 3, H, W]` (or `[3, H, W]`), float in [0, 1], on r's device.
    """
    values = diverging_values(r, percentile)
    import matplotlib  # lazily: only this display needs it; no pyplot

    cmap = matplotlib.colormaps["RdBu_r"]
    table = torch.as_tensor(cmap(range(cmap.N))[:, :3], dtype=values.dtype, device=values.device)  # [N, 3]
    position = values * 0.5 + 0.5
    index = (position * cmap.N).floor().long().clamp(0, cmap.N - 1)
    rgb = table[index]  # [..., H, W, 3]
    return rgb.movedim(-1, -3).contiguous()


def to_pil(x: torch.Tensor) -> Image.Image:
    """A `[3, H, W]` or `[1, 3, H, W]` tensor with values in [0, 1] as an 8-bit RGB PIL image."""
    return _pil(x, "x")


def _pil(x: torch.Tensor, name: str) -> Image.Image:
    """`to_pil` of the argument `name` (named in its errors)."""
    check_image_tensor(x, name)
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"{name}: expected a single image [1, 3, H, W], got batch of {x.shape[0]}")
        x = x[0]
    x = x.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or inf; expected values in [0, 1]")
    low, high = float(x.min()), float(x.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise ValueError(
            f"{name}: expected values in [0, 1] (use denormalize() or display.to_display() first), "
            f"got range [{low:.4g}, {high:.4g}]"
        )
    levels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(levels))
