"""Incremental inference for occlusion (Nakandala et al., SIGMOD 2019, "Krypton"), exact.

An occluder changes a layer's input only inside a window; the layer's output then changes only
inside that window's projective field: along one axis, a module with kernel extent e, stride s and
padding p maps changed inputs [a, b) onto changed outputs [ceil((a + p - e + 1) / s),
floor((b - 1 + p) / s) + 1), clipped to the map (the dual of `deconvnet.core.geometry`'s rule). So the
unoccluded image's activations are computed once and, for every occluder position, each layer is
recomputed only in a window holding that field; everything outside is read from the cache.

Windows of one layer have one size for every position (the largest field, slid inside the map at
the borders), so a batch of positions runs as one convolution with padding 0 on windows cut from
the zero-padded cached map (-inf padding for max pooling). The values in a window that did not
change are recomputed, not copied, which is harmless: the result is the full forward pass of the
occluded image up to float rounding (tests: relative 1e-4 against one forward pass per position).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deconvnet.core.geometry import Span, check_supported, spans


@dataclass(frozen=True)
class Windows:
    """Per occluder position, along one axis: the changed interval [lo, hi) of a map and the
    computed window [start, start + length) that holds it (`length` is shared by all positions)."""

    lo: Tensor  # [N] long
    hi: Tensor  # [N] long
    start: Tensor  # [N] long
    length: int


def field_windows(changed: Windows, extent: int, stride: int, padding: int, n_out: int) -> Windows:
    """Along one axis, the outputs [lo, hi) [N] of a window op (kernel extent, stride, padding
    before the input, output length `n_out`) that read a changed input [lo, hi) [N], and a window
    of one shared length holding them, slid inside the map at its end."""
    p, e, s = padding, extent, stride
    lo = torch.clamp(torch.div(changed.lo + p - e + 1 + s - 1, s, rounding_mode="floor"), min=0)
    hi = torch.clamp(torch.div(changed.hi - 1 + p, s, rounding_mode="floor") + 1, max=n_out)
    hi = torch.maximum(hi, lo)  # nothing read the change (possible with stride > extent)
    return shared_windows(lo, hi, n_out)


def shared_windows(lo: Tensor, hi: Tensor, n: int) -> Windows:
    """Changed intervals [lo, hi) [N] of a map of length n in windows of one length (the longest
    interval, at least 1), each starting at its interval or slid back inside the map."""
    length = max(1, int((hi - lo).max()))
    start = torch.minimum(lo, torch.full_like(lo, n - length))
    return Windows(lo, hi, start, length)


def output_windows(changed: Windows, span: Span, n_in: int) -> tuple[Windows, int]:
    """The changed output interval of a module (`span`, input length `n_in`) for each position and
    a shared-size window holding it -> (Windows of the output, output length)."""
    n_out = span.output_length(n_in)
    return field_windows(changed, span.extent, span.stride, span.padding, n_out), n_out


def _pad_value(module: nn.Module) -> float:
    return -math.inf if isinstance(module, nn.MaxPool2d) else 0.0


def _read_windows(
    padded: Tensor,
    rows: Windows,
    cols: Windows,
    span_y: Span,
    span_x: Span,
    prev: tuple[Windows, Windows],
    values: Tensor,
) -> Tensor:
    """[N, C, ry, rx]: per position, the padded input a module's output window reads, from the
    cached map `padded` [1, C, H + 2p, W + 2p] with the position's recomputed window `values`
    [N, C, ly, lx] (at `prev`, unpadded coordinates) written over it."""
    ry = (rows.length - 1) * span_y.stride + span_y.extent
    rx = (cols.length - 1) * span_x.stride + span_x.extent
    ys = (rows.start * span_y.stride).tolist()
    xs = (cols.start * span_x.stride).tolist()
    out = torch.stack([padded[0, :, y : y + ry, x : x + rx] for y, x in zip(ys, xs)])
    py = (prev[0].start + span_y.padding).tolist()
    px = (prev[1].start + span_x.padding).tolist()
    ly, lx = values.shape[-2:]
    for n, (y0, x0, y1, x1) in enumerate(zip(ys, xs, py, px)):
        top, left = max(y0, y1), max(x0, x1)
        bottom, right = min(y0 + ry, y1 + ly), min(x0 + rx, x1 + lx)
        if top < bottom and left < right:
            out[n, :, top - y0 : bottom - y0, left - x0 : right - x0] = values[
                n, :, top - y1 : bottom - y1, left - x1 : right - x1
            ]
    return out


def _run_unpadded(module: nn.Module, x: Tensor) -> Tensor:
    """`module` on an input that already carries its padding."""
    if isinstance(module, nn.Conv2d):
        return F.conv2d(x, module.weight, module.bias, module.stride, 0, module.dilation, module.groups)
    return F.max_pool2d(x, module.kernel_size, module.stride, 0, module.dilation)


def check_incremental(features: nn.Sequential) -> None:
    """ValueError naming the first module incremental inference cannot run exactly."""
    for index, module in enumerate(features):
        check_supported(module, index)
        if isinstance(module, nn.MaxPool2d) and module.ceil_mode:
            raise ValueError(
                f"model.features[{index}]: MaxPool2d with ceil_mode=True is not "
                "supported by incremental occlusion (use method='brute')"
            )


def cached_forward(features: nn.Sequential, x: Tensor, last: int) -> list[Tensor]:
    """[1, 3, H, W] -> the input of every module 0..last and the output of `last` (out of place)."""
    maps = [x]
    for module in list(features)[: last + 1]:
        maps.append(torch.relu(maps[-1]) if isinstance(module, nn.ReLU) else module(maps[-1]))
    return maps


class IncrementalForward:
    """The features of one image with a batch of occluders, recomputed only where they change.

    `maps` is `cached_forward` of the unoccluded image; `run(patches, top, left)` takes the
    occluded pixels [N, 3, P, P] at top-left corners `top`, `left` ([N] long) and returns the
    full output of module `last` for each position, [N, C, h, w].
    """

    def __init__(self, features: nn.Sequential, maps: list[Tensor]) -> None:
        check_incremental(features)
        self.modules = list(features)[: len(maps) - 1]
        self.maps = maps
        self.padded = [
            None
            if isinstance(m, nn.ReLU)
            else F.pad(maps[i], (spans(m)[1].padding,) * 2 + (spans(m)[0].padding,) * 2, value=_pad_value(m))
            for i, m in enumerate(self.modules)
        ]

    def run(self, patches: Tensor, top: Tensor, left: Tensor) -> Tensor:
        """[N, 3, P, P] occluded pixels at ([N], [N]) -> [N, C, h, w] output of the last module."""
        size_y, size_x = patches.shape[-2:]
        rows = Windows(top, top + size_y, top, size_y)
        cols = Windows(left, left + size_x, left, size_x)
        values = patches
        for i, module in enumerate(self.modules):
            if isinstance(module, nn.ReLU):
                values = torch.relu(values)
                continue
            span_y, span_x = spans(module)
            new_rows, _ = output_windows(rows, span_y, self.maps[i].shape[-2])
            new_cols, _ = output_windows(cols, span_x, self.maps[i].shape[-1])
            read = _read_windows(self.padded[i], new_rows, new_cols, span_y, span_x, (rows, cols), values)
            values = _run_unpadded(module, read)
            rows, cols = new_rows, new_cols
        return self._paste(values, rows, cols)

    def _paste(self, values: Tensor, rows: Windows, cols: Windows) -> Tensor:
        """The last map of the unoccluded image with each position's window written in."""
        full = self.maps[-1].expand(values.shape[0], -1, -1, -1).clone()
        ly, lx = values.shape[-2:]
        for n, (y, x) in enumerate(zip(rows.start.tolist(), cols.start.tolist())):
            full[n, :, y : y + ly, x : x + lx] = values[n]
        return full
