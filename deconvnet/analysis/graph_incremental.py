"""Incremental occlusion on any CNN's traced graph, exact (docs/graph.md#occlusion-on-a-graph).

The chain version (`deconvnet.analysis.incremental`) walks `model.features`; this one walks the
nodes of the traced graph (`ModelGraph`) up to a top node (stage 5). The unoccluded image's node
outputs are computed once; for a batch of occluder positions every node is recomputed only in a
window holding the positions it can change (per node and axis: a changed interval [lo, hi) per
position, a window of one shared length):

- convolution (TF "same" padding included), max pooling (ceil_mode included), average pooling:
  outputs [ceil((a + p - e + 1) / s), floor((b - 1 + p) / s) + 1) of changed inputs [a, b), run
  with padding 0 on the window's input cut from the cached map, padded once (zeros, -inf for max
  pooling), with the input's recomputed window written over it;
- batch norm, ReLU, ReLU6, identity, a constant's product or sum, indexing that keeps the spatial
  axes: the input's windows, pointwise;
- residual add, concatenation: the union of the inputs' changed intervals; each input is read from
  its cached map with its own recomputed window written over it.

Anything else before the top node (a global pooling, an attention gate) is a ValueError naming the
node, before any heavy work: method="brute" still runs it. After the top node the graph runs on
the full maps (`head`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from deconvnet.analysis.incremental import Windows, field_windows, shared_windows
from deconvnet.core.graph import Op
from deconvnet.core.graph_model import ModelGraph, op_span
from deconvnet.core.graph_ops import batch_norm, bn_scale, forward

POINTWISE = ("bn", "bn_act", "relu", "relu6", "identity", "scale", "shift")
KERNELS = ("conv", "conv_same", "maxpool", "avgpool")
JOINS = ("add", "cat")


@dataclass(frozen=True)
class Step:
    """How one node is recomputed in windows: `role` ('input', 'pointwise', 'kernel', 'join'),
    its output size (h, w) and, for a kernel, per axis (vertical, horizontal) its extent, stride,
    padding before and after the input (after: what the last window needs), pad value."""

    op: Op
    role: str
    size: tuple[int, int]
    extent: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    before: tuple[int, int] = (0, 0)
    after: tuple[int, int] = (0, 0)
    pad_value: float = 0.0


def refused(op: Op, why: str) -> ValueError:
    """The error for a node incremental occlusion cannot recompute in windows."""
    return ValueError(
        f"method: incremental occlusion cannot recompute node {op.name} "
        f"({op.path or 'top level'}, {op.kind}) inside the occluder's field: {why}; "
        "use method='brute' (one full forward pass per position)"
    )


def keeps_positions(op: Op, shape_in: tuple[int, ...], shape_out: tuple[int, ...]) -> bool:
    """Whether indexing / unsqueeze leaves the batch and the two spatial axes alone (GoogLeNet's
    input transform: x[:, 0], unsqueeze(1)), so that it acts on a window as on the map."""
    if len(shape_out) < 3 or shape_in[-2:] != shape_out[-2:] or shape_in[0] != shape_out[0]:
        return False
    if op.kind == "unsqueeze":
        dim = op.args["dim"] + (len(shape_out) if op.args["dim"] < 0 else 0)
        return 1 <= dim <= len(shape_out) - 3
    index = op.args["index"] if isinstance(op.args["index"], tuple) else (op.args["index"],)
    plain = all(isinstance(i, (int, slice)) and not isinstance(i, bool) for i in index)
    return plain and index[0] == slice(None) and len(index) <= len(shape_in) - 2


def kernel_step(op: Op, size_in: tuple[int, int], size_out: tuple[int, int]) -> Step:
    """The Step of a convolution or pooling at an input of `size_in`."""
    span = op_span(op, size_in)
    if op.kind == "avgpool":
        m = op.module
        floor_out = tuple((n + 2 * p - k) // s + 1 for n, (k, s, p, d) in zip(size_in, span))
        if m.ceil_mode and floor_out != tuple(size_out):
            raise refused(op, "AvgPool2d with ceil_mode=True divides its last windows by fewer inputs")
        if not m.count_include_pad and any(p for k, s, p, d in span):
            raise refused(op, "AvgPool2d with count_include_pad=False divides by a varying count")
    extent = tuple(d * (k - 1) + 1 for k, s, p, d in span)
    after = tuple(
        max(0, (n_out - 1) * s + e - p - n_in)
        for (k, s, p, d), e, n_in, n_out in zip(span, extent, size_in, size_out)
    )
    return Step(
        op,
        "kernel",
        size_out,
        extent,  # type: ignore[arg-type]
        tuple(s for k, s, p, d in span),  # type: ignore[arg-type]
        tuple(p for k, s, p, d in span),  # type: ignore[arg-type]
        after,  # type: ignore[arg-type]
        -float("inf") if op.kind == "maxpool" else 0.0,
    )


def ancestors(graph: ModelGraph, top: str) -> set[str]:
    """Names of the nodes `top` depends on, itself included."""
    found, todo = {top}, [top]
    while todo:
        for name in graph.by_name[todo.pop()].inputs:
            if name not in found:
                found.add(name)
                todo.append(name)
    return found


def plan_steps(graph: ModelGraph, top: str, height: int, width: int) -> list[Step]:
    """The Steps of every node `top` depends on, in execution order, for an input of
    height x width; ValueError naming the first node that cannot run in windows (shape pass on the
    meta device only: call it before any heavy work)."""
    shapes = graph.shapes(1, 3, height, width)
    needed = ancestors(graph, top)
    steps = []
    for op in graph.ops[: graph.position[top] + 1]:
        if op.name not in needed:
            continue
        out = shapes[op.name]
        if op.kind == "input":
            steps.append(Step(op, "input", tuple(out[-2:])))
            continue
        first = shapes[op.inputs[0]]
        if len(out) != 4 and op.kind not in ("getitem", "unsqueeze"):
            raise refused(op, f"its output {list(out)} is not a feature map [B, C, H, W]")
        if op.kind in POINTWISE or (op.kind in ("getitem", "unsqueeze") and keeps_positions(op, first, out)):
            steps.append(Step(op, "pointwise", tuple(out[-2:])))
        elif op.kind in KERNELS:
            steps.append(kernel_step(op, tuple(first[-2:]), tuple(out[-2:])))
        elif op.kind in JOINS:
            steps.append(Step(op, "join", tuple(out[-2:])))
        else:
            raise refused(op, "its output changes beyond a window of its input (not a local op)")
    return steps


def union_windows(parts: list[Windows], n: int) -> Windows:
    """Along one axis, the smallest interval [N] holding every part's changed interval (empty
    parts ignored), in windows of one shared length."""
    big = torch.full_like(parts[0].lo, n + 1)
    lo = torch.stack([torch.where(w.hi > w.lo, w.lo, big) for w in parts]).amin(dim=0)
    hi = torch.stack([torch.where(w.hi > w.lo, w.hi, -1) for w in parts]).amax(dim=0)
    empty = hi <= lo
    lo, hi = torch.where(empty, 0, lo), torch.where(empty, 0, hi)
    return shared_windows(lo, hi, n)


def step_windows(
    steps: list[Step], top: Tensor, left: Tensor, patch: tuple[int, int]
) -> dict[str, tuple[Windows, Windows]]:
    """Node name -> (rows, columns) Windows for occluders patch[0] x patch[1] at top-left corners
    (top [N], left [N]): the positions each node recomputes (geometry only, no values)."""
    found: dict[str, tuple[Windows, Windows]] = {}
    for step in steps:
        op = step.op
        if step.role == "input":
            found[op.name] = (
                Windows(top, top + patch[0], top, patch[0]),
                Windows(left, left + patch[1], left, patch[1]),
            )
        elif step.role == "pointwise":
            found[op.name] = found[op.inputs[0]]
        elif step.role == "kernel":
            found[op.name] = tuple(  # type: ignore[assignment]
                field_windows(w, e, s, b, n)
                for w, e, s, b, n in zip(
                    found[op.inputs[0]], step.extent, step.stride, step.before, step.size
                )
            )
        else:
            found[op.name] = tuple(  # type: ignore[assignment]
                union_windows([found[name][axis] for name in op.inputs], step.size[axis]) for axis in (0, 1)
            )
    return found


def pixel_rows(maps: Tensor) -> Tensor:
    """[N, C, H, W] -> [N * H * W, C]: one row per pixel (a view of a channels-last map)."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def window_read(
    source: Tensor,
    origin: tuple[list[int], list[int]],
    size: tuple[int, int],
    values: Tensor,
    at: tuple[list[int], list[int]],
) -> Tensor:
    """[N, C, ry, rx] (channels last): per position n, the region of `size` at origin[.][n] of
    source [1, C, Hs, Ws] (a cached map), with the recomputed values[n] [C, ly, lx] (at at[.][n])
    written over it. Whole pixel rows (C values) are gathered, once for the cached part and once
    for the recomputed part."""
    (ry, rx), (ly, lx), count = size, values.shape[-2:], len(origin[0])
    offsets_y = {y - v for y, v in zip(origin[0], at[0])}
    offsets_x = {x - v for x, v in zip(origin[1], at[1])}
    if len(offsets_y) == 1 and len(offsets_x) == 1:  # one offset: maybe inside the values for all
        oy, ox = offsets_y.pop(), offsets_x.pop()
        if 0 <= oy and oy + ry <= ly and 0 <= ox and ox + rx <= lx:
            return values[:, :, oy : oy + ry, ox : ox + rx]
    ys = torch.tensor(origin[0])[:, None] + torch.arange(ry)  # [N, ry] source rows
    xs = torch.tensor(origin[1])[:, None] + torch.arange(rx)
    vy, vx = ys - torch.tensor(at[0])[:, None], xs - torch.tensor(at[1])[:, None]  # in the values
    covered = (((vy >= 0) & (vy < ly))[:, :, None] & ((vx >= 0) & (vx < lx))[:, None, :]).flatten()
    from_cache = (ys[:, :, None] * source.shape[-1] + xs[:, None, :]).flatten()
    n = torch.arange(count)[:, None, None]
    from_values = (
        n * (ly * lx) + vy.clamp(0, ly - 1)[:, :, None] * lx + vx.clamp(0, lx - 1)[:, None, :]
    ).flatten()
    cached, recomputed = pixel_rows(source), pixel_rows(values)
    device = source.device
    if int(covered.sum()) * 2 < covered.numel():  # mostly cached: one gather, then the values
        out = cached.index_select(0, from_cache.to(device))
    else:  # mostly recomputed: the cached ring alone
        out = cached.new_empty((covered.numel(), cached.shape[1]))
        ring = (~covered).nonzero().flatten()
        out.index_copy_(0, ring.to(device), cached.index_select(0, from_cache[ring].to(device)))
    inside = covered.nonzero().flatten()
    source_rows = from_values[inside]
    if len(source_rows) == recomputed.shape[0]:  # every recomputed pixel, in order
        out.index_copy_(0, inside.to(device), recomputed)
    else:
        out.index_copy_(0, inside.to(device), recomputed.index_select(0, source_rows.to(device)))
    return out.view(count, ry, rx, -1).permute(0, 3, 1, 2)


def shares_memory(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors are views of one storage (an in-place or aliasing op's result)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def channels_last(x: Tensor) -> Tensor:
    """A [B, C, H, W] map in channels-last memory (other tensors as they are)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def activation(x: Tensor, kind: str, in_place: bool) -> Tensor:
    """ReLU / ReLU6 / identity, in place when the caller owns x."""
    if kind == "relu":
        return x.relu_() if in_place else F.relu(x)
    if kind == "relu6":
        return F.relu6(x, inplace=in_place)
    return x


def run_unpadded(op: Op, x: Tensor, folded: tuple[Tensor, Tensor | None] | None = None) -> Tensor:
    """A convolution or pooling node on an input that already carries its padding; `folded`:
    the convolution's (weight, bias) with the batch norm after it folded in."""
    m = op.module
    if op.kind in ("conv", "conv_same"):
        weight, bias = folded if folded is not None else (m.weight, m.bias)
        if x.device.type == "cpu" and x.dtype == torch.float64:
            x = x.contiguous()  # no oneDNN in float64: the native convolution wants NCHW
        return F.conv2d(x, weight, bias, m.stride, 0, m.dilation, m.groups)
    if op.kind == "maxpool":
        return F.max_pool2d(x, m.kernel_size, m.stride or m.kernel_size, 0, m.dilation)
    return F.avg_pool2d(x, m.kernel_size, m.stride or m.kernel_size, 0, False, True, m.divisor_override)


def fold_norm(conv, norm) -> tuple[Tensor, Tensor]:
    """(weight, bias) of a convolution followed by an eval batch norm, as one convolution:
    W s and (b - mean) s + beta, s = gamma / sqrt(var + eps) per output channel."""
    scale = bn_scale(norm)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    shift = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
    return conv.weight * scale[:, None, None, None], (bias - norm.running_mean) * scale + shift


def run_ops(ops: list[Op], values: dict[str, Tensor], keep: set[str] | None = None) -> dict[str, Tensor]:
    """Every op's eval-mode forward in order, reading and filling `values` (name -> output);
    with `keep`, an output no later op reads is dropped unless kept (memory)."""
    last_use = {name: i for i, op in enumerate(ops) for name in op.inputs}
    for i, op in enumerate(ops):
        if op.name not in values:
            values[op.name] = forward(op, [values[name] for name in op.inputs], None)
        for name in set(op.inputs) if keep is not None else ():
            if last_use[name] == i and name not in keep:
                del values[name]
    return values


def head_ops(graph: ModelGraph, top: str) -> list[Op]:
    """The nodes after `top` (its global pooling and classifier); ValueError when one of them
    reads a node before `top` other than `top` (occlusion reruns only the head on `top`'s maps)."""
    after = graph.ops[graph.position[top] + 1 :]
    later = {op.name for op in after}
    for op in after:
        for name in op.inputs:
            if name != top and name not in later:
                raise ValueError(
                    f"model: node {op.name} ({op.path or 'top level'}) after stage 5 reads node {name} "
                    f"from before it; occlusion needs a head that reads the stage-5 output only"
                )
    return [op for op in after if op.kind != "output"]


def graph_head(graph: ModelGraph, top: str, maps: Tensor) -> Tensor:
    """Stage maps [N, C, h, w] of node `top` -> the model's output [N, classes] (eval function)."""
    return run_ops(head_ops(graph, top), {top: maps}, {graph.output})[graph.output]


def graph_stage(graph: ModelGraph, top: str, images: Tensor) -> Tensor:
    """Images [N, 3, H, W] -> node `top`'s output [N, C, h, w]: one full forward pass each."""
    ops = [op for op in graph.ops[: graph.position[top] + 1] if op.kind != "input"]
    return run_ops(ops, {graph.input: images}, {top})[top]


class GraphIncremental:
    """One image's graph up to node `top` with a batch of occluders, recomputed only in windows.

    `cache` holds the unoccluded image's output of every node `top` depends on (channels last);
    `run(patches, top, left)` takes the occluded pixels [N, 3, P, Q] at top-left corners ([N]
    long, CPU) and returns `top`'s full maps [N, C, h, w] for each position. A batch norm read
    only from a convolution is folded into it (exact up to rounding), ReLUs run in place on
    tensors no other node reads.
    """

    def __init__(self, graph: ModelGraph, top: str, x: Tensor) -> None:
        self.graph, self.top = graph, top
        self.steps = plan_steps(graph, top, *x.shape[-2:])
        ops = [step.op for step in self.steps if step.role != "input"]
        computed = run_ops(ops, {graph.input: channels_last(x)})
        self.cache = {name: channels_last(value) for name, value in computed.items()}
        self.padded = {
            step.op.name: channels_last(
                F.pad(
                    self.cache[step.op.inputs[0]],
                    (step.before[1], step.after[1], step.before[0], step.after[0]),
                    value=step.pad_value,
                )
            )
            for step in self.steps
            if step.role == "kernel"
        }
        self.last_use = {name: i for i, step in enumerate(self.steps) for name in step.op.inputs}
        readers = graph.consumers()
        self.single = {name for name, found in readers.items() if len(found) == 1}
        self.folded = {
            step.op.name: fold_norm(step.op.module, step.op.args["bn"])
            for step in self.steps
            if step.op.kind in ("conv", "conv_same") and "bn" in step.op.args
        }

    def run(self, patches: Tensor, top: Tensor, left: Tensor) -> Tensor:
        """[N, 3, P, Q] occluded pixels at corners ([N], [N]) -> [N, C, h, w] maps of `top`."""
        windows = step_windows(self.steps, top, left, tuple(patches.shape[-2:]))
        starts = {name: (w[0].start.tolist(), w[1].start.tolist()) for name, w in windows.items()}
        values: dict[str, Tensor] = {}
        owned: set[str] = set()  # nodes whose values are fresh tensors of this run
        for i, step in enumerate(self.steps):
            op = step.op
            if step.role == "input":
                values[op.name] = patches
                continue
            if step.role == "pointwise":
                below, x = op.inputs[0], values[op.inputs[0]]
                mine = below in owned and below in self.single  # no other node reads x: may change
                values[op.name] = self.pointwise(op, x, mine)
                if mine or not shares_memory(values[op.name], x):
                    owned.add(op.name)
            elif step.role == "kernel":
                values[op.name] = self.kernel(step, windows[op.name], starts, values)
                owned.add(op.name)
            else:
                rows, cols = windows[op.name]
                reads = [
                    window_read(
                        self.cache[name],
                        starts[op.name],
                        (rows.length, cols.length),
                        values[name],
                        starts[name],
                    )
                    for name in op.inputs
                ]
                values[op.name] = forward(op, reads, None)
                owned.add(op.name)
            for name in set(op.inputs):
                if self.last_use[name] == i:
                    del values[name]
        full = self.cache[self.top]
        zeros = [0] * len(top)
        return window_read(full, (zeros, zeros), tuple(full.shape[-2:]), values[self.top], starts[self.top])

    def pointwise(self, op: Op, x: Tensor, in_place: bool) -> Tensor:
        """A pointwise node on recomputed windows [N, C, ly, lx]; a folded batch norm is the
        identity (its convolution applied it), its activation stays."""
        if op.kind in ("relu", "relu6"):
            return activation(x, op.kind, in_place)
        if op.kind in ("bn", "bn_act") and op.args.get("folded"):
            return activation(x, op.args.get("act", "identity"), in_place)
        if op.kind == "bn_act":
            return activation(batch_norm(x, op.module), op.args["act"], True)
        return forward(op, [x], None)

    def kernel(
        self,
        step: Step,
        windows: tuple[Windows, Windows],
        starts: dict[str, tuple[list[int], list[int]]],
        values: dict[str, Tensor],
    ) -> Tensor:
        """A convolution / pooling on its output windows: [N, C', ly, lx]."""
        op, (sy, sx) = step.op, step.stride
        rows, cols = windows
        origin = ([y * sy for y in starts[op.name][0]], [x * sx for x in starts[op.name][1]])
        size = ((rows.length - 1) * sy + step.extent[0], (cols.length - 1) * sx + step.extent[1])
        below, maps = starts[op.inputs[0]], values[op.inputs[0]]
        folded = self.folded.get(op.name)
        whole = maps.shape[-2:] == self.cache[op.inputs[0]].shape[-2:]
        if whole and len(set(origin[0])) == len(set(origin[1])) == 1:
            # whole input maps and one region for every position: pad them as the cache was, cut it
            pads = (step.before[1], step.after[1], step.before[0], step.after[0])
            padded = F.pad(maps, pads, value=step.pad_value)
            top, left = origin[0][0], origin[1][0]
            return run_unpadded(op, padded[:, :, top : top + size[0], left : left + size[1]], folded)
        at = ([y + step.before[0] for y in below[0]], [x + step.before[1] for x in below[1]])
        return run_unpadded(op, window_read(self.padded[op.name], origin, size, maps, at), folded)


def conv_macs(op: Op, count: int, size: tuple[int, int]) -> int:
    """Multiply-adds of a convolution node computing `count` output windows of `size` (0 for
    any other node)."""
    if op.kind not in ("conv", "conv_same"):
        return 0
    m = op.module
    kernel = m.weight.shape[-2] * m.weight.shape[-1]
    return count * m.out_channels * size[0] * size[1] * (m.in_channels // m.groups) * kernel


def head_macs(graph: ModelGraph, top: str, height: int, width: int) -> int:
    """Multiply-adds of the convolutions and linear layers after node `top`, per image."""
    shapes, total = graph.shapes(1, 3, height, width), 0
    for op in graph.ops[graph.position[top] + 1 :]:
        if op.kind == "linear":
            total += op.module.in_features * op.module.out_features
        total += conv_macs(op, 1, tuple(shapes[op.name][-2:]))
    return total
