"""Spatial geometry of `model.features`, derived from each module's kernel, stride, padding, dilation.

Everything here follows from one rule: a module with kernel k, stride s, padding p, dilation d maps
output positions [a, b) (one axis) onto input positions [a*s - p, (b-1)*s - p + d*(k-1) + 1).
Applied from a stage back to the pixels it gives the receptive field of a stage unit; applied per
level it gives the window the deconvnet has to compute in (docs/stages.md#receptive-fields-derived, docs/mirror.md#restriction-to-the-receptive-field).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from torch import nn

from deconvnet.core.architecture import features_of, is_chain
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.architecture import stages as stages_of
from deconvnet.core.graph_model import ModelGraph, graph_windows

MAX_SIDE = 100_000  # the largest input side the geometry considers
DEFAULT_SIDE = 224  # TF-same padding depends on the map size: fields are given at this input

SUPPORTED_MODULES = (nn.Conv2d, nn.ReLU, nn.MaxPool2d)


@dataclass(frozen=True)
class Span:
    """How one module moves positions along one axis: kernel, stride, padding, dilation."""

    kernel: int = 1
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    ceil_mode: bool = False

    @property
    def extent(self) -> int:
        """Input positions one output position reads: d*(k-1) + 1."""
        return self.dilation * (self.kernel - 1) + 1

    def output_length(self, n: int) -> int:
        """Output length for an input of length n (0 when the input is too small)."""
        room = n + 2 * self.padding - self.extent
        if room < 0:
            return 0
        steps = math.ceil(room / self.stride) if self.ceil_mode else room // self.stride
        if self.ceil_mode and steps * self.stride >= n + self.padding:
            steps -= 1  # PyTorch: the last window must start inside the input or left padding
        return steps + 1


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def check_supported(module: nn.Module, index: int) -> None:
    """ValueError naming `features[index]` when the deconvnet has no mirror for it."""
    if not isinstance(module, SUPPORTED_MODULES):
        raise ValueError(
            f"model.features[{index}]: {type(module).__name__} has no deconvnet mirror "
            "(supported: Conv2d, ReLU, MaxPool2d)"
        )
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise ValueError(
            f"model.features[{index}]: Conv2d with padding_mode={module.padding_mode!r} is not "
            "supported (only 'zeros')"
        )
    if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
        raise ValueError(
            f"model.features[{index}]: Conv2d with padding={module.padding!r} is not supported "
            "(give explicit integer padding)"
        )


def spans(module: nn.Module) -> tuple[Span, Span]:
    """(vertical, horizontal) Span of a supported module; ReLU is the identity span."""
    if isinstance(module, nn.ReLU):
        return Span(), Span()
    if isinstance(module, nn.Conv2d):
        k, s, p, d = (_pair(v) for v in (module.kernel_size, module.stride, module.padding, module.dilation))
        return tuple(Span(k[i], s[i], p[i], d[i]) for i in range(2))  # type: ignore[return-value]
    if isinstance(module, nn.MaxPool2d):
        k, s, p, d = (
            _pair(v)
            for v in (
                module.kernel_size,
                module.stride or module.kernel_size,
                module.padding,
                module.dilation,
            )
        )
        return tuple(
            Span(k[i], s[i], p[i], d[i], bool(module.ceil_mode))  # type: ignore[return-value]
            for i in range(2)
        )
    raise ValueError(f"{type(module).__name__} has no span (supported: Conv2d, ReLU, MaxPool2d)")


def level_sizes(layers: list[nn.Module], height: int, width: int) -> list[tuple[int, int]]:
    """Map sizes [(H_0, W_0) = input, (H_1, W_1) after layers[0], ...]; length len(layers) + 1."""
    sizes = [(height, width)]
    for m in layers:
        sy, sx = spans(m)
        h, w = sizes[-1]
        sizes.append((sy.output_length(h), sx.output_length(w)))
    return sizes


@dataclass(frozen=True)
class Window:
    """Where one stage unit's computation lives at one level, per axis.

    The unit at stage position (y, x) depends on positions [y*jump + start, y*jump + start + size)
    of that level (and likewise for x). Tuples are (vertical, horizontal).
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]


def windows(layers: list[nn.Module]) -> list[Window]:
    """Window of one unit of the last layer's output, at every level 0..len(layers).

    `windows(layers)[0]` is the receptive field in input pixels; the last entry is the unit itself.
    """
    size, jump, start = [1, 1], [1, 1], [0, 0]
    out = [Window((1, 1), (1, 1), (0, 0))]
    for m in reversed(layers):
        for axis, sp in enumerate(spans(m)):
            size[axis] = (size[axis] - 1) * sp.stride + sp.extent
            start[axis] = start[axis] * sp.stride - sp.padding
            jump[axis] = jump[axis] * sp.stride
        out.append(Window(tuple(size), tuple(jump), tuple(start)))  # type: ignore[arg-type]
    return out[::-1]


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one unit of a stage, in input pixels (square models: use `.size[0]`).

    Unit (y, x) sees pixels rows [y*jump + start, y*jump + start + size) (clipped to the image).
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), bottom/right exclusive, possibly outside the image."""
        top = y * self.jump[0] + self.start[0]
        left = x * self.jump[1] + self.start[1]
        return top, left, top + self.size[0], left + self.size[1]


def stage_layers(model: nn.Module, stage: int) -> list[nn.Module]:
    """`model.features[: index + 1]` for the stage, each module checked to have a mirror."""
    index = stage_of(model, stage).index
    layers = list(features_of(model))[: index + 1]
    for i, m in enumerate(layers):
        check_supported(m, i)
    return layers


def graph_node(model: nn.Module, stage: int | str | None) -> str:
    """The graph node of a stage number / name, a module path, or None (the model's output)."""
    graph = ModelGraph.of(model)
    if stage is None:
        return graph.output
    if isinstance(stage, str) and stage in graph.paths:
        return graph.paths[stage]
    return graph.paths[stage_of(model, stage).path]


def is_chain_stage(model: nn.Module, stage: int | str | None) -> bool:
    """Whether the chain code (VGG / AlexNet `model.features`) serves this stage."""
    if not is_chain(model) or stage is None:
        return False
    if isinstance(stage, str):
        return any(stage in (s.name, s.path) for s in stages_of(model))
    return True


def receptive_field(
    model: nn.Module, stage: int | str, input_size: int | tuple[int, int] = DEFAULT_SIDE
) -> ReceptiveField:
    """Theoretical receptive field of one unit of `stage` (e.g. VGG16 pool5: 212 px, jump 32).

    On a graph it is the union over every path (docs/graph.md#receptive-fields-on-a-graph).
    `input_size` matters only for TF-same padding (EfficientNet-Lite0), whose left padding
    depends on the map size; every other model's field is the same at any size."""
    h, w = _check_input_size(input_size)
    if is_chain_stage(model, stage):
        w = windows(stage_layers(model, stage_of(model, stage).number))[0]
        return ReceptiveField(w.size, w.jump, w.start)
    field = graph_windows(ModelGraph.of(model), graph_node(model, stage), h, w)[ModelGraph.of(model).input]
    return ReceptiveField(field.size, field.jump, field.start)


def _check_input_size(input_size: object) -> tuple[int, int]:
    """An int side or (height, width), each an int in [1, MAX_SIDE] -> (height, width)."""
    sides = list(input_size) if isinstance(input_size, (list, tuple)) else [input_size, input_size]
    valid = len(sides) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in sides
    )
    if not valid:
        raise ValueError(
            f"input_size: expected an int or (height, width), each in [1, {MAX_SIDE}], got {input_size!r:.60}"
        )
    return int(sides[0]), int(sides[1])


def min_side(layers: list[nn.Module]) -> int:
    """Smallest square input side for which every map after `layers` is non-empty."""
    n = 1
    while min(level_sizes(layers, n, n)[-1]) < 1:  # an empty level empties every later one
        n += 1
        if n > MAX_SIDE:
            raise ValueError(f"model: no input size up to {MAX_SIDE} gives a non-empty output")
    return n


def graph_accepts(graph: ModelGraph, node: str, side: int) -> bool:
    """Whether a side x side input gives `node` a non-empty output (meta-device shape pass)."""
    try:
        shape = graph.shapes(1, 3, side, side, until=node)[node]
    except RuntimeError:  # a kernel larger than its (padded) input
        return False
    return all(n > 0 for n in shape)


def graph_min_side(model: nn.Module, stage: int | str | None) -> int:
    """Smallest square input side for the graph up to `stage` (binary search; kept per model)."""
    graph, node = ModelGraph.of(model), graph_node(model, stage)
    if node not in graph.min_sides:
        low, high = 1, 4096
        if not graph_accepts(graph, node, high):
            raise ValueError(f"model: no input up to {high} px gives {node} a non-empty output")
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if graph_accepts(graph, node, mid) else (mid + 1, high)
        graph.min_sides[node] = low
    return graph.min_sides[node]


def min_input_size(model: nn.Module, stage: int | str | None = None) -> int:
    """Smallest square input for which the model (or its part up to `stage`) has a non-empty
    output. Whole model: VGG16 32, AlexNet 63.
    """
    if not is_chain(model):
        return graph_min_side(model, stage)
    if stage is not None:
        if not is_chain_stage(model, stage):
            return graph_min_side(model, stage)
        return min_side(stage_layers(model, stage_of(model, stage).number))
    layers = list(features_of(model))
    for i, m in enumerate(layers):
        check_supported(m, i)
    return min_side(layers)


def stage_sizes(model: nn.Module, height: int, width: int) -> dict[int, tuple[int, int]]:
    """Map size (h, w) of every stage's output for an input of height x width."""
    if not is_chain(model):
        graph = ModelGraph.of(model)
        shapes = graph.shapes(1, 3, height, width)
        return {s.number: tuple(shapes[graph.paths[s.path]][-2:]) for s in stages_of(model)}
    sizes = level_sizes(stage_layers(model, 5), height, width)
    return {s: sizes[stage_of(model, s).index + 1] for s in range(1, 6)}
