"""A traced model's ops in order, its points (module paths) and their feature-map geometry.

`ModelGraph.of(model)` traces once per model (cached while the model lives) and checks every node
(`deconvnet.core.graph`). A point of the graph is a module path: the output of a leaf module
("layer1.0.conv1") or of a block ("layer3.1", "blocks.4": the last node computed inside it).
Shapes come from running the graph on the meta device (no memory, no arithmetic); receptive
fields from the union of every path's window (docs/graph.md#receptive-fields-on-a-graph).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deconvnet.core.graph import Op, node_op, trace
from deconvnet.core.graph_ops import forward, pair, same_padding

_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Window:
    """A unit's window at one node, per axis (vertical, horizontal): positions
    [y * jump + start, y * jump + start + size)."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]


class ModelGraph:
    """The ops of a model's traced graph in execution order, with lookups by name and path."""

    def __init__(self, model: nn.Module) -> None:
        graph = trace(model)
        self.ops: list[Op] = [node_op(node, model) for node in graph.nodes]
        self.by_name = {op.name: op for op in self.ops}
        inputs = [op for op in self.ops if op.kind == "input"]
        if len(inputs) != 1:
            raise ValueError(
                f"model: its forward takes {len(inputs)} inputs; the mirror needs one image batch"
            )
        self.input = inputs[0].name
        self.output = self.ops[-1].inputs[0]
        self.position = {op.name: i for i, op in enumerate(self.ops)}
        self.paths = self._paths()
        self._shapes = {}
        self.windows: dict[tuple[str, int, int], dict[str, Window]] = {}  # graph_windows, kept
        self.stages: list | None = None  # the model's stages, filled in by core.architecture
        self.min_sides: dict[str, int] = {}  # node -> smallest input side, filled in by core.geometry
        shapes = self.shapes(1, 3, 64, 64)
        for op in self.ops:
            if op.kind == "cat":
                op.args["channels"] = tuple(shapes[name][1] for name in op.inputs)
        self.fold_batch_norms()

    def fold_batch_norms(self) -> None:
        """Mark each batch norm read only from a convolution read by nothing else: the mirror then
        applies the norm's scale through that convolution's weight (exact: conv^T (s * g) =
        (s W)^T g, s along the convolution's output channels)."""
        readers = self.consumers()
        for op in self.ops:
            if op.kind not in ("bn", "bn_act"):
                continue
            below = self.by_name[op.inputs[0]]
            if below.kind in ("conv", "conv_same") and readers[below.name] == [op.name]:
                op.args["folded"] = True
                below.args["bn"] = op.module

    @staticmethod
    def of(model: nn.Module) -> ModelGraph:
        """The model's graph, traced on first use and kept while the model lives."""
        if not isinstance(model, nn.Module):
            raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        graph = _GRAPHS.get(model)
        if graph is None:
            graph = ModelGraph(model)
            _GRAPHS[model] = graph
        return graph

    def _paths(self) -> dict[str, str]:
        """Module path -> the node that is its output (the last node computed inside it)."""
        paths: dict[str, str] = {}
        for op in self.ops:
            if op.kind in ("input", "output"):
                continue
            for scope in op.scopes:
                paths[scope] = op.name
            if op.module is not None:
                paths[op.path] = op.name
        return paths

    def shapes(
        self, batch: int, channels: int, height: int, width: int, until: str | None = None
    ) -> dict[str, tuple[int, ...]]:
        """Op name -> output shape for an input [batch, channels, height, width], from a pass on
        the meta device up to node `until` (default: all); whole passes are kept per size."""
        key = (channels, height, width)
        if until is None and key in self._shapes:
            return {name: (batch,) + shape[1:] for name, shape in self._shapes[key].items()}
        values: dict[str, Tensor] = {}
        out = {}
        dtype = next(
            (p.dtype for op in self.ops if op.module is not None for p in op.module.parameters()), None
        )
        for op in self.ops:
            if op.kind == "input":
                values[op.name] = torch.empty(1, channels, height, width, device="meta", dtype=dtype)
            else:
                values[op.name] = forward(meta_op(op), [values[name] for name in op.inputs], None)
            out[op.name] = tuple(values[op.name].shape)
            if op.name == until:
                break
        if until is None:
            if len(self._shapes) > 16:
                self._shapes.clear()
            self._shapes[key] = out
        return {name: (batch,) + shape[1:] for name, shape in out.items()}

    def head_position(self) -> int:
        """Position of the first node that pools globally, flattens or is linear (the head): the
        nodes before it are the feature maps."""
        head = ("adaptive_avgpool", "flatten", "linear")
        return min((self.position[op.name] for op in self.ops if op.kind in head), default=len(self.ops))

    def consumers(self) -> dict[str, list[str]]:
        """Op name -> names of the ops that read it."""
        readers: dict[str, list[str]] = {op.name: [] for op in self.ops}
        for op in self.ops:
            for name in op.inputs:
                readers[name].append(op.name)
        return readers


class MetaModule:
    """A module's attributes with its tensors on the meta device (for shape passes)."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module

    def __getattr__(self, name: str):
        value = getattr(self._module, name)
        return value.to("meta") if isinstance(value, Tensor) else value


def meta_op(op: Op) -> Op:
    """The same op reading its module's tensors on the meta device."""
    if op.module is None:
        return op
    return Op(op.name, op.kind, op.inputs, MetaModule(op.module), op.path, op.scopes, op.args)


def op_span(op: Op, size: tuple[int, int]) -> tuple[tuple[int, int, int, int], ...] | None:
    """Per axis (kernel, stride, padding before, dilation) of a spatial op at an input of `size`;
    None for ops that keep every position where it is."""
    m = op.module
    if op.kind == "conv":
        padding = (0, 0) if m.padding == "valid" else pair(m.padding)
        return tuple(zip(pair(m.kernel_size), pair(m.stride), padding, pair(m.dilation)))
    if op.kind == "conv_same":
        left, _, top, _ = same_padding(size, m)
        return tuple(zip(pair(m.kernel_size), pair(m.stride), (top, left), pair(m.dilation)))
    if op.kind in ("maxpool", "avgpool"):
        dilation = pair(m.dilation) if op.kind == "maxpool" else (1, 1)
        stride = pair(m.stride or m.kernel_size)
        return tuple(zip(pair(m.kernel_size), stride, pair(m.padding), dilation))
    if op.kind in ("adaptive_avgpool", "flatten", "linear"):
        raise ValueError(f"stage: {op.path or op.name} comes after a global pooling; it has no spatial field")
    return None


def union(a: Window | None, b: Window) -> Window:
    """The smallest window holding both (the jumps of every path must agree)."""
    if a is None:
        return b
    if a.jump != b.jump:
        raise ValueError(f"model: paths with different strides ({a.jump} and {b.jump}) meet")
    start = tuple(min(x, y) for x, y in zip(a.start, b.start))
    end = tuple(max(x + n, y + k) for x, n, y, k in zip(a.start, a.size, b.start, b.size))
    return Window(tuple(e - s for s, e in zip(start, end)), a.jump, start)  # type: ignore[arg-type]


def graph_windows(graph: ModelGraph, top: str, height: int, width: int) -> dict[str, Window]:
    """Window of one unit of node `top` at every node it depends on (union over paths);
    `[graph.input]` is its receptive field in input pixels."""
    key = (top, height, width)
    if key in graph.windows:
        return graph.windows[key]
    shapes = graph.shapes(1, 3, height, width)
    found: dict[str, Window] = {top: Window((1, 1), (1, 1), (0, 0))}
    for op in reversed(graph.ops[: graph.position[top] + 1]):
        w = found.get(op.name)
        if w is None or op.kind == "input":
            continue
        span = op_span(op, tuple(shapes[op.inputs[0]][-2:]))
        if span is not None:
            size = tuple((n - 1) * s + d * (k - 1) + 1 for n, (k, s, p, d) in zip(w.size, span))
            start = tuple(a * s - p for a, (k, s, p, d) in zip(w.start, span))
            jump = tuple(j * s for j, (k, s, p, d) in zip(w.jump, span))
            w = Window(size, jump, start)  # type: ignore[arg-type]
        for name in set(op.inputs):
            found[name] = union(found.get(name), w)
    graph.windows[key] = found
    return found
