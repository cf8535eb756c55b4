"""The feature maps an optimisation reads, on any supported model (docs/graph.md#points).

`map_point(model, stage)` takes a stage number, a stage name, a module path of the traced graph
or lucent's short form "blocks.4:42" and gives the probe's key, the channel count and a label;
`map_size` its map's size for an input size, `pre_window` the positions of its pre-activation map
that reach one of its units (through a max pooling at its end), `unit_crop` the exact part of the
image one unit sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from deconvnet.core.architecture import PROBE_SIDE, is_chain, stages
from deconvnet.core.geometry import receptive_field
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.probe import (
    PASS_THROUGH,
    check_point,
    graph_node,
    is_stage_number,
    pre_point,
    split_channel,
)


@dataclass(frozen=True)
class MapPoint:
    """A feature map: `key` (what the probe reads: a stage number, or a module path), its
    `channels`, its `number` (the stage number, or None) and a `label` for messages."""

    key: int | str
    channels: int
    number: int | None
    label: str

    @property
    def pre(self) -> str:
        """The probe's name for its pre-activation ("pre3", "pre:layer3.1")."""
        return pre_point(self.key)


def map_point(model: nn.Module, stage: object) -> tuple[MapPoint, int | None]:
    """(the feature map `stage` names, the channel of a "<point>:<channel>" form or None);
    ValueError naming `stage` when it is not a feature map of the model."""
    point, channel = split_channel(stage)
    check_point(model, point)
    graph = ModelGraph.of(model)
    node = graph_node(model, point).name
    shape = graph.shapes(1, 3, PROBE_SIDE, PROBE_SIDE)[node]
    if len(shape) != 4 or graph.position[node] >= graph.head_position() or point == "input":
        raise ValueError(
            f"stage: {stage!r} is not a feature map of this model (give a stage 1..5, a stage "
            "name or a module path below the global pooling)"
        )
    number = next((s.number for s in stages(model) if graph.paths.get(s.path) == node), None)
    if is_stage_number(point) or (number is not None and not str(point).startswith("pre")):
        point = number  # a stage's name or path: read as the stage
    label = f"stage {point}" if is_stage_number(point) else str(point)
    if channel is not None and not channel < shape[1]:
        raise ValueError(
            f"stage: {stage!r}: channel {channel} is outside {label}'s channels 0..{shape[1] - 1}"
        )
    return MapPoint(point, shape[1], number if is_stage_number(point) else None, label), channel


def map_size(model: nn.Module, point: MapPoint, height: int, width: int) -> tuple[int, int]:
    """(h, w) of the point's map for a height x width input."""
    graph = ModelGraph.of(model)
    shape = graph.shapes(1, 3, height, width)[graph_node(model, point.key).name]
    return shape[2], shape[3]


def pre_window(model: nn.Module, point: MapPoint, y: int, x: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) in the point's pre-activation map of the positions that reach
    unit (y, x) of its output: through the max pooling at its end, or the unit itself."""
    graph = ModelGraph.of(model)
    op = graph.by_name[graph_node(model, point.key).name]
    top, left, bottom, right = y, x, y + 1, x + 1
    while op.kind in PASS_THROUGH:
        if op.kind == "maxpool":
            m = op.module
            k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
            top, left = max(top * s - p, 0), max(left * s - p, 0)
            bottom, right = (bottom - 1) * s - p + k, (right - 1) * s - p + k
        op = graph.by_name[op.inputs[0]]
    return top, left, bottom, right


@dataclass(frozen=True)
class UnitCrop:
    """Where a unit's receptive field lies: `box` (top, left, bottom, right) of the field clipped
    to the image, the `crop` (top, left, bottom, right) that is optimised (the box, extended up and
    left to the point's stride grid so the crop's maps line up with the full image's), and the
    unit's (y, x) in the crop's map."""

    box: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]
    position: tuple[int, int]


def unit_crop(model: nn.Module, point: object, size: int, y: int, x: int) -> UnitCrop:
    """The exact crop for unit (y, x) of a point (a `MapPoint` or what `map_point` takes) on a
    size x size image. On a graph the crop's
    sides keep the image's remainder modulo the stride (or reach its end): TF-same padding then
    pads every map of the crop as it pads the image's (docs/graph.md#points)."""
    point = point if isinstance(point, MapPoint) else map_point(model, point)[0]
    rf = receptive_field(model, point.key, input_size=size)
    top, left, bottom, right = rf.box(y, x)
    box = (max(top, 0), max(left, 0), min(bottom, size), min(right, size))
    jy, jx = rf.jump
    crop_top, crop_left = (box[0] // jy) * jy, (box[1] // jx) * jx
    bottom, right = box[2], box[3]
    if not is_chain(model):
        bottom += (size - bottom) % jy
        right += (size - right) % jx
    crop = (crop_top, crop_left, bottom, right)
    return UnitCrop(box, crop, (y - crop_top // jy, x - crop_left // jx))
