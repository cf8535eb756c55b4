"""The layers the invariance (Fig. 5) and correspondence (Table 1) analyses read, on any
supported model: what `layers` accepts, the defaults, and where a layer sits in the model.

A layer is a point of `deconvnet.core.probe` (its module doc): a stage number 1..5, a
stage's name ("pool1", "layer3", "blocks.4"), any module path of the model's traced graph
("layer3.1", "avgpool", "fc"), "pre1".."pre5", "logits", "input", and on VGG / AlexNet "fc6" /
"fc7". Its feature vector is its whole output flattened.

Defaults, the paper's layers or their analogue:

- VGG / AlexNet keep the paper's: (1, "fc7") for invariance, (5, "fc7") for correspondence
  (fc7: the classifier's second hidden layer after its ReLU, the last vector before the logits).
- Every other model: (1, P) and (5, P), P = `penultimate_point`, the module path whose output is
  the vector the last Linear layer reads, the analogue of fc7 (the globally pooled features of
  ResNet "avgpool", MobileNetV2 "classifier.0", EfficientNet-Lite0 "global_pool", GoogLeNet
  "avgpool"; VGG-BN "classifier.4", its fc7); "logits" where no module outputs that vector
  (DenseNet121 pools with functions, not modules).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from deconvnet.core.architecture import is_chain, stage, stages
from deconvnet.core.geometry import min_input_size
from deconvnet.core.graph_model import ModelGraph
from deconvnet.core.probe import HIDDEN, POINTS_DOC, PRE, check_point, graph_node
from deconvnet.core.validation import as_list, is_int

Layer = int | str
LAYERS_DOC = POINTS_DOC
CHAIN_LAST = "fc7"  # the paper's layer 7 on VGG / AlexNet
VALUE_PRESERVING = ("flatten", "identity")  # nodes between the pooled vector and the last Linear


def check_layers(model: nn.Module, value: object) -> tuple[Layer, ...]:
    """A layer of `model` (module doc) or a non-empty list of them, each once -> tuple; checked
    on the model (its meta-device skeleton will do) before any heavy work, ValueError "layers:"
    naming what is accepted otherwise."""
    items = [value] if is_int(value) or isinstance(value, str) else as_list(value)
    if not items:
        raise ValueError(f"layers: expected {LAYERS_DOC}, or a non-empty list of them, got {value!r}")
    chosen = []
    for item in items:
        try:
            chosen.append(check_point(model, int(item) if is_int(item) else item))
        except ValueError as error:  # the probe's message, "stage: ...", said for `layers`
            raise ValueError("layers" + str(error)[len("stage") :] + stage_list(model)) from None
    repeated = sorted({str(layer) for layer in chosen if chosen.count(layer) > 1})
    if repeated:
        raise ValueError(f"layers: each layer once, got {', '.join(repeated)} more than once")
    return tuple(chosen)


def stage_list(model: nn.Module) -> str:
    """' (this model's stages 1..5: relu, layer1, ...)', or '' where the stages are unknown."""
    try:
        names = [s.name for s in stages(model)]
    except ValueError:
        return ""
    return f" (this model's stages 1..5: {', '.join(names)})"


def penultimate_point(model: nn.Module) -> str | None:
    """The module path whose output is the vector the model's last Linear layer reads (through
    flatten and Dropout / identity nodes, which keep its values), or None where no module outputs
    it. Of several such paths: the fewest dots, then the earliest node ("global_pool", not
    "global_pool.pool"; GoogLeNet's "avgpool", not its "dropout")."""
    graph = ModelGraph.of(model)
    linears = [op for op in graph.ops if op.kind == "linear"]
    if not linears:
        return None
    names_of: dict[str, list[str]] = {}
    for path, name in graph.paths.items():
        names_of.setdefault(name, []).append(path)
    op = graph.by_name[linears[-1].inputs[0]]
    found = [(path.count("."), graph.position[op.name], path) for path in names_of.get(op.name, [])]
    while op.kind in VALUE_PRESERVING:
        op = graph.by_name[op.inputs[0]]
        found += [(path.count("."), graph.position[op.name], path) for path in names_of.get(op.name, [])]
    return min(found)[2] if found else None


def default_layers(model: nn.Module, first_stage: int) -> tuple[Layer, ...]:
    """(first_stage, "fc7") on VGG / AlexNet (the paper's); elsewhere (first_stage, the
    penultimate vector's module path, or "logits" where no module outputs it)."""
    if is_chain(model):
        return (first_stage, CHAIN_LAST)
    return (first_stage, penultimate_point(model) or "logits")


def reads_classifier(model: nn.Module, layer: Layer) -> bool:
    """Whether the layer's value depends on the classifier's weights: it is read at or after the
    model's first Linear layer (fc6, fc7, "logits", "fc", "classifier.4"; not "avgpool")."""
    graph = ModelGraph.of(model)
    linears = [graph.position[op.name] for op in graph.ops if op.kind == "linear"]
    if not linears:
        return False
    return graph.position[graph_node(model, layer).name] >= min(linears)


def stage_number(model: nn.Module, layer: Layer) -> int | None:
    """The stage 1..5 a layer is (by number, name or the stage's module path), else None."""
    if is_int(layer):
        return int(layer)
    try:
        return stage(model, layer).number
    except ValueError:
        return None


def deepest_point(model: nn.Module, layers: Sequence[Layer]) -> Layer | None:
    """The layer whose part of the model needs the largest input (what `check_images` checks the
    images against); None: the whole model (a layer at or after the classifier)."""
    if any(layer in ("logits", *HIDDEN) for layer in layers):
        return None  # before any size search: each costs shape passes of the graph
    need: list[tuple[int, int, Layer]] = []
    for k, layer in enumerate(layers):
        if layer != "input":
            point = int(layer[3:]) if layer in PRE else layer
            need.append((min_input_size(model, point), -k, point))
    return max(need)[2] if need else 1
