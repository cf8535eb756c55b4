"""The graph mirror inside receptive fields: each seed's signal kept only in its window of every
node (docs/graph.md#restriction-to-the-receptive-field).

A single unit's reconstruction is zero outside its receptive field, and at every node its signal
is zero outside the unit's window there (the union over the paths that reach the node). So, as on
the chain (`deconvnet.core.windows.Region`), each seed carries only a window of every map:
convolutions and pools map a window [a, b) of their output onto [a s - p, (b - 1) s - p + e) of
their input, positions outside the map are cut or zeroed, and where branches meet (the input of a
residual block) their windows are joined before the signals are summed. Exact: what is dropped is
zero. Nodes without a windowed adjoint (adaptive pooling, flatten, linear, indexing) take the whole
map, where the windowed signal is placed first.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.core.graph import Op
from deconvnet.core.graph_ops import (
    ADJOINT,
    GraphRecord,
    bn_scale,
    pair,
    relu_adjoint,
    same_padding,
    tied_weight,
)
from deconvnet.core.mirror import unpool_window
from deconvnet.core.windows import Region, fit_to_map, gather_window, reframe


def merge(regions: list[Region]) -> Region:
    """The sum of signals of the same seeds in different windows, in the union of the windows."""
    if len(regions) == 1:
        return regions[0]
    top = torch.stack([r.origin_y for r in regions]).amin(0)
    left = torch.stack([r.origin_x for r in regions]).amin(0)
    bottom = torch.stack([r.origin_y + r.size[0] for r in regions]).amax(0)
    right = torch.stack([r.origin_x + r.size[1] for r in regions]).amax(0)
    size = (int((bottom - top).max()), int((right - left).max()))
    total = None
    for r in regions:
        placed = reframe(r, top, left, size).signal
        total = placed if total is None else total + placed
    return Region(total, regions[0].image, top, left, True)


def mask_of(op: Op, region: Region, record: GraphRecord) -> Tensor:
    """The recorded ReLU / ReLU6 mask in each seed's window [K, C, Ly, Lx]."""
    return gather_window(
        record.masks[op.name], region.image, region.origin_y, region.origin_x, region.size, False
    )


def with_signal(region: Region, signal: Tensor) -> Region:
    return Region(signal, region.image, region.origin_y, region.origin_x, True)


def act_region(op: Op, region: Region, record: GraphRecord, rule: str) -> Region:
    """ReLU / ReLU6 backward rule on the window (the mask cut to it)."""
    mask = mask_of(op, region, record) if rule != "deconvnet" else None
    if mask is not None and mask.dtype != region.signal.dtype:
        mask = mask.to(region.signal.dtype)
    return with_signal(region, relu_adjoint(region.signal, mask, rule))


def bn_region(op: Op, region: Region) -> Region:
    """Batch norm's scale on the window (or nothing: folded into the convolution below)."""
    if op.args.get("folded"):
        return region
    return with_signal(region, region.signal * bn_scale(op.module).to(region.signal.dtype)[:, None, None])


def spatial_span(op: Op, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((stride_y, stride_x), (pad_top, pad_left)) of a convolution or pooling at input `size`."""
    m = op.module
    if op.kind == "conv_same":
        left, _, top, _ = same_padding(size, m)
        return pair(m.stride), (top, left)
    if op.kind == "conv":
        return pair(m.stride), (0, 0) if m.padding == "valid" else pair(m.padding)
    return pair(m.stride or m.kernel_size), pair(m.padding)


def conv_region(op: Op, region: Region, record: GraphRecord) -> Region:
    """Tied transposed convolution of a window, placed at origin * s - p, cut to the map."""
    m = op.module
    size = tuple(record.shapes[op.name][-2:])
    (sy, sx), (py, px) = spatial_span(op, size)
    signal, weight = tied_weight(op, region.signal, record)
    out = F.conv_transpose2d(signal, weight, None, (sy, sx), 0, 0, m.groups, pair(m.dilation))
    below = Region(out, region.image, region.origin_y * sy - py, region.origin_x * sx - px, True)
    return fit_to_map(below, size)


def maxpool_region(op: Op, region: Region, record: GraphRecord) -> Region:
    """Unpooling of a window through its switches (collisions summed), cut to the map."""
    m = op.module
    height, width = record.shapes[op.name][-2:]
    (sy, sx), (py, px) = spatial_span(op, (height, width))
    (ky, kx), (dy, dx) = pair(m.kernel_size), pair(m.dilation)
    ly, lx = region.size
    origin = (region.origin_y * sy - py, region.origin_x * sx - px)
    size = ((ly - 1) * sy + dy * (ky - 1) + 1, (lx - 1) * sx + dx * (kx - 1) + 1)
    return unpool_window(region, record.switches[op.name], origin, size, (height, width))


def whole_map_adjoint(op: Op, region: Region, record: GraphRecord, rule: str) -> list[Region]:
    """Any node on whole maps: the signal placed on its map, the node's whole-map adjoint."""
    shape = record.shapes.get(f"{op.name}:out")
    zero = torch.zeros_like(region.image)
    if region.signal.dim() == 4 and shape is not None:  # placed on its whole map (a view if it is)
        region = reframe(region, zero, zero, tuple(shape[-2:]))
    parts = ADJOINT[op.kind](op, region.signal, record, rule, region.image)
    return [Region(p, region.image, zero, zero, False) for p in parts]


def avgpool_region(op: Op, region: Region, record: GraphRecord, rule: str) -> list[Region]:
    """Average pooling without padding: every window's signal spread evenly (a depthwise
    transposed convolution with 1 / (kh kw)); with padding or ceil_mode, on the whole map."""
    m = op.module
    if pair(m.padding) != (0, 0) or m.ceil_mode or m.divisor_override is not None:
        return whole_map_adjoint(op, region, record, rule)
    (ky, kx), (sy, sx) = pair(m.kernel_size), pair(m.stride or m.kernel_size)
    c = region.signal.shape[1]
    kernel = region.signal.new_full((c, 1, ky, kx), 1.0 / (ky * kx))
    out = F.conv_transpose2d(region.signal, kernel, None, (sy, sx), 0, 0, c)
    below = Region(out, region.image, region.origin_y * sy, region.origin_x * sx, True)
    return [fit_to_map(below, tuple(record.shapes[op.name][-2:]))]


def channel_region(op: Op, region: Region, record: GraphRecord, rule: str) -> list[Region]:
    """Indexing / unsqueeze that touch only batch and channel dimensions, on the window."""
    g = region.signal
    if op.kind == "unsqueeze":
        return [with_signal(region, g.squeeze(op.args["dim"]))]
    index = op.args["index"]
    if not isinstance(index, tuple) or len(index) > 2 or index[0] != slice(None):
        return whole_map_adjoint(op, region, record, rule)
    out = g.new_zeros((g.shape[0], record.shapes[op.name][1], *g.shape[-2:]))
    out[index] = g
    return [with_signal(region, out)]


def cat_region(op: Op, region: Region, record: GraphRecord, rule: str) -> list[Region]:
    parts = region.signal.split(list(op.args["channels"]), dim=1)
    return [Region(p, region.image, region.origin_y, region.origin_x, False) for p in parts]


def shared(region: Region, count: int) -> list[Region]:
    """The same signal handed to `count` inputs (not owned: nobody may change it in place)."""
    return [Region(region.signal, region.image, region.origin_y, region.origin_x, False)] * count


REGION_ADJOINT: dict[str, Callable[[Op, Region, GraphRecord, str], list[Region]]] = {
    "output": lambda op, r, record, rule: [r],
    "identity": lambda op, r, record, rule: [r],
    "shift": lambda op, r, record, rule: [r],
    "add": lambda op, r, record, rule: shared(r, 2),
    "scale": lambda op, r, record, rule: [with_signal(r, r.signal * op.args["factor"])],
    "bn": lambda op, r, record, rule: [bn_region(op, r)],
    "relu": lambda op, r, record, rule: [act_region(op, r, record, rule)],
    "relu6": lambda op, r, record, rule: [act_region(op, r, record, rule)],
    "conv": lambda op, r, record, rule: [conv_region(op, r, record)],
    "conv_same": lambda op, r, record, rule: [conv_region(op, r, record)],
    "maxpool": lambda op, r, record, rule: [maxpool_region(op, r, record)],
    "avgpool": avgpool_region,
    "cat": cat_region,
    "getitem": channel_region,
    "unsqueeze": channel_region,
}


def region_adjoint(op: Op, region: Region, record: GraphRecord, rule: str) -> list[Region]:
    """The windowed signal at each tensor input of `op` (in `op.inputs` order)."""
    if op.kind == "bn_act":
        if op.args["act"] != "identity":
            region = act_region(op, region, record, rule)
        return REGION_ADJOINT["bn"](op, region, record, rule)
    return REGION_ADJOINT.get(op.kind, whole_map_adjoint)(op, region, record, rule)
