"""The deconvnet of any supported CNN: every node of its traced graph mirrored (docs/graph.md).

`GraphMirror.record` runs the graph forward once with the model's own parameters (out of place,
no hooks) and keeps what the adjoints need; `GraphMirror.run` sends signals placed at one node
down through every path to the input, in reverse execution order: a residual add hands its signal
to both branches, which sum where they started; a concatenation splits it by channels. Under
`backprop` this is exactly the gradient; `deconvnet` and `guided` change only the ReLU / ReLU6.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconvnet.core.architecture import PROBE_SIDE
from deconvnet.core.architecture import stage as stage_of
from deconvnet.core.architecture import stages as stages_of
from deconvnet.core.geometry import graph_node, is_chain_stage
from deconvnet.core.graph_model import ModelGraph, graph_windows
from deconvnet.core.graph_ops import GraphRecord, adjoint, bn_scale, check_rule, forward, unfolded
from deconvnet.core.graph_regions import merge, region_adjoint
from deconvnet.core.layout import channels_last_on_cpu
from deconvnet.core.mirror import Mirror, Seeds
from deconvnet.core.precision import full_float32
from deconvnet.core.validation import check_model_values
from deconvnet.core.windows import Region, reframe


def point_node(model: nn.Module, graph: ModelGraph, point: int | str | None) -> tuple[str, int | None]:
    """(node name, stage number or None) of a stage number, a stage name, a module path of the
    graph, or None (the logits); ValueError naming what is accepted."""
    if point is None:
        return graph.output, None
    known = stages_of_or_none(model)
    if isinstance(point, str) and point not in (s.name for s in known):
        if point not in graph.paths:
            raise ValueError(
                f"stage: {point!r} is neither a stage name nor a module path of this model's graph "
                f"(for example {', '.join(list(graph.paths)[:4])})"
            )
        node = graph.paths[point]
        shape = graph.shapes(1, 3, PROBE_SIDE, PROBE_SIDE)[node]
        if len(shape) != 4 or graph.position[node] >= graph.head_position():
            raise ValueError(
                f"stage: {point!r} is not a feature map (its output is {list(shape[1:])} per image, "
                "after the global pooling); give a stage or a module path below it"
            )
        return node, next((s.number for s in known if s.path == point), None)
    info = stage_of(model, point)
    return graph.paths[info.path], info.number


def stages_of_or_none(model: nn.Module) -> list:
    """The model's stages, or [] when it has no five resolution levels (module paths still work)."""
    try:
        return stages_of(model)
    except ValueError:
        return []


class GraphMirror(nn.Module):
    """The mirror of a model's graph from one node (a stage, a module path, or the logits) down."""

    def __init__(self, model: nn.Module, stage: int | str | None, rule: str = "deconvnet") -> None:
        super().__init__()
        self.rule = check_rule(rule)
        self.graph = ModelGraph.of(model)
        self.top, self.stage = point_node(model, self.graph, stage)
        check_model_values(model)
        top = self.graph.position[self.top]
        self.ops = self.graph.ops[: top + 1]
        self._stage_at = {
            self.graph.paths[s.path]: s.number
            for s in stages_of_or_none(model)
            if self.graph.position[self.graph.paths[s.path]] <= top
        }

    def extra_repr(self) -> str:
        lines = [f"rule={self.rule}, from {self.top} down to the input ({len(self.ops)} nodes):"]
        for op in reversed(self.ops):
            if op.kind not in ("input", "output", "identity"):
                lines.append(f"  {op.path or op.name}: {ADJOINT_NAMES.get(op.kind, op.kind)}")
        return "\n".join(lines)

    @full_float32()
    def record(self, images: Tensor, float_masks: bool = False, keep: tuple[str, ...] = ()) -> GraphRecord:
        """One forward pass [B, 3, H, W] -> GraphRecord (stage outputs in `.outputs`, the top
        node's output in `.output`, nodes named in `keep` in `.values`); the model is untouched."""
        images = channels_last_on_cpu(images)  # oneDNN: every map channels last, as the mirror's
        record = GraphRecord(sizes=[tuple(images.shape[-2:])], masks_wanted=self.rule != "deconvnet")
        record.float_masks = float_masks
        last_use = {}
        for i, op in enumerate(self.ops):
            for name in op.inputs:
                last_use[name] = i
        wanted = set(keep) | set(self._stage_at) | {self.top}
        values: dict[str, Tensor] = {}
        for i, op in enumerate(self.ops):
            if op.kind == "input":
                values[op.name] = images
            else:
                values[op.name] = forward(op, [values[name] for name in op.inputs], record)
            for name in set(op.inputs):
                if last_use[name] == i and name not in wanted:
                    del values[name]  # memory: only what is still read or kept
        record.values = {name: values[name] for name in wanted}
        record.outputs = {n: values[name] for name, n in self._stage_at.items()}
        record.output = values[self.top]
        return record

    def run(
        self,
        signal: Tensor,
        image: Tensor,
        record: GraphRecord,
        start: str | None = None,
        until: str | None = None,
    ) -> Tensor:
        """signal [M, ...] at node `start` (default: the top), rows of images `image` [M] ->
        the signal at node `until`'s output (default: the input pixels, [M, 3, H, W])."""
        start = self.top if start is None else start
        until = self.graph.input if until is None else until
        grads: dict[str, Tensor] = {start: signal}
        for op in reversed(self.ops[: self.graph.position[start] + 1]):
            if op.name == until:
                break
            g = grads.pop(op.name, None)
            if g is None:
                continue
            op = unfolded(op) if op.name == start else op
            for name, part in zip(op.inputs, adjoint(op, g, record, self.rule, image)):
                grads[name] = grads[name] + part if name in grads else part
        found = grads.get(until)
        if found is None:  # no path from start to until: the signal there is zero
            shape = (signal.shape[0],) + tuple(record.shapes[until][1:]) if until in record.shapes else None
            return signal.new_zeros(shape or (signal.shape[0], 3, *record.sizes[0]))
        bn = self.graph.by_name[until].args.get("bn")
        if bn is not None and until != start:  # the norm above passed its scale on to this conv
            found = found * bn_scale(bn).to(found.dtype)[:, None, None]
        return found

    def run_regions(self, region: Region, record: GraphRecord) -> Region:
        """Single-unit seeds at the top node, each in its own window (`Region` [K, C, 1, 1] at
        the units' positions) -> their signals at the input, each in its receptive field's window
        (docs/graph.md#restriction-to-the-receptive-field)."""
        regions: dict[str, list[Region]] = {self.top: [region]}
        for op in reversed(self.ops):
            arriving = regions.pop(op.name, None)
            if arriving is None:
                continue
            if op.kind == "input":
                return merge(arriving)
            op = unfolded(op) if op.name == self.top else op
            for name, part in zip(op.inputs, region_adjoint(op, merge(arriving), record, self.rule)):
                regions.setdefault(name, []).append(part)
        raise ValueError(f"stage: no path leads from {self.top} to the input")

    def top_output(self, record: GraphRecord) -> Tensor:
        """[B, C, h, w] output of this mirror's top node in `record` (made by this mirror or one
        from a higher node)."""
        if self.top in record.values:
            return record.values[self.top]
        if self.stage is not None:
            return record.stage_output(self.stage)
        raise ValueError(f"stage: this forward record does not hold {self.top}; record with this mirror")

    @full_float32()
    def project_map(self, record: GraphRecord, chunk_size: int = 8) -> Tensor:
        """Reconstruct every image's whole output of the top node ("keep all"): -> [B, 3, H, W]."""
        output = self.top_output(record)
        pieces = []
        for start in range(0, output.shape[0], chunk_size):
            image = torch.arange(start, min(start + chunk_size, output.shape[0]))
            pieces.append(self.run(output[start : start + len(image)], image, record))
        return torch.cat(pieces)

    @full_float32()
    def project(
        self, record: GraphRecord, seeds: Seeds, frame: str = "image", chunk_size: int = 16
    ) -> Tensor:
        """Reconstruct single activations of the top node, each alone, from one record.

        frame="image": [K, 3, H, W]; frame="receptive_field": [K, 3, rf_h, rf_w], the seed unit's
        receptive field (top-left at `receptive_field_origin(seeds, record)`), zero outside the
        image. Exact: a reconstruction is zero outside its field (the union over the graph's paths).
        """
        if frame not in ("image", "receptive_field"):
            raise ValueError(f"frame: expected 'image' or 'receptive_field', got {frame!r}")
        output = self.top_output(record)
        field = self.windows(*record.sizes[0])[self.graph.input]
        size = record.sizes[0] if frame == "image" else field.size
        out = output.new_zeros(len(seeds), 3, *size)
        for start in range(0, len(seeds), chunk_size):
            part = seeds[start : start + chunk_size]
            k = len(part)
            signal = output.new_zeros(k, output.shape[1], 1, 1)
            signal[torch.arange(k), part.channel.to(signal.device), 0, 0] = part.value.to(
                signal.device, signal.dtype
            )
            below = self.run_regions(Region(signal, part.image, part.y, part.x, True), record)
            if frame == "image":
                top = left = torch.zeros_like(part.y)
            else:
                top, left = self.receptive_field_origin(part, record)
            out[start : start + k] = reframe(below, top, left, size).signal
        return out

    def receptive_field_origin(self, seeds: Seeds, record: GraphRecord) -> tuple[Tensor, Tensor]:
        """Top-left input pixel (may be negative) of each seed's receptive field: ([K], [K])."""
        w = self.windows(*record.sizes[0])[self.graph.input]
        return seeds.y * w.jump[0] + w.start[0], seeds.x * w.jump[1] + w.start[1]

    def windows(self, height: int, width: int):
        """Window of one unit of the top node at every node below it, for an input of this size."""
        return graph_windows(self.graph, self.top, height, width)


ADJOINT_NAMES = {
    "conv": "tied transposed convolution",
    "conv_same": "tied transposed convolution, TF-same padding cropped",
    "bn": "batch norm's scale gamma / sqrt(var + eps)",
    "bn_act": "backward ReLU rule, then batch norm's scale",
    "relu": "backward ReLU rule",
    "relu6": "backward ReLU6 rule",
    "maxpool": "unpooling through switches (collisions summed)",
    "avgpool": "average pooling's adjoint",
    "adaptive_avgpool": "adaptive average pooling's adjoint",
    "add": "residual add: the signal down both branches",
    "cat": "concatenation: split by channels",
    "flatten": "unflatten",
    "linear": "tied transpose of the weight",
}


def make_mirror(model: nn.Module, stage: int | str | None, rule: str = "deconvnet") -> Mirror | GraphMirror:
    """The chain mirror (windowed, docs/mirror.md) for VGG and AlexNet stages, the graph mirror
    for every other model and point; both record once and project many seeds."""
    if is_chain_stage(model, stage):
        return Mirror(model, stage_of(model, stage).number, rule)
    return GraphMirror(model, stage, rule)


def point_channels(model: nn.Module, stage: int | str | None) -> int:
    """Channels (features, for the logits) at a stage or module path, from the graph's shapes."""
    if is_chain_stage(model, stage):
        return stage_of(model, stage).channels
    graph = ModelGraph.of(model)
    return graph.shapes(1, 3, PROBE_SIDE, PROBE_SIDE)[graph_node(model, stage)][1]
