"""Turning signed reconstructions into pictures, saving them, laying them out in grids.

Display scaling follows DESIGN.md 4.6: each image on its own, jointly over its channels and space,
zero at mid-grey, symmetric in sign: `0.5 + 0.5 * r / max|r|`. Never a global min-max, which would
shift zero and make tiles incomparable in sign.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import torch

from deconvnet.images import to_pil

Fill = Union[float, Sequence[float]]


def to_display(r: torch.Tensor) -> torch.Tensor:
    """Per-image symmetric scaling into [0, 1] with zero at 0.5.

    r: `[B, C, H, W]` (a batch) or `[C, H, W]` (one image), any real values.
    Returns the same shape, float: `0.5 + 0.5 * r / max|r|` with max over (C, H, W) of each image;
    an all-zero image becomes uniform 0.5.
    """
    if not isinstance(r, torch.Tensor):
        raise ValueError(
            f"r: expected a torch.Tensor [B, C, H, W] or [C, H, W], got {type(r).__name__}"
        )
    if r.dim() not in (3, 4):
        raise ValueError(f"r: expected shape [B, C, H, W] or [C, H, W], got {list(r.shape)}")
    if r.numel() == 0:
        raise ValueError(f"r: empty tensor of shape {list(r.shape)}")
    r = r.detach()
    if not r.is_floating_point():
        r = r.float()
    if not torch.isfinite(r).all():
        raise ValueError("r: contains NaN or inf; cannot scale for display")
    batch = r.unsqueeze(0) if r.dim() == 3 else r
    peak = batch.abs().amax(dim=(1, 2, 3), keepdim=True)
    scale = torch.where(peak > 0, 0.5 / peak, torch.zeros_like(peak))
    shown = (0.5 + batch * scale).clamp(0.0, 1.0)
    return shown[0] if r.dim() == 3 else shown


def save_png(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a `[3, H, W]` or `[1, 3, H, W]` tensor with values in [0, 1] as an 8-bit PNG.

    Parent directories are created. Returns the path written.
    """
    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise ValueError(f"path: expected a file name ending in .png, got {str(path)!r}")
    picture = to_pil(image)
    target.parent.mkdir(parents=True, exist_ok=True)
    picture.save(target, format="PNG")
    return target


def tile_grid(
    tiles: torch.Tensor,
    rows: int,
    cols: int,
    pad: int = 2,
    fill: Fill = 1.0,
) -> torch.Tensor:
    """Lay `tiles` `[N, C, h, w]` out row by row in a `rows x cols` grid -> `[C, H, W]`.

    H = rows * h + (rows - 1) * pad, W = cols * w + (cols - 1) * pad: `pad` pixels of `fill`
    between tiles, none around the border. Cells beyond N are left as `fill`. `fill` is one value or
    one per channel.
    """
    if not isinstance(tiles, torch.Tensor) or tiles.dim() != 4:
        shape = list(tiles.shape) if isinstance(tiles, torch.Tensor) else type(tiles).__name__
        raise ValueError(f"tiles: expected a tensor [N, C, h, w], got {shape}")
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad: expected an int >= 0, got {pad!r}")
    n, channels, height, width = tiles.shape
    if n > rows * cols:
        raise ValueError(f"tiles: {n} tiles do not fit a {rows} x {cols} grid (at most {rows * cols})")
    dtype = tiles.dtype if tiles.is_floating_point() else torch.float32
    fill_values = torch.as_tensor(fill, dtype=dtype)
    if fill_values.dim() > 1 or (fill_values.dim() == 1 and fill_values.numel() not in (1, channels)):
        raise ValueError(f"fill: expected one value or {channels} (one per channel), got {fill!r}")
    grid = torch.empty(
        channels, rows * height + (rows - 1) * pad, cols * width + (cols - 1) * pad,
        dtype=fill_values.dtype, device=tiles.device,
    )
    grid[:] = fill_values.to(tiles.device).reshape(-1, 1, 1)
    for index in range(n):
        top = (index // cols) * (height + pad)
        left = (index % cols) * (width + pad)
        grid[:, top : top + height, left : left + width] = tiles[index]
    return grid
