"""Batches of signals that each live in a window of a feature map.

A seed's reconstruction is zero outside its receptive field (docs/mirror.md#restriction-to-the-receptive-field), so the mirror
carries, per seed, only a window of every level: `Region.signal[k]` holds map positions
`[origin_y[k], origin_y[k] + Ly) x [origin_x[k], origin_x[k] + Lx)` of image `image[k]`'s map.
Positions of a window that fall outside the map are padding and always hold zero.
A whole feature map is the special case origin 0 and window = map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Region:
    """signal [K, C, Ly, Lx]; image, origin_y, origin_x: [K] int64 on the CPU (map coordinates of
    signal[..., 0, 0]); the signal may live on any device. owned: no one else holds the signal's
    storage (set by mirror stages that allocate it), so the next stage may overwrite it."""

    signal: Tensor
    image: Tensor
    origin_y: Tensor
    origin_x: Tensor
    owned: bool = False  # the signal is a fresh tensor of the mirror's own: may change in place

    @property
    def size(self) -> tuple[int, int]:
        return int(self.signal.shape[-2]), int(self.signal.shape[-1])


def is_channels_last(maps: Tensor) -> bool:
    """Whether [B, C, H, W] maps (C > 1) keep channels innermost in memory (NHWC), views too."""
    return maps.dim() == 4 and maps.shape[1] > 1 and maps.stride(1) == 1


def gather_window(
    maps: Tensor,
    image: Tensor,
    origin_y: Tensor,
    origin_x: Tensor,
    size: tuple[int, int],
    fill: float | int | bool = 0,
) -> Tensor:
    """Cut one window per seed out of per-image maps.

    maps [B, C, H, W]; image, origin_y, origin_x [K] -> [K, C, size[0], size[1]], where entry k is
    maps[image[k], :, origin_y[k] + i, origin_x[k] + j], and `fill` where that lies outside the map.
    Keeps the maps' memory layout. The result may be a view of `maps` (seeds sharing one window,
    or whole maps): read it, do not write into it.
    """
    B, C, H, W = maps.shape
    ly, lx = size
    k = image.shape[0]
    iy, ix = origin_y.tolist(), origin_x.tolist()
    if ly == H and lx == W and not any(iy) and not any(ix):
        if k == B and torch.equal(image, torch.arange(B)):
            return maps
        if bool((image == image[0]).all()):  # one image for every seed: a view, no copy
            return maps[int(image[0])].expand(k, C, H, W)
        return maps[image.to(maps.device)]  # (index_select is slow on bool maps)
    if k > 1 and bool((image == image[0]).all()) and len(set(iy)) == 1 and len(set(ix)) == 1:
        # one window for every seed: cut it once, a view for the rest
        return gather_window(maps, image[:1], origin_y[:1], origin_x[:1], size, fill).expand(k, C, ly, lx)
    layout = torch.channels_last if is_channels_last(maps) else torch.contiguous_format
    out = torch.empty((k, C, ly, lx), dtype=maps.dtype, device=maps.device, memory_format=layout).fill_(fill)
    for n, (b, oy, ox) in enumerate(zip(image.tolist(), iy, ix)):
        y0, y1 = max(oy, 0), min(oy + ly, H)
        x0, x1 = max(ox, 0), min(ox + lx, W)
        if y0 < y1 and x0 < x1:
            out[n, :, y0 - oy : y1 - oy, x0 - ox : x1 - ox] = maps[b, :, y0:y1, x0:x1]
    return out


def reframe(region: Region, origin_y: Tensor, origin_x: Tensor, size: tuple[int, int]) -> Region:
    """The same signals in new windows (crop or zero-pad); exact because outside values are zero."""
    k = region.signal.shape[0]
    rel_y, rel_x = origin_y - region.origin_y, origin_x - region.origin_x
    local = torch.arange(k)
    signal = gather_window(region.signal, local, rel_y, rel_x, size, 0)
    return Region(signal, region.image, origin_y, origin_x)


def fit_to_map(region: Region, map_size: tuple[int, int]) -> Region:
    """Drop window positions that lie outside the map for every seed, and zero the rest of them.

    A window longer than the map becomes the map itself; otherwise rows/columns that are padding
    for all seeds of the batch are cut, and positions that are padding for some seeds are zeroed.
    """
    H, W = map_size
    ly, lx = region.size
    oy, ox = region.origin_y, region.origin_x
    if ly >= H or lx >= W:
        new_y = torch.zeros_like(oy) if ly >= H else oy
        new_x = torch.zeros_like(ox) if lx >= W else ox
        region = reframe(region, new_y, new_x, (H if ly >= H else ly, W if lx >= W else lx))
        ly, lx = region.size
        oy, ox = region.origin_y, region.origin_x
    # cut what is padding for every seed
    cut_top = max(0, int((-oy).clamp(min=0).min()))
    cut_bottom = max(0, int((oy + ly - H).clamp(min=0).min()))
    cut_left = max(0, int((-ox).clamp(min=0).min()))
    cut_right = max(0, int((ox + lx - W).clamp(min=0).min()))
    if cut_top or cut_bottom or cut_left or cut_right:
        signal = region.signal[..., cut_top : ly - cut_bottom, cut_left : lx - cut_right]
        oy, ox = oy + cut_top, ox + cut_left
        ly, lx = ly - cut_top - cut_bottom, lx - cut_left - cut_right
        region = Region(signal, region.image, oy, ox, region.owned)
    # zero what is padding for some seeds
    if bool((oy < 0).any() or (oy + ly > H).any() or (ox < 0).any() or (ox + lx > W).any()):
        rows = oy[:, None] + torch.arange(ly)
        cols = ox[:, None] + torch.arange(lx)
        valid = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
        valid = valid[:, None].to(device=region.signal.device, dtype=region.signal.dtype)
        signal = region.signal.mul_(valid) if region.owned else region.signal * valid
        region = Region(signal, region.image, oy, ox, True)
    return region
