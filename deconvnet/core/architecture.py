"""Which model this is, and where its five layers ("stages") sit in it.

The paper's layer is conv -> relu -> [max pool]; the thing a deconvnet projects is that layer's
output. On VGG (with or without batch norm) the five stages are the five pooling layers; on AlexNet
they are pool1, pool2, relu3, relu4 and pool5 (docs/stages.md). Every other CNN gets one stage per
resolution level: the output of the last top-level block at that level (docs/stages.md#any-cnn).
All are derived from the modules, not hard-coded. VGG without batch norm and AlexNet are *chains*
(`model.features` is a plain sequence of Conv2d, ReLU, MaxPool2d): their mirror is the windowed
chain mirror; every other model is mirrored from its traced graph.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from torch import nn

from deconvnet.core.graph_model import ModelGraph

STAGES = (1, 2, 3, 4, 5)
BLOCK_CONTAINERS = ("features", "blocks")
PROBE_SIDE = 224  # resolution levels are read off the map sizes at this input side


@dataclass(frozen=True)
class Stage:
    """One of a model's five layers: `number` (1..5; None for any other point of the graph),
    `index` into `model.features` (chain models and VGG-BN; None otherwise), `name` (the paper's
    name on VGG / AlexNet, else the module path), `channels`, and its module `path`."""

    number: int | None
    index: int | None
    name: str
    channels: int
    path: str = ""


def is_chain(model: nn.Module) -> bool:
    """Whether `model` is torchvision's VGG without batch norm or AlexNet (the chain mirror's models)."""
    from torchvision.models import VGG, AlexNet

    if isinstance(model, AlexNet):
        return True
    return isinstance(model, VGG) and not any(isinstance(m, nn.BatchNorm2d) for m in model.features)


def architecture_name(model: nn.Module) -> str:
    """'vgg' or 'alexnet' for torchvision's VGG (11/13/16/19, not *_bn) / AlexNet; a clear error
    for anything else (code written for the chain models' layer lists only)."""
    from torchvision.models import VGG

    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if is_chain(model):
        return "vgg" if isinstance(model, VGG) else "alexnet"
    raise ValueError(
        f"model: this function takes torchvision's VGG (vgg11/13/16/19) or AlexNet, got "
        f"{type(model).__name__}; the graph mirror's functions take any supported CNN"
    )


def features_of(model: nn.Module) -> nn.Sequential:
    """The convolutional part (`model.features`) of a supported model."""
    architecture_name(model)
    return model.features


def _stage_indices(model: nn.Module) -> list[int]:
    """Indices into `model.features` of the five stage outputs."""
    kind = architecture_name(model)
    layers = list(model.features)
    if kind == "vgg":
        # VGG's paper layers are its five conv blocks, each closed by a max pool.
        ends = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
    else:
        # AlexNet: one paper layer per conv, ending at the ReLU or at the max pool right after it.
        ends = []
        for i, m in enumerate(layers):
            if isinstance(m, nn.Conv2d):
                end = i + 1
                if end + 1 < len(layers) and isinstance(layers[end + 1], nn.MaxPool2d):
                    end += 1
                ends.append(end)
    if len(ends) != 5:
        raise ValueError(
            f"model: expected 5 paper layers in model.features, found {len(ends)} "
            f"({type(model).__name__} with {len(layers)} feature modules)"
        )
    return ends


def _channels_before(layers: list[nn.Module], index: int) -> int:
    for m in reversed(layers[: index + 1]):
        if isinstance(m, nn.Conv2d):
            return m.out_channels
    raise ValueError("model: no convolution before the stage")


def chain_stages(model: nn.Module) -> list[Stage]:
    """The five paper layers of a chain model with their feature index, name and channel count."""
    layers = list(features_of(model))
    out = []
    for number, index in enumerate(_stage_indices(model), start=1):
        kind = type(layers[index]).__name__
        base = "pool" if kind == "MaxPool2d" else "relu"
        channels = _channels_before(layers, index)
        out.append(Stage(number, index, f"{base}{number}", channels, f"features.{index}"))
    return out


def vgg_bn_stages(model: nn.Module, shapes: dict[str, tuple[int, ...]], graph: ModelGraph) -> list[Stage]:
    """VGG with batch norm: the paper's layers are still its five max pools."""
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    if len(pools) != 5:
        raise ValueError(f"model: expected 5 max pools in model.features, found {len(pools)}")
    return [
        Stage(n, i, f"pool{n}", shapes[graph.paths[f"features.{i}"]][1], f"features.{i}")
        for n, i in enumerate(pools, start=1)
    ]


def top_level_blocks(model: nn.Module) -> list[str]:
    """Module paths of the model's children, descending into its block container (`features`,
    `blocks`), in definition order."""
    paths = []
    for name, child in model.named_children():
        if name in BLOCK_CONTAINERS and isinstance(child, nn.Sequential):
            paths.extend(f"{name}.{inner}" for inner, _ in child.named_children())
        else:
            paths.append(name)
    return paths


def level_stages(model: nn.Module, shapes: dict[str, tuple[int, ...]], graph: ModelGraph) -> list[Stage]:
    """One stage per resolution level: the last top-level block whose output has that map size
    (blocks before the first global pooling, flatten or linear layer)."""
    head = graph.head_position()
    last_at: dict[tuple[int, int], str] = {}
    for path in top_level_blocks(model):
        node = graph.paths.get(path)
        if node is None or graph.position[node] >= head or len(shapes[node]) != 4:
            continue
        size = shapes[node][-2:]
        last_at.pop(size, None)  # re-inserted: dicts keep the order of the latest block
        last_at[size] = path
    levels = list(last_at.values())
    if len(levels) != 5:
        raise ValueError(
            f"model: {type(model).__name__} has {len(levels)} resolution levels among its top-level "
            f"blocks ({', '.join(levels)}), not 5; give `stage` as a module path of its graph instead"
        )
    return [Stage(n, None, p, shapes[graph.paths[p]][1], p) for n, p in enumerate(levels, start=1)]


def stages(model: nn.Module) -> list[Stage]:
    """The five stages of `model` (docs/stages.md): number, feature index, name, channels, path."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if is_chain(model):
        return chain_stages(model)
    from torchvision.models import VGG

    graph = ModelGraph.of(model)
    if graph.stages is None:  # found once per model: the structure does not change under it
        shapes = graph.shapes(1, 3, PROBE_SIDE, PROBE_SIDE)
        found = vgg_bn_stages if isinstance(model, VGG) else level_stages
        graph.stages = found(model, shapes, graph)
    return list(graph.stages)


def stage(model: nn.Module, stage: int | str) -> Stage:
    """Stage `stage` (1..5), or the stage of that name or module path; ValueError naming the
    accepted values otherwise."""
    if isinstance(stage, str):
        found = [s for s in stages(model) if stage in (s.name, s.path)]
        if not found:
            names = ", ".join(
                f"{s.name}" + (f" ({s.path})" if s.path != s.name else "") for s in stages(model)
            )
            raise ValueError(f"stage: {stage!r} is not a stage of this model (its stages: {names})")
        return found[0]
    if isinstance(stage, bool) or not isinstance(stage, numbers.Integral) or stage not in STAGES:
        raise ValueError(
            f"stage: expected an int in 1..5 (the paper's layers), a stage name or path, got {stage!r}"
        )
    return stages(model)[int(stage) - 1]
