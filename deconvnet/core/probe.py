"""One differentiable forward pass that keeps the activations an objective reads.

Points (docs/graph.md#points) are named: "input" (the image the model saw, after transforms), a
stage number 1..5 or a stage's name (the paper's layer output, docs/stages.md), any module path of
the model's traced graph ("layer3.1", "blocks.4", "features.10"), "pre1".."pre5" (the stage's
value before its last ReLU / ReLU6: on VGG and AlexNet the output of the stage's last convolution;
a stage that ends without an activation is its own pre-activation), "pre:<point>" (the same for
any other point), "logits", and on VGG / AlexNet
"fc6" / "fc7" (the classifier's hidden layers after their ReLU). `split_channel` reads lucent's
short form "blocks.4:42" (channel 42 of that point).

The pass runs only as far as the deepest point asked for, with Dropout as the identity and batch
norm with its running statistics (the eval-mode functions, whatever the training flags), so the
caller's model is used as it is and never changed: no hooks, no flags, no copies. VGG and AlexNet
with chain points run `model.features` module by module; everything else runs the traced graph's
nodes (`deconvnet.core.graph_model`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deconvnet.core.architecture import is_chain, stage, stages
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.graph_ops import batch_norm, forward

POINTS_DOC = (
    'a stage 1..5 or its name, a module path of the model\'s graph, "pre1".."pre5", "logits", '
    '"input" (and "fc6", "fc7" on VGG / AlexNet)'
)
HIDDEN = ("fc6", "fc7")
PRE = tuple(f"pre{s}" for s in range(1, 6))  # a stage's value before its last ReLU
CHAIN_POINTS = ("input", "logits", *HIDDEN, *PRE)
PASS_THROUGH = ("maxpool", "identity")  # max pooling commutes with a ReLU: pre-activation below it


@dataclass(frozen=True)
class Node:
    """Where a point is read on the traced graph: the node's output, or with `before_act` the
    batch norm of a fused norm + activation node (timm's BatchNormAct2d) before its activation."""

    name: str
    before_act: bool = False


def is_stage_number(point: object) -> bool:
    return isinstance(point, numbers.Integral) and not isinstance(point, bool) and 1 <= point <= 5


def split_channel(point: object) -> tuple[object, int | None]:
    """lucent's "blocks.4:42" -> ("blocks.4", 42); any other point -> (point, None)."""
    if isinstance(point, str) and ":" in point:
        where, _, channel = point.rpartition(":")
        if channel.isdigit() and where:
            return where, int(channel)
        raise ValueError(f"stage: {point!r}: expected '<point>:<channel>' with a channel number")
    return point, None


def check_point(model: nn.Module, point: object) -> int | str:
    """`point` if the probe can read it on `model`, else ValueError naming the accepted points."""
    if is_stage_number(point) or (is_chain(model) and point in CHAIN_POINTS):
        return int(point) if is_stage_number(point) else point  # type: ignore[return-value]
    if not isinstance(point, str):
        raise ValueError(f"stage: expected {POINTS_DOC}, got {point!r}")
    graph_node(model, point)  # ValueError naming the point
    return point


def graph_node(model: nn.Module, point: int | str) -> Node:
    """The graph node a point reads (module doc); ValueError naming the accepted points."""
    graph = ModelGraph.of(model)
    if point == "input":
        return Node(graph.input)
    if point == "logits":
        return Node(graph.output)
    if point in HIDDEN and is_chain(model):
        return Node(hidden_node(graph, HIDDEN.index(point)))
    if isinstance(point, str) and point in PRE:
        return pre_activation(graph, graph.paths[stage_path(model, int(point[3:]))])
    if isinstance(point, str) and point.startswith("pre:"):
        return pre_activation(graph, graph_node(model, point[4:]).name)
    if is_stage_number(point) or (isinstance(point, str) and point not in graph.paths):
        return Node(graph.paths[stage_path(model, point)])
    return Node(graph.paths[point])


def stage_path(model: nn.Module, point: int | str) -> str:
    """The module path of stage `point` (a number or a stage name); ValueError otherwise."""
    try:
        return stage(model, point).path
    except ValueError:
        if isinstance(point, str):
            raise ValueError(
                f"stage: {point!r} is neither a stage nor a module path of this model's graph; "
                f"expected {POINTS_DOC}"
            ) from None
        raise


def hidden_node(graph: ModelGraph, k: int) -> str:
    """The ReLU after the classifier's (k + 1)-th Linear layer (fc6: k = 0, fc7: k = 1)."""
    linears = [op.name for op in graph.ops if op.kind == "linear"]
    readers = graph.consumers()
    relus = [r for r in readers[linears[k]] if graph.by_name[r].kind == "relu"]
    return relus[0]


def pre_point(point: int | str) -> str:
    """The probe's name for the pre-activation of a point: "pre3" for stage 3, else "pre:<point>"."""
    return f"pre{point}" if is_stage_number(point) else f"pre:{point}"


def pre_activation(graph: ModelGraph, name: str) -> Node:
    """The value before the last activation of the node `name` (through max pooling)."""
    op = graph.by_name[name]
    while op.kind in PASS_THROUGH:
        op = graph.by_name[op.inputs[0]]
    if op.kind in ("relu", "relu6"):
        return Node(op.inputs[0])
    if op.kind == "bn_act" and op.args.get("act") in ("relu", "relu6"):
        return Node(op.name, before_act=True)
    return Node(op.name)  # no activation at its end: its own pre-activation


def _run_classifier(model: nn.Module, h: Tensor, wanted: set, out: dict) -> None:
    """avgpool -> flatten -> classifier; ReLU outputs after Linear 1 and 2 are "fc6", "fc7"."""
    h = torch.flatten(model.avgpool(h), 1)
    linears = 0
    for module in model.classifier:
        if isinstance(module, nn.Dropout):
            continue  # the eval-mode function
        if isinstance(module, nn.Linear):
            linears += 1
            h = module(h)
        elif isinstance(module, nn.ReLU):
            h = torch.relu(h)
            if linears in (1, 2) and HIDDEN[linears - 1] in wanted:
                out[HIDDEN[linears - 1]] = h
        else:
            raise ValueError(
                f"model.classifier: {type(module).__name__} is not supported "
                "(expected Linear, ReLU and Dropout)"
            )
    out["logits"] = h


def head_logits(model: nn.Module, features_out: Tensor) -> Tensor:
    """[B, C, h, w] output of `model.features` -> [B, classes]: avgpool, flatten, classifier with
    Dropout as the identity (its eval-mode function, whatever the training flag)."""
    out: dict[int | str, Tensor] = {}
    _run_classifier(model, features_out, set(), out)
    return out["logits"]


def _apply(module: nn.Module, pieces: list[Tensor], budget: int | None) -> list[Tensor]:
    """One feature module over the batch held in pieces; the pieces are joined once the whole
    output fits in `budget` bytes (None: always one piece)."""
    # ReLU out of place: a stage output kept here must not be overwritten by a later layer
    out = [torch.relu(p) if isinstance(module, nn.ReLU) else module(p) for p in pieces]
    total = sum(o.numel() * o.element_size() for o in out)
    return [torch.cat(out)] if len(out) > 1 and (budget is None or total <= budget) else out


def probe(
    model: nn.Module, images: Tensor, points: Iterable[int | str], budget: int | None = None
) -> dict[int | str, Tensor]:
    """[B, 3, H, W] -> {point: activation} for every asked point, with the autograd graph kept.

    Feature maps are [B, C, h, w]; "fc6", "fc7" [B, 4096]; "logits" [B, classes]. With `budget`
    (bytes), big activations are computed on pieces of the batch: the same values, without
    allocating huge blocks.
    """
    wanted = {check_point(model, p) for p in points}
    if is_chain(model) and all(is_stage_number(p) or p in CHAIN_POINTS for p in wanted):
        return chain_probe(model, images, wanted, budget)
    nodes = {p: graph_node(model, p) for p in wanted}
    pieces = [images]
    if budget is not None and images.shape[0] > 1:
        graph = ModelGraph.of(model)
        last = max(graph.position[n.name] for n in nodes.values())
        shapes = graph.shapes(1, *images.shape[1:], until=graph.ops[last].name)
        per_image = max(math.prod(s) for s in shapes.values()) * images.element_size()
        pieces = list(images.split(max(1, budget // per_image)))
    found = [graph_probe(model, piece, nodes) for piece in pieces]
    if len(found) == 1:
        return found[0]
    return {p: torch.cat([f[p] for f in found]) for p in wanted}


def graph_probe(model: nn.Module, images: Tensor, nodes: dict[int | str, Node]) -> dict[int | str, Tensor]:
    """`probe` on the traced graph: [B, 3, H, W] -> {point: its node's value}, running the nodes
    in order up to the deepest one asked for, each value dropped once nothing later reads it."""
    graph = ModelGraph.of(model)
    names = {n.name for n in nodes.values()}
    last = max(graph.position[name] for name in names)
    last_read = {name: graph.position[name] for name in names}
    for op in graph.ops[: last + 1]:
        for name in op.inputs:
            last_read[name] = max(last_read.get(name, 0), graph.position[op.name])
    values: dict[str, Tensor] = {}
    before_act: dict[str, Tensor] = {}
    for op in graph.ops[: last + 1]:
        xs = [values[name] for name in op.inputs]
        values[op.name] = images if op.kind == "input" else forward(op, xs, None)
        if Node(op.name, True) in nodes.values():
            before_act[op.name] = batch_norm(xs[0], op.module)
        for name in op.inputs:
            if last_read[name] <= graph.position[op.name] and name not in names:
                values.pop(name, None)
    return {p: before_act[n.name] if n.before_act else values[n.name] for p, n in nodes.items()}


def chain_probe(
    model: nn.Module, images: Tensor, points: Iterable[int | str], budget: int | None = None
) -> dict[int | str, Tensor]:
    """`probe` on VGG / AlexNet with chain points only: `model.features` module by module. With
    `budget` (bytes), layers whose whole output is larger run on pieces of the batch that are
    joined once the maps are small: the same values, without allocating huge blocks."""
    wanted = set(points)
    index_of = {s.index: s.number for s in stages(model)}
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    pre_of = {max(c for c in convs if c <= s.index): f"pre{s.number}" for s in stages(model)}
    head = bool(wanted & {"logits", *HIDDEN})
    last = (
        len(model.features) - 1
        if head
        else max(
            [s.index for s in stages(model) if s.number in wanted or f"pre{s.number}" in wanted], default=-1
        )
    )
    out: dict[int | str, Tensor] = {"input": images}
    pieces = [images]
    if budget is not None and images.shape[0] > 1:
        first = next(m for m in model.features if isinstance(m, nn.Conv2d))
        per_image = first.out_channels * images[0, 0].numel() * images.element_size()
        pieces = list(images.split(max(1, budget // per_image)))
    for i, module in enumerate(model.features):
        if i > last:
            break
        pieces = _apply(module, pieces, budget)
        for name in (index_of.get(i), pre_of.get(i)):
            if name in wanted:
                out[name] = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    if head:
        _run_classifier(model, pieces[0] if len(pieces) == 1 else torch.cat(pieces), wanted, out)
    return {p: out[p] for p in wanted}


def point_key(point: int | str) -> str:
    """A cell's key: 'stage3' for a stage number, the point itself otherwise ('fc6', 'layer3.1')."""
    return f"stage{point}" if isinstance(point, int) else str(point)
